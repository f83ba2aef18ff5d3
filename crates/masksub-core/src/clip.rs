//! Gradient clipping by global L2 norm over all parameters (torch.nn.utils.clip_grad_norm_).

use crate::Result;
use candle_core::backprop::GradStore;
use candle_core::{DType, Var};

/// The global L2 norm of the gradients of `vars` (missing gradients count as zero).
pub fn global_grad_norm(grads: &GradStore, vars: &[Var]) -> Result<f32> {
    let mut sq = 0f64;
    for v in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            sq += g
                .to_dtype(DType::F32)?
                .sqr()?
                .sum_all()?
                .to_scalar::<f32>()? as f64;
        }
    }
    Ok(sq.sqrt() as f32)
}

/// Scale all gradients by max_norm / (norm + 1e-6) when that is below 1; returns the norm before
/// clipping, as PyTorch does.
pub fn clip_grad_norm(grads: &mut GradStore, vars: &[Var], max_norm: f64) -> Result<f32> {
    let norm = global_grad_norm(grads, vars)?;
    let coef = max_norm / (norm as f64 + 1e-6);
    if coef < 1.0 {
        for v in vars {
            if let Some(g) = grads.get(v.as_tensor()) {
                let scaled = (g * coef)?;
                grads.insert(v.as_tensor(), scaled);
            }
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn clips_to_max_norm_and_reports_the_norm_before() {
        let a = Var::from_slice(&[3.0f32], 1, &Device::Cpu).unwrap();
        let b = Var::from_slice(&[4.0f32], 1, &Device::Cpu).unwrap();
        // loss = 0.5 (a^2 + b^2): grads = (3, 4), norm 5.
        let loss = ((a.as_tensor().sqr().unwrap() + b.as_tensor().sqr().unwrap())
            .unwrap()
            .sum_all()
            .unwrap()
            * 0.5)
            .unwrap();
        let mut g = loss.backward().unwrap();
        let vars = [a.clone(), b.clone()];
        assert!((clip_grad_norm(&mut g, &vars, 1.0).unwrap() - 5.0).abs() < 1e-6);
        assert!((global_grad_norm(&g, &vars).unwrap() - 1.0).abs() < 1e-5);
        let ga = g.get(a.as_tensor()).unwrap().to_vec1::<f32>().unwrap()[0];
        assert!((ga - 0.6).abs() < 1e-5);
        // Below the threshold nothing changes.
        assert!((clip_grad_norm(&mut g, &vars, 10.0).unwrap() - 1.0).abs() < 1e-5);
        assert!((global_grad_norm(&g, &vars).unwrap() - 1.0).abs() < 1e-5);
    }
}
