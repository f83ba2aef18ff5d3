//! `cargo xtask scaling`: data-parallel throughput at 1 and 2 MPI ranks (one thread each) on
//! this machine, with the time the gradient all-reduce takes per step and its share of the step;
//! written to the "Data-parallel scaling" section of BENCHMARKS.md.

use crate::common::{
    build_masksub, machine_line, median, read_summary, repo_root, scratch_dir, summary_f64,
    write_section,
};
use anyhow::{bail, Context, Result};
use masksub_data::idx::{read_idx_images, read_idx_labels, IMAGES_MAGIC, LABELS_MAGIC};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(clap::Args)]
pub struct Args {
    /// Alternating rounds (each runs 1 rank and 2 ranks once per configuration).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Markdown file to update.
    #[arg(long, default_value = "BENCHMARKS.md")]
    file: PathBuf,
}

/// One measured configuration.
struct Case {
    model: &'static str,
    /// Fashion-MNIST upsampled to this side (None: the 28 px original).
    side: Option<usize>,
    train_images: usize,
    batch_size: usize,
}

const CASES: [Case; 2] = [
    Case {
        model: "vit_fmnist_small",
        side: None,
        train_images: 3200,
        batch_size: 128,
    },
    Case {
        model: "vit_tiny_patch16_224",
        side: Some(224),
        train_images: 160,
        batch_size: 16,
    },
];

/// Measured numbers of one run.
struct Run {
    img_per_s: f64,
    comm_ms_per_step: f64,
    comm_share: f64,
}

fn write_idx(path: &Path, magic: u32, dims: &[usize], data: &[u8]) -> Result<()> {
    let mut bytes = magic.to_be_bytes().to_vec();
    for d in dims {
        bytes.extend_from_slice(&(*d as u32).to_be_bytes());
    }
    bytes.extend_from_slice(data);
    std::fs::write(path, bytes).with_context(|| format!("{}: cannot write", path.display()))
}

/// The first `n_train` / `n_test` Fashion-MNIST images upsampled (nearest) to `side` px, as an
/// IDX folder the trainer reads like the original.
fn upsampled_fmnist(dir: &Path, side: usize, n_train: usize, n_test: usize) -> Result<PathBuf> {
    let src = repo_root().join("assets/fashion-mnist");
    let out = dir.join(format!("fmnist-{side}"));
    std::fs::create_dir_all(&out)?;
    for (split, n) in [("train", n_train), ("t10k", n_test)] {
        let imgs = read_idx_images(&src.join(format!("{split}-images-idx3-ubyte.gz")))?;
        let labels = read_idx_labels(&src.join(format!("{split}-labels-idx1-ubyte.gz")))?;
        let n = n.min(imgs.count);
        let (h, w) = (imgs.rows, imgs.cols);
        let mut px = Vec::with_capacity(n * side * side);
        for i in 0..n {
            let img = &imgs.pixels[i * h * w..(i + 1) * h * w];
            for y in 0..side {
                let row = &img[(y * h / side) * w..];
                px.extend((0..side).map(|x| row[x * w / side]));
            }
        }
        write_idx(
            &out.join(format!("{split}-images-idx3-ubyte")),
            IMAGES_MAGIC,
            &[n, side, side],
            &px,
        )?;
        write_idx(
            &out.join(format!("{split}-labels-idx1-ubyte")),
            LABELS_MAGIC,
            &[n],
            &labels[..n],
        )?;
    }
    Ok(out)
}

fn run_case(bin: &Path, case: &Case, data: &Path, ranks: usize, out: &Path) -> Result<Run> {
    let mut c = if ranks == 1 {
        Command::new(bin)
    } else {
        let mut c = Command::new("mpirun");
        c.args(["--allow-run-as-root", "-np", &ranks.to_string()])
            .args(["--bind-to", "core", "--mca", "btl", "self,vader,tcp"])
            .arg(bin);
        c
    };
    c.args(["train", "--quiet", "--epochs", "1", "--warmup-epochs", "0"])
        .args(["--model", case.model, "--sub", "masking", "--threads", "1"])
        .args(["--train-subset", &case.train_images.to_string()])
        .args(["--batch-size", &case.batch_size.to_string()])
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out);
    let o = c
        .output()
        .context("cannot start masksub (is mpirun installed?)")?;
    if !o.status.success() {
        bail!(
            "{} at {ranks} rank(s) failed: {}",
            case.model,
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let s = read_summary(out)?;
    let steps = summary_f64(&s, "steps")?.max(1.0);
    let comm = summary_f64(&s, "train_comm_seconds")?;
    Ok(Run {
        img_per_s: summary_f64(&s, "train_img_per_s")?,
        comm_ms_per_step: 1e3 * comm / steps,
        comm_share: comm / summary_f64(&s, "train_seconds")?.max(1e-9),
    })
}

pub fn run(a: Args) -> Result<()> {
    if a.rounds == 0 {
        bail!("--rounds must be positive");
    }
    let bin = build_masksub(&["mpi"])?;
    let tmp = scratch_dir("scaling")?;
    let mut rows = Vec::new();
    for case in &CASES {
        let data = match case.side {
            None => repo_root().join("assets/fashion-mnist"),
            Some(side) => upsampled_fmnist(&tmp, side, case.train_images, 32)?,
        };
        let (mut one, mut two) = (Vec::new(), Vec::new());
        for r in 0..a.rounds {
            for (ranks, acc) in [(1usize, &mut one), (2, &mut two)] {
                let out = tmp.join(format!("{}-{ranks}-{r}", case.model));
                let run = run_case(&bin, case, &data, ranks, &out)?;
                println!(
                    "{} round {}: {ranks} rank(s) {:.1} img/s, all-reduce {:.1} ms/step ({:.1}%)",
                    case.model,
                    r + 1,
                    run.img_per_s,
                    run.comm_ms_per_step,
                    100.0 * run.comm_share
                );
                acc.push(run);
            }
        }
        let med = |v: &[Run], f: fn(&Run) -> f64| median(&v.iter().map(f).collect::<Vec<_>>());
        let (i1, i2) = (med(&one, |r| r.img_per_s), med(&two, |r| r.img_per_s));
        rows.push(format!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.2}x | {:.1} | {:.1}% |",
            case.model,
            case.side.unwrap_or(28),
            case.batch_size,
            i1,
            i2,
            i2 / i1,
            med(&two, |r| r.comm_ms_per_step),
            100.0 * med(&two, |r| r.comm_share),
        ));
    }
    let _ = std::fs::remove_dir_all(&tmp);
    let body = format!(
        "## Data-parallel scaling (`cargo xtask scaling`)\n\n\
         MaskSub training (r = 0.5) of one epoch over real Fashion-MNIST images (nearest-upsampled for 224 px), \
         the same global batch at 1 process and at 2 MPI ranks (`mpirun -np 2`, Open MPI, shared memory), one thread per rank, \
         {} alternating rounds, medians. All-reduce = time per step in the gradient/loss collectives at 2 ranks \
         (it includes waiting for the slower rank), share = its part of the training time.\n\n\
         | model | px | global batch | 1 rank img/s | 2 ranks img/s | speed-up | all-reduce ms/step | share |\n\
         |---|---|---|---|---|---|---|---|\n{}\n\n{}",
        a.rounds,
        rows.join("\n"),
        machine_line()
    );
    let path = write_section(&a.file, "scaling", &body)?;
    println!("-> {}", path.display());
    Ok(())
}
