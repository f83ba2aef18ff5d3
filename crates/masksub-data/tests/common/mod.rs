//! Helpers shared by the integration tests: the embedded data folder and IDX file builders.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::Write;

/// The Fashion-MNIST folder shipped in the repository.
pub const FASHION: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../assets/fashion-mnist");

/// An IDX file: big-endian magic, dimensions, then the payload.
pub fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = magic.to_be_bytes().to_vec();
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// Gzip `bytes` in memory.
pub fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}
