//! A deterministic stand-in for the cargo-fuzz target (fuzz/fuzz_targets/shard_decode.rs) that
//! runs in CI: thousands of byte-level mutations of a valid shard through tar parsing, sample
//! grouping, decoding and the transforms. None may panic; broken ones must come back as errors.

use masksub_data::decode::{decode_rgb, encode, RgbImage};
use masksub_data::tar::TarWriter;
use masksub_data::transforms::{eval_transform, train_transform, ImageAugConfig};
use masksub_data::wds::SampleReader;
use rand::{Rng, SeedableRng};

fn shard() -> Vec<u8> {
    let img = RgbImage::from_raw(9, 7, (0..189).map(|i| (i * 11 % 256) as u8).collect()).unwrap();
    let mut w = TarWriter::new(Vec::new());
    w.append(
        "a.jpg",
        &encode(&img, image::ImageFormat::Jpeg, 80).unwrap(),
    )
    .unwrap();
    w.append("a.cls", b"1").unwrap();
    w.append("b.png", &encode(&img, image::ImageFormat::Png, 0).unwrap())
        .unwrap();
    w.append("b.cls", b"2").unwrap();
    w.finish().unwrap()
}

#[test]
fn mutated_shards_never_panic_and_bad_parts_are_errors() {
    let base = shard();
    let cfg = ImageAugConfig {
        img_size: 8,
        three_augment: true,
        color_jitter: 0.3,
        reprob: 0.5,
        ..ImageAugConfig::default()
    };
    let ra = masksub_data::rand_augment::RandAugment::parse("rand-m9-mstd0.5-inc1").ok();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut out = vec![0f32; cfg.sample_len()];
    let (mut good, mut bad) = (0usize, 0usize);
    for it in 0..3000 {
        let mut bytes = base.clone();
        match it % 3 {
            0 => {
                for _ in 0..rng.random_range(1..8) {
                    let i = rng.random_range(0..bytes.len());
                    bytes[i] = rng.random();
                }
            }
            1 => bytes.truncate(rng.random_range(0..bytes.len())),
            _ => {
                let i = rng.random_range(0..bytes.len());
                let junk: Vec<u8> = (0..rng.random_range(1..600))
                    .map(|_| rng.random())
                    .collect();
                bytes.splice(i..i, junk);
            }
        }
        for s in SampleReader::new(&bytes[..]) {
            match s.map(|s| decode_rgb(&s.image.1, &s.image.0)) {
                Ok(Ok(img)) if img.width * img.height <= 1 << 20 => {
                    train_transform(&img, &cfg, ra.as_ref(), &mut rng, &mut out);
                    eval_transform(&img, &cfg, &mut out);
                    assert!(out.iter().all(|v| v.is_finite()));
                    good += 1;
                }
                _ => bad += 1,
            }
        }
    }
    // Both outcomes occur: mutations often hit image data or padding only.
    assert!(good > 1000 && bad > 1000, "good {good}, bad {bad}");
}
