//! `cargo xtask sub-cost`: plain vs MaskSub training throughput, measured by running the release
//! `masksub train` binary alternately (so drifts in machine load hit both arms alike), and
//! recorded in BENCHMARKS.md with the machine, versions and date.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

const BEGIN: &str = "<!-- xtask sub-cost: begin (generated, do not edit) -->";
const END: &str = "<!-- xtask sub-cost: end -->";

#[derive(clap::Args)]
pub struct Args {
    /// Registry models to measure (repeat the flag), one table row each.
    #[arg(long = "model", default_values_t = [
        "vit_fmnist_small".to_string(),
        "resnet_fmnist_small".to_string(),
    ])]
    models: Vec<String>,
    /// Training images per measured run (one epoch over them).
    #[arg(long, default_value_t = 6400)]
    images: usize,
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Alternating rounds (each runs both arms once).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Markdown file to update.
    #[arg(long, default_value = "BENCHMARKS.md")]
    file: PathBuf,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn run_arm(bin: &Path, a: &Args, model: &str, sub: &str, out: &Path) -> Result<f64> {
    let status = Command::new(bin)
        .args(["train", "--quiet", "--epochs", "1", "--warmup-epochs", "0"])
        .args(["--model", model, "--sub", sub])
        .args([
            "--train-subset",
            &a.images.to_string(),
            "--batch-size",
            &a.batch_size.to_string(),
        ])
        .args(["--threads", &a.threads.to_string(), "--out"])
        .arg(out)
        .status()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    if !status.success() {
        bail!("masksub train --model {model} --sub {sub} failed ({status})");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json"))?)?;
    summary["train_img_per_s"]
        .as_f64()
        .context("summary.json has no train_img_per_s")
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

fn capture(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

pub fn run(a: Args) -> Result<()> {
    if a.rounds == 0 || a.models.is_empty() {
        bail!("--rounds must be positive and at least one --model given");
    }
    let root = repo_root();
    let st = Command::new("cargo")
        .current_dir(&root)
        .args(["build", "--release", "-p", "masksub-cli"])
        .status()?;
    if !st.success() {
        bail!("cargo build --release -p masksub-cli failed");
    }
    let bin = root.join("target/release/masksub");
    let tmp = tempfile_dir()?;
    // Other processes slow every arm; the load average says how busy the machine was.
    let load_start = load_average();
    // Per model: (plain img/s, MaskSub img/s) of every round.
    let mut runs: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); a.models.len()];
    for r in 0..a.rounds {
        for (model, (plain, masked)) in a.models.iter().zip(runs.iter_mut()) {
            let dir = |sub: &str| tmp.join(format!("{model}-{sub}-{r}"));
            plain.push(run_arm(&bin, &a, model, "none", &dir("none"))?);
            masked.push(run_arm(&bin, &a, model, "masking", &dir("masking"))?);
            println!(
                "round {}: {model}: none {:.1} img/s, masking {:.1} img/s",
                r + 1,
                plain[r],
                masked[r]
            );
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    let (mut rows, mut rounds) = (String::new(), String::new());
    for (model, (plain, masked)) in a.models.iter().zip(&runs) {
        let (mp, mm) = (median(&mut plain.clone()), median(&mut masked.clone()));
        rows += &format!("| {model} | {mp:.1} | {mm:.1} | {:.2}x |\n", mp / mm);
        let per: Vec<String> = plain
            .iter()
            .zip(masked)
            .map(|(p, m)| format!("{p:.1} / {m:.1}"))
            .collect();
        rounds += &format!("- {model}: {}\n", per.join(", "));
        println!(
            "{model}: plain {mp:.1} img/s, MaskSub {mm:.1} img/s, cost {:.2}x",
            mp / mm
        );
    }
    let section = format!(
        "{BEGIN}\n## MaskSub step cost (`cargo xtask sub-cost`)\n\n\
         Training throughput of the same model on the same real Fashion-MNIST images, one epoch of {} images per run, batch {}, {} threads, \
         {} alternating rounds, medians. Cost = plain img/s / MaskSub img/s (time of a MaskSub step relative to a plain one). \
         A ViT's sub pass drops half of the tokens; a CNN's sub pass zeroes pixel patches and runs at full size.\n\n\
         | model | plain img/s | MaskSub (r=0.5) img/s | cost |\n|---|---|---|---|\n{rows}\n\
         Per round (plain / MaskSub):\n{rounds}\n\
         Machine: {} ({} cores visible, load average {} at the start and {} at the end), {}; masksub {}; date {}.\n{END}\n",
        a.images,
        a.batch_size,
        a.threads,
        a.rounds,
        cpu_model(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        load_start,
        load_average(),
        capture("rustc", &["--version"]),
        capture("git", &["rev-parse", "--short", "HEAD"]),
        chrono::Local::now().format("%Y-%m-%d %H:%M"),
    );
    let path = if a.file.is_absolute() {
        a.file.clone()
    } else {
        root.join(&a.file)
    };
    let old = std::fs::read_to_string(&path).unwrap_or_else(|_| "# masksub benchmarks\n\nEvery number here is written by an xtask command; rerun it to refresh.\n\n".into());
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(b), Some(e)) if e > b => format!(
            "{}{}{}",
            &old[..b],
            section,
            old[e + END.len()..].trim_start_matches('\n')
        ),
        _ => format!("{}\n{}", old.trim_end(), section),
    };
    std::fs::write(&path, new).with_context(|| format!("{}: cannot write", path.display()))?;
    println!("-> {}", path.display());
    Ok(())
}

/// The 1-minute load average (Linux), or "unknown".
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

fn tempfile_dir() -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("masksub-sub-cost-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
