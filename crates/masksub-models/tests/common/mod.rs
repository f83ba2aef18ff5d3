//! What the timm parity tests share: fixture files, host copies, the relative-error metric and
//! the fixtures' AdamW (decay / no-decay groups as timm's `param_groups_weight_decay`).
#![allow(dead_code)] // each test binary uses its own subset

use candle_core::Device;
use candle_core::{DType, Tensor, Var};
use masksub_core::{AdamW, AdamWConfig, ParamGroup};
use masksub_models::registry::{IMAGENET_MEAN, IMAGENET_STD};
use masksub_models::weights::{read_safetensors, LoadOptions};
use masksub_models::{LoadedModel, ModelArch, ModelSpec};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::path::PathBuf;

pub fn host(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

/// max|a - b| / (max|b| + 1e-6); infinite when `a` holds a NaN or an infinity.
pub fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let (a, b) = (host(a), host(b));
    if a.iter().any(|x| !x.is_finite()) {
        return f64::INFINITY;
    }
    let diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    if diff.is_nan() {
        return f64::INFINITY;
    }
    diff / (b.iter().map(|y| y.abs()).fold(0.0, f64::max) + 1e-6)
}

/// The fixtures' optimizer: AdamW (betas 0.9 / 0.999, eps 1e-8) with weight decay on the
/// parameters the model decays and none on the rest.
pub fn adamw(model: &LoadedModel, lr: f64, weight_decay: f64) -> AdamW {
    type Named = Vec<(String, Var)>;
    let (decay, no_decay): (Named, Named) = model
        .named_parameters()
        .into_iter()
        .partition(|(n, v)| model.decays(n, v.rank()));
    let group = |name: &str, params, weight_decay| ParamGroup {
        name: name.into(),
        params,
        weight_decay,
        lr_scale: 1.0,
    };
    AdamW::new(
        vec![
            group("decay", decay, weight_decay),
            group("no_decay", no_decay, 0.0),
        ],
        AdamWConfig {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
        },
    )
    .unwrap()
}

/// A golden fixture file `tests/fixtures/<name>.safetensors`: its tensors and its JSON-encoded
/// `__metadata__` (each test binary adds its own accessors in its own `impl Fixture`).
pub struct Fixture {
    pub name: &'static str,
    pub meta: HashMap<String, String>,
    pub tensors: HashMap<String, Tensor>,
}

impl Fixture {
    pub fn load(name: &'static str) -> Self {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(format!("{name}.safetensors"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let meta = header
            .metadata()
            .clone()
            .unwrap_or_else(|| panic!("{}: no __metadata__", path.display()));
        let tensors = read_safetensors(&path).unwrap();
        Self {
            name,
            meta,
            tensors,
        }
    }

    /// A metadata value (JSON-encoded in the file).
    pub fn meta<T: DeserializeOwned>(&self, key: &str) -> T {
        let raw = self
            .meta
            .get(key)
            .unwrap_or_else(|| panic!("{}: metadata `{key}` missing", self.name));
        serde_json::from_str(raw)
            .unwrap_or_else(|e| panic!("{}: metadata `{key}` = {raw:?}: {e}", self.name))
    }

    pub fn tensor(&self, key: &str) -> &Tensor {
        self.tensors
            .get(key)
            .unwrap_or_else(|| panic!("{}: tensor `{key}` missing", self.name))
    }

    pub fn scalar(&self, key: &str) -> f32 {
        let t = self.tensor(key);
        assert_eq!(
            t.rank(),
            0,
            "{}: `{key}` is not 0-dim: {:?}",
            self.name,
            t.dims()
        );
        t.to_scalar::<f32>().unwrap()
    }

    /// A model of `arch` holding `state`, loaded strictly (every key, no allowances), which
    /// also proves the parameter names are timm's `state_dict` keys.
    pub fn strict_model(&self, arch: ModelArch, state: &HashMap<String, Tensor>) -> LoadedModel {
        let spec = ModelSpec {
            name: self.name.into(),
            arch,
            mean: IMAGENET_MEAN.to_vec(),
            std: IMAGENET_STD.to_vec(),
            crop_pct: 1.0,
        };
        let model = spec.build(0, DType::F32, &Device::Cpu).unwrap();
        model
            .load_state_dict(state, self.name, &LoadOptions::default())
            .unwrap_or_else(|e| panic!("strict load of {}: {e}", self.name));
        model
    }

    /// The tensors under `prefix`, with the prefix stripped (e.g. `param.` -> a state dict).
    pub fn with_prefix(&self, prefix: &str) -> HashMap<String, Tensor> {
        self.tensors
            .iter()
            .filter_map(|(k, t)| k.strip_prefix(prefix).map(|k| (k.to_string(), t.clone())))
            .collect()
    }
}
