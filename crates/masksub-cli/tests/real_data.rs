//! Real photos end to end: the 20 ImageNet JPEGs and 20 CIFAR-10 PNGs shipped in the PyPI wheel
//! foolbox==3.3.4 (MIT; labels in the file names) are written to WebDataset shards, read back
//! through the evaluation and training pipelines, and the evaluation transform is compared
//! pixel by pixel with PIL + torchvision (tests/fixtures/eval_transform.json, made by
//! tools/data/make_eval_fixture.py).
//!
//! Tolerances: the resampler reproduces PIL's fixed-point arithmetic, so on the CIFAR PNGs
//! (identical decoded pixels) the values are equal up to the fixture's 5-decimal rounding
//! (bound 1e-4; measured 0). The ImageNet JPEGs are progressive, and zune-jpeg's IDCT and
//! chroma upsampling differ from libjpeg-turbo's by a few 8-bit levels on edges: bound max
//! |diff| <= 0.07 (4 levels / std) and mean <= 0.01 (measured: max 0.052, mean <= 0.0056).

use candle_core::Device;
use masksub_cli::trainer::{train, RunOptions};
use masksub_cli::TrainConfig;
use masksub_data::decode::decode_rgb;
use masksub_data::transforms::{eval_transform, ImageAugConfig, Interpolation};
use masksub_data::writer::{ShardImageFormat, ShardWriter};
use masksub_data::{HubOptions, MixupConfig, StreamConfig, StreamDataset, StreamLoader};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

const WHEEL: &str = "foolbox-3.3.4-py3-none-any.whl";

/// `target/foolbox/x/foolbox/data`, downloading the wheel with pip and unpacking it with
/// Python's zipfile when missing (once per test binary: the tests run in parallel).
fn foolbox_data() -> PathBuf {
    static DATA: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DATA.get_or_init(fetch_foolbox).clone()
}

fn fetch_foolbox() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/foolbox");
    let data = root.join("x/foolbox/data");
    if data.join("imagenet_19_305.jpg").is_file() {
        return data;
    }
    std::fs::create_dir_all(&root).unwrap();
    if !root.join(WHEEL).is_file() {
        let ok = Command::new("python3")
            .args(["-m", "pip", "download", "foolbox==3.3.4", "--no-deps", "-d"])
            .arg(&root)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok && root.join(WHEEL).is_file(),
            "the real-data tests need {WHEEL}: `python3 -m pip download foolbox==3.3.4 --no-deps -d {}` failed (no python3/pip or no access to PyPI); put the wheel there by hand",
            root.display()
        );
    }
    let ok = Command::new("python3")
        .args(["-m", "zipfile", "-e"])
        .arg(root.join(WHEEL))
        .arg(root.join("x"))
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "could not unpack {}", root.join(WHEEL).display());
    data
}

/// Files starting with `prefix`, sorted, with the label from `<prefix>_<nn>_<label>.<ext>`.
fn photos(dir: &Path, prefix: &str) -> Vec<(PathBuf, u32)> {
    let mut v: Vec<(PathBuf, u32)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{prefix}_"))
        })
        .map(|p| {
            let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
            let label = stem.rsplit('_').next().unwrap().parse().unwrap();
            (p, label)
        })
        .collect();
    v.sort();
    v
}

fn write_shards(files: &[(PathBuf, u32)], out: &Path, split: &str, per_shard: usize) {
    let mut w = ShardWriter::new(out, "foolbox", split, per_shard, ShardImageFormat::Png).unwrap();
    for (i, (p, label)) in files.iter().enumerate() {
        let ext = p.extension().unwrap().to_string_lossy().into_owned();
        w.write_encoded(&format!("{i:04}"), &ext, &std::fs::read(p).unwrap(), *label)
            .unwrap();
    }
    w.finish(Vec::new()).unwrap();
}

fn aug(size: usize) -> ImageAugConfig {
    ImageAugConfig {
        img_size: size,
        crop_pct: 0.875,
        eval_interpolation: Interpolation::Bicubic,
        ..ImageAugConfig::default()
    }
}

fn stream_cfg(size: usize, num_classes: usize, train: bool, workers: usize) -> StreamConfig {
    StreamConfig {
        batch_size: 4,
        workers,
        shuffle_buffer: 8,
        seed: 3,
        rank: 0,
        world_size: 1,
        strict: true,
        train,
        repeats: 1,
        aug: aug(size),
        mixup: None,
        num_classes,
    }
}

/// The photos are progressive JPEGs (refinement scans included): the vendored zune-jpeg must
/// decode them to the same bytes as upstream zune-jpeg, which the `image` crate uses.
#[test]
fn photos_decode_exactly_as_upstream_zune_jpeg() {
    let photos = photos(&foolbox_data(), "imagenet");
    assert_eq!(photos.len(), 20);
    for (p, _) in photos {
        let bytes = std::fs::read(&p).unwrap();
        let ours = decode_rgb(&bytes, "jpg").unwrap();
        let upstream = image::load_from_memory(&bytes).unwrap().to_rgb8();
        assert_eq!(
            (ours.width as u32, ours.height as u32),
            upstream.dimensions()
        );
        assert!(ours.data == upstream.as_raw().as_slice(), "{}", p.display());
    }
}

#[test]
fn eval_transform_matches_pil_and_torchvision() {
    let data = foolbox_data();
    let fx: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eval_transform.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let stride = fx["stride"].as_u64().unwrap() as usize;
    let mut report = Vec::new();
    for img in fx["images"].as_array().unwrap() {
        let file = img["file"].as_str().unwrap();
        let size = img["size"].as_u64().unwrap() as usize;
        let expect: Vec<f64> = img["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let bytes = std::fs::read(data.join(file)).unwrap();
        let ext = Path::new(file).extension().unwrap().to_string_lossy();
        let decoded = decode_rgb(&bytes, &ext).unwrap();
        let mut out = vec![0f32; 3 * size * size];
        eval_transform(&decoded, &aug(size), &mut out);
        let mut got = Vec::new();
        for c in 0..3 {
            for y in (0..size).step_by(stride) {
                for x in (0..size).step_by(stride) {
                    got.push(out[(c * size + y) * size + x] as f64);
                }
            }
        }
        assert_eq!(got.len(), expect.len(), "{file}");
        let diffs: Vec<f64> = got
            .iter()
            .zip(&expect)
            .map(|(a, b)| (a - b).abs())
            .collect();
        let max = diffs.iter().cloned().fold(0.0, f64::max);
        let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
        report.push(format!("{file}: max {max:.4} mean {mean:.5}"));
        if file.ends_with(".png") {
            assert!(
                max <= 1e-4,
                "{file}: max |diff| {max}: PNG values must equal PIL's"
            );
        } else {
            assert!(max <= 0.07 && mean <= 0.01, "{file}: max {max} mean {mean}");
        }
    }
    println!("{}", report.join("\n"));
}

#[test]
fn photos_stream_from_shards_through_eval_and_training_pipelines() {
    let data = foolbox_data();
    let dir = tempfile::tempdir().unwrap();
    let imagenet = photos(&data, "imagenet");
    assert_eq!(imagenet.len(), 20);
    write_shards(&imagenet, dir.path(), "validation", 6);
    let ds = StreamDataset::from_shards(
        &dir.path().to_string_lossy(),
        "validation",
        &HubOptions::default(),
    )
    .unwrap();
    assert_eq!(ds.num_samples, 20);
    // Evaluation: every photo once, in shard order, equal to transforming the file directly.
    let loader = StreamLoader::new(
        Arc::new(ds.clone()),
        stream_cfg(224, 1000, false, 2),
        Device::Cpu,
    )
    .unwrap();
    let mut labels = Vec::new();
    let mut first = None;
    for b in loader.epoch(0) {
        let b = b.unwrap();
        assert_eq!(b.images.dims()[1..], [3, 224, 224]);
        if first.is_none() {
            first = Some(
                b.images
                    .get(0)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap(),
            );
        }
        labels.extend(b.labels.to_vec1::<u32>().unwrap());
    }
    let mut sorted = labels.clone();
    sorted.sort();
    let mut want: Vec<u32> = imagenet.iter().map(|(_, l)| *l).collect();
    want.sort();
    assert_eq!(sorted, want, "every photo exactly once");
    let img = decode_rgb(&std::fs::read(&imagenet[0].0).unwrap(), "jpg").unwrap();
    let mut direct = vec![0f32; 3 * 224 * 224];
    eval_transform(&img, &aug(224), &mut direct);
    assert_eq!(
        first.unwrap(),
        direct,
        "worker 0's first sample is shard 0's first photo"
    );

    // Training: RRC + flip + 3-Augment + RandomErasing + Mixup/CutMix, shuffled.
    let mut cfg = stream_cfg(224, 1000, true, 2);
    cfg.aug.three_augment = true;
    cfg.aug.color_jitter = 0.3;
    cfg.aug.reprob = 0.25;
    cfg.mixup = Some(MixupConfig::default());
    let loader = StreamLoader::new(Arc::new(ds), cfg, Device::Cpu).unwrap();
    assert_eq!(loader.batches_per_epoch(), 5);
    let batches: Vec<_> = loader.epoch(1).map(|b| b.unwrap()).collect();
    assert_eq!(batches.len(), 5);
    for b in &batches {
        let t = b.targets.as_ref().expect("mixup gives soft targets");
        let sums = t.sum(1).unwrap().to_vec1::<f32>().unwrap();
        assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-4), "{sums:?}");
        let v = b.images.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(v.iter().all(|x| x.is_finite()));
    }
    // Same seed, same epoch: the same batches regardless of thread timing.
    let again: Vec<_> = loader.epoch(1).map(|b| b.unwrap()).collect();
    let flat = |b: &masksub_data::Batch| b.images.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(flat(&batches[2]), flat(&again[2]));
}

#[test]
fn cli_converts_cifar_photos_and_trains_on_the_shards() {
    let data = foolbox_data();
    let dir = tempfile::tempdir().unwrap();
    // An ImageFolder: class folder = CIFAR-10 label digit, so folder order equals label order.
    let folder = dir.path().join("folder");
    for split in ["train", "validation"] {
        for (p, label) in photos(&data, "cifar10") {
            let d = folder.join(split).join(label.to_string());
            std::fs::create_dir_all(&d).unwrap();
            std::fs::copy(&p, d.join(p.file_name().unwrap())).unwrap();
        }
    }
    let shards = dir.path().join("shards");
    let bin = env!("CARGO_BIN_EXE_masksub");
    let out = Command::new(bin)
        .args([
            "data",
            "convert",
            "--samples-per-shard",
            "8",
            "--format",
            "png",
            "--input",
        ])
        .arg(&folder)
        .arg("--out")
        .arg(&shards)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("train: 20 samples in 3 shards"), "{text}");
    let out = Command::new(bin)
        .args(["data", "inspect", "--split", "validation"])
        .arg(&shards)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("3 shards, 20 samples"),
        "{text}"
    );
    assert!(text.contains("32x32"), "{text}");
    // The whole streaming loader, timed: every full batch of the 20 samples.
    let out = Command::new(bin)
        .args([
            "bench",
            "data",
            "--threads",
            "1",
            "--count",
            "20",
            "--batch-size",
            "4",
        ])
        .arg("--shards")
        .arg(&shards)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && text.contains("1 worker(s): ")
            && text.contains("(20 images in batches of 4"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A <split>/ layout without a validation folder: train is converted, validation skipped.
    let only_train = dir.path().join("only_train");
    std::fs::create_dir_all(&only_train).unwrap();
    std::fs::rename(folder.join("train"), only_train.join("train")).unwrap();
    let out = Command::new(bin)
        .args(["data", "convert", "--input"])
        .arg(&only_train)
        .arg("--out")
        .arg(dir.path().join("only_train_shards"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && text.contains("train: 20 samples")
            && text.contains("validation: no `validation/` folder"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let cfg = TrainConfig {
        model: "vit_fmnist_tiny".into(),
        model_kwargs: serde_json::from_str(r#"{"img_size": 32, "patch_size": 8}"#).unwrap(),
        data: shards.clone(),
        epochs: 2,
        batch_size: 4,
        eval_batch_size: 8,
        warmup_epochs: 0.0,
        log_every: 1,
        mixup: Some(MixupConfig::default()),
        ..TrainConfig::default()
    };
    let run = dir.path().join("run");
    let s = train(
        &cfg,
        RunOptions {
            progress: false,
            ..RunOptions::new(run.clone(), Device::Cpu)
        },
    )
    .unwrap();
    assert_eq!(s.steps, 10, "2 epochs x floor(20 / 4) steps");
    assert!(s.final_train_loss.is_finite() && s.test_loss.is_finite());
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert!(metrics.contains("\"skipped_samples\":0"), "{metrics}");

    // `masksub eval` finds the run's shards and transform in its config.json and scores the
    // checkpoint as the trainer's last evaluation did.
    let out = Command::new(bin)
        .args(["eval", "--checkpoint"])
        .arg(run.join("last.safetensors"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = format!("on 20 test images: top-1 {:.2}%", s.test_top1);
    assert!(text.contains(&want), "{text} lacks `{want}`");
}
