//! `masksub data convert` (IDX or ImageFolder -> WebDataset shards) and `masksub data inspect`.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use masksub_data::decode::{decode_rgb, RgbImage};
use masksub_data::imagefolder::ImageFolder;
use masksub_data::wds::{split_key, SampleReader};
use masksub_data::writer::{ShardImageFormat, ShardWriter};
use masksub_data::{HubOptions, InMemoryDataset, Split, StreamDataset};
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Write WebDataset shards from IDX files or an ImageFolder.
    Convert(ConvertArgs),
    /// Print a shard set's sample count, classes and a few keys.
    Inspect(InspectArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum OutFormat {
    Jpg,
    Png,
    /// Copy an ImageFolder's files unchanged (IDX input is written as PNG).
    Keep,
}

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// An IDX folder (train/t10k files) or an ImageFolder (class folders, or <split>/class)
    #[arg(long)]
    input: PathBuf,
    /// Output folder for the shards and _info.json
    #[arg(long)]
    out: PathBuf,
    /// Split(s) to convert: train, validation (IDX: train and test are read as train/validation)
    #[arg(long, default_value = "train,validation")]
    splits: String,
    #[arg(long, default_value_t = 1000)]
    samples_per_shard: usize,
    #[arg(long, value_enum, default_value = "keep")]
    format: OutFormat,
    /// JPEG quality
    #[arg(long, default_value_t = 95)]
    quality: u8,
    /// Shard file name prefix
    #[arg(long, default_value = "data")]
    prefix: String,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Shards: folder, brace pattern, .tar file or hf://datasets/owner/name
    data: String,
    #[arg(long, default_value = "train")]
    split: String,
    /// Keys to list
    #[arg(long, default_value_t = 5)]
    keys: usize,
    /// Use only the hub cache
    #[arg(long)]
    offline: bool,
}

pub fn run(cmd: DataCommand) -> Result<()> {
    match cmd {
        DataCommand::Convert(a) => convert(a),
        DataCommand::Inspect(a) => inspect(a),
    }
}

fn gray_to_rgb(px: &[u8], w: usize, h: usize) -> RgbImage {
    let data = px.iter().flat_map(|&v| [v, v, v]).collect();
    RgbImage {
        width: w,
        height: h,
        data,
    }
}

fn convert(a: ConvertArgs) -> Result<()> {
    if !(1..=100).contains(&a.quality) {
        bail!("--quality {} is not in 1..=100", a.quality);
    }
    let format = match a.format {
        OutFormat::Jpg => ShardImageFormat::Jpeg(a.quality),
        OutFormat::Png | OutFormat::Keep => ShardImageFormat::Png,
    };
    let is_idx = std::fs::read_dir(&a.input)
        .with_context(|| format!("{}: cannot read input folder", a.input.display()))?
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().contains("-ubyte"));
    let splits: Vec<&str> = a
        .splits
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    // An ImageFolder laid out as <split>/<class>/ may have only some of the splits.
    let split_dirs = !is_idx && splits.iter().any(|s| a.input.join(s).is_dir());
    for split in splits {
        if split_dirs && !a.input.join(split).is_dir() {
            println!(
                "{split}: no `{split}/` folder in {}, skipped",
                a.input.display()
            );
            continue;
        }
        let mut w = ShardWriter::new(&a.out, &a.prefix, split, a.samples_per_shard, format)?;
        let classes = if is_idx {
            let s = match split {
                "train" => Split::Train,
                "validation" | "val" | "test" => Split::Test,
                other => bail!("--splits: IDX data has train and validation, not `{other}`"),
            };
            let ds = InMemoryDataset::from_idx_dir(&a.input, s)?;
            if ds.channels != 1 {
                bail!(
                    "{}: only 1-channel IDX images are supported",
                    a.input.display()
                );
            }
            for i in 0..ds.len() {
                let img = gray_to_rgb(ds.image(i), ds.width, ds.height);
                w.write(&format!("{i:08}"), &img, ds.labels[i])?;
            }
            (0..ds.num_classes).map(|c| c.to_string()).collect()
        } else {
            let f = ImageFolder::open(&a.input, split)?;
            for (i, (path, label)) in f.files.iter().enumerate() {
                let bytes = std::fs::read(path)
                    .with_context(|| format!("{}: cannot read", path.display()))?;
                let stem = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let (base, ext) = split_key(&stem)
                    .map(|(k, e)| (k.to_string(), e))
                    .unwrap_or((stem.clone(), String::new()));
                let key = format!("{i:08}_{}", base.replace('.', "_"));
                if matches!(a.format, OutFormat::Keep) {
                    let ext = if ext == "jpeg" {
                        "jpg".to_string()
                    } else {
                        ext
                    };
                    w.write_encoded(&key, &ext, &bytes, *label)?;
                } else {
                    let img = decode_rgb(&bytes, &ext)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                    w.write(&key, &img, *label)?;
                }
            }
            f.classes
        };
        let info = w.finish(classes)?;
        println!(
            "{split}: {} samples in {} shards -> {}",
            info.num_samples,
            info.filenames.len(),
            a.out.display()
        );
    }
    Ok(())
}

fn inspect(a: InspectArgs) -> Result<()> {
    let hub = HubOptions {
        offline: a.offline,
        ..HubOptions::default()
    };
    let ds = StreamDataset::from_shards(&a.data, &a.split, &hub)?;
    let masksub_data::stream::StreamSource::Shards(set) = &ds.source else {
        bail!("not a shard set");
    };
    println!(
        "{} [{}]: {} shards, {} samples",
        a.data,
        a.split,
        set.shards.len(),
        ds.num_samples
    );
    match ds.num_classes {
        Some(n) if !ds.classes.is_empty() => {
            let shown: Vec<_> = ds.classes.iter().take(10).cloned().collect();
            println!(
                "classes: {n} ({}{})",
                shown.join(", "),
                if n > 10 { ", ..." } else { "" }
            )
        }
        Some(n) => println!("classes: {n} (largest label + 1)"),
        None => println!("classes: unknown"),
    }
    let first = &set.shards[0];
    println!("first keys of {}:", first.name);
    for s in SampleReader::new(first.open()?).take(a.keys) {
        match s {
            Ok(s) => {
                let size = decode_rgb(&s.image.1, &s.image.0)
                    .map(|i| format!("{}x{}", i.width, i.height))
                    .unwrap_or_else(|e| e);
                println!("  {} .{} {} label {}", s.key, s.image.0, size, s.label);
            }
            Err(b) => println!("  {} BAD: {}", b.key, b.reason),
        }
    }
    Ok(())
}
