//! Vision Transformer in timm's layout (`timm.models.vision_transformer.VisionTransformer`).
//!
//! Two layouts matter for MaskSub: DeiT-III (`no_embed_class`: pos_embed has no cls slot and is
//! added before the cls token is prepended; LayerScale; cls-token pooling) and MAE fine-tuning
//! (pos_embed with a cls slot; global average pooling of patch tokens + `fc_norm`).
//! The sub pass drops patch tokens after the position embedding (cls is always kept), so it
//! really computes on fewer tokens.

use crate::layers::{DropPath, LayerNorm, LayerScale, Linear, Mlp, TRUNC_NORMAL_02};
use crate::{ops, ModelError, Result};
use candle_core::{DType, Module, Tensor};
use candle_nn::{Init, VarBuilder};
use masksub_core::TokenGrid;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::sync::Mutex;

/// How patch/cls tokens become one feature vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GlobalPool {
    /// The cls token (after the final `norm`).
    Token,
    /// Mean of the patch tokens, then `fc_norm` (no final `norm`), as MAE fine-tuning does.
    Avg,
}

/// ViT hyper-parameters, field names as timm's constructor arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VitConfig {
    pub img_size: usize,
    pub patch_size: usize,
    pub in_chans: usize,
    pub num_classes: usize,
    pub embed_dim: usize,
    pub depth: usize,
    pub num_heads: usize,
    pub mlp_ratio: f64,
    pub qkv_bias: bool,
    /// DeiT-III layout: position embedding without a cls slot.
    pub no_embed_class: bool,
    /// LayerScale init value; `None` = no LayerScale.
    pub init_values: Option<f64>,
    pub global_pool: GlobalPool,
    /// CLIP layout: a LayerNorm (`norm_pre`) on the tokens before the blocks, and a patch
    /// embedding without bias (timm's `pre_norm=True`).
    pub pre_norm: bool,
    pub drop_path_rate: f64,
    pub layer_norm_eps: f64,
}

impl Default for VitConfig {
    fn default() -> Self {
        Self::deit3_small_patch16_224()
    }
}

impl VitConfig {
    /// The default model of `masksub train`: Fashion-MNIST/MNIST 28x28, patch 4 -> 7x7 tokens;
    /// sized (0.12M params) so the default run finishes within 15 minutes on 2 CPU cores.
    pub fn vit_fmnist_small() -> Self {
        Self {
            img_size: 28,
            patch_size: 4,
            in_chans: 1,
            num_classes: 10,
            embed_dim: 48,
            depth: 4,
            num_heads: 3,
            // A 4-block net in a 5-epoch run under-fits: LayerScale and drop-path only slow it
            // (vit_fmnist_tiny, 5 epochs: 84.6% without LayerScale vs 83.3% with init 0.1).
            init_values: None,
            drop_path_rate: 0.0,
            ..Self::deit3_small_patch16_224()
        }
    }

    /// Tiny variant for tests: 28x28, patch 7 -> 4x4 tokens.
    pub fn vit_fmnist_tiny() -> Self {
        Self {
            patch_size: 7,
            embed_dim: 32,
            depth: 2,
            num_heads: 2,
            init_values: Some(0.1),
            ..Self::vit_fmnist_small()
        }
    }

    pub fn deit3_small_patch16_224() -> Self {
        Self {
            img_size: 224,
            patch_size: 16,
            in_chans: 3,
            num_classes: 1000,
            embed_dim: 384,
            depth: 12,
            num_heads: 6,
            mlp_ratio: 4.0,
            qkv_bias: true,
            no_embed_class: true,
            init_values: Some(1e-6),
            global_pool: GlobalPool::Token,
            pre_norm: false,
            drop_path_rate: 0.05,
            layer_norm_eps: 1e-6,
        }
    }

    pub fn deit3_base_patch16_224() -> Self {
        Self {
            embed_dim: 768,
            num_heads: 12,
            drop_path_rate: 0.2,
            ..Self::deit3_small_patch16_224()
        }
    }

    pub fn vit_tiny_patch16_224() -> Self {
        Self {
            embed_dim: 192,
            num_heads: 3,
            no_embed_class: false,
            init_values: None,
            drop_path_rate: 0.0,
            ..Self::deit3_small_patch16_224()
        }
    }

    /// ViT-B/16 as MAE fine-tunes it (global average pool + fc_norm, pos_embed with a cls slot).
    pub fn vit_base_patch16_224_mae() -> Self {
        Self {
            no_embed_class: false,
            init_values: None,
            global_pool: GlobalPool::Avg,
            drop_path_rate: 0.1,
            ..Self::deit3_base_patch16_224()
        }
    }

    /// CLIP ViT-B/16 image tower as timm builds it (`vit_base_patch16_clip_224`): pre-norm,
    /// LayerNorm eps 1e-5, cls pooling; the OpenAI checkpoint's `proj` becomes a 512-way head.
    pub fn vit_base_patch16_clip_224() -> Self {
        Self {
            num_classes: 512,
            no_embed_class: false,
            init_values: None,
            pre_norm: true,
            layer_norm_eps: 1e-5,
            drop_path_rate: 0.1,
            ..Self::deit3_base_patch16_224()
        }
    }

    pub fn grid(&self) -> TokenGrid {
        let g = self.img_size / self.patch_size.max(1);
        TokenGrid::new(g, g)
    }

    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("img_size", self.img_size),
            ("patch_size", self.patch_size),
            ("in_chans", self.in_chans),
            ("num_classes", self.num_classes),
            ("embed_dim", self.embed_dim),
            ("depth", self.depth),
            ("num_heads", self.num_heads),
        ];
        for (field, v) in positive {
            if v == 0 {
                return Err(ModelError::config(field, "must be positive"));
            }
        }
        if !self.img_size.is_multiple_of(self.patch_size) {
            return Err(ModelError::config(
                "patch_size",
                format!(
                    "{} does not divide img_size {}",
                    self.patch_size, self.img_size
                ),
            ));
        }
        if !self.embed_dim.is_multiple_of(self.num_heads) {
            return Err(ModelError::config(
                "num_heads",
                format!(
                    "{} does not divide embed_dim {}",
                    self.num_heads, self.embed_dim
                ),
            ));
        }
        if self.mlp_ratio.is_nan() || self.mlp_ratio <= 0.0 {
            return Err(ModelError::config(
                "mlp_ratio",
                format!("{} must be positive", self.mlp_ratio),
            ));
        }
        if !(0.0..1.0).contains(&self.drop_path_rate) {
            return Err(ModelError::config(
                "drop_path_rate",
                format!("{} is not in [0, 1)", self.drop_path_rate),
            ));
        }
        Ok(())
    }
}

/// Multi-head self-attention with one fused qkv projection, split [q | k | v] then heads, as timm.
#[derive(Debug)]
struct Attention {
    qkv: Linear,
    proj: Linear,
    num_heads: usize,
    scale: f64,
}

impl Attention {
    fn new(
        dim: usize,
        num_heads: usize,
        qkv_bias: bool,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        Ok(Self {
            qkv: Linear::new(dim, 3 * dim, qkv_bias, vb.pp("qkv"))?,
            proj: Linear::new(dim, dim, true, vb.pp("proj"))?,
            num_heads,
            scale: ((dim / num_heads) as f64).powf(-0.5),
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, n, c) = x.dims3()?;
        let hd = c / self.num_heads;
        let qkv = self
            .qkv
            .forward(x)?
            .reshape((b, n, 3, self.num_heads, hd))?
            .permute((2, 0, 3, 1, 4))?;
        let q = qkv.get(0)?.contiguous()?;
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        let attn = ops::softmax_scaled(&q.matmul(&k.t()?)?, self.scale)?;
        let out = attn.matmul(&v)?.transpose(1, 2)?.reshape((b, n, c))?;
        self.proj.forward(&out)
    }
}

#[derive(Debug)]
struct Block {
    norm1: LayerNorm,
    attn: Attention,
    ls1: Option<LayerScale>,
    norm2: LayerNorm,
    mlp: Mlp,
    ls2: Option<LayerScale>,
    drop_path: DropPath,
}

impl Block {
    fn new(cfg: &VitConfig, drop_path: f64, vb: VarBuilder) -> candle_core::Result<Self> {
        let d = cfg.embed_dim;
        let ls = |name: &str| {
            cfg.init_values
                .map(|v| LayerScale::new(d, v, vb.pp(name)))
                .transpose()
        };
        Ok(Self {
            norm1: LayerNorm::new(d, cfg.layer_norm_eps, vb.pp("norm1"))?,
            attn: Attention::new(d, cfg.num_heads, cfg.qkv_bias, vb.pp("attn"))?,
            ls1: ls("ls1")?,
            norm2: LayerNorm::new(d, cfg.layer_norm_eps, vb.pp("norm2"))?,
            mlp: Mlp::new(d, (d as f64 * cfg.mlp_ratio) as usize, vb.pp("mlp"))?,
            ls2: ls("ls2")?,
            drop_path: DropPath::new(drop_path),
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        train: bool,
        rng: &Mutex<ChaCha8Rng>,
    ) -> candle_core::Result<Tensor> {
        let scaled = |ls: &Option<LayerScale>, y: Tensor| match ls {
            Some(ls) => ls.forward(&y),
            None => Ok(y),
        };
        let y = scaled(&self.ls1, self.attn.forward(&self.norm1.forward(x)?)?)?;
        let x = (x + self.drop_path.forward(&y, train, rng)?)?;
        let y = scaled(&self.ls2, self.mlp.forward(&self.norm2.forward(&x)?)?)?;
        x + self.drop_path.forward(&y, train, rng)?
    }
}

/// The Vision Transformer.
#[derive(Debug)]
pub struct Vit {
    cfg: VitConfig,
    patch_w: Tensor,
    patch_b: Option<Tensor>,
    cls_token: Tensor,
    pos_embed: Tensor,
    norm_pre: Option<LayerNorm>,
    blocks: Vec<Block>,
    norm: Option<LayerNorm>,
    fc_norm: Option<LayerNorm>,
    head: Linear,
    drop_path_rng: Mutex<ChaCha8Rng>,
}

impl Vit {
    /// Build from `vb`; parameter paths equal timm's state_dict keys. `seed` drives drop-path.
    pub fn new(cfg: &VitConfig, vb: VarBuilder, seed: u64) -> Result<Self> {
        cfg.validate()?;
        let (d, p, c) = (cfg.embed_dim, cfg.patch_size, cfg.in_chans);
        let num_patches = cfg.grid().len();
        // PyTorch's default Conv2d init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
        let bound = 1.0 / ((c * p * p) as f64).sqrt();
        let pe = vb.pp("patch_embed").pp("proj");
        let patch_w = pe.get_with_hints(
            (d, c, p, p),
            "weight",
            Init::Uniform {
                lo: -bound,
                up: bound,
            },
        )?;
        let patch_b = if cfg.pre_norm {
            None
        } else {
            Some(pe.get_with_hints(
                d,
                "bias",
                Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
            )?)
        };
        let norm_pre = if cfg.pre_norm {
            Some(LayerNorm::new(d, cfg.layer_norm_eps, vb.pp("norm_pre"))?)
        } else {
            None
        };
        let cls_token = vb.get_with_hints(
            (1, 1, d),
            "cls_token",
            Init::Randn {
                mean: 0.0,
                stdev: 1e-6,
            },
        )?;
        let pos_len = if cfg.no_embed_class {
            num_patches
        } else {
            num_patches + 1
        };
        let pos_embed = vb.get_with_hints((1, pos_len, d), "pos_embed", TRUNC_NORMAL_02)?;
        let blocks = (0..cfg.depth)
            .map(|i| {
                // Stochastic depth grows linearly with depth, as timm's `dpr`.
                let dpr = if cfg.depth > 1 {
                    cfg.drop_path_rate * i as f64 / (cfg.depth - 1) as f64
                } else {
                    cfg.drop_path_rate
                };
                Block::new(cfg, dpr, vb.pp("blocks").pp(i))
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let (norm, fc_norm) = match cfg.global_pool {
            GlobalPool::Token => (
                Some(LayerNorm::new(d, cfg.layer_norm_eps, vb.pp("norm"))?),
                None,
            ),
            GlobalPool::Avg => (
                None,
                Some(LayerNorm::new(d, cfg.layer_norm_eps, vb.pp("fc_norm"))?),
            ),
        };
        let head = Linear::new(d, cfg.num_classes, true, vb.pp("head"))?;
        Ok(Self {
            cfg: cfg.clone(),
            patch_w,
            patch_b,
            cls_token,
            pos_embed,
            norm_pre,
            blocks,
            norm,
            fc_norm,
            head,
            drop_path_rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
        })
    }

    /// Restart the drop-path stream from `seed`.
    pub fn reseed(&self, seed: u64) {
        if let Ok(mut rng) = self.drop_path_rng.lock() {
            *rng = ChaCha8Rng::seed_from_u64(seed);
        }
    }

    pub fn config(&self) -> &VitConfig {
        &self.cfg
    }

    fn check_input(&self, x: &Tensor) -> Result<(usize, usize, usize, usize)> {
        let bad = |reason: String| ModelError::Input {
            got: x.dims().to_vec(),
            reason,
        };
        let (b, c, h, w) = x
            .dims4()
            .map_err(|_| bad("expected (batch, channels, height, width)".into()))?;
        let want = (self.cfg.in_chans, self.cfg.img_size, self.cfg.img_size);
        if (c, h, w) != want {
            return Err(bad(format!("expected {want:?} per image")));
        }
        Ok((b, c, h, w))
    }

    /// Conv with kernel = stride = patch as one GEMM over non-overlapping patches (same numbers as
    /// timm's Conv2d, far cheaper than im2col on CPU). Returns (B, L, D), tokens row-major.
    fn patch_embed(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = self.check_input(x)?;
        let p = self.cfg.patch_size;
        let (gh, gw) = (h / p, w / p);
        let d = self.cfg.embed_dim;
        let patches = x
            .reshape((b, c, gh, p, gw, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((b * gh * gw, c * p * p))?;
        let wm = self.patch_w.reshape((d, c * p * p))?;
        let t = patches.matmul(&wm.t()?)?;
        let t = match &self.patch_b {
            Some(bias) => ops::add_rows(&t, bias)?,
            None => t,
        };
        Ok(t.reshape((b, gh * gw, d))?)
    }

    /// Gather per-sample kept tokens: (B, L, D) x (B, K) -> (B, K, D), as one index_select on the
    /// flattened batch (its backward is a single index_add).
    fn keep_tokens(tokens: &Tensor, keep: &Tensor) -> Result<Tensor> {
        let (b, l, d) = tokens.dims3()?;
        let (kb, k) = keep.dims2()?;
        if kb != b {
            return Err(ModelError::Input {
                got: keep.dims().to_vec(),
                reason: format!("keep indices for {kb} samples, batch has {b}"),
            });
        }
        let keep = keep.to_dtype(DType::U32)?;
        let max = keep.max_all()?.to_scalar::<u32>()? as usize;
        if max >= l {
            return Err(ModelError::Input {
                got: keep.dims().to_vec(),
                reason: format!("keep index {max} >= {l} tokens"),
            });
        }
        let offsets = Tensor::arange(0u32, b as u32, keep.device())?
            .affine(l as f64, 0.0)?
            .unsqueeze(1)?;
        let flat = keep.broadcast_add(&offsets)?.flatten_all()?;
        Ok(tokens
            .reshape((b * l, d))?
            .index_select(&flat, 0)?
            .reshape((b, k, d))?)
    }

    /// Tokens entering the blocks: position-embedded patch tokens (optionally only the kept ones)
    /// with the cls token in front.
    fn embed(&self, x: &Tensor, keep: Option<&Tensor>) -> Result<Tensor> {
        let t = self.patch_embed(x)?;
        let (b, _, d) = t.dims3()?;
        let cls = self.cls_token.expand((b, 1, d))?;
        if self.cfg.no_embed_class {
            let t = ops::add_rows(&t, &self.pos_embed)?;
            let t = match keep {
                Some(k) => Self::keep_tokens(&t, k)?,
                None => t,
            };
            Ok(Tensor::cat(&[&cls, &t], 1)?)
        } else {
            let t = ops::add_rows(&Tensor::cat(&[&cls, &t], 1)?, &self.pos_embed)?;
            match keep {
                Some(k) => {
                    let n = t.dim(1)?;
                    let patches = Self::keep_tokens(&t.narrow(1, 1, n - 1)?, k)?;
                    Ok(Tensor::cat(&[&t.narrow(1, 0, 1)?, &patches], 1)?)
                }
                None => Ok(t),
            }
        }
    }

    /// Token features after the blocks (and the final norm for cls pooling): (B, 1 + K, D).
    pub fn forward_features(
        &self,
        x: &Tensor,
        keep: Option<&Tensor>,
        train: bool,
    ) -> Result<Tensor> {
        let mut t = self.embed(x, keep)?;
        if let Some(n) = &self.norm_pre {
            t = n.forward(&t)?;
        }
        for blk in &self.blocks {
            t = blk.forward(&t, train, &self.drop_path_rng)?;
        }
        match &self.norm {
            Some(n) => Ok(n.forward(&t)?),
            None => Ok(t),
        }
    }

    /// Pool and classify: (B, 1 + K, D) -> (B, num_classes).
    pub fn forward_head(&self, feats: &Tensor) -> Result<Tensor> {
        let pooled = match self.cfg.global_pool {
            GlobalPool::Token => feats.narrow(1, 0, 1)?.squeeze(1)?,
            GlobalPool::Avg => {
                let n = feats.dim(1)?;
                feats.narrow(1, 1, n - 1)?.mean(1)?
            }
        };
        let pooled = match &self.fc_norm {
            Some(n) => n.forward(&pooled)?,
            None => pooled,
        };
        Ok(self.head.forward(&pooled)?)
    }

    /// Logits; `keep` (B, K) u32 selects the patch tokens of the sub pass.
    pub fn forward(&self, x: &Tensor, keep: Option<&Tensor>, train: bool) -> Result<Tensor> {
        self.forward_head(&self.forward_features(x, keep, train)?)
    }

    /// Layer id for layer-wise lr decay (BEiT/timm): embeddings 0, block i -> i + 1, rest depth + 1.
    pub fn layer_id(&self, name: &str) -> usize {
        if name.starts_with("cls_token")
            || name.starts_with("pos_embed")
            || name.starts_with("patch_embed")
        {
            return 0;
        }
        if let Some(rest) = name.strip_prefix("blocks.") {
            if let Some(i) = rest.split('.').next().and_then(|s| s.parse::<usize>().ok()) {
                return i + 1;
            }
        }
        self.cfg.depth + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::SeededInit;
    use candle_core::Device;
    use candle_nn::VarMap;

    fn model(drop_path_rate: f64) -> Vit {
        let cfg = VitConfig {
            drop_path_rate,
            depth: 3,
            ..VitConfig::vit_fmnist_tiny()
        };
        let vm = VarMap::new();
        Vit::new(
            &cfg,
            SeededInit::var_builder(&vm, 3, DType::F32, &Device::Cpu),
            0,
        )
        .unwrap()
    }

    #[test]
    fn drop_path_acts_only_in_training_and_replays_from_its_seed() {
        let m = model(0.5);
        let x = Tensor::randn(0f32, 1.0, (8, 1, 28, 28), &Device::Cpu).unwrap();
        let run = |train: bool, seed: u64| {
            m.reseed(seed);
            m.forward(&x, None, train)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        let eval = run(false, 0);
        assert_eq!(eval, run(false, 1), "eval ignores drop-path");
        assert_ne!(run(true, 1), eval, "training drops paths");
        assert_eq!(run(true, 7), run(true, 7), "same seed, same dropped paths");
        assert_ne!(run(true, 7), run(true, 8));
        // Without drop-path, training and evaluation agree.
        let plain = model(0.0);
        assert_eq!(
            plain
                .forward(&x, None, true)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            plain
                .forward(&x, None, false)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        );
    }

    #[test]
    fn invalid_configs_name_the_field() {
        let bad = |c: VitConfig| c.validate().unwrap_err().to_string();
        assert!(bad(VitConfig {
            patch_size: 5,
            ..VitConfig::vit_fmnist_small()
        })
        .contains("patch_size"));
        assert!(bad(VitConfig {
            num_heads: 5,
            ..VitConfig::vit_fmnist_small()
        })
        .contains("num_heads"));
        assert!(bad(VitConfig {
            depth: 0,
            ..VitConfig::vit_fmnist_small()
        })
        .contains("depth"));
        assert!(bad(VitConfig {
            drop_path_rate: 1.0,
            ..VitConfig::vit_fmnist_small()
        })
        .contains("drop_path_rate"));
    }
}
