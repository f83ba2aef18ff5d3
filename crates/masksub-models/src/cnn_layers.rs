//! Convolutional building blocks, named as PyTorch names them: `Conv2d` (key `weight`) and
//! `BatchNorm2d` (keys `weight`, `bias`; buffers `running_mean`, `running_var`,
//! `num_batches_tracked`).

use crate::ops;
use candle_core::{DType, Result, Tensor, Var};
use candle_nn::init::{FanInOut, NonLinearity, NormalOrUniform};
use candle_nn::{Init, VarBuilder, VarMap};

/// PyTorch's BatchNorm2d defaults, which timm's ResNet uses.
pub const BN_EPS: f64 = 1e-5;
pub const BN_MOMENTUM: f64 = 0.1;

/// timm's ResNet conv init: kaiming_normal_(mode='fan_out', nonlinearity='relu').
pub const KAIMING_FAN_OUT_RELU: Init = Init::Kaiming {
    dist: NormalOrUniform::Normal,
    fan: FanInOut::FanOut,
    non_linearity: NonLinearity::ReLU,
};

/// A square convolution without bias (ResNet convs are all followed by a BatchNorm).
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    stride: usize,
    padding: usize,
}

impl Conv2d {
    pub fn new(
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let weight = vb.get_with_hints(
            (c_out, c_in, kernel, kernel),
            "weight",
            KAIMING_FAN_OUT_RELU,
        )?;
        Ok(Self {
            weight,
            stride,
            padding,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::conv2d(x, &self.weight, self.stride, self.padding)
    }
}

/// BatchNorm over (N, H, W) with running statistics, PyTorch semantics: training normalizes
/// with the batch's biased variance and folds the batch mean and UNBIASED variance into the
/// running statistics with `momentum`, `num_batches_tracked += 1`; evaluation uses the running
/// statistics. The update is detached from the autograd graph.
#[derive(Debug, Clone)]
pub struct BatchNorm2d {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
    num_batches_tracked: Var,
    eps: f64,
    momentum: f64,
}

/// Register a non-trainable buffer `name` in `buffers` (or reuse the one already there).
fn buffer(buffers: &VarMap, name: String, init: Tensor) -> Result<Var> {
    let mut map = buffers
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("buffer map poisoned".into()))?;
    if let Some(v) = map.get(&name) {
        if v.shape() != init.shape() || v.dtype() != init.dtype() {
            candle_core::bail!("buffer `{name}` exists with another shape or dtype");
        }
        return Ok(v.clone());
    }
    let v = Var::from_tensor(&init)?;
    map.insert(name, v.clone());
    Ok(v)
}

impl BatchNorm2d {
    /// `weight_init` is 1, or 0 for the last BatchNorm of a residual branch (timm's
    /// `zero_init_last`). Buffers are registered in `buffers` under `vb`'s path.
    pub fn new(
        channels: usize,
        weight_init: f64,
        vb: VarBuilder,
        buffers: &VarMap,
    ) -> Result<Self> {
        let (dev, dtype) = (vb.device().clone(), vb.dtype());
        let key = |k: &str| {
            let p = vb.prefix();
            if p.is_empty() {
                k.to_string()
            } else {
                format!("{p}.{k}")
            }
        };
        Ok(Self {
            weight: vb.get_with_hints(channels, "weight", Init::Const(weight_init))?,
            bias: vb.get_with_hints(channels, "bias", Init::Const(0.0))?,
            running_mean: buffer(
                buffers,
                key("running_mean"),
                Tensor::zeros(channels, dtype, &dev)?,
            )?,
            running_var: buffer(
                buffers,
                key("running_var"),
                Tensor::ones(channels, dtype, &dev)?,
            )?,
            // timm's state_dict: an int64 scalar.
            num_batches_tracked: buffer(
                buffers,
                key("num_batches_tracked"),
                Tensor::zeros((), DType::I64, &dev)?,
            )?,
            eps: BN_EPS,
            momentum: BN_MOMENTUM,
        })
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_act(x, train, false)
    }

    /// `relu(self.forward(x, train))`, fused into the normalization in train mode.
    pub fn forward_relu(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_act(x, train, true)
    }

    fn forward_act(&self, x: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
        if !train {
            let y = ops::batch_norm_eval(
                x,
                self.running_mean.as_tensor(),
                self.running_var.as_tensor(),
                &self.weight,
                &self.bias,
                self.eps,
            )?;
            return if relu { ops::relu(&y) } else { Ok(y) };
        }
        let (b, _, h, w) = x.dims4()?;
        let n = b * h * w;
        if n < 2 {
            // PyTorch refuses this too: the unbiased variance of one value is undefined.
            candle_core::bail!(
                "batch-norm: training needs more than 1 value per channel, got input {:?}",
                x.dims()
            );
        }
        self.update_running_stats(x, n)?;
        if relu {
            ops::batch_norm_train_relu(x, &self.weight, &self.bias, self.eps)
        } else {
            ops::batch_norm_train(x, &self.weight, &self.bias, self.eps)
        }
    }

    fn update_running_stats(&self, x: &Tensor, n: usize) -> Result<()> {
        let (mean, var) = ops::channel_stats(&x.detach())?;
        let dtype = self.running_mean.dtype();
        let (mean, var) = (mean.to_dtype(dtype)?, var.to_dtype(dtype)?);
        let unbiased = (var * (n as f64 / (n - 1) as f64))?;
        let m = self.momentum;
        let blend = |run: &Var, batch: &Tensor| -> Result<()> {
            run.set(&((run.as_tensor().detach() * (1.0 - m))? + (batch * m)?)?)
        };
        blend(&self.running_mean, &mean)?;
        blend(&self.running_var, &unbiased)?;
        let one = Tensor::ones((), DType::I64, x.device())?;
        self.num_batches_tracked
            .set(&(self.num_batches_tracked.as_tensor().detach() + one)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::SeededInit;
    use candle_core::Device;

    fn bn(vm: &VarMap, bufs: &VarMap) -> BatchNorm2d {
        let vb = SeededInit::var_builder(vm, 0, DType::F32, &Device::Cpu);
        BatchNorm2d::new(2, 1.0, vb.pp("layer1").pp(0).pp("bn1"), bufs).unwrap()
    }

    fn get(bufs: &VarMap, k: &str) -> Tensor {
        bufs.data().lock().unwrap()[k].as_tensor().clone()
    }

    #[test]
    fn training_updates_running_stats_as_pytorch_and_eval_uses_them() {
        let (vm, bufs) = (VarMap::new(), VarMap::new());
        let layer = bn(&vm, &bufs);
        let mut keys: Vec<String> = bufs.data().lock().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "layer1.0.bn1.num_batches_tracked",
                "layer1.0.bn1.running_mean",
                "layer1.0.bn1.running_var"
            ]
        );
        // Channel 0: 1..=8 (mean 4.5, unbiased var 6), channel 1: constant 2 (var 0).
        let v: Vec<f32> = (0..2)
            .flat_map(|b| {
                (0..2).flat_map(move |c| {
                    (0..4).map(move |i| if c == 0 { (b * 4 + i + 1) as f32 } else { 2.0 })
                })
            })
            .collect();
        let x = Tensor::from_vec(v, (2, 2, 2, 2), &Device::Cpu).unwrap();
        let y = layer.forward(&x, true).unwrap();
        let rm = get(&bufs, "layer1.0.bn1.running_mean")
            .to_vec1::<f32>()
            .unwrap();
        let rv = get(&bufs, "layer1.0.bn1.running_var")
            .to_vec1::<f32>()
            .unwrap();
        assert!(
            (rm[0] - 0.45).abs() < 1e-6 && (rm[1] - 0.2).abs() < 1e-6,
            "{rm:?}"
        );
        assert!(
            (rv[0] - (0.9 + 0.6)).abs() < 1e-6 && (rv[1] - 0.9).abs() < 1e-6,
            "{rv:?}"
        );
        let nbt = get(&bufs, "layer1.0.bn1.num_batches_tracked");
        assert_eq!((nbt.dtype(), nbt.rank()), (DType::I64, 0));
        assert_eq!(nbt.to_scalar::<i64>().unwrap(), 1);
        // Train mode normalized with the batch (biased) statistics.
        let y0 = y.get(0).unwrap().get(0).unwrap().flatten_all().unwrap();
        let want0 = (1.0 - 4.5) / (5.25f32 + 1e-5).sqrt();
        assert!((y0.to_vec1::<f32>().unwrap()[0] - want0).abs() < 1e-5);
        // Eval mode leaves the statistics alone and normalizes with them.
        let e = layer.forward(&x, false).unwrap();
        assert_eq!(
            get(&bufs, "layer1.0.bn1.num_batches_tracked")
                .to_scalar::<i64>()
                .unwrap(),
            1
        );
        let e0 = e.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0];
        assert!((e0 - (1.0 - 0.45) / (1.5f32 + 1e-5).sqrt()).abs() < 1e-5);
        // A second training pass counts again and blends again.
        layer.forward(&x, true).unwrap();
        let rm = get(&bufs, "layer1.0.bn1.running_mean")
            .to_vec1::<f32>()
            .unwrap();
        assert!((rm[0] - (0.45 * 0.9 + 0.45)).abs() < 1e-6);
        assert_eq!(
            get(&bufs, "layer1.0.bn1.num_batches_tracked")
                .to_scalar::<i64>()
                .unwrap(),
            2
        );
    }

    #[test]
    fn running_stats_stay_out_of_the_gradient_and_one_value_per_channel_is_an_error() {
        let (vm, bufs) = (VarMap::new(), VarMap::new());
        let layer = bn(&vm, &bufs);
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (3, 2, 2, 2), &Device::Cpu).unwrap())
            .unwrap();
        let y = layer.forward(x.as_tensor(), true).unwrap();
        let g = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        for v in bufs.data().lock().unwrap().values() {
            assert!(g.get(v.as_tensor()).is_none(), "a buffer got a gradient");
        }
        assert!(g.get(x.as_tensor()).is_some());
        let one = Tensor::zeros((1, 2, 1, 1), DType::F32, &Device::Cpu).unwrap();
        let e = layer.forward(&one, true).unwrap_err().to_string();
        assert!(e.contains("more than 1 value per channel"), "{e}");
        assert!(
            layer.forward(&one, false).is_ok(),
            "eval mode takes a single value"
        );
    }
}
