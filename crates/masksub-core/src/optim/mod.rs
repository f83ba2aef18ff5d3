//! Optimizers with parameter groups behind one [`Optimizer`] trait, their state exposed as
//! named tensors (`m.<param>`, `v.<param>`) so checkpoints can carry it.

mod adamw;
mod fused_cpu;
mod lamb;

pub use adamw::{AdamW, AdamWConfig};
pub use lamb::{Lamb, LambConfig};

use crate::{CoreError, Result};
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// What the training step needs of an optimizer.
pub trait Optimizer: Send {
    fn lr(&self) -> f64;
    fn set_lr(&mut self, lr: f64);
    /// Number of optimizer steps taken (PyTorch's `state['step']`).
    fn step_count(&self) -> u64;
    /// One update of every parameter that has a gradient in `grads`.
    fn step(&mut self, grads: &GradStore) -> Result<()>;
    /// Moments as named tensors: `m.<param>` and `v.<param>`.
    fn state_tensors(&self) -> HashMap<String, Tensor>;
    /// Restore moments and the step count saved by [`Self::state_tensors`]; every parameter must
    /// be present with its shape.
    fn load_state(&mut self, tensors: &HashMap<String, Tensor>, step: u64) -> Result<()>;
}

/// The optimizer a run uses (timm's `--opt`), with its hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    #[default]
    Adamw,
    Lamb,
}

/// A set of named parameters sharing weight decay and an lr multiplier (layer-wise decay).
#[derive(Debug, Clone)]
pub struct ParamGroup {
    pub name: String,
    pub params: Vec<(String, Var)>,
    pub weight_decay: f64,
    pub lr_scale: f64,
}

struct Slot {
    name: String,
    var: Var,
    m: Tensor,
    v: Tensor,
}

struct Group {
    slots: Vec<Slot>,
    weight_decay: f64,
    lr_scale: f64,
}

impl Group {
    /// Zero first and second moments for every parameter of every group.
    fn build_all(groups: Vec<ParamGroup>) -> Result<Vec<Group>> {
        groups
            .into_iter()
            .map(|g| {
                let slots = g
                    .params
                    .into_iter()
                    .map(|(name, var)| {
                        let m = var.zeros_like()?;
                        let v = var.zeros_like()?;
                        Ok(Slot { name, var, m, v })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(Group {
                    slots,
                    weight_decay: g.weight_decay,
                    lr_scale: g.lr_scale,
                })
            })
            .collect()
    }
}

fn moments_to_tensors(groups: &[Group]) -> HashMap<String, Tensor> {
    let mut out = HashMap::new();
    for s in groups.iter().flat_map(|g| &g.slots) {
        out.insert(format!("m.{}", s.name), s.m.clone());
        out.insert(format!("v.{}", s.name), s.v.clone());
    }
    out
}

fn moments_from_tensors(groups: &mut [Group], tensors: &HashMap<String, Tensor>) -> Result<()> {
    for s in groups.iter_mut().flat_map(|g| &mut g.slots) {
        for (prefix, slot) in [("m", &mut s.m), ("v", &mut s.v)] {
            let key = format!("{prefix}.{}", s.name);
            let t = tensors
                .get(&key)
                .ok_or_else(|| CoreError::OptimizerState(format!("missing `{key}`")))?;
            if t.dims() != s.var.dims() {
                return Err(CoreError::OptimizerState(format!(
                    "`{key}` has shape {:?}, parameter has {:?}",
                    t.dims(),
                    s.var.dims()
                )));
            }
            *slot = t.to_device(s.var.device())?.to_dtype(s.var.dtype())?;
        }
    }
    Ok(())
}

/// Range checks shared by the Adam-family configs; the error names the field.
fn validate_adam_like(lr: f64, beta1: f64, beta2: f64, eps: f64, weight_decay: f64) -> Result<()> {
    let checks: [(&'static str, f64, bool); 5] = [
        ("lr", lr, lr >= 0.0),
        ("beta1", beta1, (0.0..1.0).contains(&beta1)),
        ("beta2", beta2, (0.0..1.0).contains(&beta2)),
        ("eps", eps, eps > 0.0),
        ("weight_decay", weight_decay, weight_decay >= 0.0),
    ];
    for (field, v, ok) in checks {
        if !ok || !v.is_finite() {
            return Err(CoreError::config(field, format!("{v} is out of range")));
        }
    }
    Ok(())
}
