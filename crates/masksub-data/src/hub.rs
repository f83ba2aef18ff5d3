//! Hugging Face dataset repos as shard sources, through hf-hub's blocking API and its cache.
//!
//! `hf://datasets/owner/name[@revision]` lists the split's shards from the repo's `_info.json`
//! (or, without one, the repo's `*.tar` files whose name contains the split). Shards are
//! fetched into the hub cache when a worker first opens them, so a run streams them in order.
//! Offline (`HF_HUB_OFFLINE=1` or [`HubOptions::offline`]) everything is read from the cache
//! only, and a file missing there is an error naming it.

use std::path::PathBuf;

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};

use crate::error::{DataError, Result};
use crate::shards::{DatasetInfo, Shard, ShardLocation};

/// Where the hub cache is and whether the network may be used.
#[derive(Debug, Clone, Default)]
pub struct HubOptions {
    /// The hub cache folder; `None` = `HF_HUB_CACHE`, else `HF_HOME/hub`, else
    /// `~/.cache/huggingface/hub`.
    pub cache_dir: Option<PathBuf>,
    /// Never use the network (also when `HF_HUB_OFFLINE` is set to 1/true).
    pub offline: bool,
}

impl HubOptions {
    fn cache(&self) -> Cache {
        if let Some(d) = &self.cache_dir {
            return Cache::new(d.clone());
        }
        match std::env::var_os("HF_HUB_CACHE") {
            Some(d) => Cache::new(PathBuf::from(d)),
            None => Cache::from_env(),
        }
    }

    fn is_offline(&self) -> bool {
        self.offline
            || std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| matches!(v.as_str(), "1" | "true"))
    }
}

/// A file of a dataset repo at a revision.
#[derive(Debug, Clone)]
pub struct HubShard {
    pub repo_id: String,
    pub revision: String,
    pub file: String,
    pub opts: HubOptions,
}

impl HubShard {
    /// The local path of the file, downloading it into the cache unless offline.
    pub fn fetch(&self) -> Result<PathBuf> {
        fetch_file(&self.repo_id, &self.revision, &self.file, &self.opts)
    }
}

fn repo(repo_id: &str, revision: &str) -> Repo {
    Repo::with_revision(repo_id.to_string(), RepoType::Dataset, revision.to_string())
}

fn hub_err(repo_id: &str, file: &str, msg: impl Into<String>) -> DataError {
    DataError::Hub {
        repo: repo_id.to_string(),
        file: file.to_string(),
        msg: msg.into(),
    }
}

/// `file` of the repo: from the cache, or (online) downloaded into it.
fn fetch_file(repo_id: &str, revision: &str, file: &str, opts: &HubOptions) -> Result<PathBuf> {
    let cache = opts.cache();
    if let Some(p) = cache.repo(repo(repo_id, revision)).get(file) {
        return Ok(p);
    }
    if opts.is_offline() {
        return Err(hub_err(
            repo_id,
            file,
            format!(
                "offline and not in the hub cache {}",
                cache.path().display()
            ),
        ));
    }
    let api = ApiBuilder::from_cache(cache)
        .with_progress(false)
        .build()
        .map_err(|e| hub_err(repo_id, file, e.to_string()))?;
    api.repo(repo(repo_id, revision))
        .get(file)
        .map_err(|e| hub_err(repo_id, file, e.to_string()))
}

/// Parses `datasets/owner/name[@rev]` into (repo id, revision).
pub fn parse_repo(spec: &str) -> Result<(String, String)> {
    let bad = |msg: &str| DataError::Spec {
        spec: format!("hf://{spec}"),
        msg: msg.to_string(),
    };
    let rest = spec
        .strip_prefix("datasets/")
        .ok_or_else(|| bad("expected hf://datasets/<owner>/<name>[@revision]"))?;
    let (id, rev) = match rest.split_once('@') {
        Some((id, rev)) if !rev.is_empty() => (id, rev),
        Some(_) => return Err(bad("empty revision after `@`")),
        None => (rest, "main"),
    };
    let id = id.trim_end_matches('/');
    if id.split('/').count() != 2 || id.split('/').any(str::is_empty) {
        return Err(bad("the repo id must be <owner>/<name>"));
    }
    Ok((id.to_string(), rev.to_string()))
}

/// The shards of `split` in a dataset repo.
pub fn resolve_shards(spec: &str, split: &str, opts: &HubOptions) -> Result<Vec<Shard>> {
    let (repo_id, revision) = parse_repo(spec)?;
    let shard = |file: String, samples: Option<usize>| Shard {
        name: format!("{repo_id}/{file}"),
        location: ShardLocation::Hub(HubShard {
            repo_id: repo_id.clone(),
            revision: revision.clone(),
            file,
            opts: opts.clone(),
        }),
        samples,
    };
    // A repo without `_info.json` lists its shards by name; one that has it must parse.
    let info = match fetch_file(&repo_id, &revision, "_info.json", opts) {
        Ok(path) => {
            let text =
                std::fs::read_to_string(&path).map_err(|source| DataError::Io { path, source })?;
            Some(DatasetInfo::parse(&text).map_err(|msg| hub_err(&repo_id, "_info.json", msg))?)
        }
        Err(_) => None,
    };
    if let Some(counts) = info.as_ref().and_then(|i| i.split_counts(split)) {
        return Ok(counts.into_iter().map(|(f, n)| shard(f, Some(n))).collect());
    }
    let mut files = list_files(&repo_id, &revision, opts)?;
    files.retain(|f| f.ends_with(".tar") && f.contains(split));
    files.sort();
    Ok(files.into_iter().map(|f| shard(f, None)).collect())
}

const LIST_FAILED: &str = "cannot list the repo's files";
const OFFLINE_HINT: &str = " (without network, HF_HUB_OFFLINE=1 reads the hub cache only)";

/// The repo's file list: from the Hub API, or offline from the cached snapshot folder.
fn list_files(repo_id: &str, revision: &str, opts: &HubOptions) -> Result<Vec<String>> {
    let cache = opts.cache();
    if opts.is_offline() {
        let r = repo(repo_id, revision);
        let base = cache.path().join(r.folder_name());
        let refs = base.join("refs").join(revision);
        let commit = std::fs::read_to_string(&refs).map_err(|e| {
            let msg = format!(
                "offline, and the hub cache has no revision `{revision}` of it ({}: {e})",
                refs.display()
            );
            hub_err(repo_id, "", msg)
        })?;
        let snap = base.join("snapshots").join(commit.trim());
        let mut out = Vec::new();
        walk(&snap, &snap, &mut out);
        return Ok(out);
    }
    let api = ApiBuilder::from_cache(cache)
        .with_progress(false)
        .build()
        .map_err(|e| hub_err(repo_id, "", format!("{LIST_FAILED}: {e}{OFFLINE_HINT}")))?;
    let info = api
        .repo(repo(repo_id, revision))
        .info()
        .map_err(|e| hub_err(repo_id, "", format!("{LIST_FAILED}: {e}{OFFLINE_HINT}")))?;
    Ok(info.siblings.into_iter().map(|s| s.rfilename).collect())
}

/// Relative paths of the files under `dir`.
fn walk(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(root, &p, out);
        } else if let Ok(rel) = p.strip_prefix(root) {
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_specs_parse_with_and_without_revision() {
        assert_eq!(
            parse_repo("datasets/timm/imagenet-1k-wds").unwrap(),
            ("timm/imagenet-1k-wds".into(), "main".into())
        );
        assert_eq!(
            parse_repo("datasets/a/b@v1.0").unwrap(),
            ("a/b".into(), "v1.0".into())
        );
        assert!(parse_repo("models/a/b").is_err());
        assert!(parse_repo("datasets/a").is_err());
    }
}
