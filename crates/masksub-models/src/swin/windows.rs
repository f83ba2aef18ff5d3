//! Index math of Swin's windows, computed once per block: the token permutations that do
//! cyclic shift + window partition (and merging) in one gather, the relative position index and
//! the shifted-window attention mask (timm's `get_relative_position_index`, `get_attn_mask`).
//! Tokens are (B, H*W, C) in row-major (h, w) order, the memory layout of timm's NHWC.

/// Source token of every output position when the (h, w) grid is cyclically shifted by
/// `-shift` (torch.roll(x, -shift, dims=(1, 2))) and cut into `window` x `window` windows:
/// output order is (window row, window col, row in window, col in window).
pub fn shifted_window_order(h: usize, w: usize, window: usize, shift: usize) -> Vec<u32> {
    let (nh, nw) = (h / window, w / window);
    let mut idx = Vec::with_capacity(h * w);
    for wi in 0..nh {
        for wj in 0..nw {
            for a in 0..window {
                for b in 0..window {
                    let r = (wi * window + a + shift) % h;
                    let c = (wj * window + b + shift) % w;
                    idx.push((r * w + c) as u32);
                }
            }
        }
    }
    idx
}

/// Source token of every output position of timm's PatchMerging: for output (i, j) the four
/// neighbours in the order x0 = (2i, 2j), x1 = (2i+1, 2j), x2 = (2i, 2j+1), x3 = (2i+1, 2j+1),
/// so that (B, H*W, C) gathered and reshaped to (B, H/2*W/2, 4C) is timm's merged tensor.
pub fn merge_order(h: usize, w: usize) -> Vec<u32> {
    let mut idx = Vec::with_capacity(h * w);
    for i in 0..h / 2 {
        for j in 0..w / 2 {
            for dw in 0..2 {
                for dh in 0..2 {
                    idx.push(((2 * i + dh) * w + 2 * j + dw) as u32);
                }
            }
        }
    }
    idx
}

/// The inverse of a permutation: `inv[perm[i]] = i`.
pub fn inverse(perm: &[u32]) -> Vec<u32> {
    let mut inv = vec![0u32; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        inv[p as usize] = i as u32;
    }
    inv
}

/// timm's relative position index of a `window` x `window` window, flattened (N*N, row-major
/// over query then key): entry of the bias table for each query/key pair.
pub fn relative_position_index(window: usize) -> Vec<u32> {
    let n = window * window;
    let mut idx = Vec::with_capacity(n * n);
    for q in 0..n {
        for k in 0..n {
            let dy = (q / window) as isize - (k / window) as isize + window as isize - 1;
            let dx = (q % window) as isize - (k % window) as isize + window as isize - 1;
            idx.push((dy * (2 * window as isize - 1) + dx) as u32);
        }
    }
    idx
}

/// Region id of each row (or column) of a shifted grid: 0 up to `len - window`, 1 up to
/// `len - shift`, 2 after (timm's three slices).
fn region(i: usize, len: usize, window: usize, shift: usize) -> usize {
    if i < len - window {
        0
    } else if i < len - shift {
        1
    } else {
        2
    }
}

/// The shifted-window attention mask (num_windows, N, N), flattened: 0 where query and key came
/// from the same region of the unshifted image, -100 where the cyclic shift made them neighbours.
pub fn shift_attention_mask(h: usize, w: usize, window: usize, shift: usize) -> Vec<f32> {
    let order = shifted_window_order(h, w, window, 0);
    let n = window * window;
    let label = |t: u32| {
        let (r, c) = (t as usize / w, t as usize % w);
        region(r, h, window, shift) * 3 + region(c, w, window, shift)
    };
    let mut mask = Vec::with_capacity(order.len() * n);
    for win in order.chunks(n) {
        for &q in win {
            for &k in win {
                mask.push(if label(q) == label(k) { 0.0 } else { -100.0 });
            }
        }
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifted_window_order_is_roll_then_partition() {
        // 4x4 grid, window 2, shift 1: window (0,0) holds rolled rows 0..2, cols 0..2, i.e.
        // source rows 1..3, cols 1..3.
        let idx = shifted_window_order(4, 4, 2, 1);
        assert_eq!(&idx[..4], &[5, 6, 9, 10]);
        // last window wraps around: rolled (2..4, 2..4) = source rows (3, 0), cols (3, 0).
        assert_eq!(&idx[12..], &[15, 12, 3, 0]);
        let mut sorted = idx.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..16).collect::<Vec<u32>>(), "a permutation");
        let inv = inverse(&idx);
        assert!((0..16).all(|i| idx[inv[i] as usize] == i as u32));
        // no shift, one window: identity
        assert_eq!(
            shifted_window_order(3, 3, 3, 0),
            (0..9).collect::<Vec<u32>>()
        );
    }

    #[test]
    fn merge_order_follows_timms_x0_x1_x2_x3() {
        // 4x4 grid: output (0,0) takes (0,0), (1,0), (0,1), (1,1).
        let idx = merge_order(4, 4);
        assert_eq!(&idx[..4], &[0, 4, 1, 5]);
        assert_eq!(&idx[4..8], &[2, 6, 3, 7]);
        assert_eq!(&idx[12..], &[10, 14, 11, 15]);
    }

    #[test]
    fn relative_position_index_matches_timm_for_window_2() {
        // torch: get_relative_position_index(2, 2).flatten()
        assert_eq!(
            relative_position_index(2),
            vec![4, 3, 1, 0, 5, 4, 2, 1, 7, 6, 4, 3, 8, 7, 5, 4]
        );
        assert_eq!(relative_position_index(7).len(), 49 * 49);
        assert_eq!(relative_position_index(7).iter().max(), Some(&168));
    }

    #[test]
    fn shift_mask_blocks_only_pairs_from_different_regions() {
        // 4x4, window 2, shift 1: windows 0 (top-left) all one region; the last window mixes
        // four regions, so only the diagonal is 0.
        let m = shift_attention_mask(4, 4, 2, 1);
        assert_eq!(m.len(), 4 * 4 * 4);
        assert!(m[..16].iter().all(|&v| v == 0.0));
        let last = &m[48..];
        for q in 0..4 {
            for k in 0..4 {
                assert_eq!(last[q * 4 + k], if q == k { 0.0 } else { -100.0 });
            }
        }
    }
}
