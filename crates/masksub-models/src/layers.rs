//! Small layers shared by the architectures, named as timm names them.

use crate::ops;
use candle_core::{Module, Result, Tensor};
use candle_nn::{Init, VarBuilder};
use rand::{Rng, RngCore};
use rand_chacha::ChaCha8Rng;
use std::sync::Mutex;

/// timm's default init for Linear weights: trunc_normal(std=0.02) (the +-2 bound is absolute,
/// i.e. 100 sigma: a plain normal).
pub const TRUNC_NORMAL_02: Init = Init::Randn {
    mean: 0.0,
    stdev: 0.02,
};

/// y = x W^T + b on the last dimension. Leading dimensions are flattened into one matmul so the
/// backward is a single GEMM per operand (candle's Linear broadcasts W per batch instead).
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    pub fn new(in_dim: usize, out_dim: usize, bias: bool, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints((out_dim, in_dim), "weight", TRUNC_NORMAL_02)?;
        let bias = if bias {
            Some(vb.get_with_hints(out_dim, "bias", Init::Const(0.0))?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }
}

impl Linear {
    /// x W^T without the bias, and the bias: for a caller that fuses the bias into the next op.
    fn forward_unbiased(&self, x: &Tensor) -> Result<(Tensor, Option<&Tensor>)> {
        let dims = x.dims();
        let Some(&in_dim) = dims.last() else {
            candle_core::bail!("linear: scalar input")
        };
        let rows = x.elem_count() / in_dim.max(1);
        let y = ops::linear(&x.reshape((rows, in_dim))?, &self.weight, None)?;
        Ok((y.reshape(self.out_dims(dims)?)?, self.bias.as_ref()))
    }

    fn out_dims(&self, in_dims: &[usize]) -> Result<Vec<usize>> {
        let mut out = in_dims.to_vec();
        let last = out.len() - 1;
        out[last] = self.weight.dim(0)?;
        Ok(out)
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        let Some(&in_dim) = dims.last() else {
            candle_core::bail!("linear: scalar input")
        };
        let rows = x.elem_count() / in_dim.max(1);
        let y = ops::linear(
            &x.reshape((rows, in_dim))?,
            &self.weight,
            self.bias.as_ref(),
        )?;
        y.reshape(self.out_dims(dims)?)
    }
}

/// LayerNorm with weight and bias (fused, differentiable).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get_with_hints(dim, "weight", Init::Const(1.0))?,
            bias: vb.get_with_hints(dim, "bias", Init::Const(0.0))?,
            eps,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

/// fc1 -> GELU(erf) -> fc2.
#[derive(Debug, Clone)]
pub struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    pub fn new(dim: usize, hidden: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            fc1: Linear::new(dim, hidden, true, vb.pp("fc1"))?,
            fc2: Linear::new(hidden, dim, true, vb.pp("fc2"))?,
        })
    }
}

impl Mlp {
    /// GELU(fc1(x)), with fc1's bias fused into the activation.
    fn hidden(&self, x: &Tensor) -> Result<Tensor> {
        match self.fc1.forward_unbiased(x)? {
            (h, Some(b)) => ops::bias_gelu_erf(&h, b),
            (h, None) => ops::gelu_erf(&h),
        }
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.fc2.forward(&self.hidden(x)?)
    }
}

impl Mlp {
    /// timm's Mlp with `drop = rate`: dropout after the activation and after fc2.
    pub fn forward_dropout(
        &self,
        x: &Tensor,
        rate: f64,
        rng: &Mutex<ChaCha8Rng>,
    ) -> Result<Tensor> {
        let h = dropout(&self.hidden(x)?, rate, rng)?;
        dropout(&self.fc2.forward(&h)?, rate, rng)
    }
}

/// Inverted dropout (kept values scaled by 1 / (1 - rate)), drawn from `rng` so a run replays.
pub fn dropout(x: &Tensor, rate: f64, rng: &Mutex<ChaCha8Rng>) -> Result<Tensor> {
    if rate <= 0.0 {
        return Ok(x.clone());
    }
    let rate = rate.min(1.0 - 1e-6);
    // Keep when a uniform u32 falls below (1 - rate) * 2^32.
    let threshold = ((1.0 - rate) * 4_294_967_296.0) as u64;
    let scale = (1.0 / (1.0 - rate)) as f32;
    let mask: Vec<f32> = {
        let mut rng = rng
            .lock()
            .map_err(|_| candle_core::Error::Msg("dropout rng poisoned".into()))?;
        (0..x.elem_count())
            .map(|_| {
                if (rng.next_u32() as u64) < threshold {
                    scale
                } else {
                    0.0
                }
            })
            .collect()
    };
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
    x * mask
}

/// Per-channel learnable scale (timm's LayerScale, key `gamma`).
#[derive(Debug, Clone)]
pub struct LayerScale {
    gamma: Tensor,
}

impl LayerScale {
    pub fn new(dim: usize, init_value: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            gamma: vb.get_with_hints(dim, "gamma", Init::Const(init_value))?,
        })
    }
}

impl Module for LayerScale {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::mul_rows(x, &self.gamma)
    }
}

/// Stochastic depth: drops a residual branch per sample with probability `rate` during training
/// and rescales survivors by 1/(1-rate). The RNG is seeded by the model so runs are reproducible.
#[derive(Debug)]
pub struct DropPath {
    rate: f64,
}

impl DropPath {
    pub fn new(rate: f64) -> Self {
        Self { rate }
    }

    pub fn forward(&self, x: &Tensor, train: bool, rng: &Mutex<ChaCha8Rng>) -> Result<Tensor> {
        self.forward_at(x, self.rate, train, rng)
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Drop-path at another rate than the configured one (PathSub's sub pass).
    pub fn forward_at(
        &self,
        x: &Tensor,
        rate: f64,
        train: bool,
        rng: &Mutex<ChaCha8Rng>,
    ) -> Result<Tensor> {
        if !train || rate <= 0.0 {
            return Ok(x.clone());
        }
        let rate = rate.min(1.0 - 1e-6);
        let b = x.dim(0)?;
        let keep = 1.0 - rate;
        let mask: Vec<f32> = {
            let mut rng = rng
                .lock()
                .map_err(|_| candle_core::Error::Msg("drop-path rng poisoned".into()))?;
            (0..b)
                .map(|_| {
                    if rng.random::<f64>() < keep {
                        (1.0 / keep) as f32
                    } else {
                        0.0
                    }
                })
                .collect()
        };
        let mut shape = vec![1usize; x.rank()];
        shape[0] = b;
        let mask = Tensor::from_vec(mask, shape, x.device())?.to_dtype(x.dtype())?;
        x.broadcast_mul(&mask)
    }
}
