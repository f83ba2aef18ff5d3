//! Training recipes: TOML files under `recipes/` in the repository (embedded in the binary, so
//! `--recipe NAME` works from any directory), each a partial [`TrainConfig`] over its
//! defaults; unknown fields are errors. `--config FILE` takes any recipe or run config file,
//! TOML or JSON.

use crate::TrainConfig;
use anyhow::{bail, Context, Result};
use std::path::Path;

/// `(name, text)` of shipped recipes, each from `recipes/<name>.toml`.
macro_rules! recipes {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../../../recipes/", $name, ".toml")))),*]
    };
}

/// (name, file text) of every shipped recipe: CPU scale (Fashion-MNIST) first, then the
/// paper's ImageNet recipes.
const RECIPES: &[(&str, &str)] = recipes![
    "fmnist_vit_small",
    "fmnist_resnet_small",
    "fmnist_swin_small",
    "deit3_vit_s_400ep",
    "deit3_vit_s_ft224",
    "deit3_vit_b_400ep",
    "deit3_vit_b_800ep",
    "deit3_vit_b_ft224",
    "mae_ft_vit_b",
    "clip_ft_vit_b",
    "swin_tiny_300ep",
    "swin_small_300ep",
    "swin_base_300ep",
    "rsb_a2_resnet50",
    "rsb_a2_resnet101",
    "rsb_a2_resnet152",
];

/// The shipped recipes' names.
pub fn names() -> Vec<&'static str> {
    RECIPES.iter().map(|(n, _)| *n).collect()
}

/// A recipe's first comment line (what `masksub recipes` prints).
pub fn summary(name: &str) -> Option<String> {
    let (_, text) = RECIPES.iter().find(|(n, _)| *n == name)?;
    text.lines()
        .next()
        .map(|l| l.trim_start_matches('#').trim().to_string())
}

/// Parse a TOML recipe; `origin` names it in errors.
pub fn parse_toml(text: &str, origin: &str) -> Result<TrainConfig> {
    let cfg: TrainConfig =
        toml::from_str(text).with_context(|| format!("{origin}: invalid recipe"))?;
    cfg.validate().with_context(|| origin.to_string())?;
    Ok(cfg)
}

/// A shipped recipe by name.
pub fn by_name(name: &str) -> Result<TrainConfig> {
    match RECIPES.iter().find(|(n, _)| *n == name) {
        Some((_, text)) => parse_toml(text, &format!("recipe `{name}`")),
        None => bail!(
            "unknown recipe `{name}`; shipped recipes: {}",
            names().join(", ")
        ),
    }
}

/// A recipe or run config file: TOML by extension `.toml`, JSON otherwise.
pub fn from_file(path: &Path) -> Result<TrainConfig> {
    if path.extension().is_some_and(|e| e == "toml") {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read recipe", path.display()))?;
        parse_toml(&text, &path.display().to_string())
    } else {
        TrainConfig::load(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_recipe_parses_validates_and_has_a_summary() {
        for name in names() {
            let cfg = by_name(name).unwrap();
            assert!(cfg.epochs > 0, "{name}");
            let spec = masksub_models::registry::lookup(&cfg.model)
                .and_then(|s| s.with_kwargs(&cfg.model_kwargs));
            assert!(spec.is_ok(), "{name}: {} {:?}", cfg.model, spec.err());
            assert!(summary(name).is_some_and(|s| !s.is_empty()), "{name}");
        }
        let vit = by_name("fmnist_vit_small").unwrap();
        assert_eq!(
            (vit.model.as_str(), vit.epochs, vit.batch_size),
            ("vit_fmnist_small", 16, 64)
        );
    }

    #[test]
    fn paper_recipes_carry_the_papers_settings() {
        use masksub_core::{LossKind, OptimizerKind};
        let d = by_name("deit3_vit_b_400ep").unwrap();
        assert_eq!(
            (d.opt, d.loss, d.repeats, d.epochs),
            (OptimizerKind::Lamb, LossKind::Bce, 3, 400)
        );
        assert!(d.image_aug.three_augment && d.image_aug.crop_pct == 1.0);
        let spec = masksub_models::registry::lookup(&d.model)
            .and_then(|s| s.with_kwargs(&d.model_kwargs))
            .unwrap();
        assert_eq!(spec.arch.config().input_shape(), (3, 192, 192));
        let mae = by_name("mae_ft_vit_b").unwrap();
        assert!(mae.pretrained && mae.layer_decay == Some(0.65));
        assert_eq!(
            mae.image_aug.auto_augment.as_deref(),
            Some("rand-m9-mstd0.5-inc1")
        );
        let swin = by_name("swin_small_300ep").unwrap();
        assert_eq!(
            (swin.clip_grad, swin.drop_path, swin.warmup_epochs),
            (Some(5.0), Some(0.3), 20.0)
        );
        let rsb = by_name("rsb_a2_resnet101").unwrap();
        assert_eq!(
            (rsb.opt, rsb.lr, rsb.mixup.map(|m| m.mixup_alpha)),
            (OptimizerKind::Lamb, 5e-3, Some(0.1))
        );
        for name in names().into_iter().filter(|n| !n.starts_with("fmnist")) {
            let cfg = by_name(name).unwrap();
            assert!(cfg.data.to_string_lossy().starts_with("hf://"), "{name}");
            assert_eq!(cfg.sub.ratio(), Some(0.5), "{name}");
        }
    }

    #[test]
    fn unknown_fields_and_names_are_errors_that_say_where() {
        let e = format!(
            "{:#}",
            parse_toml("epochs = 3\nlearning_rate = 1.0\n", "x.toml").unwrap_err()
        );
        assert!(e.contains("x.toml") && e.contains("learning_rate"), "{e}");
        let e = format!("{:#}", parse_toml("epochs = 0\n", "y.toml").unwrap_err());
        assert!(e.contains("y.toml") && e.contains("epochs"), "{e}");
        let e = by_name("nope").unwrap_err().to_string();
        assert!(e.contains("fmnist_vit_small"), "{e}");
    }
}
