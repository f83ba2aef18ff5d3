//! Seeded parameter initialisation: a VarBuilder backend that creates each parameter once, from
//! the run seed, in construction order, and records it in a VarMap (so the VarMap's names are the
//! checkpoint keys). candle's own `VarMap` draws from an unseeded RNG; runs must be reproducible.

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Mutex;

pub struct SeededInit {
    varmap: VarMap,
    rng: Mutex<ChaCha8Rng>,
}

impl SeededInit {
    /// A VarBuilder whose parameters land in `varmap`, drawn from `seed`.
    pub fn var_builder(
        varmap: &VarMap,
        seed: u64,
        dtype: DType,
        device: &Device,
    ) -> VarBuilder<'static> {
        let backend = SeededInit {
            varmap: varmap.clone(),
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
        };
        VarBuilder::from_backend(Box::new(backend), dtype, device.clone())
    }

    fn sample(&self, shape: &Shape, init: Init) -> Result<Vec<f32>> {
        let n = shape.elem_count();
        let mut rng = self
            .rng
            .lock()
            .map_err(|_| candle_core::Error::Msg("init rng poisoned".into()))?;
        let uniform = |rng: &mut ChaCha8Rng, lo: f64, up: f64| -> Vec<f32> {
            (0..n).map(|_| rng.random_range(lo..up) as f32).collect()
        };
        let normal = |rng: &mut ChaCha8Rng, mean: f64, std: f64| -> Vec<f32> {
            (0..n)
                .map(|_| (mean + std * std_normal(rng)) as f32)
                .collect()
        };
        Ok(match init {
            Init::Const(c) => vec![c as f32; n],
            Init::Uniform { lo, up } => uniform(&mut rng, lo, up),
            Init::Randn { mean, stdev } => normal(&mut rng, mean, stdev),
            Init::Kaiming {
                dist,
                fan,
                non_linearity,
            } => {
                let std = non_linearity.gain() / (fan.for_shape(shape) as f64).sqrt();
                match dist {
                    candle_nn::init::NormalOrUniform::Uniform => {
                        let bound = 3f64.sqrt() * std;
                        uniform(&mut rng, -bound, bound)
                    }
                    candle_nn::init::NormalOrUniform::Normal => normal(&mut rng, 0.0, std),
                }
            }
        })
    }
}

/// Box-Muller standard normal.
fn std_normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

impl SimpleBackend for SeededInit {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        if let Some(v) = self
            .varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("varmap poisoned".into()))?
            .get(name)
        {
            if v.shape() != &s {
                candle_core::bail!(
                    "parameter `{name}` requested as {s:?} but exists as {:?}",
                    v.shape()
                );
            }
            return Ok(v.as_tensor().clone());
        }
        let data = self.sample(&s, h)?;
        let var = Var::from_tensor(&Tensor::from_vec(data, s, dev)?.to_dtype(dtype)?)?;
        let t = var.as_tensor().clone();
        self.varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("varmap poisoned".into()))?
            .insert(name.to_string(), var);
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> Result<Tensor> {
        let map = self
            .varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("varmap poisoned".into()))?;
        map.get(name).map(|v| v.as_tensor().clone()).ok_or_else(|| {
            candle_core::Error::CannotFindTensor {
                path: name.to_string(),
            }
        })
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.varmap
            .data()
            .lock()
            .map(|m| m.contains_key(name))
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_weights_and_names_recorded() {
        let make = |seed| {
            let vm = VarMap::new();
            let vb = SeededInit::var_builder(&vm, seed, DType::F32, &Device::Cpu);
            let w = vb
                .pp("fc")
                .get_with_hints(
                    (4, 3),
                    "weight",
                    Init::Randn {
                        mean: 0.0,
                        stdev: 0.02,
                    },
                )
                .unwrap();
            (vm, w.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        };
        let (vm, a) = make(1);
        let (_, b) = make(1);
        let (_, c) = make(2);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(vm.data().lock().unwrap().contains_key("fc.weight"));
        let std = (a.iter().map(|x| x * x).sum::<f32>() / a.len() as f32).sqrt();
        assert!(std > 0.005 && std < 0.06, "{std}");
    }
}
