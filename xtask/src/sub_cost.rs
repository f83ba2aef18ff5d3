//! `cargo xtask sub-cost`: plain vs MaskSub training throughput, measured by running the release
//! `masksub train` binary alternately (so drifts in machine load hit both arms alike), and
//! recorded in BENCHMARKS.md with the machine, versions and date.

use crate::common::{
    build_masksub, machine_line, median, read_summary, scratch_dir, summary_f64, write_section,
};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

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
    summary_f64(&read_summary(out)?, "train_img_per_s")
}

/// The 1-minute load average (Linux), or "unknown".
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

pub fn run(a: Args) -> Result<()> {
    if a.rounds == 0 || a.models.is_empty() {
        bail!("--rounds must be positive and at least one --model given");
    }
    let bin = build_masksub(&[])?;
    let tmp = scratch_dir("sub-cost")?;
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
        let (mp, mm) = (median(plain), median(masked));
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
    let body = format!(
        "## MaskSub step cost (`cargo xtask sub-cost`)\n\n\
         Training throughput of the same model on the same real Fashion-MNIST images, one epoch of {} images per run, batch {}, {} threads, \
         {} alternating rounds, medians. Cost = plain img/s / MaskSub img/s (time of a MaskSub step relative to a plain one). \
         A ViT's sub pass drops half of the tokens; a CNN's sub pass zeroes pixel patches and runs at full size.\n\n\
         | model | plain img/s | MaskSub (r=0.5) img/s | cost |\n|---|---|---|---|\n{rows}\n\
         Per round (plain / MaskSub):\n{rounds}\n\
         Load average (1 min) {load_start} at the start, {} at the end.\n\n{}",
        a.images,
        a.batch_size,
        a.threads,
        a.rounds,
        load_average(),
        machine_line(),
    );
    let path = write_section(&a.file, "sub-cost", &body)?;
    println!("-> {}", path.display());
    Ok(())
}
