//! Swin hyper-parameters (field names as timm's `SwinTransformer` arguments) and presets.

use crate::arch::ArchConfig;
use crate::model::ImageClassifier;
use crate::{ModelError, Result};
use candle_nn::{VarBuilder, VarMap};
use masksub_core::TokenGrid;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SwinConfig {
    pub img_size: usize,
    pub patch_size: usize,
    pub in_chans: usize,
    pub num_classes: usize,
    /// Width of stage 1; stage i has embed_dim * 2^i.
    pub embed_dim: usize,
    pub depths: Vec<usize>,
    pub num_heads: Vec<usize>,
    pub window_size: usize,
    pub mlp_ratio: f64,
    pub qkv_bias: bool,
    pub drop_path_rate: f64,
    /// timm's Swin uses torch's nn.LayerNorm: eps 1e-5.
    pub layer_norm_eps: f64,
    /// MaskSub unit: u x u stage-1 tokens are hidden together by the mask token (8 at 224 px
    /// with patch 4, i.e. 32 px squares; a 7x7 unit grid).
    pub mask_unit: usize,
}

impl Default for SwinConfig {
    fn default() -> Self {
        Self::swin_tiny_patch4_window7_224()
    }
}

impl SwinConfig {
    /// Swin-T as timm registers it; drop-path 0.2 as the Swin paper's ImageNet recipe.
    pub fn swin_tiny_patch4_window7_224() -> Self {
        Self {
            img_size: 224,
            patch_size: 4,
            in_chans: 3,
            num_classes: 1000,
            embed_dim: 96,
            depths: vec![2, 2, 6, 2],
            num_heads: vec![3, 6, 12, 24],
            window_size: 7,
            mlp_ratio: 4.0,
            qkv_bias: true,
            drop_path_rate: 0.2,
            layer_norm_eps: 1e-5,
            mask_unit: 8,
        }
    }

    /// Swin-S (drop-path 0.3, Swin paper recipe).
    pub fn swin_small_patch4_window7_224() -> Self {
        Self {
            depths: vec![2, 2, 18, 2],
            drop_path_rate: 0.3,
            ..Self::swin_tiny_patch4_window7_224()
        }
    }

    /// Swin-B (drop-path 0.5, Swin paper recipe).
    pub fn swin_base_patch4_window7_224() -> Self {
        Self {
            embed_dim: 128,
            depths: vec![2, 2, 18, 2],
            num_heads: vec![4, 8, 16, 32],
            drop_path_rate: 0.5,
            ..Self::swin_tiny_patch4_window7_224()
        }
    }

    /// Fashion-MNIST at its own 28x28 (no padding or resizing of the data): patch 2 gives a
    /// 14x14 token grid, window 7 cuts it into 2x2 windows (shifted by 3 in every second block);
    /// stage 2 (7x7 after merging) is one window, so it attends globally without a shift. Mask
    /// unit 2 tokens (4 px) gives the same 7x7 unit grid as the ViT's 7x7 patch tokens.
    /// 0.13M parameters, about the size of `vit_fmnist_small`.
    pub fn swin_fmnist_small() -> Self {
        Self {
            img_size: 28,
            patch_size: 2,
            in_chans: 1,
            num_classes: 10,
            embed_dim: 32,
            depths: vec![2, 2],
            num_heads: vec![2, 4],
            window_size: 7,
            drop_path_rate: 0.0,
            mask_unit: 2,
            ..Self::swin_tiny_patch4_window7_224()
        }
    }

    pub fn num_stages(&self) -> usize {
        self.depths.len()
    }

    /// Token grid side of stage 1 (after the patch embedding).
    pub fn patch_grid(&self) -> usize {
        self.img_size / self.patch_size.max(1)
    }

    /// (grid side, width) of stage `i`.
    pub fn stage_shape(&self, i: usize) -> (usize, usize) {
        (self.patch_grid() >> i, self.embed_dim << i)
    }

    /// Width of the final features.
    pub fn num_features(&self) -> usize {
        self.stage_shape(self.num_stages().saturating_sub(1)).1
    }

    /// Window side and shift of block `j` of a stage with grid side `res`: timm clamps the window
    /// to the grid and drops the shift when one window covers the grid.
    pub fn window_and_shift(&self, res: usize, j: usize) -> (usize, usize) {
        if res <= self.window_size {
            (res, 0)
        } else if j % 2 == 1 {
            (self.window_size, self.window_size / 2)
        } else {
            (self.window_size, 0)
        }
    }

    /// Forward FLOPs of one image (2 x multiply-adds of the matmuls, convs and linears, as
    /// torch's FlopCounterMode counts them). The masked pass has the same size, so masking
    /// does not change it.
    pub fn forward_flops(&self) -> f64 {
        let p = self.patch_size as f64;
        let mut macs = (self.patch_grid() * self.patch_grid()) as f64
            * (self.in_chans as f64 * p * p)
            * self.embed_dim as f64;
        for (i, &depth) in self.depths.iter().enumerate() {
            let (res, c) = self.stage_shape(i);
            let (l, c) = ((res * res) as f64, c as f64);
            if i > 0 {
                // patch merging: L tokens of 4 * (C/2) channels -> C
                macs += l * 2.0 * c * c;
            }
            let (window, _) = self.window_and_shift(res, 0);
            let n = (window * window) as f64;
            let hidden = (c * self.mlp_ratio).floor();
            let per_block = l * c * 3.0 * c + 2.0 * l * n * c + l * c * c + 2.0 * l * c * hidden;
            macs += depth as f64 * per_block;
        }
        macs += self.num_features() as f64 * self.num_classes as f64;
        2.0 * macs
    }

    /// The MaskSub unit grid (stage-1 tokens / mask_unit per side).
    pub fn unit_grid(&self) -> TokenGrid {
        let g = self.patch_grid() / self.mask_unit.max(1);
        TokenGrid::new(g, g)
    }

    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("img_size", self.img_size),
            ("patch_size", self.patch_size),
            ("in_chans", self.in_chans),
            ("num_classes", self.num_classes),
            ("embed_dim", self.embed_dim),
            ("window_size", self.window_size),
            ("mask_unit", self.mask_unit),
        ];
        for (field, v) in positive {
            if v == 0 {
                return Err(ModelError::config(field, "must be positive"));
            }
        }
        if self.depths.is_empty() || self.depths.contains(&0) {
            return Err(ModelError::config(
                "depths",
                format!(
                    "{:?}: needs at least one stage, each with a block",
                    self.depths
                ),
            ));
        }
        if self.num_heads.len() != self.depths.len() {
            return Err(ModelError::config(
                "num_heads",
                format!(
                    "{} entries for {} stages",
                    self.num_heads.len(),
                    self.depths.len()
                ),
            ));
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
        for i in 0..self.num_stages() {
            let (res, dim) = self.stage_shape(i);
            let heads = self.num_heads[i];
            if heads == 0 || !dim.is_multiple_of(heads) {
                return Err(ModelError::config(
                    "num_heads",
                    format!("{heads} heads do not divide stage {i}'s width {dim}"),
                ));
            }
            // Patch merging halves the grid: the previous stage's side must be even.
            if i > 0 && !(self.patch_grid() >> (i - 1)).is_multiple_of(2) {
                return Err(ModelError::config(
                    "depths",
                    format!(
                        "stage {i} merges a {0}x{0} grid, which is odd (padding is not supported)",
                        self.patch_grid() >> (i - 1)
                    ),
                ));
            }
            let (window, _) = self.window_and_shift(res, 0);
            if res == 0 || !res.is_multiple_of(window) {
                return Err(ModelError::config(
                    "window_size",
                    format!(
                        "{window} does not divide stage {i}'s {res}x{res} grid (padding is not supported)"
                    ),
                ));
            }
        }
        if !self.patch_grid().is_multiple_of(self.mask_unit) {
            return Err(ModelError::config(
                "mask_unit",
                format!(
                    "{} does not divide the {}x{} stage-1 token grid",
                    self.mask_unit,
                    self.patch_grid(),
                    self.patch_grid()
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

impl ArchConfig for SwinConfig {
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
        SwinConfig::validate(self)
    }
    fn forward_flops(&self, _mask_ratio: Option<f64>) -> Option<f64> {
        Some(SwinConfig::forward_flops(self))
    }
    fn describe(&self) -> String {
        format!(
            "Swin d{} depths {:?} heads {:?} /{} window {}",
            self.embed_dim, self.depths, self.num_heads, self.patch_size, self.window_size
        )
    }
    fn build(
        &self,
        params: VarBuilder,
        _buffers: &VarMap,
        seed: u64,
    ) -> Result<Box<dyn ImageClassifier>> {
        Ok(Box::new(super::Swin::new(self, params, seed)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_and_fmnist_small_has_shifted_windows_in_stage_one() {
        for c in [
            SwinConfig::swin_tiny_patch4_window7_224(),
            SwinConfig::swin_small_patch4_window7_224(),
            SwinConfig::swin_base_patch4_window7_224(),
            SwinConfig::swin_fmnist_small(),
        ] {
            c.validate().unwrap();
        }
        let c = SwinConfig::swin_fmnist_small();
        assert_eq!(c.stage_shape(0), (14, 32));
        assert_eq!(c.window_and_shift(14, 1), (7, 3));
        assert_eq!(c.window_and_shift(7, 1), (7, 0), "one window: no shift");
        assert_eq!(c.unit_grid(), TokenGrid::new(7, 7));
        assert_eq!(
            SwinConfig::swin_tiny_patch4_window7_224().unit_grid(),
            TokenGrid::new(7, 7)
        );
        assert_eq!(
            SwinConfig::swin_base_patch4_window7_224().num_features(),
            1024
        );
    }

    #[test]
    fn forward_flops_equal_torchs_flop_counter() {
        // torch.utils.flop_counter.FlopCounterMode on timm 1.0.31, batch 1.
        assert_eq!(
            SwinConfig::swin_tiny_patch4_window7_224().forward_flops(),
            8_981_133_312.0
        );
        let fmnist = SwinConfig {
            drop_path_rate: 0.0,
            ..SwinConfig::swin_fmnist_small()
        };
        assert_eq!(fmnist.forward_flops(), 23_809_792.0);
    }

    #[test]
    fn invalid_configs_name_the_field() {
        let bad = |c: SwinConfig| c.validate().unwrap_err().to_string();
        let base = SwinConfig::swin_fmnist_small;
        assert!(bad(SwinConfig {
            mask_unit: 3,
            ..base()
        })
        .contains("mask_unit"));
        assert!(bad(SwinConfig {
            window_size: 4,
            ..base()
        })
        .contains("window_size"));
        assert!(bad(SwinConfig {
            depths: vec![2, 2, 2],
            num_heads: vec![2, 4, 8],
            ..base()
        })
        .contains("odd"));
        assert!(bad(SwinConfig {
            num_heads: vec![2],
            ..base()
        })
        .contains("num_heads"));
        assert!(bad(SwinConfig {
            num_heads: vec![3, 4],
            ..base()
        })
        .contains("num_heads"));
        assert!(bad(SwinConfig {
            patch_size: 3,
            ..base()
        })
        .contains("patch_size"));
    }
}
