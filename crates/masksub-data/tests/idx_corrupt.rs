//! Broken IDX files: each must give a `DataError` naming the file and the problem, never a
//! panic or a silently misread dataset.

use std::path::{Path, PathBuf};

use masksub_data::idx::{read_idx_images, read_idx_labels};
use masksub_data::DataError;

mod common;
use common::{gz, idx, FASHION};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// The error's message, after checking it names the file.
fn message(err: DataError, name: &str) -> String {
    let msg = err.to_string();
    assert!(msg.contains(name), "message {msg:?} does not name {name}");
    msg
}

#[test]
fn valid_small_files_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let pixels: Vec<u8> = (0..24).collect();
    let p = write(dir.path(), "ok.gz", &gz(&idx(0x803, &[2, 3, 4], &pixels)));
    let images = read_idx_images(&p).unwrap();
    assert_eq!((images.count, images.rows, images.cols), (2, 3, 4));
    assert_eq!(images.pixels, pixels);
    let p = write(dir.path(), "labels", &idx(0x801, &[3], &[7, 8, 9]));
    assert_eq!(read_idx_labels(&p).unwrap(), vec![7, 8, 9]);
}

#[test]
fn truncated_gz_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let full = std::fs::read(Path::new(FASHION).join("train-labels-idx1-ubyte.gz")).unwrap();
    let p = write(dir.path(), "cut-labels.gz", &full[..full.len() / 2]);
    let err = read_idx_labels(&p).unwrap_err();
    assert!(
        matches!(err, DataError::Gzip { .. } | DataError::Format { .. }),
        "{err:?}"
    );
    message(err, "cut-labels.gz");
}

#[test]
fn gz_with_corrupt_checksum_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = gz(&idx(0x801, &[3], &[1, 2, 3]));
    let crc_at = bytes.len() - 8;
    bytes[crc_at] ^= 0xff;
    let p = write(dir.path(), "badcrc.gz", &bytes);
    let err = read_idx_labels(&p).unwrap_err();
    assert!(matches!(err, DataError::Gzip { .. }), "{err:?}");
    message(err, "badcrc.gz");
}

#[test]
fn truncated_raw_reports_expected_and_found_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "short-images",
        &idx(0x803, &[60000, 28, 28], &[0; 1000]),
    );
    let msg = message(read_idx_images(&p).unwrap_err(), "short-images");
    assert!(
        msg.contains("truncated: header says 60000 images of 28x28 = 47040000 bytes, found 1000"),
        "{msg}"
    );
}

#[test]
fn truncated_gz_body_reports_sizes() {
    // A complete gzip stream whose IDX content is too short.
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "few.gz", &gz(&idx(0x801, &[10], &[1, 2, 3])));
    let msg = message(read_idx_labels(&p).unwrap_err(), "few.gz");
    assert!(
        msg.contains("header says 10 labels = 10 bytes, found 3"),
        "{msg}"
    );
}

#[test]
fn truncated_header_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "hdr", &idx(0x803, &[5], &[]));
    let msg = message(read_idx_images(&p).unwrap_err(), "hdr");
    assert!(msg.contains("truncated"), "{msg}");
}

#[test]
fn wrong_magic_names_both_magics() {
    let dir = tempfile::tempdir().unwrap();
    // A labels file passed where images are expected, and vice versa.
    let p = write(
        dir.path(),
        "labels-as-images.gz",
        &gz(&idx(0x801, &[2], &[0, 1])),
    );
    let msg = message(read_idx_images(&p).unwrap_err(), "labels-as-images.gz");
    assert!(
        msg.contains("bad magic 0x00000801, expected 0x00000803 (idx3 ubyte images)"),
        "{msg}"
    );
    let p = write(
        dir.path(),
        "images-as-labels",
        &idx(0x803, &[1, 1, 1], &[0]),
    );
    let msg = message(read_idx_labels(&p).unwrap_err(), "images-as-labels");
    assert!(
        msg.contains("bad magic 0x00000803, expected 0x00000801"),
        "{msg}"
    );
}

#[test]
fn trailing_bytes_are_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "long.gz",
        &gz(&idx(0x803, &[1, 2, 2], &[1, 2, 3, 4, 5])),
    );
    let msg = message(read_idx_images(&p).unwrap_err(), "long.gz");
    assert!(
        msg.contains("trailing bytes: header says 1 images of 2x2 = 4 bytes"),
        "{msg}"
    );
    let p = write(dir.path(), "long-labels", &idx(0x801, &[2], &[1, 2, 3]));
    message(read_idx_labels(&p).unwrap_err(), "long-labels");
}

#[test]
fn non_gzip_garbage_is_bad_magic() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "garbage.gz",
        b"this is certainly not an IDX file",
    );
    let msg = message(read_idx_images(&p).unwrap_err(), "garbage.gz");
    assert!(msg.contains("bad magic 0x74686973"), "{msg}"); // "this"
    let p = write(dir.path(), "x", &[0x1f]); // One byte: not even a full gzip magic.
    message(read_idx_labels(&p).unwrap_err(), "x");
}

#[test]
fn gzip_magic_with_garbage_is_a_gzip_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "fake.gz",
        &[0x1f, 0x8b, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    );
    let err = read_idx_labels(&p).unwrap_err();
    assert!(matches!(err, DataError::Gzip { .. }), "{err:?}");
    message(err, "fake.gz");
}

#[test]
fn empty_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "empty-images.gz", &[]);
    let msg = message(read_idx_images(&p).unwrap_err(), "empty-images.gz");
    assert!(msg.contains("empty file"), "{msg}");
    // An empty gzip stream decodes to zero bytes: also an error.
    let p = write(dir.path(), "empty-stream.gz", &gz(&[]));
    message(read_idx_labels(&p).unwrap_err(), "empty-stream.gz");
}

#[test]
fn zero_and_overflowing_dimensions_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "zero", &idx(0x803, &[0, 28, 28], &[]));
    let msg = message(read_idx_images(&p).unwrap_err(), "zero");
    assert!(msg.contains("0 images of 28x28"), "{msg}");
    assert!(msg.contains("zero"), "{msg}");
    // 2^32-1 cubed does not fit in 64 bits.
    let p = write(dir.path(), "huge", &idx(0x803, &[u32::MAX; 3], &[1, 2, 3]));
    let msg = message(read_idx_images(&p).unwrap_err(), "huge");
    assert!(msg.contains("overflow"), "{msg}");
}

#[test]
fn huge_claimed_size_with_tiny_body_is_truncated_not_oom() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "claims.gz",
        &gz(&idx(0x803, &[1 << 30, 1 << 10, 1 << 10], &[9; 16])),
    );
    let msg = message(read_idx_images(&p).unwrap_err(), "claims.gz");
    assert!(msg.contains("truncated"), "{msg}");
    assert!(msg.contains("found 16"), "{msg}");
}

#[test]
fn missing_file_is_an_io_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let err = read_idx_images(&dir.path().join("nope.gz")).unwrap_err();
    assert!(matches!(err, DataError::Io { .. }), "{err:?}");
    message(err, "nope.gz");
}
