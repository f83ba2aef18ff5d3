//! Files from the Hugging Face Hub through hf-hub's blocking API, with the environment the
//! Python tools honour: the cache (`HF_HUB_CACHE`, else `HF_HOME/hub`, else
//! `~/.cache/huggingface/hub`) is looked up first, so a file already there is never fetched
//! again; `HF_HUB_OFFLINE=1` never touches the network; `HF_ENDPOINT` points at a mirror;
//! `HF_TOKEN` (else the cache's token file) authenticates gated repos.

use crate::{ModelError, Result};
use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};
use std::path::PathBuf;

/// Where and how to fetch; [`HubOptions::from_env`] reads the standard variables.
#[derive(Debug, Clone, Default)]
pub struct HubOptions {
    /// The hub cache folder (holding `models--org--name/`); `None` = hf-hub's default.
    pub cache_dir: Option<PathBuf>,
    pub endpoint: Option<String>,
    pub token: Option<String>,
    pub offline: bool,
    pub progress: bool,
}

/// `1`, `true`, `yes`, `on` (any case) count as set, as in huggingface_hub.
fn env_flag(name: &str) -> bool {
    std::env::var(name)
        .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
        .unwrap_or(false)
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl HubOptions {
    pub fn from_env() -> Self {
        let cache_dir = env_nonempty("HF_HUB_CACHE")
            .map(PathBuf::from)
            .or_else(|| env_nonempty("HF_HOME").map(|h| PathBuf::from(h).join("hub")));
        Self {
            cache_dir,
            endpoint: env_nonempty("HF_ENDPOINT"),
            token: env_nonempty("HF_TOKEN"),
            offline: env_flag("HF_HUB_OFFLINE"),
            progress: true,
        }
    }

    fn cache(&self) -> Cache {
        match &self.cache_dir {
            Some(d) => Cache::new(d.clone()),
            None => Cache::from_env(),
        }
    }
}

/// `repo_id` at `revision` (`None` = main): the local path of `filename`, from the cache or
/// downloaded into it.
pub fn fetch(
    repo_id: &str,
    revision: Option<&str>,
    filename: &str,
    opts: &HubOptions,
) -> Result<PathBuf> {
    let rev = revision.unwrap_or("main").to_string();
    let repo = Repo::with_revision(repo_id.to_string(), RepoType::Model, rev.clone());
    let cache = opts.cache();
    if let Some(p) = cache.repo(repo.clone()).get(filename) {
        return Ok(p);
    }
    let what = format!("hf://{repo_id}@{rev}/{filename}");
    if opts.offline {
        return Err(ModelError::Hub {
            what,
            reason: format!(
                "not in the hub cache {} and HF_HUB_OFFLINE is set",
                cache.path().display()
            ),
        });
    }
    let mut builder = ApiBuilder::from_cache(cache).with_progress(opts.progress);
    if let Some(e) = &opts.endpoint {
        builder = builder.with_endpoint(e.trim_end_matches('/').to_string());
    }
    if opts.token.is_some() {
        builder = builder.with_token(opts.token.clone());
    }
    let api = builder.build().map_err(|e| ModelError::Hub {
        what: what.clone(),
        reason: e.to_string(),
    })?;
    api.repo(repo).get(filename).map_err(|e| ModelError::Hub {
        what,
        reason: format!(
            "download from {} failed: {e}",
            opts.endpoint.as_deref().unwrap_or("https://huggingface.co")
        ),
    })
}
