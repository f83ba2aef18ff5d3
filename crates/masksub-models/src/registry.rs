//! One registry of model names (timm's where the architecture exists in timm) with their
//! architecture config and preprocessing.

use crate::arch::ArchConfig;
use crate::init::SeededInit;
use crate::model::LoadedModel;
use crate::{ModelError, Result, SwinConfig, VitConfig};
use candle_core::{DType, Device};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

/// ImageNet normalization (timm's IMAGENET_DEFAULT_MEAN/STD).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];
/// Fashion-MNIST train-set pixel statistics (x / 255).
pub const FASHION_MNIST_MEAN: [f32; 1] = [0.2860];
pub const FASHION_MNIST_STD: [f32; 1] = [0.3530];

/// Architecture family and its hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "family", rename_all = "snake_case")]
pub enum ModelArch {
    Vit(VitConfig),
    Swin(SwinConfig),
}

impl ModelArch {
    /// The family's config behind the common interface.
    pub fn config(&self) -> &dyn ArchConfig {
        match self {
            ModelArch::Vit(c) => c,
            ModelArch::Swin(c) => c,
        }
    }
    pub fn config_mut(&mut self) -> &mut dyn ArchConfig {
        match self {
            ModelArch::Vit(c) => c,
            ModelArch::Swin(c) => c,
        }
    }
}

/// A registered model: name, architecture, and the preprocessing it expects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub name: String,
    pub arch: ModelArch,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub crop_pct: f64,
}

type Entry = (&'static str, fn() -> ModelSpec);

fn vit(name: &str, cfg: VitConfig, mean: &[f32], std: &[f32], crop_pct: f64) -> ModelSpec {
    ModelSpec {
        name: name.into(),
        arch: ModelArch::Vit(cfg),
        mean: mean.to_vec(),
        std: std.to_vec(),
        crop_pct,
    }
}

fn swin(name: &str, cfg: SwinConfig, mean: &[f32], std: &[f32], crop_pct: f64) -> ModelSpec {
    ModelSpec {
        name: name.into(),
        arch: ModelArch::Swin(cfg),
        mean: mean.to_vec(),
        std: std.to_vec(),
        crop_pct,
    }
}

const REGISTRY: &[Entry] = &[
    ("vit_fmnist_small", || {
        vit(
            "vit_fmnist_small",
            VitConfig::vit_fmnist_small(),
            &FASHION_MNIST_MEAN,
            &FASHION_MNIST_STD,
            1.0,
        )
    }),
    ("vit_fmnist_tiny", || {
        vit(
            "vit_fmnist_tiny",
            VitConfig::vit_fmnist_tiny(),
            &FASHION_MNIST_MEAN,
            &FASHION_MNIST_STD,
            1.0,
        )
    }),
    ("vit_tiny_patch16_224", || {
        vit(
            "vit_tiny_patch16_224",
            VitConfig::vit_tiny_patch16_224(),
            &IMAGENET_MEAN,
            &IMAGENET_STD,
            0.9,
        )
    }),
    ("deit3_small_patch16_224", || {
        vit(
            "deit3_small_patch16_224",
            VitConfig::deit3_small_patch16_224(),
            &IMAGENET_MEAN,
            &IMAGENET_STD,
            1.0,
        )
    }),
    ("deit3_base_patch16_224", || {
        vit(
            "deit3_base_patch16_224",
            VitConfig::deit3_base_patch16_224(),
            &IMAGENET_MEAN,
            &IMAGENET_STD,
            1.0,
        )
    }),
    ("vit_base_patch16_224.mae", || {
        vit(
            "vit_base_patch16_224.mae",
            VitConfig::vit_base_patch16_224_mae(),
            &IMAGENET_MEAN,
            &IMAGENET_STD,
            0.9,
        )
    }),
    ("swin_fmnist_small", || {
        swin(
            "swin_fmnist_small",
            SwinConfig::swin_fmnist_small(),
            &FASHION_MNIST_MEAN,
            &FASHION_MNIST_STD,
            1.0,
        )
    }),
    ("swin_tiny_patch4_window7_224", || {
        swin(
            "swin_tiny_patch4_window7_224",
            SwinConfig::swin_tiny_patch4_window7_224(),
            &IMAGENET_MEAN,
            &IMAGENET_STD,
            0.9,
        )
    }),
    ("swin_small_patch4_window7_224", || {
        swin(
            "swin_small_patch4_window7_224",
            SwinConfig::swin_small_patch4_window7_224(),
            &IMAGENET_MEAN,
            &IMAGENET_STD,
            0.9,
        )
    }),
    ("swin_base_patch4_window7_224", || {
        swin(
            "swin_base_patch4_window7_224",
            SwinConfig::swin_base_patch4_window7_224(),
            &IMAGENET_MEAN,
            &IMAGENET_STD,
            0.9,
        )
    }),
];

/// Registered names, in registry order.
pub fn names() -> Vec<&'static str> {
    REGISTRY.iter().map(|(n, _)| *n).collect()
}

/// Look a model up by name.
pub fn lookup(name: &str) -> Result<ModelSpec> {
    REGISTRY
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| f())
        .ok_or_else(|| ModelError::UnknownModel {
            name: name.into(),
            known: names().join(", "),
        })
}

impl ModelSpec {
    pub fn num_classes(&self) -> usize {
        self.arch.config().num_classes()
    }

    /// (channels, height, width) the model takes.
    pub fn input_shape(&self) -> (usize, usize, usize) {
        self.arch.config().input_shape()
    }

    /// Adapt the classifier to a dataset's number of classes and channels.
    pub fn with_data(mut self, num_classes: usize, in_chans: usize) -> Self {
        self.arch.config_mut().set_data(num_classes, in_chans);
        self
    }

    /// Override architecture fields by name, like timm's `create_model(name, **kwargs)`
    /// (e.g. `{"global_pool": "avg", "init_values": null}`); unknown fields are errors.
    pub fn with_kwargs(
        mut self,
        kwargs: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self> {
        if kwargs.is_empty() {
            return Ok(self);
        }
        let bad = |e: serde_json::Error| {
            ModelError::config("model_kwargs", format!("{e} (model `{}`)", self.name))
        };
        let mut v = serde_json::to_value(&self.arch).map_err(bad)?;
        if let serde_json::Value::Object(m) = &mut v {
            for (k, val) in kwargs {
                if k == "family" {
                    return Err(ModelError::config(
                        "model_kwargs",
                        "`family` cannot be overridden",
                    ));
                }
                m.insert(k.clone(), val.clone());
            }
        }
        self.arch = serde_json::from_value(v).map_err(bad)?;
        self.arch.config().validate()?;
        Ok(self)
    }

    pub fn with_drop_path(mut self, rate: f64) -> Self {
        self.arch.config_mut().set_drop_path(rate);
        self
    }

    /// Build with freshly initialised parameters drawn from `seed`.
    pub fn build(&self, seed: u64, dtype: DType, device: &Device) -> Result<LoadedModel> {
        let varmap = VarMap::new();
        let buffers = VarMap::new();
        let vb = SeededInit::var_builder(&varmap, seed, dtype, device);
        let net = self.arch.config().build(vb, &buffers, seed ^ 0x5eed_d509)?;
        Ok(LoadedModel {
            spec: self.clone(),
            varmap,
            buffers,
            net,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_name_resolves_to_a_valid_config() {
        for n in names() {
            let s = lookup(n).unwrap();
            assert_eq!(s.name, n);
            s.arch.config().validate().unwrap();
            assert_eq!(s.mean.len(), s.input_shape().0);
        }
    }

    #[test]
    fn kwargs_override_fields_and_reject_unknown_or_invalid_ones() {
        let kw = |j: &str| {
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(j).unwrap()
        };
        let s = lookup("vit_fmnist_small")
            .unwrap()
            .with_kwargs(&kw(r#"{"global_pool": "avg", "depth": 2}"#))
            .unwrap();
        let ModelArch::Vit(c) = &s.arch else {
            panic!("vit_fmnist_small is a ViT")
        };
        assert_eq!(
            (c.global_pool, c.depth, c.embed_dim),
            (
                crate::GlobalPool::Avg,
                2,
                VitConfig::vit_fmnist_small().embed_dim
            )
        );
        let e = lookup("vit_fmnist_small")
            .unwrap()
            .with_kwargs(&kw(r#"{"dept": 2}"#))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("model_kwargs") && e.contains("dept"), "{e}");
        let e = lookup("vit_fmnist_small")
            .unwrap()
            .with_kwargs(&kw(r#"{"patch_size": 5}"#))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("patch_size"), "{e}");
    }

    #[test]
    fn unknown_name_lists_the_known_ones() {
        let e = lookup("resnet9000").err().unwrap().to_string();
        assert!(
            e.contains("resnet9000") && e.contains("deit3_small_patch16_224"),
            "{e}"
        );
    }

    #[test]
    fn deit3_small_has_timms_parameter_count() {
        // timm: deit3_small_patch16_224 has 22,059,496 parameters (1000 classes).
        let spec = lookup("deit3_small_patch16_224").unwrap();
        let m = spec.build(0, DType::F32, &Device::Cpu).unwrap();
        let n: usize = m
            .named_parameters()
            .iter()
            .map(|(_, v)| v.elem_count())
            .sum();
        assert_eq!(n, 22_059_496);
    }
}
