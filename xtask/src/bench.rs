//! `cargo xtask bench`: masksub's training step against PyTorch eager + timm on the same
//! machine, same thread count, same model config, recipe and MaskSub step, run alternately for
//! several rounds (so drifts in machine load hit both alike); medians and ratios go into the
//! "Training speed" section of BENCHMARKS.md.

use crate::common::{build_masksub, machine_line, median, repo_root, scratch_dir, write_section};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Timed steps per measurement (medians)
    #[arg(long, default_value_t = 5)]
    steps: usize,
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Only configurations whose model name contains this
    #[arg(long)]
    only: Option<String>,
    /// Python with torch and timm (tools/parity/requirements.txt)
    #[arg(long, default_value = "python3")]
    python: String,
    /// Markdown file to update.
    #[arg(long, default_value = "BENCHMARKS.md")]
    file: PathBuf,
}

/// (model, batch size): the configurations of issue 6.
const CONFIGS: [(&str, usize); 6] = [
    ("vit_fmnist_small", 128),
    ("vit_tiny_patch16_224", 8),
    ("vit_tiny_patch16_224", 32),
    ("deit3_small_patch16_224", 8),
    ("resnet18", 8),
    ("swin_tiny_patch4_window7_224", 8),
];

#[derive(Default)]
struct Arm {
    img_per_s: Vec<f64>,
    rss_mib: Vec<f64>,
}

fn json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: not written", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

fn field(v: &serde_json::Value, k: &str) -> Result<f64> {
    v[k].as_f64()
        .with_context(|| format!("bench report has no `{k}`"))
}

/// The flags both sides take: threads, steps, warm-up, where to write the JSON report.
fn timing_args<'c>(c: &'c mut Command, a: &Args, json_out: &Path) -> &'c mut Command {
    c.args(["--threads", &a.threads.to_string()])
        .args(["--steps", &a.steps.to_string()])
        .args(["--warmup", &a.warmup.to_string()])
        .arg("--json")
        .arg(json_out)
}

fn run_ok(c: &mut Command, what: &str) -> Result<()> {
    let o = c.output().with_context(|| format!("cannot start {what}"))?;
    if !o.status.success() {
        bail!("{what} failed: {}", String::from_utf8_lossy(&o.stderr));
    }
    Ok(())
}

pub fn run(a: Args) -> Result<()> {
    if a.rounds == 0 || a.steps == 0 {
        bail!("--rounds and --steps must be positive");
    }
    let bin = build_masksub(&[])?;
    let script = repo_root().join("bench/pytorch_step.py");
    let tmp = scratch_dir("bench")?;
    let torch_version = Command::new(&a.python)
        .args([
            "-c",
            "import torch, timm; print(torch.__version__, 'timm', timm.__version__)",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .with_context(|| {
            format!(
                "{}: torch and timm are needed (tools/parity/requirements.txt)",
                a.python
            )
        })?;
    let mut rows = Vec::new();
    for (model, batch) in CONFIGS {
        if a.only.as_deref().is_some_and(|o| !model.contains(o)) {
            continue;
        }
        let mut cells = Vec::new();
        let mut step_ms = [[0.0f64; 2]; 2]; // [impl][sub]
        for (si, sub) in ["none", "masking"].into_iter().enumerate() {
            let (mut ours, mut theirs) = (Arm::default(), Arm::default());
            for r in 0..a.rounds {
                let report = tmp.join(format!("{model}-{batch}-{sub}-{r}.json"));
                let mut ours_cmd = Command::new(&bin);
                ours_cmd
                    .args(["bench", "train", "--model", model, "--sub", sub])
                    .args(["--batch-size", &batch.to_string()]);
                run_ok(
                    timing_args(&mut ours_cmd, &a, &report),
                    "masksub bench train",
                )?;
                let m = json(&report)?;
                let torch_report = tmp.join(format!("{model}-{batch}-{sub}-{r}.torch.json"));
                let mut torch_cmd = Command::new(&a.python);
                torch_cmd.arg(&script).arg("--masksub-report").arg(&report);
                run_ok(
                    timing_args(&mut torch_cmd, &a, &torch_report),
                    "bench/pytorch_step.py",
                )?;
                let t = json(&torch_report)?;
                for (arm, v) in [(&mut ours, &m), (&mut theirs, &t)] {
                    arm.img_per_s.push(field(v, "img_per_s")?);
                    arm.rss_mib.push(field(v, "peak_rss_mib")?);
                }
                println!(
                    "{model} b{batch} {sub} round {}: masksub {:.2} img/s, pytorch {:.2} img/s",
                    r + 1,
                    ours.img_per_s[r],
                    theirs.img_per_s[r]
                );
            }
            let (mi, ti) = (median(&ours.img_per_s), median(&theirs.img_per_s));
            step_ms[0][si] = 1e3 * batch as f64 / mi;
            step_ms[1][si] = 1e3 * batch as f64 / ti;
            cells.push(format!(
                "| {model} | {batch} | {sub} | {mi:.2} | {ti:.2} | {:.2}x | {:.0} | {:.0} |",
                mi / ti,
                median(&ours.rss_mib),
                median(&theirs.rss_mib)
            ));
        }
        rows.extend(cells);
        rows.push(format!(
            "| {model} | {batch} | MaskSub cost (masking / none step time) | {:.2}x | {:.2}x | | | |",
            step_ms[0][1] / step_ms[0][0],
            step_ms[1][1] / step_ms[1][0]
        ));
    }
    let _ = std::fs::remove_dir_all(&tmp);
    if rows.is_empty() {
        bail!("--only matched no configuration");
    }
    let body = format!(
        "## Training speed vs PyTorch (`cargo xtask bench`)\n\n\
         One training step (AdamW, soft-target CE, smoothing 0.1; MaskSub r = 0.5 in the sub pass: ViT drops half the patch tokens, ResNet zeroes half of the 32 px patches, \
         Swin replaces half of the 8x8-token units by the mask token) \
         on synthetic N(0,1) batches, f32, CPU, {} threads for both; masksub = `masksub bench train`, PyTorch = `bench/pytorch_step.py` \
         (eager, {torch_version}), same model config (parameter counts checked equal). {} alternating rounds of {} timed steps after {} warm-up; \
         medians. Ratio = masksub img/s / PyTorch img/s (above 1: masksub is faster). Peak RSS of the whole process.\n\n\
         | model | batch | sub | masksub img/s | PyTorch img/s | ratio | masksub peak MiB | PyTorch peak MiB |\n\
         |---|---|---|---|---|---|---|---|\n{}\n\n{}",
        a.threads,
        a.rounds,
        a.steps,
        a.warmup,
        rows.join("\n"),
        machine_line()
    );
    let path = write_section(&a.file, "bench", &body)?;
    println!("-> {}", path.display());
    Ok(())
}
