//! Reader for the IDX format used by MNIST and Fashion-MNIST (`.gz` or raw).
//!
//! Layout: a big-endian magic `0x0000_08NN` (0x08 = unsigned byte, NN = number of dimensions),
//! NN big-endian `u32` dimensions, then the data. Every header field is validated against the
//! actual byte count, so a truncated download or a wrong file is reported instead of being
//! silently misread.

use std::path::Path;

use crate::error::{DataError, Result};
use crate::source::Source;

/// Magic of an IDX file of unsigned bytes with 3 dimensions (N, rows, cols).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic of an IDX file of unsigned bytes with 1 dimension (N).
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// Grayscale images from an idx3-ubyte file, row-major, `count * rows * cols` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    pub pixels: Vec<u8>,
}

/// Reads an idx3-ubyte image file (magic `0x00000803`).
pub fn read_idx_images(path: &Path) -> Result<IdxImages> {
    let (dims, pixels) = read_idx(path, IMAGES_MAGIC, "idx3 ubyte images")?;
    let [count, rows, cols] = dims[..] else {
        // Unreachable: the magic fixes the number of dimensions to 3.
        return Err(DataError::format(path, "expected 3 dimensions"));
    };
    Ok(IdxImages {
        count,
        rows,
        cols,
        pixels,
    })
}

/// Reads an idx1-ubyte label file (magic `0x00000801`); one byte per sample.
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>> {
    let (_, labels) = read_idx(path, LABELS_MAGIC, "idx1 ubyte labels")?;
    Ok(labels)
}

/// Reads and validates a whole IDX file; returns its dimensions and data bytes.
fn read_idx(path: &Path, magic: u32, what: &str) -> Result<(Vec<usize>, Vec<u8>)> {
    let mut src = Source::open(path)?;
    let ndims = (magic & 0xff) as usize;
    let header_len = 4 + 4 * ndims;

    let mut header = vec![0u8; header_len];
    let got = src.read_up_to(&mut header)?;
    if got < 4 {
        return Err(DataError::format(
            path,
            format!("truncated: {got} bytes, too short for an IDX header of {header_len} bytes ({what})"),
        ));
    }
    let found_magic = be_u32(&header[0..4]);
    if found_magic != magic {
        return Err(DataError::format(
            path,
            format!("bad magic 0x{found_magic:08x}, expected 0x{magic:08x} ({what})"),
        ));
    }
    if got < header_len {
        return Err(DataError::format(
            path,
            format!("truncated: {got} bytes, the IDX header needs {header_len} ({what})"),
        ));
    }

    let dims: Vec<usize> = header[4..]
        .chunks_exact(4)
        .map(|b| be_u32(b) as usize)
        .collect();
    let described = describe(&dims);
    if dims.contains(&0) {
        return Err(DataError::format(
            path,
            format!("header says {described}: a dimension is zero"),
        ));
    }
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            DataError::format(path, format!("header says {described}: size overflows"))
        })?;

    let data = src.read_at_most(expected.saturating_add(1))?;
    if data.len() < expected {
        return Err(DataError::format(
            src.path(),
            format!(
                "truncated: header says {described} = {expected} bytes, found {}",
                data.len()
            ),
        ));
    }
    if data.len() > expected {
        return Err(DataError::format(
            src.path(),
            format!("trailing bytes: header says {described} = {expected} bytes, found more (garbage after the data)"),
        ));
    }
    Ok((dims, data))
}

/// Human-readable header content, e.g. "60000 images of 28x28" or "60000 labels".
fn describe(dims: &[usize]) -> String {
    match dims {
        [n] => format!("{n} labels"),
        [n, rest @ ..] => {
            let shape: Vec<String> = rest.iter().map(|d| d.to_string()).collect();
            format!("{n} images of {}", shape.join("x"))
        }
        [] => "no dimensions".to_string(),
    }
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}
