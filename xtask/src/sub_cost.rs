//! `cargo xtask sub-cost`: plain vs MaskSub training throughput, measured by running the release
//! `masksub train` binary alternately (so drifts in machine load hit both arms alike), and
//! recorded in BENCHMARKS.md with the machine, versions and date.

use crate::common::{
    build_masksub, load_average, machine_line, median, read_summary, scratch_dir, summary_f64,
    write_section,
};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

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
    summary_f64(&read_summary(out)?, "train_img_per_s")
}

/// The default model keeps the original section name; every other model gets its own section,
/// so measuring one family never erases another's.
fn section_name(model: &str) -> String {
    if model == "vit_fmnist_small" {
        "sub-cost".into()
    } else {
        format!("sub-cost {model}")
    }
}

pub fn run(a: Args) -> Result<()> {
    if a.rounds == 0 {
        bail!("--rounds must be positive");
    }
    let bin = build_masksub(&[])?;
    let load_before = load_average();
    let tmp = scratch_dir("sub-cost")?;
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
    let (mp, mm) = (median(&plain), median(&masked));
    let body = format!(
        "## MaskSub step cost: {} (`cargo xtask sub-cost --model {}`)\n\n\
         Training throughput of the same model on the same real Fashion-MNIST images, one epoch of {} images per run, batch {}, {} threads, \
         {} alternating rounds, medians. Cost = plain img/s / MaskSub img/s (time of a MaskSub step relative to a plain one).\n\n\
         | model | plain img/s | MaskSub (r=0.5) img/s | cost |\n|---|---|---|---|\n| {} | {:.1} | {:.1} | {:.2}x |\n\n\
         Per round (plain / MaskSub): {}\n\nLoad average {} before / {} after. {}",
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
        load_before,
        load_average(),
        machine_line(),
    );
    let path = write_section(&a.file, &section_name(&a.model), &body)?;
    println!(
        "plain {mp:.1} img/s, MaskSub {mm:.1} img/s, cost {:.2}x -> {}",
        mp / mm,
        path.display()
    );
    Ok(())
}
