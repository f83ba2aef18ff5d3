//! `masksub bench data`: decode + RandomResizedCrop + flip + normalize throughput on real
//! images, per thread count, written as JSON for `cargo xtask bench-data`; with `--shards`,
//! the whole training loader (tar reading, shuffle buffer, workers, batches as tensors).

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::Args;
use masksub_data::decode::{decode_rgb_into, RgbImage};
use masksub_data::transforms::{train_transform, ImageAugConfig, TrainInterpolation};
use masksub_data::{HubOptions, StreamConfig, StreamDataset, StreamLoader};
use rand::SeedableRng;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Untimed images per thread before the measurement.
const WARMUP: usize = 2;

#[derive(Args, Debug)]
pub struct DataBenchArgs {
    /// Folder of .jpg/.png files to read (all of them, repeated)
    #[arg(long, required_unless_present = "shards", conflicts_with = "shards")]
    images: Option<PathBuf>,
    /// Instead: one training epoch of these shards (folder, pattern or hf://) through the
    /// streaming loader, with as many workers as threads
    #[arg(long)]
    shards: Option<String>,
    /// Batch size of the `--shards` loader
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Images processed per measurement
    #[arg(long, default_value_t = 2000)]
    count: usize,
    /// Comma-separated thread counts
    #[arg(long, default_value = "1,2")]
    threads: String,
    #[arg(long, default_value_t = 224)]
    size: usize,
    /// Write the results here as JSON
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Serialize)]
struct Row {
    threads: usize,
    images: usize,
    seconds: f64,
    img_per_s: f64,
    /// Share of thread time spent decoding (not measured for `--shards`).
    #[serde(skip_serializing_if = "Option::is_none")]
    decode_share: Option<f64>,
}

/// Comma-separated positive thread counts.
fn thread_counts(spec: &str) -> Result<Vec<usize>> {
    spec.split(',')
        .map(|t| {
            let n: usize = t
                .trim()
                .parse()
                .with_context(|| format!("--threads: `{t}`"))?;
            if n == 0 {
                bail!("--threads: 0 is not a thread count");
            }
            Ok(n)
        })
        .collect()
}

fn write_json(rows: &[Row], path: Option<&PathBuf>) -> Result<()> {
    if let Some(p) = path {
        std::fs::write(p, serde_json::to_string_pretty(rows)?)
            .with_context(|| format!("{}: cannot write", p.display()))?;
    }
    Ok(())
}

pub fn run(a: DataBenchArgs) -> Result<()> {
    if a.count == 0 {
        bail!("--count must be positive");
    }
    // Bilinear RRC, like torchvision's RandomResizedCrop default on the Python side.
    let cfg = ImageAugConfig {
        img_size: a.size,
        interpolation: TrainInterpolation::Bilinear,
        ..ImageAugConfig::default()
    };
    if let Some(spec) = &a.shards {
        return run_loader(&a, spec, cfg);
    }
    let images = a.images.clone().unwrap_or_default();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&images)
        .with_context(|| format!("{}: cannot read", images.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "jpg" || e == "jpeg" || e == "png")
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{}: no .jpg/.png files", images.display());
    }
    let blobs: Vec<(Vec<u8>, String)> = files
        .iter()
        .map(|p| {
            let ext = p
                .extension()
                .map(|e| e.to_string_lossy().into_owned())
                .unwrap_or_default();
            std::fs::read(p)
                .map(|b| (b, ext))
                .with_context(|| format!("{}", p.display()))
        })
        .collect::<Result<_>>()?;
    let mut rows = Vec::new();
    for threads in thread_counts(&a.threads)? {
        let per = a.count.div_ceil(threads);
        let mut decode_total = 0f64;
        // Each thread first handles WARMUP images untimed (first-touch of its buffers; the
        // Python side warms its workers the same way), then all start together.
        let start = std::sync::Barrier::new(threads + 1);
        let mut t0 = Instant::now();
        std::thread::scope(|s| -> Result<()> {
            let hs: Vec<_> = (0..threads)
                .map(|k| {
                    let (blobs, cfg, start) = (&blobs, &cfg, &start);
                    s.spawn(move || -> Result<f64> {
                        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(k as u64);
                        let mut out = vec![0f32; cfg.sample_len()];
                        let mut img = RgbImage::default();
                        let mut one = |i: usize, decode_secs: &mut f64| -> Result<()> {
                            let (b, ext) = &blobs[(k * per + i) % blobs.len()];
                            let t = Instant::now();
                            decode_rgb_into(b, ext, &mut img).map_err(anyhow::Error::msg)?;
                            *decode_secs += t.elapsed().as_secs_f64();
                            train_transform(&img, cfg, None, &mut rng, &mut out);
                            Ok(())
                        };
                        let mut decode_secs = 0f64;
                        let warm = (0..WARMUP).try_for_each(|i| one(i, &mut decode_secs));
                        start.wait();
                        warm?;
                        decode_secs = 0.0;
                        for i in 0..per {
                            one(i, &mut decode_secs)?;
                        }
                        Ok(decode_secs)
                    })
                })
                .collect();
            start.wait();
            t0 = Instant::now();
            for h in hs {
                decode_total += h
                    .join()
                    .map_err(|_| anyhow::anyhow!("bench thread panicked"))??;
            }
            Ok(())
        })?;
        let secs = t0.elapsed().as_secs_f64();
        let n = per * threads;
        let decode_share = decode_total / (secs * threads as f64);
        let row = Row {
            threads,
            images: n,
            seconds: secs,
            img_per_s: n as f64 / secs,
            decode_share: Some(decode_share),
        };
        println!(
            "{threads} thread(s): {:.1} img/s ({n} images, {secs:.2}s, decoding {:.0}% of thread time)",
            row.img_per_s,
            100.0 * decode_share
        );
        rows.push(row);
    }
    write_json(&rows, a.json.as_ref())
}

/// One training epoch (at most `--count` images) of `spec` through [`StreamLoader`] per
/// thread count: the same RRC + flip + normalize, plus tar reading, the shuffle buffer and
/// batch assembly into tensors.
fn run_loader(a: &DataBenchArgs, spec: &str, aug: ImageAugConfig) -> Result<()> {
    let mut ds = StreamDataset::from_shards(spec, "train", &HubOptions::default())?;
    ds.num_samples = ds.num_samples.min(a.count);
    let num_classes = ds.num_classes.unwrap_or(1000);
    let ds = Arc::new(ds);
    let mut rows = Vec::new();
    for threads in thread_counts(&a.threads)? {
        let cfg = StreamConfig {
            batch_size: a.batch_size,
            workers: threads,
            shuffle_buffer: 1024,
            seed: 0,
            rank: 0,
            world_size: 1,
            strict: false,
            train: true,
            repeats: 1,
            aug: aug.clone(),
            mixup: None,
            num_classes,
        };
        let loader = StreamLoader::new(Arc::clone(&ds), cfg, Device::Cpu)?;
        let t0 = Instant::now();
        let mut n = 0;
        for b in loader.epoch(0) {
            n += b?.labels.dims1()?;
        }
        let secs = t0.elapsed().as_secs_f64();
        if n == 0 {
            bail!(
                "{spec}: fewer than --batch-size {} training samples",
                a.batch_size
            );
        }
        println!(
            "{threads} worker(s): {:.1} img/s ({n} images in batches of {}, {secs:.2}s)",
            n as f64 / secs,
            a.batch_size
        );
        rows.push(Row {
            threads,
            images: n,
            seconds: secs,
            img_per_s: n as f64 / secs,
            decode_share: None,
        });
    }
    write_json(&rows, a.json.as_ref())
}
