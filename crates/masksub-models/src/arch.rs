//! What the registry needs of a family's config, so adding a family (ViT, Swin, ResNet, ...)
//! is one enum variant in [`crate::ModelArch`] plus one impl of [`ArchConfig`].

use crate::model::ImageClassifier;
use crate::Result;
use candle_nn::{VarBuilder, VarMap};

/// A family's hyper-parameters, as the registry and the trainer use them.
pub trait ArchConfig {
    fn num_classes(&self) -> usize;
    /// (channels, height, width) the model takes.
    fn input_shape(&self) -> (usize, usize, usize);
    /// Adapt the classifier and the stem to a dataset.
    fn set_data(&mut self, num_classes: usize, in_chans: usize);
    fn set_drop_path(&mut self, rate: f64);
    /// Check every field; errors name the field.
    fn validate(&self) -> Result<()>;
    /// One line for `masksub models`.
    fn describe(&self) -> String;
    /// FLOPs (2 per multiply-add, matrix products and convolutions only) of one image's
    /// forward pass: plain with `None`, the MaskSub sub pass at `Some(mask_ratio)`. `None` when
    /// the family does not count them.
    fn forward_flops(&self, _mask_ratio: Option<f64>) -> Option<f64> {
        None
    }
    /// Build the network: trainable parameters come from `params` (paths = timm keys),
    /// non-trainable state (BatchNorm running statistics) goes into `buffers`; `seed` seeds
    /// the model's own randomness (drop-path).
    fn build(
        &self,
        params: VarBuilder,
        buffers: &VarMap,
        seed: u64,
    ) -> Result<Box<dyn ImageClassifier>>;
}

impl ArchConfig for crate::VitConfig {
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
        crate::VitConfig::validate(self)
    }
    fn forward_flops(&self, mask_ratio: Option<f64>) -> Option<f64> {
        Some(crate::VitConfig::forward_flops(self, mask_ratio))
    }
    fn describe(&self) -> String {
        format!(
            "ViT d{} x{} h{} /{}",
            self.embed_dim, self.depth, self.num_heads, self.patch_size
        )
    }
    fn build(
        &self,
        params: VarBuilder,
        _buffers: &VarMap,
        seed: u64,
    ) -> Result<Box<dyn ImageClassifier>> {
        Ok(Box::new(crate::Vit::new(self, params, seed)?))
    }
}
