//! `cargo xtask bench-data`: the data pipeline (decode + RandomResizedCrop 224 + flip +
//! normalize) of masksub vs PIL + torchvision on the same real JPEGs (the foolbox photos:
//! progressive as shipped, and re-encoded as baseline JPEG like most ImageNet files), 1 and 2
//! threads, alternating rounds, medians; writes the "Data pipeline" section of BENCHMARKS.md.

use crate::common::{
    build_masksub, load_average, machine_line, median, repo_root, scratch_dir, write_section,
};
use anyhow::{bail, Context, Result};
use clap::Args as ClapArgs;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Python with torch, torchvision and Pillow
    #[arg(long, default_value = "python3")]
    python: String,
    /// Images per measurement
    #[arg(long, default_value_t = 1200)]
    count: usize,
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    #[arg(long, default_value = "BENCHMARKS.md")]
    file: PathBuf,
}

fn run(cmd: &mut Command) -> Result<()> {
    let st = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed");
    }
    Ok(())
}

/// img/s per thread count from a bench JSON (masksub's list, or PIL's {"rows": [...]}).
fn rates(path: &Path) -> Result<Vec<(u64, f64)>> {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let rows = v.get("rows").unwrap_or(&v);
    rows.as_array()
        .context("bench JSON is not a list")?
        .iter()
        .map(|r| {
            Ok((
                r["threads"].as_u64().context("threads")?,
                r["img_per_s"].as_f64().context("img_per_s")?,
            ))
        })
        .collect()
}

/// `count` copies of the photos in `dir` (hard links) as one ImageFolder class, written as
/// WebDataset shards by `masksub data convert` (JPEG bytes kept), for the loader measurement.
fn shards_of(bin: &Path, dir: &Path, count: usize, out: &Path) -> Result<PathBuf> {
    let class = out.join("folder/train/0");
    std::fs::create_dir_all(&class)?;
    let mut photos: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    photos.sort();
    if photos.is_empty() {
        bail!("{}: no photos", dir.display());
    }
    for i in 0..count {
        let src = &photos[i % photos.len()];
        let dst = class.join(format!("{i:06}.jpg"));
        if std::fs::hard_link(src, &dst).is_err() {
            std::fs::copy(src, &dst)?;
        }
    }
    let shards = out.join("shards");
    run(Command::new(bin)
        .args(["data", "convert", "--splits", "train", "--format", "keep"])
        .args(["--samples-per-shard", "500", "--input"])
        .arg(out.join("folder"))
        .arg("--out")
        .arg(&shards)
        .stdout(std::process::Stdio::null()))?;
    Ok(shards)
}

/// Appends each (threads, rate) to the list of its thread count (1 or 2).
fn push(into: &mut [Vec<f64>], rates: Vec<(u64, f64)>) {
    for (t, v) in rates {
        if let Some(list) = into.get_mut(t as usize - 1) {
            list.push(v);
        }
    }
}

/// `min-max` of the rounds' rates.
fn spread(v: &[f64]) -> String {
    let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    format!("{lo:.0}-{hi:.0}")
}

pub fn run_bench(a: Args) -> Result<()> {
    if a.rounds == 0 {
        bail!("--rounds must be positive");
    }
    let root = repo_root();
    let photos = root.join("target/foolbox/x/foolbox/data");
    if !photos.join("imagenet_00_243.jpg").is_file() {
        bail!(
            "{} is missing: run `cargo test --release -p masksub-cli --test real_data` once (it fetches foolbox==3.3.4)",
            photos.display()
        );
    }
    let bin = build_masksub(&[])?;
    let script = root.join("tools/data/bench_pil.py");
    let load_before = load_average();
    let work = scratch_dir("bench-data")?;
    let prog = work.join("progressive");
    let base = work.join("baseline");
    std::fs::create_dir_all(&prog)?;
    for e in std::fs::read_dir(&photos)? {
        let p = e?.path();
        let name = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if name.starts_with("imagenet_") && name.ends_with(".jpg") {
            std::fs::copy(&p, prog.join(&name))?;
        }
    }
    run(Command::new(&a.python)
        .arg(&script)
        .arg("--baseline")
        .arg(&prog)
        .arg(&base))?;
    let count = a.count.to_string();
    let mut table = String::new();
    let mut py_versions = String::new();
    for (label, dir) in [
        ("progressive (as shipped)", &prog),
        ("baseline (re-encoded q90)", &base),
    ] {
        let name = dir.file_name().unwrap_or_default().to_string_lossy();
        let shards = shards_of(&bin, dir, a.count, &work.join(format!("{name}-loader")))?;
        // Rates per thread count (1, 2), one entry per round.
        let mut ours: Vec<Vec<f64>> = vec![vec![]; 2];
        let (mut loader, mut theirs) = (ours.clone(), ours.clone());
        // `masksub bench data` on `--images DIR` or `--shards DIR`: its rate per thread count.
        let masksub = |source: &str, path: &Path, json: PathBuf| -> Result<Vec<(u64, f64)>> {
            run(Command::new(&bin)
                .args([
                    "bench",
                    "data",
                    "--threads",
                    "1,2",
                    "--count",
                    &count,
                    source,
                ])
                .arg(path)
                .arg("--json")
                .arg(&json))?;
            rates(&json)
        };
        for r in 0..a.rounds {
            push(
                &mut loader,
                masksub("--shards", &shards, work.join(format!("loader-{r}.json")))?,
            );
            push(
                &mut ours,
                masksub("--images", dir, work.join(format!("rs-{r}.json")))?,
            );
            let jp = work.join(format!("py-{r}.json"));
            run(Command::new(&a.python)
                .arg(&script)
                .arg(dir)
                .arg(&count)
                .arg("1,2")
                .arg(&jp))?;
            push(&mut theirs, rates(&jp)?);
            if py_versions.is_empty() {
                let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&jp)?)?;
                py_versions = format!(
                    "Pillow {}, torch {}, torchvision {}",
                    v["versions"]["pillow"].as_str().unwrap_or("?"),
                    v["versions"]["torch"].as_str().unwrap_or("?"),
                    v["versions"]["torchvision"].as_str().unwrap_or("?")
                );
            }
        }
        for t in 0..2 {
            let (m, l, p) = (median(&ours[t]), median(&loader[t]), median(&theirs[t]));
            table.push_str(&format!(
                "| {label} | {} | {m:.1} | {} | {l:.1} | {} | {p:.1} | {} | {:.2}x |\n",
                t + 1,
                spread(&ours[t]),
                spread(&loader[t]),
                spread(&theirs[t]),
                m / p
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    let body = format!(
        "## Data pipeline (`cargo xtask bench-data`)\n\n\
         Decode + RandomResizedCrop 224 (bilinear, scale 0.08-1) + horizontal flip + normalize to CHW f32, images/s on the 20 ImageNet \
         photos of foolbox 3.3.4 (512x512) repeated, {} images per measurement, {} alternating rounds, medians. masksub: `masksub bench data` \
         (vendored zune-jpeg with its progressive-decoding patches, AVX2 resampling; its own threads, 2 untimed images each); PIL: tools/data/bench_pil.py \
         (torchvision transforms, one process per thread, torch 1 thread each, 2 untimed images each). Loader: the same images as WebDataset shards \
         through masksub's whole training loader (`masksub bench data --shards`: tar reading, shuffle buffer, one worker per thread, batches of 64 \
         as tensors, timed from the epoch's start), for what training sees. The rounds' range is given beside each median; ratio = masksub / PIL.\n\n\
         | JPEGs | threads | masksub img/s | range | masksub loader img/s | range | PIL+torchvision img/s | range | ratio |\n|---|---|---|---|---|---|---|---|---|\n{table}\n\
         Load average {load_before} before / {} after. {py_versions}. {}",
        a.count,
        a.rounds,
        load_average(),
        machine_line(),
    );
    let path = write_section(&a.file, "bench-data", &body)?;
    print!("{table}");
    println!("-> {}", path.display());
    Ok(())
}
