//! Turning gathered `u8` samples into normalized `f32` batches, one batch ahead of the caller.
//!
//! The iterator (on the caller's thread) copies the next batch's raw bytes out of the borrowed
//! dataset — a small memcpy — and hands them to a worker thread, which augments/normalizes
//! them on rayon while the caller trains on the current batch. The worker owns everything it
//! touches, so no borrow of the dataset crosses threads. Results come back in FIFO order from
//! a single worker, and every sample's randomness is seeded from (seed, epoch, index), so the
//! batches are identical with or without the worker and for any number of rayon threads.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use rayon::prelude::*;

use crate::augment::{augment_into, normalize_into, AugmentConfig};
use crate::seeds::sample_rng;

/// Raw samples of one batch, copied out of the dataset.
pub(crate) struct Job {
    pub indices: Vec<usize>,
    pub pixels: Vec<u8>,
    pub labels: Vec<u32>,
}

/// A finished batch in host memory, ready to become tensors.
pub(crate) struct HostBatch {
    pub indices: Vec<usize>,
    pub images: Vec<f32>,
    pub labels: Vec<u32>,
}

/// Everything needed to convert a [`Job`] for one epoch.
pub(crate) struct Transform {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub augment: Option<AugmentConfig>,
    pub seed: u64,
    pub epoch: usize,
}

impl Transform {
    /// Augments (or just normalizes) every sample of `job`, in parallel on rayon.
    pub(crate) fn run(&self, job: Job) -> HostBatch {
        let (c, h, w) = (self.channels, self.height, self.width);
        let n = c * h * w;
        let mut images = vec![0f32; job.indices.len() * n];
        if n > 0 {
            images
                .par_chunks_mut(n)
                .zip(job.pixels.par_chunks(n))
                .zip(job.indices.par_iter())
                .for_each(|((out, src), &index)| match &self.augment {
                    Some(cfg) => {
                        let mut rng = sample_rng(self.seed, self.epoch, index);
                        augment_into(src, c, h, w, cfg, &self.mean, &self.std, &mut rng, out);
                    }
                    None => normalize_into(src, c, h, w, &self.mean, &self.std, out),
                });
        }
        HostBatch {
            indices: job.indices,
            images,
            labels: job.labels,
        }
    }
}

/// A background thread running [`Transform::run`] on submitted jobs, in order.
pub(crate) struct Worker {
    jobs: Option<SyncSender<Job>>,
    results: Option<Receiver<HostBatch>>,
    handle: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts the thread; `depth` bounds how many jobs/results may queue up.
    pub(crate) fn spawn(transform: Arc<Transform>, depth: usize) -> std::io::Result<Self> {
        let (job_tx, job_rx) = sync_channel::<Job>(depth);
        let (res_tx, res_rx) = sync_channel::<HostBatch>(depth);
        let handle = std::thread::Builder::new()
            .name("masksub-prefetch".to_string())
            .spawn(move || {
                for job in job_rx {
                    if res_tx.send(transform.run(job)).is_err() {
                        break; // The iterator was dropped.
                    }
                }
            })?;
        Ok(Worker {
            jobs: Some(job_tx),
            results: Some(res_rx),
            handle: Some(handle),
        })
    }

    /// Queues a job; false if the worker is gone.
    pub(crate) fn submit(&self, job: Job) -> bool {
        self.jobs.as_ref().is_some_and(|tx| tx.send(job).is_ok())
    }

    /// Waits for the oldest unfinished job; `None` if the worker is gone.
    pub(crate) fn recv(&self) -> Option<HostBatch> {
        self.results.as_ref().and_then(|rx| rx.recv().ok())
    }
}

impl Drop for Worker {
    /// Closes both channels (unblocking the thread wherever it waits), then joins it so no
    /// thread outlives the epoch iterator.
    fn drop(&mut self) {
        self.jobs.take();
        self.results.take();
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transform() -> Transform {
        Transform {
            channels: 1,
            height: 3,
            width: 3,
            mean: vec![0.1],
            std: vec![0.3],
            augment: Some(AugmentConfig {
                random_crop_padding: 1,
                hflip: true,
            }),
            seed: 11,
            epoch: 2,
        }
    }

    fn job() -> Job {
        let indices: Vec<usize> = (100..164).collect();
        let pixels = (0..64 * 9).map(|i| (i * 7 % 251) as u8).collect();
        Job {
            labels: indices.iter().map(|&i| i as u32 % 10).collect(),
            indices,
            pixels,
        }
    }

    #[test]
    fn result_does_not_depend_on_thread_count() {
        let run_with = |threads| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| transform().run(job())).images
        };
        let one = run_with(1);
        assert_eq!(one, run_with(3));
        // And augmentation really happened: not equal to plain normalization.
        let plain = Transform {
            augment: None,
            ..transform()
        }
        .run(job())
        .images;
        assert_ne!(one, plain);
    }

    #[test]
    fn worker_returns_jobs_in_order_and_matches_inline_run() {
        let worker = Worker::spawn(Arc::new(transform()), 2).unwrap();
        let mut second = job();
        second.indices.reverse();
        assert!(worker.submit(job()));
        assert!(worker.submit(second));
        let a = worker.recv().unwrap();
        let b = worker.recv().unwrap();
        assert_eq!(a.indices[0], 100);
        assert_eq!(b.indices[0], 163);
        assert_eq!(a.images, transform().run(job()).images);
    }
}
