//! MobileNetV2 in timm's layout (`timm.models.efficientnet` `mobilenetv2_100`): a 3x3/2 stem
//! conv (`conv_stem`, `bn1`), seven stages of inverted residual blocks (`blocks.s.j`:
//! `conv_pw` 1x1 expand, `bn1`, `conv_dw` 3x3 depthwise, `bn2`, `conv_pwl` 1x1 project, `bn3`;
//! the first stage is a depthwise-separable block `conv_dw`, `bn1`, `conv_pw`, `bn2`), a 1x1
//! `conv_head` to 1280 channels with `bn2`, global average pooling and `classifier`. ReLU6
//! after every BatchNorm except the projections; a residual where stride is 1 and the width
//! is kept. torchvision's checkpoints load through [`crate::remap::torchvision`].
//!
//! MaskSub: as the ResNet, the sub pass zeroes random pixel patches of the input.

use crate::arch::ArchConfig;
use crate::cnn_layers::BatchNorm2d;
use crate::layers::DropPath;
use crate::model::ImageClassifier;
use crate::{ops, pixel_mask, ModelError, Result};
use candle_core::Tensor;
use candle_nn::{Init, VarBuilder, VarMap};
use masksub_core::{MaskKind, MaskPlan, TokenGrid};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::sync::Mutex;

/// Blocks per stage of MobileNetV2 (timm's `ds_r1`, `ir_r2`, `ir_r3`, `ir_r4`, `ir_r3`,
/// `ir_r3`, `ir_r1`).
pub const STAGE_DEPTHS: [usize; 7] = [1, 2, 3, 4, 3, 3, 1];
/// (output channels, stride of the first block, expansion) per stage.
const STAGES: [(usize, usize, usize); 7] = [
    (16, 1, 1),
    (24, 2, 6),
    (32, 2, 6),
    (64, 2, 6),
    (96, 1, 6),
    (160, 2, 6),
    (320, 1, 6),
];
const STEM: usize = 32;
const HEAD: usize = 1280;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MobileNetV2Config {
    pub in_chans: usize,
    pub num_classes: usize,
    pub img_size: usize,
    /// Side of the square pixel patches the sub pass zeroes; must divide `img_size`.
    pub mask_patch_size: usize,
    pub drop_path_rate: f64,
}

impl Default for MobileNetV2Config {
    fn default() -> Self {
        Self::mobilenetv2_100()
    }
}

impl MobileNetV2Config {
    pub fn mobilenetv2_100() -> Self {
        Self {
            in_chans: 3,
            num_classes: 1000,
            img_size: 224,
            mask_patch_size: 32,
            drop_path_rate: 0.0,
        }
    }

    pub fn grid(&self) -> TokenGrid {
        let g = self.img_size / self.mask_patch_size.max(1);
        TokenGrid::new(g, g)
    }

    pub fn validate(&self) -> Result<()> {
        for (field, v) in [
            ("in_chans", self.in_chans),
            ("num_classes", self.num_classes),
            ("img_size", self.img_size),
            ("mask_patch_size", self.mask_patch_size),
        ] {
            if v == 0 {
                return Err(ModelError::config(field, "must be positive"));
            }
        }
        pixel_mask::patch_grid(self.img_size, self.img_size, self.mask_patch_size)?;
        if !(0.0..1.0).contains(&self.drop_path_rate) {
            return Err(ModelError::config(
                "drop_path_rate",
                format!("{} is not in [0, 1)", self.drop_path_rate),
            ));
        }
        Ok(())
    }
}

/// timm's `_init_weight_goog` for convs: N(0, sqrt(2 / fan_out)), fan_out = k*k*out/groups.
fn conv_weight(
    vb: &VarBuilder,
    c_out: usize,
    c_in_per_group: usize,
    k: usize,
    groups: usize,
) -> candle_core::Result<Tensor> {
    let fan_out = (k * k * c_out / groups) as f64;
    vb.get_with_hints(
        (c_out, c_in_per_group, k, k),
        "weight",
        Init::Randn {
            mean: 0.0,
            stdev: (2.0 / fan_out).sqrt(),
        },
    )
}

/// A conv (plain or depthwise) followed by its BatchNorm, with or without ReLU6.
#[derive(Debug)]
struct ConvBn {
    weight: Tensor,
    depthwise: bool,
    stride: usize,
    pad: usize,
    bn: BatchNorm2d,
    relu6: bool,
}

struct ConvSpec<'a> {
    conv: &'a str,
    bn: &'a str,
    c_in: usize,
    c_out: usize,
    k: usize,
    stride: usize,
    depthwise: bool,
    relu6: bool,
}

impl ConvBn {
    fn new(s: ConvSpec, vb: &VarBuilder, buffers: &VarMap) -> candle_core::Result<Self> {
        let weight = if s.depthwise {
            conv_weight(&vb.pp(s.conv), s.c_out, 1, s.k, s.c_out)?
        } else {
            conv_weight(&vb.pp(s.conv), s.c_out, s.c_in, s.k, 1)?
        };
        Ok(Self {
            weight,
            depthwise: s.depthwise,
            stride: s.stride,
            pad: s.k / 2,
            bn: BatchNorm2d::new(s.c_out, 1.0, vb.pp(s.bn), buffers)?,
            relu6: s.relu6,
        })
    }

    fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let y = if self.depthwise {
            ops::depthwise_conv2d(x, &self.weight, self.stride, self.pad)?
        } else {
            ops::conv2d(x, &self.weight, self.stride, self.pad)?
        };
        let y = self.bn.forward(&y, train)?;
        if self.relu6 {
            y.clamp(0f32, 6f32)
        } else {
            Ok(y)
        }
    }
}

#[derive(Debug)]
struct Block {
    layers: Vec<ConvBn>,
    residual: bool,
    drop_path: DropPath,
}

impl Block {
    fn new(
        c_in: usize,
        (c_out, stride, expand): (usize, usize, usize),
        drop_path: f64,
        vb: VarBuilder,
        buffers: &VarMap,
    ) -> candle_core::Result<Self> {
        let spec = |conv, bn, c_in, c_out, k, stride, depthwise, relu6| ConvSpec {
            conv,
            bn,
            c_in,
            c_out,
            k,
            stride,
            depthwise,
            relu6,
        };
        let layers = if expand == 1 {
            vec![
                ConvBn::new(
                    spec("conv_dw", "bn1", c_in, c_in, 3, stride, true, true),
                    &vb,
                    buffers,
                )?,
                ConvBn::new(
                    spec("conv_pw", "bn2", c_in, c_out, 1, 1, false, false),
                    &vb,
                    buffers,
                )?,
            ]
        } else {
            let mid = c_in * expand;
            vec![
                ConvBn::new(
                    spec("conv_pw", "bn1", c_in, mid, 1, 1, false, true),
                    &vb,
                    buffers,
                )?,
                ConvBn::new(
                    spec("conv_dw", "bn2", mid, mid, 3, stride, true, true),
                    &vb,
                    buffers,
                )?,
                ConvBn::new(
                    spec("conv_pwl", "bn3", mid, c_out, 1, 1, false, false),
                    &vb,
                    buffers,
                )?,
            ]
        };
        Ok(Self {
            layers,
            residual: stride == 1 && c_in == c_out,
            drop_path: DropPath::new(drop_path),
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        train: bool,
        rng: &Mutex<ChaCha8Rng>,
    ) -> candle_core::Result<Tensor> {
        let mut y = x.clone();
        for l in &self.layers {
            y = l.forward(&y, train)?;
        }
        if self.residual {
            self.drop_path.forward(&y, train, rng)? + x
        } else {
            Ok(y)
        }
    }
}

#[derive(Debug)]
pub struct MobileNetV2 {
    cfg: MobileNetV2Config,
    stem: ConvBn,
    stages: Vec<Vec<Block>>,
    head: ConvBn,
    classifier_w: Tensor,
    classifier_b: Tensor,
    drop_path_rng: Mutex<ChaCha8Rng>,
}

impl MobileNetV2 {
    pub fn new(
        cfg: &MobileNetV2Config,
        vb: VarBuilder,
        buffers: &VarMap,
        seed: u64,
    ) -> Result<Self> {
        cfg.validate()?;
        let stem = ConvBn::new(
            ConvSpec {
                conv: "conv_stem",
                bn: "bn1",
                c_in: cfg.in_chans,
                c_out: STEM,
                k: 3,
                stride: 2,
                depthwise: false,
                relu6: true,
            },
            &vb,
            buffers,
        )?;
        let total: usize = STAGE_DEPTHS.iter().sum();
        let (mut c_in, mut idx) = (STEM, 0usize);
        let mut stages = Vec::new();
        for (s, (&n, &(c_out, stride, expand))) in STAGE_DEPTHS.iter().zip(&STAGES).enumerate() {
            let mut blocks = Vec::new();
            for j in 0..n {
                // timm's efficientnet builder: rate * block_idx / num_blocks.
                let dpr = cfg.drop_path_rate * idx as f64 / total as f64;
                let st = if j == 0 { stride } else { 1 };
                let vbb = vb.pp("blocks").pp(s).pp(j);
                blocks.push(Block::new(c_in, (c_out, st, expand), dpr, vbb, buffers)?);
                c_in = c_out;
                idx += 1;
            }
            stages.push(blocks);
        }
        let head = ConvBn::new(
            ConvSpec {
                conv: "conv_head",
                bn: "bn2",
                c_in,
                c_out: HEAD,
                k: 1,
                stride: 1,
                depthwise: false,
                relu6: true,
            },
            &vb,
            buffers,
        )?;
        // timm: U(-1/sqrt(out), 1/sqrt(out)) for the classifier weight, zero bias.
        let bound = 1.0 / (cfg.num_classes as f64).sqrt();
        let c = vb.pp("classifier");
        let classifier_w = c.get_with_hints(
            (cfg.num_classes, HEAD),
            "weight",
            Init::Uniform {
                lo: -bound,
                up: bound,
            },
        )?;
        let classifier_b = c.get_with_hints(cfg.num_classes, "bias", Init::Const(0.0))?;
        Ok(Self {
            cfg: cfg.clone(),
            stem,
            stages,
            head,
            classifier_w,
            classifier_b,
            drop_path_rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
        })
    }

    pub fn config(&self) -> &MobileNetV2Config {
        &self.cfg
    }

    pub fn forward_features(
        &self,
        x: &Tensor,
        plan: Option<&MaskPlan>,
        train: bool,
    ) -> Result<Tensor> {
        let (_, c, _, _) = x.dims4().map_err(|_| ModelError::Input {
            got: x.dims().to_vec(),
            reason: "expected (batch, channels, height, width)".into(),
        })?;
        if c != self.cfg.in_chans {
            return Err(ModelError::Input {
                got: x.dims().to_vec(),
                reason: format!("expected {} channels", self.cfg.in_chans),
            });
        }
        let x = match plan {
            Some(p) => pixel_mask::zero_masked_patches(x, p, self.cfg.mask_patch_size)?,
            None => x.clone(),
        };
        let mut x = self.stem.forward(&x, train)?;
        for b in self.stages.iter().flatten() {
            x = b.forward(&x, train, &self.drop_path_rng)?;
        }
        Ok(self.head.forward(&x, train)?)
    }

    pub fn forward_head(&self, feats: &Tensor) -> Result<Tensor> {
        let pooled = feats.mean((2, 3))?;
        Ok(ops::add_rows(
            &pooled.matmul(&self.classifier_w.t()?)?,
            &self.classifier_b,
        )?)
    }

    /// Stem 0, stage s -> s + 1, head and classifier last.
    pub fn layer_id(&self, name: &str) -> usize {
        let last = STAGE_DEPTHS.len() + 1;
        if name.starts_with("conv_stem") || name.starts_with("bn1") {
            return 0;
        }
        name.strip_prefix("blocks.")
            .and_then(|r| r.split('.').next())
            .and_then(|s| s.parse::<usize>().ok())
            .map_or(last, |s| (s + 1).min(last))
    }
}

impl ImageClassifier for MobileNetV2 {
    fn forward_features(&self, x: &Tensor, plan: Option<&MaskPlan>, train: bool) -> Result<Tensor> {
        MobileNetV2::forward_features(self, x, plan, train)
    }
    fn forward_head(&self, features: &Tensor) -> Result<Tensor> {
        MobileNetV2::forward_head(self, features)
    }
    fn token_grid(&self) -> TokenGrid {
        self.cfg.grid()
    }
    fn mask_kind(&self) -> MaskKind {
        MaskKind::MaskUnits
    }
    fn no_weight_decay(&self) -> Vec<&'static str> {
        Vec::new()
    }
    fn layer_id(&self, name: &str) -> usize {
        MobileNetV2::layer_id(self, name)
    }
    fn num_layers(&self) -> usize {
        STAGE_DEPTHS.len() + 1
    }
    fn num_classes(&self) -> usize {
        self.cfg.num_classes
    }
    fn reseed(&self, seed: u64) {
        if let Ok(mut rng) = self.drop_path_rng.lock() {
            *rng = ChaCha8Rng::seed_from_u64(seed);
        }
    }
}

impl ArchConfig for MobileNetV2Config {
    fn num_classes(&self) -> usize {
        self.num_classes
    }
    fn input_shape(&self) -> (usize, usize, usize) {
        (self.in_chans, self.img_size, self.img_size)
    }
    fn set_data(&mut self, num_classes: usize, in_chans: usize) {
        self.num_classes = num_classes;
        self.in_chans = in_chans;
    }
    fn set_drop_path(&mut self, rate: f64) {
        self.drop_path_rate = rate;
    }
    fn validate(&self) -> Result<()> {
        MobileNetV2Config::validate(self)
    }
    fn describe(&self) -> String {
        format!(
            "MobileNetV2 1.0 @{} (mask patch {})",
            self.img_size, self.mask_patch_size
        )
    }
    fn build(
        &self,
        params: VarBuilder,
        buffers: &VarMap,
        seed: u64,
    ) -> Result<Box<dyn ImageClassifier>> {
        Ok(Box::new(MobileNetV2::new(self, params, buffers, seed)?))
    }
}
