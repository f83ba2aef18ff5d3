//! `--pretrained` / `--checkpoint-path`: the starting weights of a fresh run.

use crate::config::TrainConfig;
use anyhow::{bail, Context, Result};
use masksub_models::hub::HubOptions;
use masksub_models::pretrained::{self, LoadReport};
use masksub_models::LoadedModel;

/// timm's default head init when the tag does not say otherwise.
const DEFAULT_HEAD_STD: f64 = 0.02;

/// Load the configured starting weights into `model`; None when the run starts from scratch.
pub fn load_initial_weights(cfg: &TrainConfig, model: &LoadedModel) -> Result<Option<LoadReport>> {
    let tag = pretrained::find(&cfg.model);
    let path = match (&cfg.checkpoint_path, cfg.pretrained) {
        (Some(p), _) => p.clone(),
        (None, true) => {
            let Some(tag) = tag else {
                bail!(
                    "--pretrained: `{}` has no pretrained tag; `masksub models --pretrained` lists them, or pass --checkpoint-path",
                    cfg.model
                );
            };
            pretrained::resolve(tag, &HubOptions::from_env())?
        }
        (None, false) => return Ok(None),
    };
    let sd = pretrained::read_weights(&path)?;
    let head_std = tag.map_or(DEFAULT_HEAD_STD, |t| t.head_init_std);
    let report = pretrained::load_pretrained(
        model,
        sd,
        &path.display().to_string(),
        None,
        head_std,
        cfg.seed,
    )
    .with_context(|| format!("loading the starting weights of `{}`", cfg.model))?;
    Ok(Some(report))
}
