//! Loading datasets from IDX directories: file discovery, statistics, subsets.

use std::path::{Path, PathBuf};

use masksub_data::{DataError, InMemoryDataset, Split};

mod common;
use common::{gz, idx, FASHION};

/// Writes a tiny split of `labels.len()` 2x3 images whose pixels are `base + sample index`.
fn write_split(dir: &Path, prefix: &str, labels: &[u8], base: u8, compress: bool) {
    let n = labels.len() as u32;
    let pixels: Vec<u8> = (0..labels.len())
        .flat_map(|i| [base + i as u8; 6])
        .collect();
    let images = idx(0x803, &[n, 2, 3], &pixels);
    let labels = idx(0x801, &[n], labels);
    let (images, labels, ext) = if compress {
        (gz(&images), gz(&labels), ".gz")
    } else {
        (images, labels, "")
    };
    std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte{ext}")), images).unwrap();
    std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte{ext}")), labels).unwrap();
}

fn copy_asset(dir: &Path, name: &str) -> PathBuf {
    let to = dir.join(name);
    std::fs::copy(Path::new(FASHION).join(name), &to).unwrap();
    to
}

#[test]
fn fashion_mnist_train_split_and_statistics() {
    let ds = InMemoryDataset::from_idx_dir(Path::new(FASHION), Split::Train).unwrap();
    assert_eq!(ds.len(), 60000);
    assert!(!ds.is_empty());
    assert_eq!((ds.channels, ds.height, ds.width), (1, 28, 28));
    assert_eq!(ds.num_classes, 10);
    assert_eq!(ds.name, "fashion-mnist");
    assert_eq!(ds.labels[..4], [9, 0, 0, 3]);
    // Published Fashion-MNIST statistics: mean 0.2860, std 0.3530.
    assert!((ds.mean[0] - 0.2860).abs() < 5e-4, "mean {}", ds.mean[0]);
    assert!((ds.std[0] - 0.3530).abs() < 5e-4, "std {}", ds.std[0]);
    let sum: u64 = ds.image(0).iter().map(|&b| b as u64).sum();
    assert_eq!(sum, 76247);
}

#[test]
fn test_split_uses_train_statistics_when_available() {
    let test = InMemoryDataset::from_idx_dir(Path::new(FASHION), Split::Test).unwrap();
    assert_eq!(test.len(), 10000);
    assert_eq!(test.labels[..4], [9, 2, 1, 1]);
    assert!(
        (test.mean[0] - 0.2860).abs() < 5e-4,
        "mean {}",
        test.mean[0]
    );
    assert!((test.std[0] - 0.3530).abs() < 5e-4, "std {}", test.std[0]);

    // With only the test files present, the test split's own statistics are used.
    let dir = tempfile::tempdir().unwrap();
    copy_asset(dir.path(), "t10k-images-idx3-ubyte.gz");
    copy_asset(dir.path(), "t10k-labels-idx1-ubyte.gz");
    let own = InMemoryDataset::from_idx_dir(dir.path(), Split::Test).unwrap();
    assert!((own.mean[0] - 0.28685).abs() < 5e-5, "mean {}", own.mean[0]);
    assert!((own.std[0] - 0.35244).abs() < 5e-5, "std {}", own.std[0]);
    assert_eq!(own.images, test.images);
}

#[test]
fn raw_and_gz_names_are_both_found() {
    let dir = tempfile::tempdir().unwrap();
    write_split(dir.path(), "train", &[0, 1, 2], 10, false);
    write_split(dir.path(), "t10k", &[3, 4], 100, true);
    let train = InMemoryDataset::from_idx_dir(dir.path(), Split::Train).unwrap();
    let test = InMemoryDataset::from_idx_dir(dir.path(), Split::Test).unwrap();
    assert_eq!(train.labels, vec![0, 1, 2]);
    assert_eq!(test.labels, vec![3, 4]);
    assert_eq!(test.image(1), &[101; 6]);
    // Train pixels are 10, 11, 12 (six each): mean 11/255, population std sqrt(2/3)/255.
    assert!((train.mean[0] - 11.0 / 255.0).abs() < 1e-6);
    assert!((train.std[0] - (2.0f32 / 3.0).sqrt() / 255.0).abs() < 1e-6);
    assert_eq!(test.mean, train.mean, "test split reuses train statistics");
    assert_eq!(test.std, train.std);
}

#[test]
fn num_classes_is_at_least_ten_or_max_label_plus_one() {
    let dir = tempfile::tempdir().unwrap();
    write_split(dir.path(), "train", &[0, 3, 1], 0, true);
    write_split(dir.path(), "t10k", &[0, 11], 0, true);
    let train = InMemoryDataset::from_idx_dir(dir.path(), Split::Train).unwrap();
    assert_eq!(train.num_classes, 10);
    let test = InMemoryDataset::from_idx_dir(dir.path(), Split::Test).unwrap();
    assert_eq!(test.num_classes, 12);
}

#[test]
fn missing_files_are_listed_with_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let err = InMemoryDataset::from_idx_dir(dir.path(), Split::Train).unwrap_err();
    assert!(matches!(err, DataError::MissingFiles { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    assert!(msg.contains("train-images-idx3-ubyte[.gz]"), "{msg}");
    assert!(msg.contains("train-labels-idx1-ubyte[.gz]"), "{msg}");

    copy_asset(dir.path(), "t10k-labels-idx1-ubyte.gz");
    let msg = InMemoryDataset::from_idx_dir(dir.path(), Split::Test)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("t10k-images-idx3-ubyte[.gz]"), "{msg}");
    assert!(!msg.contains("t10k-labels"), "labels exist: {msg}");

    let err = InMemoryDataset::from_idx_dir(&dir.path().join("absent"), Split::Test).unwrap_err();
    assert!(err.to_string().contains("absent"), "{err}");
}

#[test]
fn image_label_count_mismatch_names_both_files() {
    let dir = tempfile::tempdir().unwrap();
    copy_asset(dir.path(), "t10k-images-idx3-ubyte.gz");
    std::fs::write(
        dir.path().join("t10k-labels-idx1-ubyte.gz"),
        gz(&idx(0x801, &[3], &[1, 2, 3])),
    )
    .unwrap();
    let err = InMemoryDataset::from_idx_dir(dir.path(), Split::Test).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            DataError::CountMismatch {
                images: 10000,
                labels: 3,
                ..
            }
        ),
        "{msg}"
    );
    assert!(
        msg.contains("t10k-images-idx3-ubyte.gz has 10000 images"),
        "{msg}"
    );
    assert!(
        msg.contains("t10k-labels-idx1-ubyte.gz has 3 labels"),
        "{msg}"
    );
}

#[test]
fn corrupt_file_in_dir_propagates_its_error() {
    let dir = tempfile::tempdir().unwrap();
    write_split(dir.path(), "train", &[1, 2], 0, true);
    std::fs::write(dir.path().join("train-labels-idx1-ubyte.gz"), b"").unwrap();
    let msg = InMemoryDataset::from_idx_dir(dir.path(), Split::Train)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("train-labels-idx1-ubyte.gz: empty file"),
        "{msg}"
    );
}

#[test]
fn take_keeps_a_prefix_and_statistics() {
    let dir = tempfile::tempdir().unwrap();
    write_split(dir.path(), "train", &[5, 6, 7, 8], 20, true);
    let full = InMemoryDataset::from_idx_dir(dir.path(), Split::Train).unwrap();
    let part = full.clone().take(2);
    assert_eq!(part.len(), 2);
    assert_eq!(part.labels, vec![5, 6]);
    assert_eq!(part.images.len(), 12);
    assert_eq!(part.image(1), full.image(1));
    assert_eq!(
        (part.mean.clone(), part.std.clone()),
        (full.mean.clone(), full.std.clone())
    );
    assert_eq!(full.clone().take(99).len(), 4);
    assert!(full.take(0).is_empty());
}

#[test]
fn from_raw_validates_sizes() {
    let ds = InMemoryDataset::from_raw("toy", vec![0, 255, 0, 255], vec![1, 0], 1, 1, 2).unwrap();
    assert_eq!((ds.mean[0], ds.std[0]), (0.5, 0.5));
    assert_eq!(ds.num_classes, 2);
    let msg = InMemoryDataset::from_raw("toy", vec![0; 5], vec![1, 0], 1, 1, 2)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("toy") && msg.contains("need 4 pixel bytes, got 5"),
        "{msg}"
    );
    assert!(InMemoryDataset::from_raw("toy", vec![], vec![], 0, 1, 1).is_err());
}
