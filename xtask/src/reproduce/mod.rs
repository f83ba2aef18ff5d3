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
    /// CPU threads per run [default: all cores / --jobs]
    #[arg(long)]
    threads: Option<usize>,
    /// Runs (arm x seed) at once. Small models scale poorly across threads, so on a small CPU
    /// single-threaded runs side by side train more images per second in all (BENCHMARKS.md,
    /// data-parallel scaling: one rank per core)
    #[arg(long, default_value_t = 1)]
    jobs: usize,
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

/// `--threads`, or the cores shared out among `--jobs` runs (None: masksub's own default).
fn threads_per_run(a: &Args) -> Option<usize> {
    a.threads.or_else(|| {
        (a.jobs > 1).then(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            (cores / a.jobs).max(1)
        })
    })
}

/// Run every (pair, seed, arm) not finished yet, `--jobs` at a time; the first failure is
/// returned once the runs already started have ended (their folders stay resumable).
fn run_all(bin: &Path, a: &Args, root: &Path, pairs: &[Pair]) -> Result<()> {
    let mut todo = Vec::new();
    for pair in pairs {
        for seed in 0..a.seeds {
            for arm in ARMS {
                if is_done(&result_dir(root, pair, arm, seed)) {
                    println!("{} {arm} seed {seed}: done before, kept", pair.name);
                } else {
                    todo.push((pair, arm, seed));
                }
            }
        }
    }
    todo.reverse(); // popped from the back: runs start in plan order
    let queue = std::sync::Mutex::new(todo);
    let failed = std::sync::Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..a.jobs.max(1) {
            s.spawn(|| loop {
                if failed.lock().map_or(true, |f| f.is_some()) {
                    return;
                }
                let Some((pair, arm, seed)) = queue.lock().ok().and_then(|mut q| q.pop()) else {
                    return;
                };
                if let Err(e) = run_arm(bin, a, root, pair, arm, seed) {
                    if let Ok(mut f) = failed.lock() {
                        f.get_or_insert(e);
                    }
                }
            });
        }
    });
    match failed.into_inner() {
        Ok(Some(e)) => Err(e),
        Ok(None) => Ok(()),
        Err(_) => bail!("a reproduce worker panicked"),
    }
}

/// The folder of a pair's second stage (fine-tune), beside the first stage's.
fn finetune_dir(stage1: &Path) -> PathBuf {
    let mut name = stage1.file_name().unwrap_or_default().to_os_string();
    name.push("-ft");
    stage1.with_file_name(name)
}

/// The folder the pair's result is read from: the last stage's.
fn result_dir(root: &Path, pair: &Pair, arm: &str, seed: u64) -> PathBuf {
    let d = arm_dir(root, pair, arm, seed);
    if pair.finetune.is_some() {
        finetune_dir(&d)
    } else {
        d
    }
}

/// One stage of one arm and seed: the recipe, and the weights it starts from.
struct Stage<'p> {
    recipe: &'p str,
    init: Option<PathBuf>,
}

/// Run (or continue) one stage of one arm of one seed; returns once its summary.json exists.
fn run_stage(
    bin: &Path,
    a: &Args,
    pair: &Pair,
    stage: &Stage,
    arm: &str,
    seed: u64,
    dir: &Path,
) -> Result<()> {
    let mut c = Command::new(bin);
    c.arg("train").arg("--quiet");
    if has_checkpoint(dir) {
        println!("  continuing {}", dir.display());
        c.arg("--resume").arg(dir);
    } else {
        std::fs::create_dir_all(dir.parent().context("arm folder has no parent")?)?;
        c.args(["--recipe", stage.recipe, "--seed", &seed.to_string()])
            .arg("--out")
            .arg(dir);
        if arm == "baseline" {
            c.args(["--sub", "none"]);
        }
        if let Some(d) = &a.data {
            c.args(["--data", d]);
        }
        if let Some(w) = &stage.init {
            c.arg("--checkpoint-path").arg(w);
        }
    }
    c.args(["--device", &a.device]);
    if let Some(t) = threads_per_run(a) {
        c.args(["--threads", &t.to_string()]);
    }
    let st = c.status().context("cannot start masksub")?;
    if !st.success() || !is_done(dir) {
        bail!(
            "{} {arm} seed {seed} ({}) failed ({st}); its folder {} is kept: rerun `cargo xtask reproduce` to continue",
            pair.name,
            stage.recipe,
            dir.display()
        );
    }
    Ok(())
}

/// Run (or continue) every stage of one arm of one seed that has not finished.
fn run_arm(bin: &Path, a: &Args, root: &Path, pair: &Pair, arm: &str, seed: u64) -> Result<()> {
    let dir = arm_dir(root, pair, arm, seed);
    let mut stages = vec![(
        Stage {
            recipe: pair.recipe,
            init: None,
        },
        dir.clone(),
    )];
    if let Some(ft) = pair.finetune {
        let init = Some(dir.join(crate::common::WEIGHTS_FILE));
        stages.push((Stage { recipe: ft, init }, finetune_dir(&dir)));
    }
    for (stage, d) in &stages {
        if is_done(d) {
            continue;
        }
        println!(
            "{} {arm} seed {seed} ({}) -> {}",
            pair.name,
            stage.recipe,
            d.display()
        );
        run_stage(bin, a, pair, stage, arm, seed, d)?;
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

/// Training images per epoch when a recipe does not cap them: Fashion-MNIST's train split at
/// CPU scale, ImageNet-1k's at paper scale.
fn default_train_images(scale: Scale) -> f64 {
    match scale {
        Scale::Cpu => 60_000.0,
        Scale::Paper => 1_281_167.0,
    }
}

/// What one recipe costs per seed: its summary line and (baseline, MaskSub) training FLOPs,
/// priced as 3 x forward FLOPs (forward + backward) per image seen.
fn recipe_cost(bin: &Path, scale: Scale, recipe: &str) -> Result<(String, f64, f64)> {
    let o = Command::new(bin)
        .args(["recipes", "--show", recipe])
        .output()
        .context("cannot run masksub recipes")?;
    if !o.status.success() {
        bail!(
            "recipe `{recipe}`: {}",
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
    let flops: Option<(f64, f64)> = text
        .lines()
        .find_map(|l| l.strip_prefix("# forward GFLOPs per image: main "))
        .and_then(|rest| {
            let (m, s) = rest.split_once(", sub ")?;
            Some((m.trim().parse().ok()?, s.trim().parse().ok()?))
        });
    let epochs: f64 = field("epochs").parse().unwrap_or(f64::NAN);
    let images = field("train_subset")
        .parse()
        .unwrap_or_else(|_| default_train_images(scale));
    let (main, sub) = flops.unwrap_or((f64::NAN, f64::NAN));
    let per_arm = |g: f64| 3.0 * g * 1e9 * images * epochs;
    let line = format!(
        "recipe {recipe} (model {}, {} epochs x {images:.0} images, batch {}, {main:.4} + {sub:.4} GFLOPs/img)",
        field("model"),
        field("epochs"),
        field("batch_size"),
    );
    Ok((line, per_arm(main), per_arm(main + sub)))
}

/// Print what the plan runs and what it is expected to cost.
fn describe_plan(bin: &Path, a: &Args, pairs: &[Pair]) -> Result<()> {
    println!(
        "plan: {} pair(s) x 2 arms x {} seed(s) at {:?} scale",
        pairs.len(),
        a.seeds,
        a.scale
    );
    let mut total = 0.0;
    for p in pairs {
        let mut cost = [0.0f64; 2];
        let mut lines = Vec::new();
        for recipe in std::iter::once(p.recipe).chain(p.finetune) {
            let (line, base, ms) =
                recipe_cost(bin, a.scale, recipe).with_context(|| format!("pair {}", p.name))?;
            lines.push(line);
            cost[0] += base;
            cost[1] += ms;
        }
        total += (cost[0] + cost[1]) * a.seeds as f64;
        println!("  {} — paper: {}", p.name, p.paper.setting);
        for l in lines {
            println!("    {l}");
        }
        println!(
            "    training compute per seed: baseline {:.3} PFLOP, MaskSub {:.3} PFLOP",
            cost[0] / 1e15,
            cost[1] / 1e15
        );
    }
    println!(
        "expected cost: {:.3} PFLOP in all = {:.1} h at a sustained 100 TFLOP/s ({:.1} h at 100 GFLOP/s)",
        total / 1e15,
        total / 1e14 / 3600.0,
        total / 1e11 / 3600.0
    );
    Ok(())
}

pub fn run(a: Args) -> Result<()> {
    if a.seeds == 0 || a.jobs == 0 {
        bail!("--seeds and --jobs must be positive");
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
    run_all(&bin, &a, &root, &pairs)?;
    let mut rows = Vec::new();
    let mut claims = Vec::new();
    for pair in &pairs {
        let read = |arm: &str| -> Result<Vec<RunResult>> {
            (0..a.seeds)
                .map(|s| results::read_run(&result_dir(&root, pair, arm, s)))
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
         Plots (main-model training loss and test top-1 per epoch, both arms): {}.\n\nThis invocation ran for {:.0} min \
         ({} run(s) at a time, {} thread(s) each; wall time and img/s are per run). {}\n",
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
        a.jobs,
        threads_per_run(&a).map_or("masksub's default".to_string(), |t| t.to_string()),
        machine_line()
    );
    let out = root.join("results.md");
    std::fs::write(&out, md).with_context(|| format!("{}: cannot write", out.display()))?;
    println!("-> {}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_two_stage_pair_is_read_from_its_fine_tune_folder() {
        let root = Path::new("/r");
        let deit = plan::PAPER[0];
        assert_eq!(deit.finetune, Some("deit3_vit_b_ft224"));
        assert_eq!(
            result_dir(root, &deit, "masksub", 2),
            Path::new("/r/deit3_vit_b_400ep/masksub-seed2-ft")
        );
        let vit = plan::CPU[0];
        assert_eq!(
            result_dir(root, &vit, "baseline", 0),
            Path::new("/r/vit_small_fmnist/baseline-seed0")
        );
    }

    #[test]
    fn every_pair_names_a_shipped_recipe_file() {
        let recipes = repo_root().join("recipes");
        for p in plan::CPU.iter().chain(plan::PAPER) {
            for r in std::iter::once(p.recipe).chain(p.finetune) {
                assert!(
                    recipes.join(format!("{r}.toml")).is_file(),
                    "{}: {r}",
                    p.name
                );
            }
        }
    }
}
