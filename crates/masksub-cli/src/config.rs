//! The run configuration: one serde struct with defaults, saved as `<out>/config.json` beside
//! every run so a run can be resumed and reproduced exactly.

use anyhow::{bail, Context, Result};
use masksub_core::{LossKind, OptimizerKind, SubModel};
use masksub_data::{AugmentConfig, ImageAugConfig, MixupConfig};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The data folder shipped in the repository (Fashion-MNIST IDX files).
pub fn default_data_dir() -> PathBuf {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../assets/fashion-mnist");
    repo.canonicalize().unwrap_or(repo)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Registry name of the model (`masksub models` lists them).
    pub model: String,
    /// Architecture overrides by field name, like timm's `--model-kwargs`
    /// (e.g. `{"depth": 6, "global_pool": "avg"}`).
    pub model_kwargs: serde_json::Map<String, serde_json::Value>,
    /// The data: a folder with IDX files (train-images-idx3-ubyte[.gz], ...), WebDataset
    /// shards (folder, `train-{0000..0099}.tar` pattern, `.tar` file, `hf://datasets/o/n`) or
    /// an ImageFolder (class folders).
    pub data: PathBuf,
    /// Shard / ImageFolder split names for training and evaluation.
    pub train_split: String,
    pub val_split: String,
    /// Classes of streamed data when neither `_info.json` nor the labels tell.
    pub num_classes: Option<usize>,
    /// Use only the first N training images (quick runs); None = all.
    pub train_subset: Option<usize>,
    /// Sub-model: `{"kind": "none"}` or `{"kind": "masking", "ratio": 0.5}`.
    pub sub: SubModel,
    pub loss: LossKind,
    /// Label smoothing folded into the soft targets.
    pub smoothing: f64,
    pub epochs: usize,
    /// Global batch size (split evenly across data-parallel ranks).
    pub batch_size: usize,
    /// Peak learning rate (after warmup).
    pub lr: f64,
    pub min_lr: f64,
    pub warmup_lr: f64,
    pub warmup_epochs: f64,
    /// Optimizer (timm's `--opt`): `adamw` or `lamb` (LAMB clips the global gradient norm at
    /// 1.0 itself, as timm's does).
    pub opt: OptimizerKind,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    /// Adam epsilon; None = the optimizer's own default (AdamW 1e-8, LAMB 1e-6, as timm).
    pub eps: Option<f64>,
    /// Clip the summed (main + sub) gradient to this global L2 norm.
    pub clip_grad: Option<f64>,
    /// Override the model preset's drop-path rate.
    pub drop_path: Option<f64>,
    /// Training augmentation (`{"random_crop_padding": 2, "hflip": true}` adds random crops).
    pub augment: AugmentConfig,
    /// Photo augmentation for shards / ImageFolder (RRC, flip, 3-Augment, RandAugment, erasing,
    /// eval crop_pct); `img_size` is taken from the model.
    pub image_aug: ImageAugConfig,
    /// Mixup / CutMix of streamed batches (timm semantics); `None` = off.
    pub mixup: Option<MixupConfig>,
    /// Repeated augmentation: copies of each streamed sample per epoch window (1 = off).
    pub repeats: usize,
    /// Decode/augment threads per rank for streamed data.
    pub workers: usize,
    /// Per-worker sample shuffle buffer for streamed data.
    pub shuffle_buffer: usize,
    /// A corrupt sample is an error naming shard and key, instead of skipped and counted.
    pub strict_data: bool,
    pub seed: u64,
    pub eval_batch_size: usize,
    /// Write a step row to metrics.jsonl every N optimizer steps.
    pub log_every: usize,
    /// How data-parallel ranks agree on BatchNorm running statistics at the end of each epoch
    /// (timm's `--dist-bn`): `reduce` (mean over ranks) or `broadcast` (rank 0's).
    pub dist_bn: DistBn,
    /// Start from the pretrained weights of the `model` tag (e.g. `vit_base_patch16_224.mae`),
    /// fetched from the Hugging Face Hub (cache first; HF_HUB_OFFLINE, HF_ENDPOINT, HF_TOKEN).
    pub pretrained: bool,
    /// Start from this local checkpoint instead (safetensors or torch .pth/.bin, zip or legacy;
    /// timm, MAE, OpenAI CLIP, DeiT-III or torchvision keys).
    pub checkpoint_path: Option<PathBuf>,
    /// Layer-wise lr decay (BEiT / MAE fine-tuning): layer i of L gets lr * decay^(L - i)
    /// (embeddings i = 0, block j i = j + 1, head L). None = off.
    pub layer_decay: Option<f64>,
}

/// timm's `--dist-bn` choices. Within an epoch every rank keeps its own statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DistBn {
    #[default]
    Reduce,
    Broadcast,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            model: "vit_fmnist_small".into(),
            model_kwargs: serde_json::Map::new(),
            data: default_data_dir(),
            train_split: "train".into(),
            val_split: "validation".into(),
            num_classes: None,
            train_subset: None,
            sub: SubModel::Masking {
                ratio: masksub_core::objective::DEFAULT_MASK_RATIO,
            },
            loss: LossKind::SoftCe,
            smoothing: 0.1,
            epochs: 5,
            batch_size: 64,
            lr: 5e-3,
            min_lr: 1e-5,
            warmup_lr: 1e-6,
            warmup_epochs: 0.5,
            opt: OptimizerKind::Adamw,
            weight_decay: 0.05,
            beta1: 0.9,
            beta2: 0.999,
            eps: None,
            clip_grad: None,
            drop_path: None,
            // Flip only: at this 5-epoch budget the model under-fits, and a padded random crop
            // cost ~7 points of test top-1 (vit_fmnist_tiny, 5 epochs: 76.3% vs 83.5%).
            augment: AugmentConfig {
                random_crop_padding: 0,
                hflip: true,
            },
            image_aug: ImageAugConfig::default(),
            mixup: None,
            repeats: 1,
            workers: 2,
            shuffle_buffer: 1024,
            strict_data: false,
            seed: 0,
            eval_batch_size: 500,
            log_every: 20,
            dist_bn: DistBn::Reduce,
            pretrained: false,
            checkpoint_path: None,
            layer_decay: None,
        }
    }
}

impl TrainConfig {
    /// Check every field a user can set; errors name the field.
    pub fn validate(&self) -> Result<()> {
        let pos = |field: &str, v: usize| -> Result<()> {
            if v == 0 {
                bail!("invalid config: `{field}` must be positive");
            }
            Ok(())
        };
        pos("epochs", self.epochs)?;
        pos("batch_size", self.batch_size)?;
        pos("eval_batch_size", self.eval_batch_size)?;
        pos("log_every", self.log_every)?;
        pos("repeats", self.repeats)?;
        pos("workers", self.workers)?;
        if let Some(n) = self.num_classes {
            pos("num_classes", n)?;
        }
        if let Err(e) = self.image_aug.validate() {
            bail!("invalid config: `image_aug`: {e}");
        }
        if let Some(m) = &self.mixup {
            for (f, v) in [("mixup.prob", m.prob), ("mixup.switch_prob", m.switch_prob)] {
                if !(0.0..=1.0).contains(&v) {
                    bail!("invalid config: `{f}` = {v} is not in [0, 1]");
                }
            }
            if !(0.0..1.0).contains(&m.label_smoothing)
                || m.mixup_alpha < 0.0
                || m.cutmix_alpha < 0.0
            {
                bail!("invalid config: `mixup` alphas must be >= 0 and label_smoothing in [0, 1)");
            }
        }
        let finite_nonneg = [
            ("lr", self.lr),
            ("min_lr", self.min_lr),
            ("warmup_lr", self.warmup_lr),
            ("warmup_epochs", self.warmup_epochs),
            ("weight_decay", self.weight_decay),
        ];
        for (field, v) in finite_nonneg {
            if !(v.is_finite() && v >= 0.0) {
                bail!("invalid config: `{field}` = {v} must be a finite non-negative number");
            }
        }
        if let Some(d) = self.layer_decay {
            if !(d > 0.0 && d <= 1.0) {
                bail!("invalid config: `layer_decay` = {d} must be in (0, 1]");
            }
        }
        if self.lr == 0.0 {
            bail!("invalid config: `lr` must be positive");
        }
        if !(0.0..1.0).contains(&self.smoothing) {
            bail!(
                "invalid config: `smoothing` = {} is not in [0, 1)",
                self.smoothing
            );
        }
        self.sub
            .validate("sub.ratio")
            .map_err(|e| anyhow::anyhow!("invalid config: {e}"))?;
        if let Some(c) = self.clip_grad {
            if !(c.is_finite() && c > 0.0) {
                bail!("invalid config: `clip_grad` = {c} must be positive");
            }
        }
        if let Some(d) = self.drop_path {
            if !(0.0..1.0).contains(&d) {
                bail!("invalid config: `drop_path` = {d} is not in [0, 1)");
            }
        }
        if self.warmup_epochs > self.epochs as f64 {
            bail!(
                "invalid config: `warmup_epochs` = {} exceeds `epochs` = {}",
                self.warmup_epochs,
                self.epochs
            );
        }
        Ok(())
    }

    /// Whether a sub-model is trained alongside the main model.
    pub fn sub_is_on(&self) -> bool {
        !matches!(self.sub, SubModel::None)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        crate::checkpoint::write_atomic(path, serde_json::to_string_pretty(self)?.as_bytes())
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read run config", path.display()))?;
        let cfg: Self = serde_json::from_str(&text)
            .with_context(|| format!("{}: invalid run config", path.display()))?;
        cfg.validate()
            .with_context(|| format!("{}", path.display()))?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_round_trip_through_json() {
        let c = TrainConfig::default();
        c.validate().unwrap();
        let back: TrainConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn bad_values_and_unknown_fields_name_the_field() {
        let bad = TrainConfig {
            batch_size: 0,
            ..Default::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("batch_size"));
        let bad = TrainConfig {
            sub: SubModel::Masking { ratio: 1.2 },
            ..Default::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("sub.ratio"));
        let bad = TrainConfig {
            lr: f64::NAN,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("`lr`"));
        let e = serde_json::from_str::<TrainConfig>(r#"{"epochz": 3}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("epochz"), "{e}");
    }
}
