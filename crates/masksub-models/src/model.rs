//! The fixed interface every architecture implements (timm's model API), and the loaded model
//! that ties an architecture to its parameters and to MaskSub.

use crate::registry::ModelSpec;
use crate::{Result, Vit};
use candle_core::{Tensor, Var};
use candle_nn::VarMap;
use masksub_core::{MaskKind, MaskPlan, SubModelForward, SubRegularizer, TokenGrid};

/// What the trainer and the optimizer need to know about a network.
pub trait ImageClassifier: Send + Sync {
    /// Features before pooling; `plan` masks the sub pass.
    fn forward_features(&self, x: &Tensor, plan: Option<&MaskPlan>, train: bool) -> Result<Tensor>;
    /// Pooling + classifier.
    fn forward_head(&self, features: &Tensor) -> Result<Tensor>;
    fn forward(&self, x: &Tensor, plan: Option<&MaskPlan>, train: bool) -> Result<Tensor> {
        self.forward_head(&self.forward_features(x, plan, train)?)
    }
    /// The maskable unit grid.
    fn token_grid(&self) -> TokenGrid;
    /// How this family masks in the sub pass (picks MaskSub's default strategy).
    fn mask_kind(&self) -> MaskKind;
    /// Parameter names exempt from weight decay besides all 1-D parameters.
    fn no_weight_decay(&self) -> Vec<&'static str>;
    /// Substrings of parameter names exempt from weight decay (timm's Swin: every
    /// `relative_position_bias_table`).
    fn no_weight_decay_keywords(&self) -> Vec<&'static str> {
        Vec::new()
    }
    /// Layer id of a parameter for layer-wise lr decay, in 0..=num_layers().
    fn layer_id(&self, name: &str) -> usize;
    fn num_layers(&self) -> usize;
    fn num_classes(&self) -> usize;
    /// Re-seed the model's own randomness (drop-path) so a step is reproducible from the run
    /// seed and the step number, including after a resume.
    fn reseed(&self, _seed: u64) {}
    /// Training forward of a DropSub / PathSub sub pass (see [`SubRegularizer`]); a family
    /// without it says so.
    fn forward_regularized(&self, _x: &Tensor, reg: SubRegularizer) -> Result<Tensor> {
        Err(crate::ModelError::config(
            "sub",
            format!("this model family has no {reg:?} sub pass; use masking"),
        ))
    }
}

impl ImageClassifier for Vit {
    fn forward_features(&self, x: &Tensor, plan: Option<&MaskPlan>, train: bool) -> Result<Tensor> {
        let keep = match plan {
            None => None,
            Some(p @ MaskPlan::KeepTokens { num_tokens, .. }) => {
                let grid = self.token_grid().len();
                if *num_tokens != grid {
                    return Err(crate::ModelError::Input {
                        got: vec![*num_tokens],
                        reason: format!(
                            "mask plan is for {num_tokens} tokens, the model has {grid}"
                        ),
                    });
                }
                Some(p.keep_tensor(x.device())?)
            }
            Some(p) => {
                return Err(crate::ModelError::Input {
                    got: vec![p.num_units()],
                    reason: format!("a ViT drops tokens; it cannot take a {:?} plan", p.kind()),
                })
            }
        };
        Vit::forward_features(self, x, keep.as_ref(), train)
    }
    fn forward_head(&self, features: &Tensor) -> Result<Tensor> {
        Vit::forward_head(self, features)
    }
    fn token_grid(&self) -> TokenGrid {
        self.config().grid()
    }
    fn mask_kind(&self) -> MaskKind {
        MaskKind::DropTokens
    }
    fn no_weight_decay(&self) -> Vec<&'static str> {
        vec!["pos_embed", "cls_token"]
    }
    fn layer_id(&self, name: &str) -> usize {
        Vit::layer_id(self, name)
    }
    fn num_layers(&self) -> usize {
        self.config().depth + 1
    }
    fn num_classes(&self) -> usize {
        self.config().num_classes
    }
    fn reseed(&self, seed: u64) {
        Vit::reseed(self, seed)
    }
    fn forward_regularized(&self, x: &Tensor, reg: SubRegularizer) -> Result<Tensor> {
        Vit::forward_regularized(self, x, reg)
    }
}

/// A network with its parameters (names = timm keys) and the spec it was built from.
pub struct LoadedModel {
    pub spec: ModelSpec,
    /// Trainable parameters (what the optimizer sees).
    pub varmap: VarMap,
    /// Non-trainable state saved with the weights (BatchNorm running statistics), timm keys too.
    pub buffers: VarMap,
    pub net: Box<dyn ImageClassifier>,
}

impl LoadedModel {
    /// All trainable parameters, sorted by name (a stable order for optimizers and checkpoints).
    pub fn named_parameters(&self) -> Vec<(String, Var)> {
        sorted_vars(&self.varmap)
    }

    /// Whether `name` (of a parameter of rank `rank`) is decayed: not 1-D, not in no_weight_decay,
    /// no no_weight_decay keyword in its name.
    pub fn decays(&self, name: &str, rank: usize) -> bool {
        rank > 1
            && !self.net.no_weight_decay().contains(&name)
            && !self
                .net
                .no_weight_decay_keywords()
                .iter()
                .any(|k| name.contains(k))
    }

    /// Non-trainable state (BatchNorm statistics), sorted by name (the same order on every
    /// data-parallel rank).
    pub fn buffer_vars(&self) -> Vec<Var> {
        sorted_vars(&self.buffers)
            .into_iter()
            .map(|(_, v)| v)
            .collect()
    }

    /// Parameters and buffers by timm key: what a checkpoint holds.
    pub fn state_dict(&self) -> Result<std::collections::BTreeMap<String, Tensor>> {
        let mut sd = crate::weights::state_dict(&self.varmap)?;
        sd.extend(crate::weights::state_dict(&self.buffers)?);
        Ok(sd)
    }

    /// Strictly load a state dict (parameters and buffers); errors name `source_name` and
    /// every missing, unexpected or mis-shaped key.
    pub fn load_state_dict(
        &self,
        tensors: &std::collections::HashMap<String, Tensor>,
        source_name: &str,
        opts: &crate::weights::LoadOptions,
    ) -> Result<()> {
        crate::weights::load_into_all(&[&self.varmap, &self.buffers], tensors, source_name, opts)
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.net.forward(x, None, train)
    }
}

/// A VarMap's entries sorted by name.
fn sorted_vars(map: &VarMap) -> Vec<(String, Var)> {
    let map = map.data().lock().map(|m| m.clone()).unwrap_or_default();
    let mut v: Vec<(String, Var)> = map.into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn to_candle(e: crate::ModelError) -> candle_core::Error {
    match e {
        crate::ModelError::Candle(c) => c,
        other => candle_core::Error::Msg(other.to_string()),
    }
}

impl SubModelForward for LoadedModel {
    fn forward_train(&self, x: &Tensor, plan: Option<&MaskPlan>) -> candle_core::Result<Tensor> {
        self.net.forward(x, plan, true).map_err(to_candle)
    }
    fn forward_regularized(&self, x: &Tensor, reg: SubRegularizer) -> candle_core::Result<Tensor> {
        self.net.forward_regularized(x, reg).map_err(to_candle)
    }
    fn token_grid(&self) -> TokenGrid {
        self.net.token_grid()
    }
    fn mask_kind(&self) -> MaskKind {
        self.net.mask_kind()
    }
}
