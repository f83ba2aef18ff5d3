//! Vision Transformer in timm's layout (`timm.models.vision_transformer.VisionTransformer`).
//!
//! Two layouts matter for MaskSub: DeiT-III (`no_embed_class`: pos_embed has no cls slot and is
//! added before the cls token is prepended; LayerScale; cls-token pooling) and MAE fine-tuning
//! (pos_embed with a cls slot; global average pooling of patch tokens + `fc_norm`).
//! The sub pass drops patch tokens after the position embedding (cls is always kept), so it
//! really computes on fewer tokens.

use crate::layers::{self, DropPath, LayerNorm, LayerScale, Linear, Mlp, TRUNC_NORMAL_02};
use crate::{ops, ModelError, Result};
use candle_core::{DType, Module, Tensor};
use candle_nn::{Init, VarBuilder};
use masksub_core::{SubRegularizer, TokenGrid};
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

    /// Forward FLOPs of one image (2 per multiply-add; matrix products only, which is all
    /// but a few percent): patch embedding on every patch, then the blocks on the cls token
    /// plus the patch tokens kept — floor(L·(1−r)) in the sub pass, as the token drop keeps.
    pub fn forward_flops(&self, mask_ratio: Option<f64>) -> f64 {
        let l = self.grid().len() as f64;
        let kept = match mask_ratio {
            Some(r) => (l * (1.0 - r)).floor(),
            None => l,
        };
        let (n, d) = (kept + 1.0, self.embed_dim as f64);
        let hidden = (d * self.mlp_ratio).floor();
        let per_block = n * d * 3.0 * d   // qkv
            + 2.0 * n * n * d             // q·kᵀ and attn·v over all heads
            + n * d * d                   // proj
            + 2.0 * n * d * hidden; // fc1 + fc2
        let patch = (self.in_chans * self.patch_size * self.patch_size) as f64;
        2.0 * (l * patch * d + self.depth as f64 * per_block + d * self.num_classes as f64)
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

    /// One fused op reads q/k/v from the qkv rows and writes (B, N, C) for `proj`.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let qkv = self.qkv.forward(x)?;
        self.proj
            .forward(&ops::attention(&qkv, self.num_heads, self.scale)?)
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
        self.forward_with(x, train, rng, self.drop_path.rate(), 0.0)
    }

    /// The block at a given drop-path rate and dropout rate (timm's proj_drop / mlp drop):
    /// the configured ones normally, the sub pass's for PathSub / DropSub.
    fn forward_with(
        &self,
        x: &Tensor,
        train: bool,
        rng: &Mutex<ChaCha8Rng>,
        drop_path: f64,
        dropout: f64,
    ) -> candle_core::Result<Tensor> {
        let scaled = |ls: &Option<LayerScale>, y: Tensor| match ls {
            Some(ls) => ls.forward(&y),
            None => Ok(y),
        };
        let attn = layers::dropout(&self.attn.forward(&self.norm1.forward(x)?)?, dropout, rng)?;
        let y = scaled(&self.ls1, attn)?;
        let x = ops::add(x, &self.drop_path.forward_at(&y, drop_path, train, rng)?)?;
        let h = self.norm2.forward(&x)?;
        let mlp = if dropout > 0.0 {
            self.mlp.forward_dropout(&h, dropout, rng)?
        } else {
            self.mlp.forward(&h)?
        };
        let y = scaled(&self.ls2, mlp)?;
        ops::add(&x, &self.drop_path.forward_at(&y, drop_path, train, rng)?)
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

    /// Training forward of a DropSub / PathSub sub pass: every token, with dropout at the
    /// given rate after the position embedding, attention proj and MLP (timm's `drop_rate`), or
    /// with drop-path at max rate r growing linearly over the blocks (timm's `dpr`).
    pub fn forward_regularized(&self, x: &Tensor, reg: SubRegularizer) -> Result<Tensor> {
        let depth = self.blocks.len();
        let (max_dp, dropout) = match reg {
            SubRegularizer::DropPath(r) => (Some(r), 0.0),
            SubRegularizer::Dropout(r) => (None, r),
        };
        let rng = &self.drop_path_rng;
        let mut t = layers::dropout(&self.embed(x, None)?, dropout, rng)?;
        for (i, blk) in self.blocks.iter().enumerate() {
            let dp = match max_dp {
                Some(r) if depth > 1 => r * i as f64 / (depth - 1) as f64,
                Some(r) => r,
                None => blk.drop_path.rate(),
            };
            t = blk.forward_with(&t, true, rng, dp, dropout)?;
        }
        let feats = match &self.norm {
            Some(n) => n.forward(&t)?,
            None => t,
        };
        self.forward_head(&feats)
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

    #[test]
    fn flop_count_matches_timms_published_macs_and_shrinks_with_the_token_drop() {
        // timm's model card: vit_small_patch16_224 4.6 GMACs, vit_base_patch16_224 17.6 GMACs.
        for (cfg, gmacs) in [
            (VitConfig::deit3_small_patch16_224(), 4.6),
            (VitConfig::deit3_base_patch16_224(), 17.6),
        ] {
            let got = cfg.forward_flops(None) / 2e9;
            assert!((got - gmacs).abs() / gmacs < 0.01, "{got} GMACs vs {gmacs}");
            // r = 0.5 keeps 98 of 196 patches: the blocks run on 99 tokens instead of 197.
            let ratio = cfg.forward_flops(Some(0.5)) / cfg.forward_flops(None);
            assert!((0.45..0.52).contains(&ratio), "sub/plain FLOPs {ratio}");
        }
    }

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
    fn dropsub_and_pathsub_sub_passes_change_the_output_and_replay_from_the_seed() {
        let m = model(0.0);
        let x = Tensor::randn(0f32, 1.0, (8, 1, 28, 28), &Device::Cpu).unwrap();
        let flat = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let plain = flat(m.forward(&x, None, true).unwrap());
        for reg in [SubRegularizer::Dropout(0.3), SubRegularizer::DropPath(0.5)] {
            let run = |seed: u64| {
                m.reseed(seed);
                flat(m.forward_regularized(&x, reg).unwrap())
            };
            assert_ne!(run(1), plain, "{reg:?} changes the sub pass");
            assert_eq!(run(4), run(4), "{reg:?} replays from its seed");
            assert_ne!(run(4), run(5));
        }
    }

    #[test]
    fn dropout_keeps_the_expected_share_and_rescales() {
        let rng = Mutex::new(ChaCha8Rng::seed_from_u64(3));
        let x = Tensor::ones(100_000, DType::F32, &Device::Cpu).unwrap();
        let y = layers::dropout(&x, 0.25, &rng)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let kept = y.iter().filter(|v| **v != 0.0).count() as f64 / y.len() as f64;
        assert!((kept - 0.75).abs() < 0.005, "kept share {kept}");
        assert!(y
            .iter()
            .all(|v| *v == 0.0 || (*v - 1.0 / 0.75).abs() < 1e-6));
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
