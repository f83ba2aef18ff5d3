//! Epoch iteration: coverage, sharding, determinism, normalization, tensor layout.

use std::collections::HashSet;
use std::path::Path;

use candle_core::{DType, Device};
use masksub_data::{
    AugmentConfig, Batch, BatchLoader, DataError, InMemoryDataset, LoaderConfig, Split,
};

const FASHION: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../assets/fashion-mnist");

/// `n` 1x4x4 images; sample i's pixels are `(i * 16 + p) % 256`, its label `i % 7`.
fn toy(n: usize) -> InMemoryDataset {
    let images = (0..n * 16).map(|v| (v % 256) as u8).collect();
    let labels = (0..n).map(|i| (i % 7) as u32).collect();
    InMemoryDataset::from_raw("toy", images, labels, 1, 4, 4).unwrap()
}

fn cfg(batch_size: usize) -> LoaderConfig {
    LoaderConfig {
        batch_size,
        shuffle: true,
        drop_last: false,
        seed: 42,
        rank: 0,
        world_size: 1,
        augment: None,
    }
}

fn collect(loader: &BatchLoader<'_>, epoch: usize) -> Vec<Batch> {
    let batches: Vec<Batch> = loader.epoch(epoch).collect::<Result<_, _>>().unwrap();
    assert_eq!(batches.len(), loader.batches_per_epoch());
    batches
}

fn order(loader: &BatchLoader<'_>, epoch: usize) -> Vec<usize> {
    collect(loader, epoch)
        .into_iter()
        .flat_map(|b| b.indices)
        .collect()
}

fn pixels(batches: &[Batch]) -> Vec<f32> {
    batches
        .iter()
        .flat_map(|b| b.images.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        .collect()
}

#[test]
fn every_sample_exactly_once_per_epoch() {
    let ds = toy(103);
    let loader = BatchLoader::new(&ds, cfg(10), Device::Cpu).unwrap();
    assert_eq!(loader.batches_per_epoch(), 11);
    let batches = collect(&loader, 0);
    let sizes: Vec<usize> = batches.iter().map(|b| b.indices.len()).collect();
    assert_eq!(sizes, [vec![10; 10], vec![3]].concat());
    let mut seen: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
    assert_ne!(seen, (0..103).collect::<Vec<_>>(), "shuffled");
    seen.sort_unstable();
    assert_eq!(seen, (0..103).collect::<Vec<_>>());
}

#[test]
fn batch_tensors_match_dataset_samples() {
    let ds = toy(37);
    let loader = BatchLoader::new(&ds, cfg(8), Device::Cpu).unwrap();
    for batch in collect(&loader, 3) {
        let b = batch.indices.len();
        assert_eq!(batch.images.dims(), &[b, 1, 4, 4]);
        assert_eq!(batch.images.dtype(), DType::F32);
        assert_eq!(batch.labels.dims(), &[b]);
        assert_eq!(batch.labels.dtype(), DType::U32);
        let labels = batch.labels.to_vec1::<u32>().unwrap();
        let images = batch
            .images
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (row, &i) in batch.indices.iter().enumerate() {
            assert_eq!(labels[row], ds.labels[i]);
            for (p, &v) in ds.image(i).iter().enumerate() {
                let want = (v as f32 / 255.0 - ds.mean[0]) / ds.std[0];
                assert!((images[row * 16 + p] - want).abs() < 1e-5);
            }
        }
    }
}

#[test]
fn drop_last_skips_the_partial_batch() {
    let ds = toy(103);
    let loader = BatchLoader::new(
        &ds,
        LoaderConfig {
            drop_last: true,
            ..cfg(10)
        },
        Device::Cpu,
    )
    .unwrap();
    assert_eq!(loader.batches_per_epoch(), 10);
    let batches = collect(&loader, 1);
    assert!(batches.iter().all(|b| b.indices.len() == 10));
    let distinct: HashSet<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
    assert_eq!(distinct.len(), 100);
}

#[test]
fn ranks_cover_the_dataset_with_equal_counts() {
    let ds = toy(103);
    let world = 4;
    let mut all = Vec::new();
    for rank in 0..world {
        let c = LoaderConfig {
            rank,
            world_size: world,
            ..cfg(5)
        };
        let loader = BatchLoader::new(&ds, c, Device::Cpu).unwrap();
        assert_eq!(loader.batches_per_epoch(), 6); // ceil(103 / 4) = 26 -> 6 batches of 5.
        let mine = order(&loader, 2);
        assert_eq!(mine.len(), 26, "rank {rank}");
        all.extend(mine);
    }
    assert_eq!(all.len(), 104);
    let distinct: HashSet<usize> = all.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        103,
        "every sample on some rank, one wrap-around duplicate"
    );
}

#[test]
fn ranks_interleave_the_shared_permutation() {
    let ds = toy(12);
    let single = order(&BatchLoader::new(&ds, cfg(12), Device::Cpu).unwrap(), 5);
    for rank in 0..3 {
        let c = LoaderConfig {
            rank,
            world_size: 3,
            ..cfg(12)
        };
        let mine = order(&BatchLoader::new(&ds, c, Device::Cpu).unwrap(), 5);
        let want: Vec<usize> = single.iter().skip(rank).step_by(3).copied().collect();
        assert_eq!(mine, want, "rank {rank}");
    }
}

#[test]
fn same_seed_and_epoch_give_same_order_and_pixels() {
    let ds = toy(50);
    let c = LoaderConfig {
        augment: Some(AugmentConfig::default()),
        ..cfg(16)
    };
    let a = BatchLoader::new(&ds, c.clone(), Device::Cpu).unwrap();
    let b = BatchLoader::new(&ds, c.clone(), Device::Cpu).unwrap();
    let (ba, bb) = (collect(&a, 4), collect(&b, 4));
    let ia: Vec<usize> = ba.iter().flat_map(|x| x.indices.clone()).collect();
    let ib: Vec<usize> = bb.iter().flat_map(|x| x.indices.clone()).collect();
    assert_eq!(ia, ib);
    assert_eq!(pixels(&ba), pixels(&bb));

    // A different batch size changes batch boundaries but not any sample's augmentation.
    let other = BatchLoader::new(&ds, LoaderConfig { batch_size: 7, ..c }, Device::Cpu).unwrap();
    let bo = collect(&other, 4);
    assert_eq!(pixels(&bo), pixels(&ba));
}

#[test]
fn different_epoch_or_seed_changes_order() {
    let ds = toy(64);
    let loader = BatchLoader::new(&ds, cfg(64), Device::Cpu).unwrap();
    let (e0, e1) = (order(&loader, 0), order(&loader, 1));
    assert_ne!(e0, e1);
    let reseeded = BatchLoader::new(
        &ds,
        LoaderConfig {
            seed: 43,
            ..cfg(64)
        },
        Device::Cpu,
    )
    .unwrap();
    assert_ne!(order(&reseeded, 0), e0);
}

#[test]
fn no_shuffle_is_identity_every_epoch() {
    let ds = toy(9);
    let loader = BatchLoader::new(
        &ds,
        LoaderConfig {
            shuffle: false,
            ..cfg(4)
        },
        Device::Cpu,
    )
    .unwrap();
    for epoch in 0..3 {
        assert_eq!(order(&loader, epoch), (0..9).collect::<Vec<_>>());
    }
}

#[test]
fn augmentation_changes_pixels_per_epoch_and_none_config_equals_plain() {
    let ds = toy(40);
    let plain_cfg = LoaderConfig {
        shuffle: false,
        ..cfg(40)
    };
    let plain = pixels(&collect(
        &BatchLoader::new(&ds, plain_cfg.clone(), Device::Cpu).unwrap(),
        0,
    ));
    let none = LoaderConfig {
        augment: Some(AugmentConfig::none()),
        ..plain_cfg.clone()
    };
    let none = pixels(&collect(
        &BatchLoader::new(&ds, none, Device::Cpu).unwrap(),
        0,
    ));
    assert_eq!(plain, none);

    let aug_cfg = LoaderConfig {
        augment: Some(AugmentConfig::default()),
        ..plain_cfg
    };
    let aug = BatchLoader::new(&ds, aug_cfg, Device::Cpu).unwrap();
    let (a0, a1) = (pixels(&collect(&aug, 0)), pixels(&collect(&aug, 1)));
    assert_ne!(a0, plain);
    assert_ne!(a0, a1);
    // Padding shows up as the normalized value of a black pixel somewhere.
    let black = (0.0 - ds.mean[0]) / ds.std[0];
    assert!(a0.contains(&black));
}

#[test]
fn invalid_configs_name_the_field() {
    let ds = toy(4);
    let cases = [
        (
            LoaderConfig {
                batch_size: 0,
                ..cfg(1)
            },
            "batch_size",
        ),
        (
            LoaderConfig {
                world_size: 0,
                ..cfg(1)
            },
            "world_size",
        ),
        (
            LoaderConfig {
                rank: 2,
                world_size: 2,
                ..cfg(1)
            },
            "rank",
        ),
    ];
    for (c, field) in cases {
        match BatchLoader::new(&ds, c, Device::Cpu) {
            Err(err @ DataError::Config { field: f, .. }) => {
                assert_eq!(f, field);
                assert!(err.to_string().contains(field));
            }
            other => panic!("{field}: expected a config error, got {other:?}"),
        }
    }
}

#[test]
fn inconsistent_dataset_fields_are_rejected() {
    let mut ds = toy(4);
    ds.images.pop();
    let err = BatchLoader::new(&ds, cfg(2), Device::Cpu).unwrap_err();
    assert!(matches!(err, DataError::Shape { .. }), "{err:?}");
    let mut ds = toy(4);
    ds.std = vec![0.0];
    assert!(BatchLoader::new(&ds, cfg(2), Device::Cpu).is_err());
}

#[test]
fn empty_dataset_and_early_drop() {
    let ds = toy(10).take(0);
    let loader = BatchLoader::new(&ds, cfg(3), Device::Cpu).unwrap();
    assert_eq!(loader.batches_per_epoch(), 0);
    assert_eq!(loader.epoch(0).count(), 0);

    // Dropping an epoch after one batch must not hang on the prefetch thread.
    let ds = toy(100);
    let loader = BatchLoader::new(&ds, cfg(3), Device::Cpu).unwrap();
    let mut it = loader.epoch(0);
    assert_eq!(it.size_hint(), (34, Some(34)));
    assert!(it.next().unwrap().is_ok());
    drop(it);
    assert_eq!(loader.epoch(1).count(), 34);
}

#[test]
fn fashion_mnist_first_test_image_is_normalized_with_train_statistics() {
    let ds = InMemoryDataset::from_idx_dir(Path::new(FASHION), Split::Test)
        .unwrap()
        .take(300);
    let c = LoaderConfig {
        shuffle: false,
        ..cfg(128)
    };
    let loader = BatchLoader::new(&ds, c, Device::Cpu).unwrap();
    assert_eq!(loader.batches_per_epoch(), 3);
    let first = loader.epoch(0).next().unwrap().unwrap();
    assert_eq!(first.images.dims(), &[128, 1, 28, 28]);
    assert_eq!(first.labels.to_vec1::<u32>().unwrap()[..4], [9, 2, 1, 1]);
    let img0 = first
        .images
        .get(0)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    // Background pixels (0) map to -mean/std = -0.2860/0.3530; the image sums to 33456.
    assert!((img0[0] - (-0.2860 / 0.3530)).abs() < 2e-3, "{}", img0[0]);
    let raw_sum: f32 = img0
        .iter()
        .map(|v| (v * ds.std[0] + ds.mean[0]) * 255.0)
        .sum();
    assert!((raw_sum - 33456.0).abs() < 0.5, "{raw_sum}");
}
