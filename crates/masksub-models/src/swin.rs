//! Swin Transformer in timm's layout (`timm.models.swin_transformer.SwinTransformer`, timm >= 0.9:
//! `layers.N.downsample` (patch merging) comes BEFORE the blocks of stage N, stage 0 has none).
//!
//! Tokens stay (B, H*W, C) row-major, the memory of timm's NHWC. Cyclic shift + window partition
//! is one token gather ([`TokenPermutation`]) and its reverse the inverse gather; attention with
//! the relative position bias and the shift mask is one fused op over all windows
//! ([`ops::window_attention`]) whose scores never leave the cache.
//!
//! MaskSub's sub pass replaces random u x u units of stage-1 tokens by a learnable `mask_token`
//! (1, 1, C) right after `patch_embed` (conv + norm), as SimMIM does; the input size and the
//! compute stay the same. The plain pass never touches it. `mask_token` is not a timm key: a
//! timm checkpoint loads with `LoadOptions { allow_missing: ["mask_token"] }`.

mod config;
pub mod windows;

pub use config::SwinConfig;

use crate::layers::{DropPath, LayerNorm, Linear, Mlp, TRUNC_NORMAL_02};
use crate::model::ImageClassifier;
use crate::ops::{self, TokenPermutation};
use crate::{ModelError, Result};
use candle_core::{Module, Tensor};
use candle_nn::{Init, VarBuilder};
use masksub_core::{MaskKind, MaskPlan, TokenGrid};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::sync::Mutex;

/// Window attention with timm's relative position bias (and the shift mask, if any).
#[derive(Debug)]
struct WindowAttention {
    qkv: Linear,
    proj: Linear,
    relative_position_bias_table: Tensor,
    /// (N*N) entries of the table, query-major.
    relative_position_index: Tensor,
    /// (num_windows, 1, N, N) of 0 / -100 for shifted windows.
    shift_mask: Option<Tensor>,
    num_heads: usize,
    window_area: usize,
    scale: f64,
}

impl WindowAttention {
    fn new(
        dim: usize,
        num_heads: usize,
        window: usize,
        shift_mask: Option<Tensor>,
        qkv_bias: bool,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        let n = window * window;
        let table = vb.get_with_hints(
            ((2 * window - 1) * (2 * window - 1), num_heads),
            "relative_position_bias_table",
            TRUNC_NORMAL_02,
        )?;
        let index = windows::relative_position_index(window);
        Ok(Self {
            qkv: Linear::new(dim, 3 * dim, qkv_bias, vb.pp("qkv"))?,
            proj: Linear::new(dim, dim, true, vb.pp("proj"))?,
            relative_position_index: Tensor::from_vec(index, n * n, vb.device())?,
            relative_position_bias_table: table,
            shift_mask,
            num_heads,
            window_area: n,
            scale: ((dim / num_heads) as f64).powf(-0.5),
        })
    }

    /// Bias added to the scores of window w: (G, nH, N, N), G = num_windows with the shift mask
    /// (bias[w % G]), else 1.
    fn bias(&self) -> candle_core::Result<Tensor> {
        let n = self.window_area;
        let rel = self
            .relative_position_bias_table
            .index_select(&self.relative_position_index, 0)?
            .reshape((n, n, self.num_heads))?
            .permute((2, 0, 1))?
            .unsqueeze(0)?;
        match &self.shift_mask {
            Some(m) => m.broadcast_add(&rel),
            None => rel.contiguous(),
        }
    }

    /// (B * nW, N, C) windows -> same shape; windows are image-major, as timm's partition.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let qkv = self.qkv.forward(x)?;
        let out = ops::window_attention(&qkv, &self.bias()?, self.num_heads, self.scale)?;
        self.proj.forward(&out)
    }
}

#[derive(Debug)]
struct SwinBlock {
    norm1: LayerNorm,
    attn: WindowAttention,
    norm2: LayerNorm,
    mlp: Mlp,
    drop_path: DropPath,
    /// Shift + partition into windows; `None` when it is the identity (one window, no shift).
    windows: Option<TokenPermutation>,
    window_area: usize,
}

impl SwinBlock {
    fn new(
        cfg: &SwinConfig,
        stage: usize,
        j: usize,
        drop_path: f64,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        let (res, dim) = cfg.stage_shape(stage);
        let (window, shift) = cfg.window_and_shift(res, j);
        let windows = if window == res && shift == 0 {
            None
        } else {
            Some(TokenPermutation::new(windows::shifted_window_order(
                res, res, window, shift,
            ))?)
        };
        let shift_mask = if shift > 0 {
            let m = windows::shift_attention_mask(res, res, window, shift);
            let nw = (res / window) * (res / window);
            let n = window * window;
            Some(Tensor::from_vec(m, (nw, 1, n, n), vb.device())?.to_dtype(vb.dtype())?)
        } else {
            None
        };
        let eps = cfg.layer_norm_eps;
        Ok(Self {
            norm1: LayerNorm::new(dim, eps, vb.pp("norm1"))?,
            attn: WindowAttention::new(
                dim,
                cfg.num_heads[stage],
                window,
                shift_mask,
                cfg.qkv_bias,
                vb.pp("attn"),
            )?,
            norm2: LayerNorm::new(dim, eps, vb.pp("norm2"))?,
            mlp: Mlp::new(dim, (dim as f64 * cfg.mlp_ratio) as usize, vb.pp("mlp"))?,
            drop_path: DropPath::new(drop_path),
            windows,
            window_area: window * window,
        })
    }

    /// (B, L, C) -> (B, L, C).
    fn forward(
        &self,
        x: &Tensor,
        train: bool,
        rng: &Mutex<ChaCha8Rng>,
    ) -> candle_core::Result<Tensor> {
        let (b, l, c) = x.dims3()?;
        let h = self.norm1.forward(x)?;
        let h = match &self.windows {
            Some(p) => p.apply(&h)?,
            None => h,
        };
        let h = self
            .attn
            .forward(&h.reshape((b * l / self.window_area, self.window_area, c))?)?
            .reshape((b, l, c))?;
        let h = match &self.windows {
            Some(p) => p.apply_inverse(&h)?,
            None => h,
        };
        let x = ops::add(x, &self.drop_path.forward(&h, train, rng)?)?;
        let h = self.mlp.forward(&self.norm2.forward(&x)?)?;
        ops::add(&x, &self.drop_path.forward(&h, train, rng)?)
    }
}

/// timm's PatchMerging: 2x2 neighbours concatenated (x0, x1, x2, x3), LayerNorm(4C), Linear to 2C
/// without bias.
#[derive(Debug)]
struct PatchMerging {
    order: TokenPermutation,
    norm: LayerNorm,
    reduction: Linear,
}

impl PatchMerging {
    fn new(res: usize, dim: usize, eps: f64, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Self {
            order: TokenPermutation::new(windows::merge_order(res, res))?,
            norm: LayerNorm::new(4 * dim, eps, vb.pp("norm"))?,
            reduction: Linear::new(4 * dim, 2 * dim, false, vb.pp("reduction"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, l, c) = x.dims3()?;
        let merged = self.order.apply(x)?.reshape((b, l / 4, 4 * c))?;
        self.reduction.forward(&self.norm.forward(&merged)?)
    }
}

#[derive(Debug)]
struct Stage {
    downsample: Option<PatchMerging>,
    blocks: Vec<SwinBlock>,
}

/// The Swin Transformer.
#[derive(Debug)]
pub struct Swin {
    cfg: SwinConfig,
    patch_w: Tensor,
    patch_b: Tensor,
    patch_norm: LayerNorm,
    mask_token: Tensor,
    layers: Vec<Stage>,
    norm: LayerNorm,
    head: Linear,
    drop_path_rng: Mutex<ChaCha8Rng>,
}

impl Swin {
    /// Build from `vb`; parameter paths equal timm's state_dict keys (plus `mask_token`).
    pub fn new(cfg: &SwinConfig, vb: VarBuilder, seed: u64) -> Result<Self> {
        cfg.validate()?;
        let (d, p, c) = (cfg.embed_dim, cfg.patch_size, cfg.in_chans);
        // PyTorch's default Conv2d init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
        let bound = 1.0 / ((c * p * p) as f64).sqrt();
        let uniform = Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let pe = vb.pp("patch_embed");
        let patch_w = pe
            .pp("proj")
            .get_with_hints((d, c, p, p), "weight", uniform)?;
        let patch_b = pe.pp("proj").get_with_hints(d, "bias", uniform)?;
        let patch_norm = LayerNorm::new(d, cfg.layer_norm_eps, pe.pp("norm"))?;
        let mask_token = vb.get_with_hints((1, 1, d), "mask_token", TRUNC_NORMAL_02)?;
        // Stochastic depth grows linearly over all blocks, as timm's calculate_drop_path_rates.
        let total: usize = cfg.depths.iter().sum();
        let mut k = 0usize;
        let mut layers = Vec::with_capacity(cfg.num_stages());
        for (i, &depth) in cfg.depths.iter().enumerate() {
            let vs = vb.pp("layers").pp(i);
            let downsample = if i > 0 {
                let (res, dim) = cfg.stage_shape(i - 1);
                Some(PatchMerging::new(
                    res,
                    dim,
                    cfg.layer_norm_eps,
                    vs.pp("downsample"),
                )?)
            } else {
                None
            };
            let mut blocks = Vec::with_capacity(depth);
            for j in 0..depth {
                let dpr = if total > 1 {
                    cfg.drop_path_rate * k as f64 / (total - 1) as f64
                } else {
                    cfg.drop_path_rate
                };
                blocks.push(SwinBlock::new(cfg, i, j, dpr, vs.pp("blocks").pp(j))?);
                k += 1;
            }
            layers.push(Stage { downsample, blocks });
        }
        let nf = cfg.num_features();
        Ok(Self {
            cfg: cfg.clone(),
            patch_w,
            patch_b,
            patch_norm,
            mask_token,
            layers,
            norm: LayerNorm::new(nf, cfg.layer_norm_eps, vb.pp("norm"))?,
            head: Linear::new(nf, cfg.num_classes, true, vb.pp("head").pp("fc"))?,
            drop_path_rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
        })
    }

    pub fn config(&self) -> &SwinConfig {
        &self.cfg
    }

    /// Restart the drop-path stream from `seed`.
    pub fn reseed(&self, seed: u64) {
        if let Ok(mut rng) = self.drop_path_rng.lock() {
            *rng = ChaCha8Rng::seed_from_u64(seed);
        }
    }

    /// Conv with kernel = stride = patch as one GEMM over non-overlapping patches, then the
    /// patch-embed LayerNorm: (B, L, D), tokens row-major.
    fn patch_embed(&self, x: &Tensor) -> Result<Tensor> {
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
        let p = self.cfg.patch_size;
        let (gh, gw, d) = (h / p, w / p, self.cfg.embed_dim);
        let patches = x
            .reshape((b, c, gh, p, gw, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((b * gh * gw, c * p * p))?;
        let wm = self.patch_w.reshape((d, c * p * p))?;
        let t = ops::add_rows(&patches.matmul(&wm.t()?)?, &self.patch_b)?;
        Ok(self.patch_norm.forward(&t.reshape((b, gh * gw, d))?)?)
    }

    /// Replace the tokens of hidden units by `mask_token`: t * (1 - w) + w * mask_token, with
    /// w (B, L, 1) the unit mask upsampled to u x u tokens.
    fn mask_tokens(&self, t: &Tensor, plan: &MaskPlan) -> Result<Tensor> {
        let grid = self.cfg.unit_grid();
        let (b, l, _) = t.dims3()?;
        let bad = |reason: String| ModelError::Input {
            got: vec![plan.batch_size(), plan.num_units()],
            reason,
        };
        match plan {
            MaskPlan::MaskUnits { grid: g, .. } if *g == grid => {}
            MaskPlan::MaskUnits { grid: g, .. } => {
                return Err(bad(format!(
                    "mask plan is for a {}x{} unit grid, the model has {}x{}",
                    g.height, g.width, grid.height, grid.width
                )))
            }
            other => {
                return Err(bad(format!(
                    "a Swin masks units with its mask token; it cannot take a {:?} plan",
                    other.kind()
                )))
            }
        }
        if plan.batch_size() != b {
            return Err(bad(format!(
                "mask plan for {} samples, batch has {b}",
                plan.batch_size()
            )));
        }
        let u = self.cfg.mask_unit;
        let (gh, gw) = (grid.height, grid.width);
        let w = plan
            .unit_mask_tensor(t.device())?
            .to_dtype(t.dtype())?
            .reshape((b, gh, 1, gw, 1))?
            .broadcast_as((b, gh, u, gw, u))?
            .contiguous()?
            .reshape((b, l, 1))?;
        let keep = w.affine(-1.0, 1.0)?;
        Ok((t.broadcast_mul(&keep)? + w.broadcast_mul(&self.mask_token)?)?)
    }

    /// Final-stage token features after `norm`: (B, L_last, C_last).
    pub fn forward_features(
        &self,
        x: &Tensor,
        plan: Option<&MaskPlan>,
        train: bool,
    ) -> Result<Tensor> {
        let mut t = self.patch_embed(x)?;
        if let Some(p) = plan {
            t = self.mask_tokens(&t, p)?;
        }
        for stage in &self.layers {
            if let Some(ds) = &stage.downsample {
                t = ds.forward(&t)?;
            }
            for blk in &stage.blocks {
                t = blk.forward(&t, train, &self.drop_path_rng)?;
            }
        }
        Ok(self.norm.forward(&t)?)
    }

    /// Average over tokens, then `head.fc`.
    pub fn forward_head(&self, feats: &Tensor) -> Result<Tensor> {
        Ok(self.head.forward(&feats.mean(1)?)?)
    }

    /// Layer id for layer-wise lr decay, after timm's group_matcher: patch_embed and mask_token
    /// 0, block k (counted over all stages) k + 1, a stage's downsample with its first block,
    /// the final norm and head last.
    pub fn layer_id(&self, name: &str) -> usize {
        if name.starts_with("patch_embed") || name == "mask_token" {
            return 0;
        }
        let total: usize = self.cfg.depths.iter().sum();
        let Some(rest) = name.strip_prefix("layers.") else {
            return total + 1;
        };
        let mut parts = rest.split('.');
        let stage = parts.next().and_then(|s| s.parse::<usize>().ok());
        let (Some(stage), Some(kind)) = (stage, parts.next()) else {
            return total + 1;
        };
        let first: usize = self.cfg.depths.iter().take(stage).sum();
        match kind {
            "blocks" => parts
                .next()
                .and_then(|s| s.parse::<usize>().ok())
                .map_or(total + 1, |j| first + j + 1),
            _ => first + 1,
        }
    }
}

impl ImageClassifier for Swin {
    fn forward_features(&self, x: &Tensor, plan: Option<&MaskPlan>, train: bool) -> Result<Tensor> {
        Swin::forward_features(self, x, plan, train)
    }
    fn forward_head(&self, features: &Tensor) -> Result<Tensor> {
        Swin::forward_head(self, features)
    }
    fn token_grid(&self) -> TokenGrid {
        self.cfg.unit_grid()
    }
    fn mask_kind(&self) -> MaskKind {
        MaskKind::MaskUnits
    }
    fn no_weight_decay(&self) -> Vec<&'static str> {
        vec!["mask_token"]
    }
    fn no_weight_decay_keywords(&self) -> Vec<&'static str> {
        // timm's SwinTransformer.no_weight_decay: every relative_position_bias_table.
        vec!["relative_position_bias_table"]
    }
    fn layer_id(&self, name: &str) -> usize {
        Swin::layer_id(self, name)
    }
    fn num_layers(&self) -> usize {
        self.cfg.depths.iter().sum::<usize>() + 1
    }
    fn num_classes(&self) -> usize {
        self.cfg.num_classes
    }
    fn reseed(&self, seed: u64) {
        Swin::reseed(self, seed)
    }
}
