//! `cargo xtask reproduce`: the paper's comparison — each recipe trained as a baseline
//! (`sub = none`) and with MaskSub, over several seeds — and `reproduce/<date>/results.md` with
//! the paper's numbers beside the measured ones, plus PNG plots per pair.
//!
//! Resume-safe: every arm and seed has its own run folder; a finished one (summary.json) is
//! never rerun, an interrupted one (a checkpoint) continues with `masksub train --resume`.

mod plan;
mod plot;
mod results;

use crate::common::{build_masksub, machine_line, repo_root};
use anyhow::{bail, Context, Result};
use plan::{Pair, ARMS};
use results::RunResult;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

#[derive(Clone, Copy, Debug, clap::ValueEnum, PartialEq, Eq)]
pub enum Scale {
    /// Small models on the repository's Fashion-MNIST, on this machine's CPU.
    Cpu,
    /// The paper's recipes on ImageNet shards (`--data`), on GPUs (`--device`).
    Paper,
}

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, value_enum, default_value = "cpu")]
    scale: Scale,
    /// Only pairs whose name contains this
    #[arg(long)]
    only: Option<String>,
    #[arg(long, default_value_t = 3)]
    seeds: u64,
    /// Output folder [default: reproduce/<today>]; an existing one is continued
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Training data (required at paper scale: ImageNet shards, local or hf://)
    #[arg(long)]
    data: Option<String>,
    /// masksub --device (paper scale: e.g. cuda)
    #[arg(long, default_value = "cpu")]
    device: String,
    /// CPU threads per run [default: all cores]
    #[arg(long)]
    threads: Option<usize>,
    /// Print the plan and its expected cost, run nothing
    #[arg(long)]
    dry_run: bool,
}

fn arm_dir(root: &Path, pair: &Pair, arm: &str, seed: u64) -> PathBuf {
    root.join(pair.name).join(format!("{arm}-seed{seed}"))
}

fn is_done(dir: &Path) -> bool {
    dir.join("summary.json").exists()
}

fn has_checkpoint(dir: &Path) -> bool {
    dir.join("last.state.json").exists()
}

/// Run (or continue) one arm of one seed; returns once its summary.json exists.
fn run_arm(bin: &Path, a: &Args, pair: &Pair, arm: &str, seed: u64, dir: &Path) -> Result<()> {
    let mut c = Command::new(bin);
    c.arg("train").arg("--quiet");
    if has_checkpoint(dir) {
        println!("  continuing {}", dir.display());
        c.arg("--resume").arg(dir);
    } else {
        std::fs::create_dir_all(dir.parent().context("arm folder has no parent")?)?;
        c.args(["--recipe", pair.recipe, "--seed", &seed.to_string()])
            .arg("--out")
            .arg(dir);
        if arm == "baseline" {
            c.args(["--sub", "none"]);
        }
        if let Some(d) = &a.data {
            c.args(["--data", d]);
        }
    }
    c.args(["--device", &a.device]);
    if let Some(t) = a.threads {
        c.args(["--threads", &t.to_string()]);
    }
    let st = c.status().context("cannot start masksub")?;
    if !st.success() || !is_done(dir) {
        bail!(
            "{} {arm} seed {seed} failed ({st}); its folder {} is kept: rerun `cargo xtask reproduce` to continue",
            pair.name,
            dir.display()
        );
    }
    Ok(())
}

fn pairs(a: &Args) -> Result<Vec<Pair>> {
    let all = match a.scale {
        Scale::Cpu => plan::CPU,
        Scale::Paper => plan::PAPER,
    };
    let v: Vec<Pair> = all
        .iter()
        .filter(|p| a.only.as_deref().is_none_or(|o| p.name.contains(o)))
        .copied()
        .collect();
    if v.is_empty() {
        bail!(
            "--only matched no pair; pairs: {}",
            all.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(v)
}

/// Ask masksub what each recipe costs (epochs x images), so the plan says what it will take.
fn describe_plan(bin: &Path, a: &Args, pairs: &[Pair]) -> Result<()> {
    println!(
        "plan: {} pair(s) x 2 arms x {} seed(s) at {:?} scale",
        pairs.len(),
        a.seeds,
        a.scale
    );
    for p in pairs {
        let o = Command::new(bin)
            .args(["recipes", "--show", p.recipe])
            .output()
            .context("cannot run masksub recipes")?;
        if !o.status.success() {
            bail!(
                "recipe `{}` of pair {}: {}",
                p.recipe,
                p.name,
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        let text = String::from_utf8_lossy(&o.stdout);
        let field = |k: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("{k} = ")))
                .map(|l| l[k.len() + 3..].trim().trim_matches('"').to_string())
                .unwrap_or_else(|| "?".into())
        };
        println!(
            "  {}: recipe {} (model {}, {} epochs, batch {}) — paper: {}",
            p.name,
            p.recipe,
            field("model"),
            field("epochs"),
            field("batch_size"),
            p.paper.setting
        );
    }
    Ok(())
}

pub fn run(a: Args) -> Result<()> {
    if a.seeds == 0 {
        bail!("--seeds must be positive");
    }
    if a.scale == Scale::Paper && (a.data.is_none() || a.device == "cpu") {
        bail!("--scale paper needs --data <ImageNet shards> and a --device (e.g. cuda)");
    }
    let bin = build_masksub(&[])?;
    let pairs = pairs(&a)?;
    let root = a.dir.clone().unwrap_or_else(|| {
        repo_root()
            .join("reproduce")
            .join(chrono::Local::now().format("%Y-%m-%d").to_string())
    });
    describe_plan(&bin, &a, &pairs)?;
    if a.dry_run {
        return Ok(());
    }
    std::fs::create_dir_all(&root)?;
    let t0 = Instant::now();
    for pair in &pairs {
        for seed in 0..a.seeds {
            for arm in ARMS {
                let dir = arm_dir(&root, pair, arm, seed);
                if is_done(&dir) {
                    println!("{} {arm} seed {seed}: done before, kept", pair.name);
                    continue;
                }
                println!("{} {arm} seed {seed} -> {}", pair.name, dir.display());
                run_arm(&bin, &a, pair, arm, seed, &dir)?;
            }
        }
    }
    let mut rows = Vec::new();
    let mut claims = Vec::new();
    for pair in &pairs {
        let read = |arm: &str| -> Result<Vec<RunResult>> {
            (0..a.seeds)
                .map(|s| results::read_run(&arm_dir(&root, pair, arm, s)))
                .collect()
        };
        let (base, ms) = (read("baseline")?, read("masksub")?);
        let (row, claim) = results::pair_section(pair, &base, &ms);
        rows.push(row);
        claims.push(claim);
        let png = root.join(format!("{}.png", pair.name));
        plot::pair_plot(&png, pair.name, &base, &ms)?;
    }
    let md = format!(
        "# MaskSub reproduction ({:?} scale)\n\nWritten by `cargo xtask reproduce --scale {}{}` — not edited by hand. \
         Top-1 is the test accuracy after the last epoch, mean ± sample std over {} seed(s); the paper's numbers are \
         ImageNet-1k top-1 of the setting each pair stands for.\n\n{}\n{}\n\n## The paper's claims, checked\n\n{}\n\n\
         Plots (main-model training loss and test top-1 per epoch, both arms): {}.\n\nThis invocation ran for {:.0} min. {}\n",
        a.scale,
        match a.scale {
            Scale::Cpu => "cpu",
            Scale::Paper => "paper",
        },
        a.only.as_deref().map(|o| format!(" --only {o}")).unwrap_or_default(),
        a.seeds,
        results::TABLE_HEADER,
        rows.join("\n"),
        claims.join("\n"),
        pairs
            .iter()
            .map(|p| format!("[{0}.png]({0}.png)", p.name))
            .collect::<Vec<_>>()
            .join(", "),
        t0.elapsed().as_secs_f64() / 60.0,
        machine_line()
    );
    let out = root.join("results.md");
    std::fs::write(&out, md).with_context(|| format!("{}: cannot write", out.display()))?;
    println!("-> {}", out.display());
    Ok(())
}
