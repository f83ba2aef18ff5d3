//! ResNet in timm's layout (`timm.models.resnet.ResNet`, the default "b" variant): a 7x7/2 stem
//! conv with 64 channels, BatchNorm, ReLU, a 3x3/2 max-pool; stages `layer1..layer4` of
//! BasicBlocks or Bottlenecks (stride in the 3x3 conv, a 1x1 conv + BatchNorm `downsample`
//! where the shape changes); global average pooling and `fc`.
//!
//! MaskSub: the sub pass zeroes random p x p pixel patches of the normalized input
//! ([`crate::pixel_mask`]); BatchNorm runs in train mode in both passes, so both update the
//! running statistics (main pass first). Evaluation uses the running statistics.

use crate::arch::ArchConfig;
use crate::cnn_layers::{BatchNorm2d, Conv2d};
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

/// The residual block of every stage (timm's `block=BasicBlock` / `block=Bottleneck`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockType {
    /// Two 3x3 convs (ResNet-18/34).
    Basic,
    /// 1x1 reduce, 3x3, 1x1 expand by 4 (ResNet-26/50/101/152).
    Bottleneck,
}

impl BlockType {
    /// Output channels per `planes` (timm's `block.expansion`).
    pub fn expansion(self) -> usize {
        match self {
            BlockType::Basic => 1,
            BlockType::Bottleneck => 4,
        }
    }
}

/// Channels of timm's default (single 7x7 conv) stem: 64 whatever `channels` or timm's
/// `stem_width` say (`stem_width` only sizes the deep stems).
pub const STEM_WIDTH: usize = 64;

/// ResNet hyper-parameters; field names as timm's constructor arguments where timm has them
/// (`block`, `layers`, `channels`, `in_chans`, `num_classes`, `drop_path_rate`,
/// `zero_init_last`). `img_size` is timm's `pretrained_cfg["input_size"]`; `mask_patch_size` is
/// MaskSub's pixel patch side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResNetConfig {
    pub block: BlockType,
    /// Blocks per stage (layer1..layer4).
    pub layers: Vec<usize>,
    /// `planes` per stage; a stage outputs `planes * expansion` channels.
    pub channels: Vec<usize>,
    pub in_chans: usize,
    pub num_classes: usize,
    pub img_size: usize,
    /// Side of the square pixel patches the sub pass zeroes; must divide `img_size`.
    pub mask_patch_size: usize,
    pub drop_path_rate: f64,
    /// Zero-init the last BatchNorm weight of every residual branch (timm's default).
    pub zero_init_last: bool,
}

impl Default for ResNetConfig {
    fn default() -> Self {
        Self::resnet50()
    }
}

impl ResNetConfig {
    fn imagenet(block: BlockType, layers: [usize; 4]) -> Self {
        Self {
            block,
            layers: layers.to_vec(),
            channels: vec![64, 128, 256, 512],
            in_chans: 3,
            num_classes: 1000,
            img_size: 224,
            // 7x7 units at 224 px, as the paper masks CNN inputs.
            mask_patch_size: 32,
            drop_path_rate: 0.0,
            zero_init_last: true,
        }
    }

    pub fn resnet18() -> Self {
        Self::imagenet(BlockType::Basic, [2, 2, 2, 2])
    }
    pub fn resnet26() -> Self {
        Self::imagenet(BlockType::Bottleneck, [2, 2, 2, 2])
    }
    pub fn resnet34() -> Self {
        Self::imagenet(BlockType::Basic, [3, 4, 6, 3])
    }
    pub fn resnet50() -> Self {
        Self::imagenet(BlockType::Bottleneck, [3, 4, 6, 3])
    }
    pub fn resnet101() -> Self {
        Self::imagenet(BlockType::Bottleneck, [3, 4, 23, 3])
    }
    pub fn resnet152() -> Self {
        Self::imagenet(BlockType::Bottleneck, [3, 8, 36, 3])
    }

    /// Fashion-MNIST/MNIST 28x28x1: ResNet-18's layout (BasicBlocks, 2 per stage) at a
    /// quarter of its stage widths (the stem keeps timm's 64 channels); 4 px mask patches ->
    /// a 7x7 unit grid.
    pub fn resnet_fmnist_small() -> Self {
        Self {
            channels: vec![16, 32, 64, 128],
            in_chans: 1,
            num_classes: 10,
            img_size: 28,
            mask_patch_size: 4,
            ..Self::resnet18()
        }
    }

    /// The maskable unit grid: (img_size / p) x (img_size / p).
    pub fn grid(&self) -> TokenGrid {
        let g = self.img_size / self.mask_patch_size.max(1);
        TokenGrid::new(g, g)
    }

    /// Channels of the features `fc` sees.
    pub fn num_features(&self) -> usize {
        self.channels.last().copied().unwrap_or(0) * self.block.expansion()
    }

    /// Forward FLOPs of one image (2 per multiply-add; convolutions and `fc`, which is all but
    /// a few percent). The sub pass zeroes pixels but computes at full size, so a masked
    /// forward costs the same.
    pub fn forward_flops(&self) -> f64 {
        // (c_in, c_out, kernel, output side) of one conv.
        let conv =
            |ci: usize, co: usize, k: usize, side: usize| (ci * co * k * k * side * side) as f64;
        let down =
            |side: usize, k: usize, stride: usize, pad: usize| (side + 2 * pad - k) / stride + 1;
        let mut side = down(self.img_size, 7, 2, 3);
        let mut macs = conv(self.in_chans, STEM_WIDTH, 7, side);
        side = down(side, 3, 2, 1);
        let mut inplanes = STEM_WIDTH;
        for (s, (&n, &planes)) in self.layers.iter().zip(&self.channels).enumerate() {
            let out = planes * self.block.expansion();
            for i in 0..n {
                let stride = if s > 0 && i == 0 { 2 } else { 1 };
                let o = down(side, 3, stride, 1);
                macs += match self.block {
                    BlockType::Basic => conv(inplanes, planes, 3, o) + conv(planes, out, 3, o),
                    BlockType::Bottleneck => {
                        conv(inplanes, planes, 1, side)
                            + conv(planes, planes, 3, o)
                            + conv(planes, out, 1, o)
                    }
                };
                if stride != 1 || inplanes != out {
                    macs += conv(inplanes, out, 1, o);
                }
                (side, inplanes) = (o, out);
            }
        }
        2.0 * (macs + (inplanes * self.num_classes) as f64)
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
        // timm's ResNet.forward_features runs exactly layer1..layer4.
        for (field, v) in [("layers", &self.layers), ("channels", &self.channels)] {
            if v.len() != 4 || v.contains(&0) {
                return Err(ModelError::config(
                    field,
                    format!("{v:?} must hold 4 positive numbers (layer1..layer4)"),
                ));
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

/// conv + BatchNorm, the unit every branch is made of.
#[derive(Debug)]
struct ConvBn {
    conv: Conv2d,
    bn: BatchNorm2d,
}

impl ConvBn {
    fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.bn.forward(&self.conv.forward(x)?, train)
    }
    fn forward_relu(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.bn.forward_relu(&self.conv.forward(x)?, train)
    }
}

/// One residual block: `relu(branch(x) + shortcut(x))`, the branch being conv-bn pairs with
/// ReLU between them (`conv1/bn1 .. convN/bnN`), the shortcut `downsample.0/.1` or identity.
#[derive(Debug)]
struct Block {
    branch: Vec<ConvBn>,
    downsample: Option<ConvBn>,
    drop_path: DropPath,
}

/// Where a block sits and what it computes.
struct BlockShape {
    inplanes: usize,
    planes: usize,
    stride: usize,
    drop_path: f64,
}

impl Block {
    fn new(
        cfg: &ResNetConfig,
        s: BlockShape,
        vb: VarBuilder,
        buffers: &VarMap,
    ) -> candle_core::Result<Self> {
        let out = s.planes * cfg.block.expansion();
        // (c_in, c_out, kernel, stride, padding) per conv of the branch.
        let convs = match cfg.block {
            BlockType::Basic => vec![
                (s.inplanes, s.planes, 3, s.stride, 1),
                (s.planes, out, 3, 1, 1),
            ],
            // width = planes (base_width 64, cardinality 1).
            BlockType::Bottleneck => vec![
                (s.inplanes, s.planes, 1, 1, 0),
                (s.planes, s.planes, 3, s.stride, 1),
                (s.planes, out, 1, 1, 0),
            ],
        };
        let n = convs.len();
        let branch = convs
            .into_iter()
            .enumerate()
            .map(|(i, (ci, co, k, st, p))| {
                let last = i + 1 == n;
                let w0 = if last && cfg.zero_init_last { 0.0 } else { 1.0 };
                Ok(ConvBn {
                    conv: Conv2d::new(ci, co, k, st, p, vb.pp(format!("conv{}", i + 1)))?,
                    bn: BatchNorm2d::new(co, w0, vb.pp(format!("bn{}", i + 1)), buffers)?,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let downsample = if s.stride != 1 || s.inplanes != out {
            let d = vb.pp("downsample");
            Some(ConvBn {
                conv: Conv2d::new(s.inplanes, out, 1, s.stride, 0, d.pp(0))?,
                bn: BatchNorm2d::new(out, 1.0, d.pp(1), buffers)?,
            })
        } else {
            None
        };
        Ok(Self {
            branch,
            downsample,
            drop_path: DropPath::new(s.drop_path),
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        train: bool,
        rng: &Mutex<ChaCha8Rng>,
    ) -> candle_core::Result<Tensor> {
        let mut y = x.clone();
        for (i, cb) in self.branch.iter().enumerate() {
            y = if i + 1 < self.branch.len() {
                cb.forward_relu(&y, train)?
            } else {
                cb.forward(&y, train)?
            };
        }
        let y = self.drop_path.forward(&y, train, rng)?;
        let shortcut = match &self.downsample {
            Some(d) => d.forward(x, train)?,
            None => x.clone(),
        };
        ops::add_relu(&y, &shortcut)
    }
}

/// The ResNet.
#[derive(Debug)]
pub struct ResNet {
    cfg: ResNetConfig,
    stem: ConvBn,
    stages: Vec<Vec<Block>>,
    fc_weight: Tensor,
    fc_bias: Tensor,
    drop_path_rng: Mutex<ChaCha8Rng>,
}

impl ResNet {
    /// Build from `vb` (parameter paths = timm's state_dict keys); BatchNorm running statistics
    /// are registered in `buffers` under their timm keys. `seed` drives drop-path.
    pub fn new(cfg: &ResNetConfig, vb: VarBuilder, buffers: &VarMap, seed: u64) -> Result<Self> {
        cfg.validate()?;
        let stem = ConvBn {
            conv: Conv2d::new(cfg.in_chans, STEM_WIDTH, 7, 2, 3, vb.pp("conv1"))?,
            bn: BatchNorm2d::new(STEM_WIDTH, 1.0, vb.pp("bn1"), buffers)?,
        };
        let total: usize = cfg.layers.iter().sum();
        let (mut inplanes, mut idx) = (STEM_WIDTH, 0usize);
        let mut stages = Vec::with_capacity(cfg.layers.len());
        for (s, (&n, &planes)) in cfg.layers.iter().zip(&cfg.channels).enumerate() {
            let vs = vb.pp(format!("layer{}", s + 1));
            let mut blocks = Vec::with_capacity(n);
            for i in 0..n {
                // Stochastic depth grows linearly over all blocks, as timm's `block_dpr`.
                let drop_path = cfg.drop_path_rate * idx as f64 / (total - 1).max(1) as f64;
                let stride = if s > 0 && i == 0 { 2 } else { 1 };
                let shape = BlockShape {
                    inplanes,
                    planes,
                    stride,
                    drop_path,
                };
                blocks.push(Block::new(cfg, shape, vs.pp(i), buffers)?);
                inplanes = planes * cfg.block.expansion();
                idx += 1;
            }
            stages.push(blocks);
        }
        // PyTorch's default Linear init (timm leaves `fc` alone): U(-1/sqrt(in), 1/sqrt(in)).
        let bound = 1.0 / (inplanes as f64).sqrt();
        let init = Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let fc = vb.pp("fc");
        let fc_weight = fc.get_with_hints((cfg.num_classes, inplanes), "weight", init)?;
        let fc_bias = fc.get_with_hints(cfg.num_classes, "bias", init)?;
        Ok(Self {
            cfg: cfg.clone(),
            stem,
            stages,
            fc_weight,
            fc_bias,
            drop_path_rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
        })
    }

    pub fn config(&self) -> &ResNetConfig {
        &self.cfg
    }

    /// Restart the drop-path stream from `seed`.
    pub fn reseed(&self, seed: u64) {
        if let Ok(mut rng) = self.drop_path_rng.lock() {
            *rng = ChaCha8Rng::seed_from_u64(seed);
        }
    }

    /// Feature map after layer4: (B, num_features, H/32, W/32). `plan` zeroes pixel patches
    /// of the input first (the sub pass).
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
        let x = self.stem.forward_relu(&x, train)?;
        let mut x = ops::max_pool2d(&x, 3, 2, 1)?;
        for blk in self.stages.iter().flatten() {
            x = blk.forward(&x, train, &self.drop_path_rng)?;
        }
        Ok(x)
    }

    /// Global average pool and `fc`: (B, C, h, w) -> (B, num_classes).
    pub fn forward_head(&self, feats: &Tensor) -> Result<Tensor> {
        let pooled = feats.mean((2, 3))?;
        Ok(ops::add_rows(
            &pooled.matmul(&self.fc_weight.t()?)?,
            &self.fc_bias,
        )?)
    }

    /// Layer id for layer-wise lr decay (timm's group_matcher, per stage): the stem (`conv1`,
    /// `bn1`) 0, `layerN` N, `fc` (and anything else) num_layers = stages + 1.
    pub fn layer_id(&self, name: &str) -> usize {
        let head = self.cfg.layers.len() + 1;
        let top = name.split('.').next().unwrap_or("");
        match top {
            "conv1" | "bn1" => 0,
            _ => top
                .strip_prefix("layer")
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|n| (1..head).contains(n))
                .unwrap_or(head),
        }
    }
}

impl ImageClassifier for ResNet {
    fn forward_features(&self, x: &Tensor, plan: Option<&MaskPlan>, train: bool) -> Result<Tensor> {
        ResNet::forward_features(self, x, plan, train)
    }
    fn forward_head(&self, features: &Tensor) -> Result<Tensor> {
        ResNet::forward_head(self, features)
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
        ResNet::layer_id(self, name)
    }
    fn num_layers(&self) -> usize {
        self.cfg.layers.len() + 1
    }
    fn num_classes(&self) -> usize {
        self.cfg.num_classes
    }
    fn reseed(&self, seed: u64) {
        ResNet::reseed(self, seed)
    }
}

impl ArchConfig for ResNetConfig {
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
        ResNetConfig::validate(self)
    }
    fn forward_flops(&self, _mask_ratio: Option<f64>) -> Option<f64> {
        Some(ResNetConfig::forward_flops(self))
    }
    fn describe(&self) -> String {
        format!(
            "ResNet {:?} {:?} w{} mask {}px",
            self.block,
            self.layers,
            self.channels.first().copied().unwrap_or(0),
            self.mask_patch_size
        )
    }
    fn build(
        &self,
        params: VarBuilder,
        buffers: &VarMap,
        seed: u64,
    ) -> Result<Box<dyn ImageClassifier>> {
        Ok(Box::new(ResNet::new(self, params, buffers, seed)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry;
    use candle_core::{DType, Device};

    fn build(name: &str) -> crate::LoadedModel {
        registry::lookup(name)
            .unwrap()
            .build(0, DType::F32, &Device::Cpu)
            .unwrap()
    }

    #[test]
    fn presets_have_timms_parameter_counts_and_state_dict_sizes() {
        // From timm 1.0.31: sum(p.numel()), len(parameters()), len(state_dict()).
        for (name, numel, n_params, n_keys) in [
            ("resnet18", 11_689_512, 62, 122),
            ("resnet26", 15_995_176, 89, 176),
            ("resnet34", 21_797_672, 110, 218),
            ("resnet50", 25_557_032, 161, 320),
            ("resnet_fmnist_small", 712_234, 65, 128),
        ] {
            let m = build(name);
            let params = m.named_parameters();
            let total: usize = params.iter().map(|(_, v)| v.elem_count()).sum();
            assert_eq!(
                (total, params.len(), m.state_dict().unwrap().len()),
                (numel, n_params, n_keys),
                "{name}"
            );
        }
    }

    #[test]
    fn flops_match_timms_gmacs() {
        // torch.utils.flop_counter on timm 1.0.31's models at 224 px, / 2: 1.814 and 4.089
        // GMACs (timm's model cards round to 1.8 and 4.1).
        for (cfg, gmacs) in [
            (ResNetConfig::resnet18(), 1.814073344),
            (ResNetConfig::resnet50(), 4.089184256),
        ] {
            let got = cfg.forward_flops() / 2e9;
            assert!((got / gmacs - 1.0).abs() < 1e-3, "{got} vs {gmacs}");
        }
    }

    #[test]
    fn deep_presets_have_timms_block_counts() {
        for (name, cfg, n_keys) in [
            ("resnet101", ResNetConfig::resnet101(), 626),
            ("resnet152", ResNetConfig::resnet152(), 932),
        ] {
            // Each Bottleneck: 3 convs + 3 BNs (2 params, 3 buffers each); the first block of a
            // stage adds downsample.0/.1; plus the stem (conv + BN) and fc (2).
            let blocks: usize = cfg.layers.iter().sum();
            assert_eq!(blocks * 18 + 4 * 6 + 6 + 2, n_keys, "{name}");
        }
    }

    #[test]
    fn keys_are_timms_and_bottleneck_strides_sit_in_the_3x3_conv() {
        let m = build("resnet50");
        let sd = m.state_dict().unwrap();
        for (k, shape) in [
            ("conv1.weight", vec![64, 3, 7, 7]),
            ("bn1.running_mean", vec![64]),
            ("layer1.0.conv1.weight", vec![64, 64, 1, 1]),
            ("layer1.0.downsample.0.weight", vec![256, 64, 1, 1]),
            ("layer1.0.downsample.1.running_var", vec![256]),
            ("layer2.0.conv2.weight", vec![128, 128, 3, 3]),
            ("layer4.2.bn3.weight", vec![2048]),
            ("fc.weight", vec![1000, 2048]),
            ("fc.bias", vec![1000]),
        ] {
            assert_eq!(sd[k].dims(), shape.as_slice(), "{k}");
        }
        assert_eq!(sd["layer3.5.bn2.num_batches_tracked"].dtype(), DType::I64);
        assert!(!sd.contains_key("layer1.1.downsample.0.weight"));
        // zero_init_last: the last BN of every branch starts at 0, the others at 1.
        let w = |k: &str| sd[k].max(0).unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(
            (w("layer2.1.bn3.weight"), w("layer2.1.bn2.weight")),
            (0.0, 1.0)
        );
    }

    #[test]
    fn forward_shapes_layer_ids_and_masking() {
        let m = build("resnet_fmnist_small");
        let x = Tensor::randn(0f32, 1.0, (3, 1, 28, 28), &Device::Cpu).unwrap();
        let f = m.net.forward_features(&x, None, false).unwrap();
        assert_eq!(f.dims(), &[3, 128, 1, 1]);
        assert_eq!(m.forward(&x, false).unwrap().dims(), &[3, 10]);
        assert_eq!(m.net.token_grid(), TokenGrid::new(7, 7));
        assert_eq!(m.net.mask_kind(), MaskKind::MaskUnits);
        for (k, id) in [
            ("conv1.weight", 0),
            ("bn1.bias", 0),
            ("layer3.1.conv2.weight", 3),
        ] {
            assert_eq!(m.net.layer_id(k), id, "{k}");
        }
        assert_eq!(m.net.layer_id("fc.weight"), m.net.num_layers());
        // A plan hiding every unit makes the input all zeros.
        let all = MaskPlan::MaskUnits {
            grid: TokenGrid::new(7, 7),
            masked_per_sample: 49,
            masked: vec![1; 3 * 49],
        };
        let zeros = Tensor::zeros((3, 1, 28, 28), DType::F32, &Device::Cpu).unwrap();
        let a = m.net.forward(&x, Some(&all), false).unwrap();
        let b = m.forward(&zeros, false).unwrap();
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0);
        let drop = MaskPlan::KeepTokens {
            num_tokens: 49,
            keep_per_sample: 1,
            keep: vec![0; 3],
        };
        assert!(m.net.forward(&x, Some(&drop), true).is_err());
    }

    #[test]
    fn bad_configs_name_the_field() {
        let bad = |f: fn(&mut ResNetConfig)| {
            let mut c = ResNetConfig::resnet_fmnist_small();
            f(&mut c);
            c.validate().unwrap_err().to_string()
        };
        assert!(bad(|c| c.mask_patch_size = 5).contains("mask_patch_size"));
        assert!(bad(|c| c.mask_patch_size = 5).contains("divisible"));
        assert!(bad(|c| c.layers = vec![2, 2, 2]).contains("layers"));
        assert!(bad(|c| c.channels = vec![16, 0, 64, 128]).contains("channels"));
        assert!(bad(|c| c.drop_path_rate = 1.0).contains("drop_path_rate"));
        assert!(bad(|c| c.num_classes = 0).contains("num_classes"));
    }
}
