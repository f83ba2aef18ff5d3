//! Classification losses on candle tensors, all differentiable with candle's autograd.

use crate::{CoreError, Result};
use candle_core::{DType, Tensor, D};
use serde::{Deserialize, Serialize};

/// Which loss a recipe trains with; also decides how the sub pass's soft target is made from the
/// main logits (softmax for CE, sigmoid for BCE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    /// Soft-target cross-entropy (mixup/cutmix/smoothing targets).
    #[default]
    SoftCe,
    /// Binary cross-entropy with logits on soft targets (DeiT-III, RSB recipes).
    Bce,
}

impl LossKind {
    /// l(logits, targets) with targets of the same shape as logits.
    pub fn loss(self, logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
        match self {
            LossKind::SoftCe => soft_target_cross_entropy(logits, targets),
            LossKind::Bce => bce_with_logits(logits, targets),
        }
    }

    /// s(z): the teacher distribution the sub pass is trained towards.
    pub fn teacher(self, logits: &Tensor) -> Result<Tensor> {
        Ok(match self {
            LossKind::SoftCe => candle_nn::ops::softmax(logits, D::Minus1)?,
            LossKind::Bce => candle_nn::ops::sigmoid(logits)?,
        })
    }
}

fn check_same_shape(logits: &Tensor, targets: &Tensor) -> Result<()> {
    if logits.dims() != targets.dims() || logits.rank() != 2 {
        return Err(CoreError::config(
            "targets",
            format!(
                "logits {:?} and targets {:?} must both be (batch, classes)",
                logits.dims(),
                targets.dims()
            ),
        ));
    }
    Ok(())
}

/// mean_b sum_c -t[b,c] * log_softmax(z)[b,c].
pub fn soft_target_cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    check_same_shape(logits, targets)?;
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let per_sample = (targets * logp)?.sum(D::Minus1)?.neg()?;
    Ok(per_sample.mean_all()?)
}

/// Smoothed one-hot targets: (1 - eps) on the label, eps / C spread over all classes (timm's
/// LabelSmoothingCrossEntropy convention).
pub fn smoothed_one_hot(labels: &Tensor, num_classes: usize, smoothing: f64) -> Result<Tensor> {
    if !(0.0..1.0).contains(&smoothing) {
        return Err(CoreError::config(
            "smoothing",
            format!("{smoothing} is not in [0, 1)"),
        ));
    }
    let b = labels.dim(0)?;
    let device = labels.device();
    let labels = labels.to_dtype(DType::U32)?.to_vec1::<u32>()?;
    let off = (smoothing / num_classes as f64) as f32;
    let on = (1.0 - smoothing) as f32 + off;
    let mut data = vec![off; b * num_classes];
    for (i, &l) in labels.iter().enumerate() {
        let l = l as usize;
        if l >= num_classes {
            return Err(CoreError::config(
                "labels",
                format!("label {l} >= num_classes {num_classes}"),
            ));
        }
        data[i * num_classes + l] = on;
    }
    Ok(Tensor::from_vec(data, (b, num_classes), device)?)
}

/// Hard-label cross-entropy with label smoothing.
pub fn cross_entropy_label_smoothing(
    logits: &Tensor,
    labels: &Tensor,
    smoothing: f64,
) -> Result<Tensor> {
    let t =
        smoothed_one_hot(labels, logits.dim(D::Minus1)?, smoothing)?.to_dtype(logits.dtype())?;
    soft_target_cross_entropy(logits, &t)
}

/// Numerically stable BCE-with-logits, mean over all B*C entries:
/// max(z, 0) - z*t + log(1 + exp(-|z|)).
pub fn bce_with_logits(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    check_same_shape(logits, targets)?;
    let softplus_neg_abs = (logits.abs()?.neg()?.exp()? + 1.0)?.log()?;
    let l = ((logits.relu()? - (logits * targets)?)? + softplus_neg_abs)?;
    Ok(l.mean_all()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn t(data: &[f32], shape: (usize, usize)) -> Tensor {
        Tensor::from_slice(data, shape, &Device::Cpu).unwrap()
    }
    fn scalar(x: &Tensor) -> f32 {
        x.to_scalar::<f32>().unwrap()
    }

    #[test]
    fn soft_ce_matches_hand_computation() {
        // z = [0, ln 2, ln 3] -> softmax = [1/6, 2/6, 3/6]; row 2: z = [0, 0, 0] -> 1/3 each.
        let z = t(&[0.0, 2f32.ln(), 3f32.ln(), 0.0, 0.0, 0.0], (2, 3));
        let tg = t(&[0.0, 0.5, 0.5, 1.0, 0.0, 0.0], (2, 3));
        let want = (-(0.5 * (2.0f32 / 6.0).ln() + 0.5 * 0.5f32.ln()) + 3f32.ln()) / 2.0;
        assert!((scalar(&soft_target_cross_entropy(&z, &tg).unwrap()) - want).abs() < 1e-6);
    }

    #[test]
    fn label_smoothing_matches_hand_computation() {
        let z = t(&[0.0, 2f32.ln(), 3f32.ln()], (1, 3));
        let y = Tensor::from_slice(&[2u32], 1, &Device::Cpu).unwrap();
        // eps = 0.3, C = 3: targets [0.1, 0.1, 0.8].
        let want = -(0.1 * (1f32 / 6.0).ln() + 0.1 * (2f32 / 6.0).ln() + 0.8 * 0.5f32.ln());
        let got = scalar(&cross_entropy_label_smoothing(&z, &y, 0.3).unwrap());
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        let plain = scalar(&cross_entropy_label_smoothing(&z, &y, 0.0).unwrap());
        assert!((plain - 2f32.ln()).abs() < 1e-6);
        let bad = Tensor::from_slice(&[3u32], 1, &Device::Cpu).unwrap();
        assert!(cross_entropy_label_smoothing(&z, &bad, 0.1).is_err());
    }

    #[test]
    fn bce_matches_hand_computation_and_is_stable() {
        let z = t(&[0.0, 2.0, -1.0, 100.0], (2, 2));
        let tg = t(&[1.0, 0.0, 0.25, 1.0], (2, 2));
        let sp = |x: f32| (1.0 + x.exp()).ln(); // softplus
                                                // l = softplus(z) - z*t
        let want = (sp(0.0) + sp(2.0) + (sp(-1.0) + 0.25) + 0.0) / 4.0;
        let got = scalar(&bce_with_logits(&z, &tg).unwrap());
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        assert!(got.is_finite());
    }

    #[test]
    fn soft_ce_gradient_is_softmax_minus_target_over_batch() {
        let z = Var::from_tensor(&t(&[1.0, 2.0, 3.0, 0.5, 0.5, -1.0], (2, 3))).unwrap();
        let tg = t(&[0.2, 0.3, 0.5, 1.0, 0.0, 0.0], (2, 3));
        let g = soft_target_cross_entropy(z.as_tensor(), &tg)
            .unwrap()
            .backward()
            .unwrap();
        let got = g
            .get(z.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let p = candle_nn::ops::softmax(z.as_tensor(), 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let tv = tg.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for i in 0..6 {
            assert!((got[i] - (p[i] - tv[i]) / 2.0).abs() < 1e-6);
        }
    }

    #[test]
    fn shape_mismatch_is_an_error_naming_targets() {
        let e =
            soft_target_cross_entropy(&t(&[0.0; 6], (2, 3)), &t(&[0.0; 4], (2, 2))).unwrap_err();
        assert!(e.to_string().contains("targets"));
    }
}
