//! `cargo xtask sub-cost`: plain vs MaskSub training throughput, measured by running the release
//! `masksub train` binary alternately (so drifts in machine load hit both arms alike), and
//! recorded in BENCHMARKS.md with the machine, versions and date.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The default model's section keeps the original markers; every other model gets its own
/// section (markers carry the model name), so measuring one family never erases another's.
const DEFAULT_MODEL: &str = "vit_fmnist_small";

fn markers(model: &str) -> (String, String) {
    let tag = if model == DEFAULT_MODEL {
        String::new()
    } else {
        format!(" {model}")
    };
    (
        format!("<!-- xtask sub-cost{tag}: begin (generated, do not edit) -->"),
        format!("<!-- xtask sub-cost{tag}: end -->"),
    )
}

#[derive(clap::Args)]
pub struct Args {
    /// Registry model to measure.
    #[arg(long, default_value = "vit_fmnist_small")]
    model: String,
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

fn run_arm(bin: &Path, a: &Args, sub: &str, out: &Path) -> Result<f64> {
    let status = Command::new(bin)
        .args(["train", "--quiet", "--epochs", "1", "--warmup-epochs", "0"])
        .args(["--model", &a.model, "--sub", sub])
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
        bail!("masksub train --sub {sub} failed ({status})");
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

/// 1-minute load average (Linux), so a section says whether the machine was shared.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
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
    if a.rounds == 0 {
        bail!("--rounds must be positive");
    }
    let root = repo_root();
    let load_before = load_average();
    let st = Command::new("cargo")
        .current_dir(&root)
        .args(["build", "--release", "-p", "masksub-cli"])
        .status()?;
    if !st.success() {
        bail!("cargo build --release -p masksub-cli failed");
    }
    let bin = root.join("target/release/masksub");
    let tmp = tempfile_dir()?;
    let (mut plain, mut masked) = (Vec::new(), Vec::new());
    for r in 0..a.rounds {
        plain.push(run_arm(&bin, &a, "none", &tmp.join(format!("none-{r}")))?);
        masked.push(run_arm(
            &bin,
            &a,
            "masking",
            &tmp.join(format!("masking-{r}")),
        )?);
        println!(
            "round {}: none {:.1} img/s, masking {:.1} img/s",
            r + 1,
            plain[r],
            masked[r]
        );
    }
    let _ = std::fs::remove_dir_all(&tmp);
    let (mp, mm) = (median(&mut plain.clone()), median(&mut masked.clone()));
    let (begin, end) = markers(&a.model);
    let section = format!(
        "{begin}\n## MaskSub step cost: {} (`cargo xtask sub-cost --model {}`)\n\n\
         Training throughput of the same model on the same real Fashion-MNIST images, one epoch of {} images per run, batch {}, {} threads, \
         {} alternating rounds, medians. Cost = plain img/s / MaskSub img/s (time of a MaskSub step relative to a plain one).\n\n\
         | model | plain img/s | MaskSub (r=0.5) img/s | cost |\n|---|---|---|---|\n| {} | {:.1} | {:.1} | {:.2}x |\n\n\
         Per round (plain / MaskSub): {}\n\n\
         Machine: {} ({} cores visible, load average {} before / {} after), {}; masksub {}; date {}.\n{end}\n",
        a.model,
        a.model,
        a.images,
        a.batch_size,
        a.threads,
        a.rounds,
        a.model,
        mp,
        mm,
        mp / mm,
        plain.iter().zip(&masked).map(|(p, m)| format!("{p:.1} / {m:.1}")).collect::<Vec<_>>().join(", "),
        cpu_model(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        load_before,
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
    let new = match (old.find(&begin), old.find(&end)) {
        (Some(b), Some(e)) if e > b => format!(
            "{}{}{}",
            &old[..b],
            section,
            old[e + end.len()..].trim_start_matches('\n')
        ),
        _ => format!("{}\n{}", old.trim_end(), section),
    };
    std::fs::write(&path, new).with_context(|| format!("{}: cannot write", path.display()))?;
    println!(
        "plain {mp:.1} img/s, MaskSub {mm:.1} img/s, cost {:.2}x -> {}",
        mp / mm,
        path.display()
    );
    Ok(())
}

fn tempfile_dir() -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("masksub-sub-cost-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
