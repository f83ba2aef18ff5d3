//! WebDataset sample grouping: consecutive tar members that share a key form one sample.
//!
//! As in webdataset's `base_plus_ext`, the key is the member path up to the first `.` of its
//! file name and the extension is the rest, lowercased (`n01/abc.JPEG` -> key `n01/abc`,
//! extension `jpeg`). The image is the first `.jpg/.jpeg/.png/.webp` member, the label the
//! decimal text of `.cls`; other members are ignored.

use std::io::Read;

use crate::tar::{TarError, TarReader};

/// Image member extensions, in the order timm's `input_key = "jpg;png;webp"` looks for them.
pub const IMAGE_EXTS: [&str; 4] = ["jpg", "jpeg", "png", "webp"];

/// The undecoded members of one sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawSample {
    pub key: String,
    /// Extension and bytes of the image member.
    pub image: (String, Vec<u8>),
    pub label: u32,
}

/// A sample that cannot be used, with the reason; `key` is the sample key (or, for a broken
/// tar stream, `"after <last key>"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadSample {
    pub key: String,
    pub reason: String,
}

/// Splits `path` into (key, lowercased extension); `None` for a name without a `.`.
pub fn split_key(path: &str) -> Option<(&str, String)> {
    let base_start = path.rfind('/').map_or(0, |i| i + 1);
    let dot = path[base_start..].find('.')? + base_start;
    Some((&path[..dot], path[dot + 1..].to_ascii_lowercase()))
}

/// Members collected for the key being grouped.
#[derive(Default)]
struct Pending {
    key: String,
    image: Option<(String, Vec<u8>)>,
    cls: Option<Vec<u8>>,
}

impl Pending {
    fn finish(self) -> Result<RawSample, BadSample> {
        let bad = |reason: String| BadSample {
            key: self.key.clone(),
            reason,
        };
        let image = self
            .image
            .clone()
            .ok_or_else(|| bad("no .jpg/.jpeg/.png/.webp member".into()))?;
        let cls = self
            .cls
            .as_ref()
            .ok_or_else(|| bad("no .cls label".into()))?;
        let text = std::str::from_utf8(cls).map_err(|_| bad("label is not text".into()))?;
        let label = text
            .trim()
            .parse::<u32>()
            .map_err(|_| bad(format!("label {:?} is not a class index", text.trim())))?;
        Ok(RawSample {
            key: self.key,
            image,
            label,
        })
    }
}

/// Iterator over the samples of one tar stream.
pub struct SampleReader<R> {
    tar: TarReader<R>,
    pending: Option<Pending>,
    ended: bool,
    /// A stream error to report after the sample grouped before it.
    broken: Option<BadSample>,
}

impl<R: Read> SampleReader<R> {
    pub fn new(inner: R) -> Self {
        SampleReader {
            tar: TarReader::new(inner),
            pending: None,
            ended: false,
            broken: None,
        }
    }
}

impl<R: Read> Iterator for SampleReader<R> {
    type Item = Result<RawSample, BadSample>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.ended {
                if let Some(p) = self.pending.take() {
                    return Some(p.finish());
                }
                return self.broken.take().map(Err);
            }
            let member = match self.tar.next() {
                None => {
                    self.ended = true;
                    continue;
                }
                Some(Err(e)) => {
                    // The members grouped so far are whole; the broken one is reported after.
                    self.ended = true;
                    let after = self.pending.as_ref().map(|p| p.key.clone());
                    self.broken = Some(stream_error(after, &e));
                    continue;
                }
                Some(Ok(m)) => m,
            };
            let Some((key, ext)) = split_key(&member.name) else {
                continue; // A file without an extension belongs to no sample.
            };
            let same = self.pending.as_ref().is_some_and(|p| p.key == key);
            let finished = if same {
                None
            } else {
                self.pending.replace(Pending {
                    key: key.to_string(),
                    ..Pending::default()
                })
            };
            if let Some(p) = self.pending.as_mut() {
                if IMAGE_EXTS.contains(&ext.as_str()) {
                    if p.image.is_none() {
                        p.image = Some((ext, member.data));
                    }
                } else if ext == "cls" {
                    p.cls = Some(member.data);
                }
            }
            if let Some(done) = finished {
                return Some(done.finish());
            }
        }
    }
}

fn stream_error(after: Option<String>, e: &TarError) -> BadSample {
    BadSample {
        key: match after {
            Some(k) => format!("after {k}"),
            None => "<tar stream>".to_string(),
        },
        reason: format!("broken tar member: {e} (the rest of the shard is unreadable and skipped)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tar::TarWriter;

    #[test]
    fn keys_split_at_the_first_dot_of_the_file_name() {
        assert_eq!(
            split_key("n01/a.b.JPEG"),
            Some(("n01/a", "b.jpeg".to_string()))
        );
        assert_eq!(split_key("x.cls"), Some(("x", "cls".to_string())));
        assert_eq!(split_key("dir.v2/noext"), None);
    }

    #[test]
    fn groups_members_and_reports_incomplete_samples() {
        let mut w = TarWriter::new(Vec::new());
        w.append("s0.jpg", b"J0").unwrap();
        w.append("s0.cls", b"3\n").unwrap();
        w.append("s0.json", b"{}").unwrap();
        w.append("s1.png", b"P1").unwrap();
        w.append("s2.cls", b"4").unwrap();
        w.append("s3.webp", b"W").unwrap();
        w.append("s3.cls", b"cat").unwrap();
        let bytes = w.finish().unwrap();
        let got: Vec<_> = SampleReader::new(&bytes[..]).collect();
        assert_eq!(got.len(), 4);
        let s0 = got[0].as_ref().unwrap();
        assert_eq!((s0.key.as_str(), s0.label), ("s0", 3));
        assert_eq!(s0.image, ("jpg".to_string(), b"J0".to_vec()));
        assert!(got[1].as_ref().unwrap_err().reason.contains(".cls"));
        assert!(got[2].as_ref().unwrap_err().reason.contains("no .jpg"));
        assert!(got[3].as_ref().unwrap_err().reason.contains("\"cat\""));
    }
}
