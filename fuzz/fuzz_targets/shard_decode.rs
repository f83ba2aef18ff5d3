//! Any byte sequence as a WebDataset shard: tar parsing, sample grouping, image decoding and
//! both transforms must return errors, never panic or allocate without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use masksub_data::decode::decode_rgb;
use masksub_data::transforms::{eval_transform, train_transform, ImageAugConfig};
use masksub_data::wds::SampleReader;
use rand::SeedableRng;

fuzz_target!(|data: &[u8]| {
    let cfg = ImageAugConfig {
        img_size: 16,
        three_augment: true,
        color_jitter: 0.3,
        reprob: 0.5,
        ..ImageAugConfig::default()
    };
    let ra = masksub_data::rand_augment::RandAugment::parse("rand-m9-mstd0.5-inc1").ok();
    let mut out = vec![0f32; cfg.sample_len()];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(data.len() as u64);
    // The bytes as a shard, and the bytes as one image member.
    let direct = [Ok(("jpg".to_string(), data.to_vec()))];
    let samples = SampleReader::new(data).map(|s| s.map(|s| s.image).map_err(|_| ()));
    for img in direct.into_iter().chain(samples).flatten() {
        if let Ok(rgb) = decode_rgb(&img.1, &img.0) {
            if rgb.width * rgb.height <= 1 << 20 {
                train_transform(&rgb, &cfg, ra.as_ref(), &mut rng, &mut out);
                eval_transform(&rgb, &cfg, &mut out);
            }
        }
    }
});
