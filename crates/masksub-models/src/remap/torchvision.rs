//! torchvision's MobileNetV2 to timm's `mobilenetv2_100` keys (same tensors, one to one):
//!
//! | torchvision | timm |
//! |---|---|
//! | `features.0.0` / `features.0.1` | `conv_stem` / `bn1` |
//! | `features.1.conv.{0.0, 0.1, 1, 2}` (expand 1) | `blocks.0.0.{conv_dw, bn1, conv_pw, bn2}` |
//! | `features.i.conv.{0.0, 0.1, 1.0, 1.1, 2, 3}`, i = 2..=17 | `blocks.s.j.{conv_pw, bn1, conv_dw, bn2, conv_pwl, bn3}` |
//! | `features.18.0` / `features.18.1` | `conv_head` / `bn2` |
//! | `classifier.1` | `classifier` |
//!
//! where feature i is block j of stage s for stages of [1, 2, 3, 4, 3, 3, 1] blocks.

use super::StateDict;
use crate::mobilenetv2::STAGE_DEPTHS;
use crate::{ModelError, Result};

/// Feature index (1..=17) -> (stage, block in stage).
fn stage_of(feature: usize) -> Option<(usize, usize)> {
    let mut first = 1;
    for (s, &n) in STAGE_DEPTHS.iter().enumerate() {
        if feature < first + n {
            return Some((s, feature - first));
        }
        first += n;
    }
    None
}

fn rename(k: &str) -> Option<String> {
    if let Some(rest) = k.strip_prefix("classifier.1.") {
        return Some(format!("classifier.{rest}"));
    }
    let rest = k.strip_prefix("features.")?;
    let (idx, rest) = rest.split_once('.')?;
    let idx: usize = idx.parse().ok()?;
    let last = STAGE_DEPTHS.iter().sum::<usize>() + 1;
    let stem_or_head = |conv: &str, bn: &str| -> Option<String> {
        let (sub, param) = rest.split_once('.')?;
        match sub {
            "0" => Some(format!("{conv}.{param}")),
            "1" => Some(format!("{bn}.{param}")),
            _ => None,
        }
    };
    if idx == 0 {
        return stem_or_head("conv_stem", "bn1");
    }
    if idx == last {
        return stem_or_head("conv_head", "bn2");
    }
    let (s, j) = stage_of(idx)?;
    let rest = rest.strip_prefix("conv.")?;
    let table: &[(&str, &str)] = if idx == 1 {
        &[
            ("0.0.", "conv_dw."),
            ("0.1.", "bn1."),
            ("1.", "conv_pw."),
            ("2.", "bn2."),
        ]
    } else {
        &[
            ("0.0.", "conv_pw."),
            ("0.1.", "bn1."),
            ("1.0.", "conv_dw."),
            ("1.1.", "bn2."),
            ("2.", "conv_pwl."),
            ("3.", "bn3."),
        ]
    };
    table.iter().find_map(|(from, to)| {
        rest.strip_prefix(from)
            .map(|param| format!("blocks.{s}.{j}.{to}{param}"))
    })
}

pub fn mobilenet_v2(sd: StateDict) -> Result<(StateDict, Vec<String>)> {
    let mut out = StateDict::new();
    let mut unknown = Vec::new();
    for (k, v) in sd {
        match rename(&k) {
            Some(n) => {
                out.insert(n, v);
            }
            None => unknown.push(k),
        }
    }
    if !unknown.is_empty() {
        unknown.sort();
        return Err(ModelError::Checkpoint {
            key: unknown.join(", "),
            reason: "not a torchvision MobileNetV2 key".into(),
        });
    }
    let n = out.len();
    Ok((
        out,
        vec![format!(
            "torchvision MobileNetV2: {n} tensors renamed to timm keys"
        )],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_as_the_table_says() {
        let r = |k: &str| rename(k).unwrap_or_default();
        assert_eq!(r("features.0.0.weight"), "conv_stem.weight");
        assert_eq!(r("features.0.1.running_var"), "bn1.running_var");
        assert_eq!(r("features.1.conv.0.0.weight"), "blocks.0.0.conv_dw.weight");
        assert_eq!(r("features.1.conv.1.weight"), "blocks.0.0.conv_pw.weight");
        assert_eq!(r("features.1.conv.2.bias"), "blocks.0.0.bn2.bias");
        assert_eq!(r("features.3.conv.1.0.weight"), "blocks.1.1.conv_dw.weight");
        assert_eq!(r("features.4.conv.0.1.weight"), "blocks.2.0.bn1.weight");
        assert_eq!(
            r("features.17.conv.3.num_batches_tracked"),
            "blocks.6.0.bn3.num_batches_tracked"
        );
        assert_eq!(r("features.18.0.weight"), "conv_head.weight");
        assert_eq!(r("features.18.1.bias"), "bn2.bias");
        assert_eq!(r("classifier.1.weight"), "classifier.weight");
        assert_eq!(rename("features.19.0.weight"), None);
        assert_eq!(rename("features.2.conv.4.weight"), None);
    }
}
