//! Training recipes: TOML files under `recipes/` in the repository (embedded in the binary, so
//! `--recipe NAME` works from any directory), each a partial [`TrainConfig`] over its
//! defaults; unknown fields are errors. `--config FILE` takes any recipe or run config file,
//! TOML or JSON.

use crate::TrainConfig;
use anyhow::{bail, Context, Result};
use std::path::Path;

/// (name, file text) of every shipped recipe.
const RECIPES: &[(&str, &str)] = &[
    (
        "fmnist_vit_small",
        include_str!("../../../recipes/fmnist_vit_small.toml"),
    ),
    (
        "fmnist_resnet_small",
        include_str!("../../../recipes/fmnist_resnet_small.toml"),
    ),
    (
        "fmnist_swin_small",
        include_str!("../../../recipes/fmnist_swin_small.toml"),
    ),
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
            assert!(
                masksub_models::registry::lookup(&cfg.model).is_ok(),
                "{name}: {}",
                cfg.model
            );
            assert!(summary(name).is_some_and(|s| !s.is_empty()), "{name}");
        }
        let vit = by_name("fmnist_vit_small").unwrap();
        assert_eq!(
            (vit.model.as_str(), vit.epochs, vit.batch_size),
            ("vit_fmnist_small", 5, 64)
        );
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
