//! The IDX reader on the real Fashion-MNIST files, cross-checked by decoding the bytes
//! independently with flate2 at the known IDX offsets.

use std::io::Read;
use std::path::{Path, PathBuf};

use masksub_data::idx::{read_idx_images, read_idx_labels};

const FASHION: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../assets/fashion-mnist");

fn asset(name: &str) -> PathBuf {
    Path::new(FASHION).join(name)
}

/// Independent decoding: the whole decompressed file.
fn gunzip(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn class_counts(labels: &[u8]) -> Vec<usize> {
    let mut counts = vec![0; 10];
    for &l in labels {
        counts[l as usize] += 1;
    }
    counts
}

#[test]
fn train_images_have_known_shape_and_first_image() {
    let path = asset("train-images-idx3-ubyte.gz");
    let images = read_idx_images(&path).unwrap();
    assert_eq!((images.count, images.rows, images.cols), (60000, 28, 28));
    assert_eq!(images.pixels.len(), 60000 * 784);

    let raw = gunzip(&path);
    let first: u64 = raw[16..16 + 784].iter().map(|&b| b as u64).sum();
    assert_eq!(first, 76247);
    let ours: u64 = images.pixels[..784].iter().map(|&b| b as u64).sum();
    assert_eq!(ours, first);
    assert_eq!(images.pixels[..], raw[16..]);
}

#[test]
fn train_labels_are_balanced_and_start_as_known() {
    let path = asset("train-labels-idx1-ubyte.gz");
    let labels = read_idx_labels(&path).unwrap();
    assert_eq!(labels.len(), 60000);
    assert_eq!(labels[..10], [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]);
    assert_eq!(labels[..], gunzip(&path)[8..]);
    assert_eq!(class_counts(&labels), vec![6000; 10]);
}

#[test]
fn test_split_has_known_shape_labels_and_first_image() {
    let images = read_idx_images(&asset("t10k-images-idx3-ubyte.gz")).unwrap();
    assert_eq!((images.count, images.rows, images.cols), (10000, 28, 28));
    let raw = gunzip(&asset("t10k-images-idx3-ubyte.gz"));
    let first: u64 = raw[16..16 + 784].iter().map(|&b| b as u64).sum();
    assert_eq!(first, 33456);
    assert_eq!(images.pixels[..784], raw[16..16 + 784]);

    let labels = read_idx_labels(&asset("t10k-labels-idx1-ubyte.gz")).unwrap();
    assert_eq!(labels[..10], [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]);
    assert_eq!(class_counts(&labels), vec![1000; 10]);
}

#[test]
fn raw_files_are_detected_by_content_not_name() {
    let dir = tempfile::tempdir().unwrap();
    let raw = gunzip(&asset("t10k-labels-idx1-ubyte.gz"));
    // Uncompressed bytes under a `.gz` name, and gzip bytes under a plain name.
    let fake_gz = dir.path().join("labels.gz");
    std::fs::write(&fake_gz, &raw).unwrap();
    let real_gz = dir.path().join("labels-plain");
    std::fs::copy(asset("t10k-labels-idx1-ubyte.gz"), &real_gz).unwrap();
    let a = read_idx_labels(&fake_gz).unwrap();
    let b = read_idx_labels(&real_gz).unwrap();
    assert_eq!(a, b);
    assert_eq!(a[..], raw[8..]);
}
