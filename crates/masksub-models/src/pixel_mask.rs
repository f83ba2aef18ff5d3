//! The CNN sub pass's mask: zero random p x p pixel patches of the normalized input.
//! A [`MaskPlan::MaskUnits`] hides units of an (H/p, W/p) grid; hidden units become zero pixels,
//! `masked = x * (1 - nearest_upsample(mask))`. The mask is a constant: no gradient through it.

use crate::{ModelError, Result};
use candle_core::Tensor;
use masksub_core::{MaskPlan, TokenGrid};

/// The unit grid of an `h` x `w` image cut into `patch` x `patch` pixel patches.
pub fn patch_grid(h: usize, w: usize, patch: usize) -> Result<TokenGrid> {
    if patch == 0 || !h.is_multiple_of(patch) || !w.is_multiple_of(patch) {
        return Err(ModelError::config(
            "mask_patch_size",
            format!("{patch} px patches do not tile a {h}x{w} image (the size must be divisible)"),
        ));
    }
    Ok(TokenGrid::new(h / patch, w / patch))
}

/// Zero the hidden patches of `x` (B, C, H, W) as `plan` says; `patch` is the patch side in
/// pixels. Errors name the mismatch: a token-drop plan, another grid or batch, a size that
/// `patch` does not divide.
pub fn zero_masked_patches(x: &Tensor, plan: &MaskPlan, patch: usize) -> Result<Tensor> {
    let (b, _, h, w) = x.dims4()?;
    let bad = |reason: String| ModelError::Input {
        got: x.dims().to_vec(),
        reason,
    };
    let MaskPlan::MaskUnits { grid, .. } = plan else {
        return Err(bad(format!(
            "a CNN zeroes pixel patches; it cannot take a {:?} plan",
            plan.kind()
        )));
    };
    let want = patch_grid(h, w, patch)?;
    if *grid != want {
        return Err(bad(format!(
            "mask plan grid {}x{} does not fit {patch} px patches of a {h}x{w} image ({}x{})",
            grid.height, grid.width, want.height, want.width
        )));
    }
    if plan.batch_size() != b {
        return Err(bad(format!(
            "mask plan for {} samples, batch has {b}",
            plan.batch_size()
        )));
    }
    let (gh, gw) = (grid.height, grid.width);
    // Nearest upsampling as a broadcast: every unit covers its p x p pixels exactly.
    let keep = plan
        .unit_mask_tensor(x.device())?
        .affine(-1.0, 1.0)?
        .to_dtype(x.dtype())?
        .reshape((b, 1, gh, 1, gw, 1))?
        .broadcast_as((b, 1, gh, patch, gw, patch))?
        .reshape((b, 1, h, w))?;
    Ok(x.broadcast_mul(&keep)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn plan(masked: Vec<u8>, grid: TokenGrid) -> MaskPlan {
        let n = grid.len();
        MaskPlan::MaskUnits {
            grid,
            masked_per_sample: masked.iter().take(n).map(|&m| m as usize).sum(),
            masked,
        }
    }

    #[test]
    fn hidden_units_become_zero_pixels_and_the_rest_is_untouched() {
        // Two samples, 2 channels, 6x4 pixels in 2 px patches -> a 3x2 grid.
        let x = (Tensor::arange(0f32, 96.0, &Device::Cpu)
            .unwrap()
            .reshape((2, 2, 6, 4))
            .unwrap()
            + 1.0)
            .unwrap();
        let grid = TokenGrid::new(3, 2);
        let p = plan(vec![1, 0, 0, 0, 0, 1, /* */ 0, 1, 1, 0, 0, 0], grid);
        let y = zero_masked_patches(&x, &p, 2).unwrap();
        let (xv, yv) = (
            x.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        for b in 0..2 {
            for c in 0..2 {
                for i in 0..6 {
                    for j in 0..4 {
                        let k = ((b * 2 + c) * 6 + i) * 4 + j;
                        let hidden = p.unit_mask(b).unwrap()[(i / 2) * 2 + j / 2] == 1;
                        let want = if hidden { 0.0 } else { xv[k] };
                        assert_eq!(yv[k], want, "b{b} c{c} ({i},{j})");
                    }
                }
            }
        }
    }

    #[test]
    fn mismatches_are_clear_errors() {
        let x = Tensor::zeros((1, 1, 28, 28), DType::F32, &Device::Cpu).unwrap();
        let e = patch_grid(28, 28, 5).unwrap_err().to_string();
        assert!(e.contains("mask_patch_size") && e.contains("28x28"), "{e}");
        let g7 = TokenGrid::new(7, 7);
        let p = plan(vec![0; 49], g7);
        let e = zero_masked_patches(&x, &p, 5).unwrap_err().to_string();
        assert!(e.contains("divisible"), "{e}");
        let e = zero_masked_patches(&x, &p, 7).unwrap_err().to_string();
        assert!(e.contains("does not fit"), "{e}");
        let two = Tensor::zeros((2, 1, 28, 28), DType::F32, &Device::Cpu).unwrap();
        let e = zero_masked_patches(&two, &p, 4).unwrap_err().to_string();
        assert!(e.contains("1 samples"), "{e}");
        let drop = MaskPlan::KeepTokens {
            num_tokens: 49,
            keep_per_sample: 1,
            keep: vec![0],
        };
        let e = zero_masked_patches(&x, &drop, 4).unwrap_err().to_string();
        assert!(e.contains("DropTokens"), "{e}");
    }
}
