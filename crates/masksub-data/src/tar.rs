//! A minimal streaming reader and writer for the POSIX ustar format WebDataset shards use.
//!
//! Written here (not a crate) so that every malformed header becomes an error value and the
//! reader never allocates more than one member: a shard is read front to back exactly once.
//! Supported: regular files, ustar `prefix`, GNU long names (`L`) and pax `path` records;
//! directories, links and other entry types are skipped.

use std::io::{Read, Write};

const BLOCK: usize = 512;
/// Largest member the reader loads into memory; a bigger one is a broken member, not an image.
pub const MAX_MEMBER_BYTES: u64 = 256 << 20;

/// One regular file of a tar stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarMember {
    pub name: String,
    pub data: Vec<u8>,
}

/// Why a tar stream could not be read further.
#[derive(Debug, thiserror::Error)]
pub enum TarError {
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("truncated {0}")]
    Truncated(&'static str),
    #[error("bad header {}: {msg}", position(.after))]
    Header { after: Option<String>, msg: String },
}

/// Where a bad header sits, for [`TarError::Header`]'s message.
fn position(after: &Option<String>) -> String {
    match after {
        Some(name) => format!("after member `{name}`"),
        None => "at the start of the stream".into(),
    }
}

/// Iterates over the regular files of a tar stream. After the first error it yields nothing.
pub struct TarReader<R> {
    inner: R,
    done: bool,
    last: Option<String>,
}

impl<R: Read> TarReader<R> {
    pub fn new(inner: R) -> Self {
        TarReader {
            inner,
            done: false,
            last: None,
        }
    }

    fn header_err(&self, msg: impl Into<String>) -> TarError {
        TarError::Header {
            after: self.last.clone(),
            msg: msg.into(),
        }
    }

    /// Reads one 512-byte block; `Ok(false)` on a clean end of stream before any byte.
    fn read_block(&mut self, buf: &mut [u8; BLOCK]) -> Result<bool, TarError> {
        let mut filled = 0;
        while filled < BLOCK {
            match self.inner.read(&mut buf[filled..]) {
                Ok(0) if filled == 0 => return Ok(false),
                Ok(0) => return Err(TarError::Truncated("header block")),
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(true)
    }

    /// Reads `size` bytes of member data plus its padding to the next block.
    fn read_data(&mut self, size: u64) -> Result<Vec<u8>, TarError> {
        if size > MAX_MEMBER_BYTES {
            return Err(self.header_err(format!("member of {size} bytes exceeds the limit")));
        }
        let mut data = Vec::new();
        (&mut self.inner).take(size).read_to_end(&mut data)?;
        if (data.len() as u64) < size {
            return Err(TarError::Truncated("member data"));
        }
        let pad = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
        let skipped = std::io::copy(&mut (&mut self.inner).take(pad), &mut std::io::sink())?;
        if skipped < pad {
            return Err(TarError::Truncated("member padding"));
        }
        Ok(data)
    }

    fn next_member(&mut self) -> Result<Option<TarMember>, TarError> {
        let mut long_name: Option<String> = None;
        let mut block = [0u8; BLOCK];
        loop {
            if !self.read_block(&mut block)? {
                return Ok(None);
            }
            if block.iter().all(|&b| b == 0) {
                return Ok(None); // End-of-archive marker.
            }
            let stored: u64 = parse_octal(&block[148..156])
                .ok_or_else(|| self.header_err("checksum field is not octal"))?;
            let sum: u64 = block
                .iter()
                .enumerate()
                .map(|(i, &b)| {
                    if (148..156).contains(&i) {
                        32
                    } else {
                        b as u64
                    }
                })
                .sum();
            if sum != stored {
                return Err(self.header_err(format!("checksum {stored} != computed {sum}")));
            }
            let size = parse_size(&block[124..136])
                .ok_or_else(|| self.header_err("size field is not a number"))?;
            let kind = block[156];
            match kind {
                b'L' => {
                    let data = self.read_data(size)?;
                    long_name = Some(cstr(&data));
                }
                b'x' => {
                    let data = self.read_data(size)?;
                    if let Some(p) = pax_path(&data) {
                        long_name = Some(p);
                    }
                }
                b'0' | 0 | b'7' => {
                    let name = match long_name.take() {
                        Some(n) => n,
                        None => ustar_name(&block),
                    };
                    let data = self.read_data(size)?;
                    self.last = Some(name.clone());
                    return Ok(Some(TarMember { name, data }));
                }
                _ => {
                    // Directory, link, global pax header, ...: skip its data, if any.
                    self.read_data(size)?;
                    long_name = None;
                }
            }
        }
    }
}

impl<R: Read> Iterator for TarReader<R> {
    type Item = Result<TarMember, TarError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_member() {
            Ok(Some(m)) => Some(Ok(m)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Bytes up to the first NUL, lossily as UTF-8.
fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// `prefix/name` of a ustar header (just `name` for old-style headers).
fn ustar_name(block: &[u8; BLOCK]) -> String {
    let name = cstr(&block[0..100]);
    if &block[257..262] == b"ustar" {
        let prefix = cstr(&block[345..500]);
        if !prefix.is_empty() {
            return format!("{prefix}/{name}");
        }
    }
    name
}

/// An octal number field (space/NUL padded).
fn parse_octal(field: &[u8]) -> Option<u64> {
    let s: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|&b| b == b' ')
        .take_while(|&b| b != 0 && b != b' ')
        .collect();
    if s.is_empty() {
        return Some(0);
    }
    let mut v: u64 = 0;
    for b in s {
        if !(b'0'..=b'7').contains(&b) {
            return None;
        }
        v = v.checked_mul(8)?.checked_add((b - b'0') as u64)?;
    }
    Some(v)
}

/// The size field: octal, or GNU base-256 when the high bit of the first byte is set.
fn parse_size(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        let mut v: u64 = (field[0] & 0x7f) as u64;
        for &b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(b as u64)?;
        }
        Some(v)
    } else {
        parse_octal(field)
    }
}

/// The `path` record of a pax extended header ("<len> path=<value>\n" records).
fn pax_path(data: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(data);
    text.lines().find_map(|line| {
        let (_, rec) = line.split_once(' ')?;
        rec.strip_prefix("path=").map(str::to_string)
    })
}

/// Writes a tar stream of regular files (ustar; names up to 100 bytes, or prefix + name).
pub struct TarWriter<W: Write> {
    inner: W,
}

impl<W: Write> TarWriter<W> {
    pub fn new(inner: W) -> Self {
        TarWriter { inner }
    }

    /// Appends a regular file; a name that does not fit ustar is an `InvalidInput` error.
    pub fn append(&mut self, name: &str, data: &[u8]) -> std::io::Result<()> {
        let mut h = [0u8; BLOCK];
        let bytes = name.as_bytes();
        let (prefix, base) = if bytes.len() <= 100 {
            (&[][..], bytes)
        } else {
            match name.rfind('/') {
                Some(i) if i <= 155 && bytes.len() - i - 1 <= 100 => (&bytes[..i], &bytes[i + 1..]),
                _ => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!("tar member name too long: {name}"),
                    ))
                }
            }
        };
        h[..base.len()].copy_from_slice(base);
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
        h[136..148].copy_from_slice(b"00000000000\0");
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[345..345 + prefix.len()].copy_from_slice(prefix);
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|&b| b as u64).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        self.inner.write_all(&h)?;
        self.inner.write_all(data)?;
        let pad = (BLOCK - data.len() % BLOCK) % BLOCK;
        self.inner.write_all(&[0u8; BLOCK][..pad])
    }

    /// Writes the two zero blocks that end an archive and returns the inner writer.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.inner.write_all(&[0u8; 2 * BLOCK])?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_including_long_prefixed_names() {
        let long = format!("{}/{}.jpg", "d".repeat(120), "k".repeat(90));
        let mut w = TarWriter::new(Vec::new());
        w.append("a.cls", b"7").unwrap();
        w.append(&long, &[1u8; 1000]).unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(bytes.len() % BLOCK, 0);
        let got: Vec<TarMember> = TarReader::new(&bytes[..]).map(|m| m.unwrap()).collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].name, "a.cls");
        assert_eq!(got[0].data, b"7");
        assert_eq!(got[1].name, long);
        assert_eq!(got[1].data.len(), 1000);
    }

    #[test]
    fn corrupt_checksum_and_truncation_are_errors() {
        let mut w = TarWriter::new(Vec::new());
        w.append("x.jpg", &[5u8; 600]).unwrap();
        let bytes = w.finish().unwrap();
        let mut bad = bytes.clone();
        bad[10] ^= 1;
        let e = TarReader::new(&bad[..]).next().unwrap().unwrap_err();
        assert!(e.to_string().contains("checksum"), "{e}");
        let cut = &bytes[..BLOCK + 100];
        let e = TarReader::new(cut).next().unwrap().unwrap_err();
        assert!(e.to_string().contains("truncated member data"), "{e}");
    }
}
