//! Which tar shards make up a dataset split: a local folder, a brace pattern
//! (`train-{0000..1023}.tar`), a single file, or a Hugging Face dataset repo (see `hub`).
//!
//! Sample counts come from the split's `_info.json` (timm's layout: `splits.<split>.filenames`
//! and `shard_lengths`) where present, else from a header-only scan of each local shard.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::hub::{self, HubOptions, HubShard};

/// Where a shard's bytes come from.
#[derive(Debug, Clone)]
pub enum ShardLocation {
    Local(PathBuf),
    /// A file of a Hub dataset repo, fetched into the hub cache when first opened.
    Hub(HubShard),
}

/// One tar shard.
#[derive(Debug, Clone)]
pub struct Shard {
    /// The name errors and reports use (file name, or repo path for the Hub).
    pub name: String,
    pub location: ShardLocation,
    /// Samples in the shard, if known.
    pub samples: Option<usize>,
}

impl Shard {
    /// Opens the shard for sequential reading (downloading a Hub shard first if needed).
    pub fn open(&self) -> Result<BufReader<File>> {
        let path = match &self.location {
            ShardLocation::Local(p) => p.clone(),
            ShardLocation::Hub(h) => h.fetch()?,
        };
        let file = File::open(&path).map_err(|source| DataError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(BufReader::with_capacity(1 << 20, file))
    }
}

/// The shards of one split and its total sample count.
#[derive(Debug, Clone)]
pub struct ShardSet {
    /// What the user passed, for messages.
    pub spec: String,
    pub shards: Vec<Shard>,
}

impl ShardSet {
    /// Resolves `spec` (folder, brace pattern, `.tar` file or `hf://datasets/owner/name[@rev]`)
    /// for `split`. Every local shard must exist: a missing one is an error naming it.
    pub fn resolve(spec: &str, split: &str, hub_opts: &HubOptions) -> Result<Self> {
        let shards = if let Some(rest) = spec.strip_prefix("hf://") {
            hub::resolve_shards(rest, split, hub_opts)?
        } else if spec.contains('{') {
            let names = expand_braces(spec).map_err(|msg| DataError::Spec {
                spec: spec.to_string(),
                msg,
            })?;
            let dir = Path::new(&names[0])
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default();
            let counts = read_info(&dir)?.and_then(|i| i.split_counts(split));
            names
                .into_iter()
                .map(|n| local_shard(PathBuf::from(n), counts.as_ref()))
                .collect::<Result<_>>()?
        } else {
            let path = Path::new(spec);
            if path.is_dir() {
                dir_shards(path, split)?
            } else {
                vec![local_shard(path.to_path_buf(), None)?]
            }
        };
        if shards.is_empty() {
            return Err(DataError::Spec {
                spec: spec.to_string(),
                msg: format!("no shards for split `{split}`"),
            });
        }
        Ok(ShardSet {
            spec: spec.to_string(),
            shards,
        })
    }

    /// Total samples, counting unknown shards by a header scan (local files only; a Hub
    /// shard without a count is fetched first).
    pub fn count_samples(&mut self) -> Result<usize> {
        let mut total = 0;
        for shard in &mut self.shards {
            if shard.samples.is_none() {
                let reader = shard.open()?;
                shard.samples = Some(count_keys(reader));
            }
            total += shard.samples.unwrap_or(0);
        }
        Ok(total)
    }
}

/// Counts distinct sample keys of a tar stream by reading it (stops at the first error).
fn count_keys(reader: impl std::io::Read) -> usize {
    crate::wds::SampleReader::new(reader).count()
}

fn local_shard(path: PathBuf, counts: Option<&Vec<(String, usize)>>) -> Result<Shard> {
    if !path.is_file() {
        return Err(DataError::MissingShard { path });
    }
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let samples = counts.and_then(|c| c.iter().find(|(f, _)| *f == name).map(|(_, n)| *n));
    Ok(Shard {
        name,
        location: ShardLocation::Local(path),
        samples,
    })
}

/// A folder: the split's `filenames` from `_info.json`, else `<split>/*.tar`, else the
/// `*.tar` files whose name contains the split name.
fn dir_shards(dir: &Path, split: &str) -> Result<Vec<Shard>> {
    if let Some(info) = read_info(dir)? {
        if let Some(counts) = info.split_counts(split) {
            return counts
                .iter()
                .map(|(f, _)| local_shard(dir.join(f), Some(&counts)))
                .collect();
        }
    }
    let sub = dir.join(split);
    let (root, filter): (&Path, Option<&str>) = if sub.is_dir() {
        (&sub, None)
    } else {
        (dir, Some(split))
    };
    let entries = std::fs::read_dir(root).map_err(|source| DataError::Io {
        path: root.to_path_buf(),
        source,
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "tar"))
        .filter(|p| {
            filter.is_none_or(|s| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().contains(s))
            })
        })
        .collect();
    paths.sort();
    paths.into_iter().map(|p| local_shard(p, None)).collect()
}

/// timm's `_info.json`: per split, the shard file names and their sample counts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DatasetInfo {
    #[serde(default)]
    pub name: String,
    pub splits: std::collections::BTreeMap<String, SplitInfo>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SplitInfo {
    #[serde(default)]
    pub name: String,
    pub num_samples: usize,
    pub filenames: Vec<String>,
    #[serde(default)]
    pub shard_lengths: Vec<usize>,
    /// Class names by index, if the writer knew them (masksub's converter records them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<String>,
}

impl DatasetInfo {
    /// (file name, samples) of `split`, if the info describes it with one count per file.
    pub fn split_counts(&self, split: &str) -> Option<Vec<(String, usize)>> {
        let s = self.splits.get(split)?;
        if s.shard_lengths.len() != s.filenames.len() {
            return None;
        }
        Some(
            s.filenames
                .iter()
                .cloned()
                .zip(s.shard_lengths.iter().copied())
                .collect(),
        )
    }

    /// Parses JSON text; the error says why it is not a dataset info.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        serde_json::from_str(text)
            .map_err(|e| format!("not a dataset info (timm's `_info.json` layout): {e}"))
    }
}

/// `dir/_info.json`: `None` where there is none; an error naming the file where it cannot be
/// read or parsed (a broken one is never silently replaced by a guess).
pub fn read_info(dir: &Path) -> Result<Option<DatasetInfo>> {
    let path = dir.join("_info.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(DataError::Io { path, source }),
    };
    DatasetInfo::parse(&text)
        .map(Some)
        .map_err(|msg| DataError::format(&path, msg))
}

/// Expands `{a..b}` ranges (zero padding kept from `a`) and `{x,y}` lists, as braceexpand.
pub fn expand_braces(pattern: &str) -> std::result::Result<Vec<String>, String> {
    let Some(open) = pattern.find('{') else {
        return Ok(vec![pattern.to_string()]);
    };
    let close = pattern[open..]
        .find('}')
        .map(|i| i + open)
        .ok_or_else(|| "unclosed `{`".to_string())?;
    let (head, body, tail) = (
        &pattern[..open],
        &pattern[open + 1..close],
        &pattern[close + 1..],
    );
    let items: Vec<String> = if let Some((a, b)) = body.split_once("..") {
        let (lo, hi) = (
            a.parse::<u64>()
                .map_err(|_| format!("`{a}` is not a number"))?,
            b.parse::<u64>()
                .map_err(|_| format!("`{b}` is not a number"))?,
        );
        if lo > hi {
            return Err(format!("empty range {{{body}}}"));
        }
        if hi - lo > 10_000_000 {
            return Err(format!("range {{{body}}} is too large"));
        }
        let width = a.len();
        (lo..=hi).map(|i| format!("{i:0width$}")).collect()
    } else {
        body.split(',').map(str::to_string).collect()
    };
    let rest = expand_braces(tail)?;
    Ok(items
        .iter()
        .flat_map(|i| rest.iter().map(move |r| format!("{head}{i}{r}")))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn braces_expand_ranges_with_padding_and_lists() {
        assert_eq!(
            expand_braces("d/s-{08..10}.tar").unwrap(),
            vec!["d/s-08.tar", "d/s-09.tar", "d/s-10.tar"]
        );
        assert_eq!(
            expand_braces("{a,b}-{0..1}").unwrap(),
            vec!["a-0", "a-1", "b-0", "b-1"]
        );
        assert!(expand_braces("x{3..1}").is_err());
        assert!(expand_braces("x{1..").is_err());
    }
}
