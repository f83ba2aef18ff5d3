//! Writes WebDataset shards: `<out>/<prefix>-<split>-NNNNNN.tar` with a fixed number of samples
//! each (`<key>.<jpg|png>` + `<key>.cls`), and the `_info.json` timm reads for counts.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use image::ImageFormat;

use crate::decode::{encode, RgbImage};
use crate::error::{DataError, Result};
use crate::shards::{DatasetInfo, SplitInfo};
use crate::tar::TarWriter;

/// Image encoding of converted samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardImageFormat {
    /// JPEG at this quality (1-100).
    Jpeg(u8),
    Png,
}

/// Streams samples into consecutive shards of one split.
pub struct ShardWriter {
    dir: PathBuf,
    prefix: String,
    split: String,
    per_shard: usize,
    format: ShardImageFormat,
    current: Option<(TarWriter<BufWriter<File>>, PathBuf)>,
    in_current: usize,
    info: SplitInfo,
}

impl ShardWriter {
    /// Creates `dir` if needed.
    pub fn new(
        dir: &Path,
        prefix: &str,
        split: &str,
        per_shard: usize,
        format: ShardImageFormat,
    ) -> Result<Self> {
        if per_shard == 0 {
            return Err(DataError::Config {
                field: "samples_per_shard",
                msg: "must be > 0".into(),
            });
        }
        std::fs::create_dir_all(dir).map_err(|source| DataError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(ShardWriter {
            dir: dir.to_path_buf(),
            prefix: prefix.to_string(),
            split: split.to_string(),
            per_shard,
            format,
            current: None,
            in_current: 0,
            info: SplitInfo {
                name: split.to_string(),
                ..SplitInfo::default()
            },
        })
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
        move |source| DataError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Encodes and appends one sample under `key` (no `.` allowed in the file name part).
    pub fn write(&mut self, key: &str, img: &RgbImage, label: u32) -> Result<()> {
        let (bytes, ext) = match self.format {
            ShardImageFormat::Jpeg(q) => (encode(img, ImageFormat::Jpeg, q), "jpg"),
            ShardImageFormat::Png => (encode(img, ImageFormat::Png, 0), "png"),
        };
        let bytes = bytes.map_err(|msg| DataError::Shape {
            name: key.to_string(),
            msg,
        })?;
        self.write_encoded(key, ext, &bytes, label)
    }

    /// Appends already encoded image bytes (`ext` = jpg, png, webp).
    pub fn write_encoded(&mut self, key: &str, ext: &str, bytes: &[u8], label: u32) -> Result<()> {
        if self.current.is_none() {
            let name = format!(
                "{}-{}-{:06}.tar",
                self.prefix,
                self.split,
                self.info.filenames.len()
            );
            let path = self.dir.join(&name);
            let file = File::create(&path).map_err(Self::io(&path))?;
            self.current = Some((TarWriter::new(BufWriter::new(file)), path));
            self.info.filenames.push(name);
            self.info.shard_lengths.push(0);
        }
        if let Some((tar, path)) = self.current.as_mut() {
            tar.append(&format!("{key}.{ext}"), bytes)
                .and_then(|_| tar.append(&format!("{key}.cls"), label.to_string().as_bytes()))
                .map_err(Self::io(path))?;
        }
        self.in_current += 1;
        self.info.num_samples += 1;
        if let Some(n) = self.info.shard_lengths.last_mut() {
            *n += 1;
        }
        if self.in_current == self.per_shard {
            self.close_current()?;
        }
        Ok(())
    }

    fn close_current(&mut self) -> Result<()> {
        if let Some((tar, path)) = self.current.take() {
            tar.finish().map_err(Self::io(&path))?;
        }
        self.in_current = 0;
        Ok(())
    }

    /// Closes the last shard and merges this split into `<dir>/_info.json`.
    pub fn finish(mut self, classes: Vec<String>) -> Result<SplitInfo> {
        self.close_current()?;
        self.info.classes = classes;
        let path = self.dir.join("_info.json");
        let mut info = crate::shards::read_info(&self.dir)?.unwrap_or_else(|| DatasetInfo {
            name: self.prefix.clone(),
            ..DatasetInfo::default()
        });
        info.splits.insert(self.split.clone(), self.info.clone());
        let text = serde_json::to_string_pretty(&info).map_err(|e| DataError::Format {
            path: path.clone(),
            msg: e.to_string(),
        })?;
        std::fs::write(&path, text).map_err(Self::io(&path))?;
        Ok(self.info)
    }
}
