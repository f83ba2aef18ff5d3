//! Evaluation: top-1, top-5 and (unsmoothed) cross-entropy over a dataset, eval mode.

use anyhow::Result;
use candle_core::{DType, Device, Tensor, D};
use masksub_data::{Batch, BatchLoader, InMemoryDataset, LoaderConfig, StreamLoader};
use masksub_dist::{params, Collective};
use masksub_models::LoadedModel;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalResult {
    pub loss: f64,
    pub top1: f64,
    pub top5: f64,
    pub count: usize,
}

/// Correct-in-top-k counts for k = 1 and 5 (or all classes if fewer).
pub fn topk_correct(logits: &Tensor, labels: &[u32]) -> Result<(usize, usize)> {
    let rows = logits.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    let (mut c1, mut c5) = (0, 0);
    for (row, &y) in rows.iter().zip(labels) {
        let target = row[y as usize];
        // Rank = number of classes scoring strictly higher (ties count in the label's favour).
        let rank = row.iter().filter(|&&v| v > target).count();
        c1 += usize::from(rank < 1);
        c5 += usize::from(rank < 5);
    }
    Ok((c1, c5))
}

pub fn evaluate(
    model: &LoadedModel,
    ds: &InMemoryDataset,
    batch_size: usize,
    device: &Device,
) -> Result<EvalResult> {
    let s = eval_sums(model, ds, batch_size, device)?;
    Ok(EvalSums::from_vec(&s.to_vec()).result())
}

/// [`evaluate`] split across data-parallel ranks: rank r scores samples r, r+W, r+2W, ...
/// (each sample exactly once, no padding) and the counts are summed over ranks.
pub fn evaluate_sharded(
    model: &LoadedModel,
    ds: &InMemoryDataset,
    batch_size: usize,
    device: &Device,
    collective: &dyn Collective,
) -> Result<EvalResult> {
    let (rank, world) = (collective.rank(), collective.world_size());
    if world == 1 {
        return evaluate(model, ds, batch_size, device);
    }
    let part = shard(ds, rank, world);
    let local = if part.is_empty() {
        EvalSums::default()
    } else {
        eval_sums(model, &part, batch_size, device)?
    };
    let total = params::all_reduce_sum_f64(collective, &local.to_vec())?;
    Ok(EvalSums::from_vec(&total).result())
}

/// Samples r, r+W, ... of `ds` (statistics kept, so normalization is unchanged).
fn shard(ds: &InMemoryDataset, rank: usize, world: usize) -> InMemoryDataset {
    let len = ds.sample_len();
    let mut out = ds.clone();
    out.images.clear();
    out.labels.clear();
    for i in (rank..ds.len()).step_by(world) {
        out.images.extend_from_slice(ds.image(i));
        out.labels.push(ds.labels[i]);
    }
    debug_assert_eq!(out.images.len(), out.labels.len() * len);
    out
}

/// Additive evaluation counts, so ranks can sum them.
#[derive(Debug, Default, Clone, Copy)]
struct EvalSums {
    loss_sum: f64,
    top1: f64,
    top5: f64,
    count: f64,
}

impl EvalSums {
    fn to_vec(self) -> [f64; 4] {
        [self.loss_sum, self.top1, self.top5, self.count]
    }
    fn from_vec(v: &[f64]) -> Self {
        Self {
            loss_sum: v[0],
            top1: v[1],
            top5: v[2],
            count: v[3],
        }
    }
    fn result(self) -> EvalResult {
        let n = self.count.max(1.0);
        EvalResult {
            loss: self.loss_sum / n,
            top1: 100.0 * self.top1 / n,
            top5: 100.0 * self.top5 / n,
            count: self.count as usize,
        }
    }
}

fn eval_sums(
    model: &LoadedModel,
    ds: &InMemoryDataset,
    batch_size: usize,
    device: &Device,
) -> Result<EvalSums> {
    let cfg = LoaderConfig {
        batch_size,
        shuffle: false,
        drop_last: false,
        augment: None,
        ..Default::default()
    };
    let loader = BatchLoader::new(ds, cfg, device.clone())?;
    score_batches(model, loader.epoch(0))
}

/// [`evaluate_sharded`] over streamed data: the loader's rank reads its share of the shards
/// (every sample once) and the sums are reduced over ranks.
pub fn evaluate_stream(
    model: &LoadedModel,
    loader: &StreamLoader,
    collective: &dyn Collective,
) -> Result<EvalResult> {
    let local = score_batches(model, loader.epoch(0))?;
    if collective.world_size() == 1 {
        return Ok(local.result());
    }
    let total = params::all_reduce_sum_f64(collective, &local.to_vec())?;
    Ok(EvalSums::from_vec(&total).result())
}

fn score_batches(
    model: &LoadedModel,
    batches: impl Iterator<Item = masksub_data::error::Result<Batch>>,
) -> Result<EvalSums> {
    let (mut loss_sum, mut c1, mut c5, mut n) = (0f64, 0usize, 0usize, 0usize);
    for batch in batches {
        let batch = batch?;
        let logits = model.forward(&batch.images, false)?;
        let labels = batch.labels.to_vec1::<u32>()?;
        let b = labels.len();
        let logp = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, D::Minus1)?;
        let picked = logp.gather(&batch.labels.unsqueeze(1)?, 1)?;
        loss_sum -= picked.sum_all()?.to_scalar::<f32>()? as f64;
        let (a, b5) = topk_correct(&logits, &labels)?;
        c1 += a;
        c5 += b5;
        n += b;
    }
    Ok(EvalSums {
        loss_sum,
        top1: c1 as f64,
        top5: c5 as f64,
        count: n as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topk_counts_by_rank() {
        let logits = Tensor::from_slice(
            &[
                0.9f32, 0.1, 0.0, 0.0, 0.0, 0.0, /* */ 0.0, 0.1, 0.2, 0.3, 0.4, 0.5,
                /* */ 0.0, 0.1, 0.2, 0.3, 0.4, 0.5,
            ],
            (3, 6),
            &Device::Cpu,
        )
        .unwrap();
        // row 0: label 0 is top-1; row 1: label 1 ranks 5th (4 higher) -> top-5 only; row 2: label 0 is last.
        assert_eq!(topk_correct(&logits, &[0, 1, 0]).unwrap(), (1, 2));
    }
}
