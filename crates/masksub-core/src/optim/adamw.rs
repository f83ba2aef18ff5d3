//! AdamW with parameter groups (decoupled weight decay, PyTorch's update order).

use super::{Group, Optimizer, ParamGroup};
use crate::Result;
use candle_core::backprop::GradStore;
use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Hyper-parameters shared by all groups (groups override weight decay and scale the lr).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.05,
        }
    }
}

impl AdamWConfig {
    pub fn validate(&self) -> Result<()> {
        super::validate_adam_like(self.lr, self.beta1, self.beta2, self.eps, self.weight_decay)
    }
}

/// AdamW as torch.optim.AdamW computes it:
/// p *= 1 - lr*wd; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
/// p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps).
pub struct AdamW {
    cfg: AdamWConfig,
    groups: Vec<Group>,
    step: u64,
}

impl AdamW {
    pub fn new(groups: Vec<ParamGroup>, cfg: AdamWConfig) -> Result<Self> {
        cfg.validate()?;
        let groups = Group::build_all(groups)?;
        Ok(Self {
            cfg,
            groups,
            step: 0,
        })
    }
}

impl Optimizer for AdamW {
    fn lr(&self) -> f64 {
        self.cfg.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }
    fn step_count(&self) -> u64 {
        self.step
    }

    fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        let bc1 = 1.0 - b1.powi(t);
        let bc2_sqrt = (1.0 - b2.powi(t)).sqrt();
        for g in &mut self.groups {
            let lr = self.cfg.lr * g.lr_scale;
            let step_size = lr / bc1;
            for s in &mut g.slots {
                let Some(grad) = grads.get(s.var.as_tensor()) else {
                    continue;
                };
                let fused = super::fused_cpu::AdamStep {
                    decay: 1.0 - lr * g.weight_decay,
                    beta1: b1,
                    beta2: b2,
                    step_size,
                    bc2_sqrt,
                    eps: self.cfg.eps,
                };
                let (p, m, v) =
                    match super::fused_cpu::adamw(s.var.as_tensor(), grad, &s.m, &s.v, fused)? {
                        Some(pmv) => pmv,
                        None => super::fused_cpu::adamw_composed(
                            s.var.as_tensor(),
                            grad,
                            &s.m,
                            &s.v,
                            fused,
                        )?,
                    };
                s.var.set(&p)?;
                (s.m, s.v) = (m, v);
            }
        }
        Ok(())
    }

    fn state_tensors(&self) -> HashMap<String, Tensor> {
        super::moments_to_tensors(&self.groups)
    }

    fn load_state(&mut self, tensors: &HashMap<String, Tensor>, step: u64) -> Result<()> {
        super::moments_from_tensors(&mut self.groups, tensors)?;
        self.step = step;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn two_steps_match_hand_computed_torch_adamw() {
        let p = Var::from_slice(&[1.0f32, -2.0], 2, &Device::Cpu).unwrap();
        let cfg = AdamWConfig {
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.5,
        };
        let group = ParamGroup {
            name: "d".into(),
            params: vec![("p".into(), p.clone())],
            weight_decay: 0.5,
            lr_scale: 1.0,
        };
        let mut opt = AdamW::new(vec![group], cfg).unwrap();
        // Reference in f64, following torch.optim.AdamW line by line, with loss = sum(p^2).
        let mut rp = [1.0f64, -2.0];
        let (mut m, mut v) = ([0.0f64; 2], [0.0f64; 2]);
        for t in 1..=2 {
            let grads = (p.as_tensor().sqr().unwrap().sum_all().unwrap())
                .backward()
                .unwrap();
            opt.step(&grads).unwrap();
            for i in 0..2 {
                let g = 2.0 * rp[i];
                rp[i] *= 1.0 - 0.1 * 0.5;
                m[i] = 0.9 * m[i] + 0.1 * g;
                v[i] = 0.999 * v[i] + 0.001 * g * g;
                let bc1 = 1.0 - 0.9f64.powi(t);
                let bc2 = 1.0 - 0.999f64.powi(t);
                rp[i] -= 0.1 / bc1 * m[i] / (v[i].sqrt() / bc2.sqrt() + 1e-8);
            }
        }
        let got = p.as_tensor().to_vec1::<f32>().unwrap();
        for i in 0..2 {
            assert!((got[i] as f64 - rp[i]).abs() < 1e-6, "{got:?} vs {rp:?}");
        }
        assert_eq!(opt.step_count(), 2);
    }

    #[test]
    fn state_round_trips_and_rejects_wrong_shapes() {
        let p = Var::from_slice(&[1.0f32, 2.0, 3.0], 3, &Device::Cpu).unwrap();
        let mk = || {
            let g = ParamGroup {
                name: "d".into(),
                params: vec![("w".into(), p.clone())],
                weight_decay: 0.0,
                lr_scale: 1.0,
            };
            AdamW::new(vec![g], AdamWConfig::default()).unwrap()
        };
        let mut a = mk();
        let grads = p.as_tensor().sum_all().unwrap().backward().unwrap();
        a.step(&grads).unwrap();
        let mut b = mk();
        b.load_state(&a.state_tensors(), a.step_count()).unwrap();
        assert_eq!(b.step_count(), 1);
        let mv = |o: &AdamW| o.state_tensors()["m.w"].to_vec1::<f32>().unwrap();
        assert_eq!(mv(&a), mv(&b));
        let mut bad = a.state_tensors();
        bad.insert(
            "v.w".into(),
            Tensor::zeros(2, candle_core::DType::F32, &Device::Cpu).unwrap(),
        );
        let e = b.load_state(&bad, 1).unwrap_err().to_string();
        assert!(e.contains("v.w"), "{e}");
        bad.remove("m.w");
        assert!(b
            .load_state(&bad, 1)
            .unwrap_err()
            .to_string()
            .contains("m.w"));
    }

    #[test]
    fn bad_hyper_parameters_name_the_field() {
        let e = AdamW::new(
            vec![],
            AdamWConfig {
                beta2: 1.0,
                ..Default::default()
            },
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("beta2"));
    }
}
