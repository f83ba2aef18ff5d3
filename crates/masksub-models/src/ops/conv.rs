//! 2-D convolution (square kernel, no groups, no dilation).

use candle_core::{Result, Tensor};

/// `F.conv2d(x, weight, stride=stride, padding=padding)` for NCHW `x` and OIHW `weight`.
pub fn conv2d(x: &Tensor, weight: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    x.conv2d(weight, padding, stride, 1, 1)
}
