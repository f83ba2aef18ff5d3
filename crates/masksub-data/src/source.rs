//! Opens a data file as a byte stream, transparently decompressing gzip.
//!
//! Compression is detected by the gzip magic bytes `1f 8b`, not by the file name, so a `.gz`
//! that was already unpacked (or a raw file someone named `.gz`) still reads correctly.

use std::fs::File;
use std::io::{BufReader, Cursor, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use crate::error::{DataError, Result};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// A readable data file; remembers its path and whether it is gzip so read errors can say
/// which file failed and whether the failure was in decompression.
pub(crate) struct Source {
    path: PathBuf,
    gzip: bool,
    reader: Box<dyn Read>,
}

impl Source {
    /// Opens `path`; an empty file is an error (it can never be a valid dataset file).
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let io_err = |source| DataError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = BufReader::new(File::open(path).map_err(io_err)?);
        let mut head = [0u8; 2];
        let n = read_full(&mut file, &mut head).map_err(io_err)?;
        if n == 0 {
            return Err(DataError::format(path, "empty file"));
        }
        let gzip = n == 2 && head == GZIP_MAGIC;
        let stream = Cursor::new(head[..n].to_vec()).chain(file);
        let reader: Box<dyn Read> = if gzip {
            // Multi-member so that concatenated gzip files (`cat a.gz b.gz`) decode fully.
            Box::new(MultiGzDecoder::new(stream))
        } else {
            Box::new(stream)
        };
        Ok(Source {
            path: path.to_path_buf(),
            gzip,
            reader,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Reads until `buf` is full or the stream ends; returns the number of bytes read.
    pub(crate) fn read_up_to(&mut self, buf: &mut [u8]) -> Result<usize> {
        read_full(&mut self.reader, buf).map_err(|e| self.read_error(e))
    }

    /// Reads at most `limit` more bytes (the caller passes expected + 1 to detect trailing
    /// data without decompressing an unbounded amount).
    pub(crate) fn read_at_most(&mut self, limit: usize) -> Result<Vec<u8>> {
        // Cap the up-front allocation: `limit` comes from a header we have not verified yet.
        let mut out = Vec::with_capacity(limit.min(1 << 26));
        let limit = u64::try_from(limit).unwrap_or(u64::MAX);
        (&mut self.reader)
            .take(limit)
            .read_to_end(&mut out)
            .map_err(|e| self.read_error(e))?;
        Ok(out)
    }

    fn read_error(&self, source: std::io::Error) -> DataError {
        let path = self.path.clone();
        if self.gzip {
            DataError::Gzip { path, source }
        } else {
            DataError::Io { path, source }
        }
    }
}

/// `read_exact` that reports a short read instead of failing on it.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
