//! Recycled sample buffers between the data workers and the batch assembler.
//!
//! A transformed 224 px sample is 600 KB of `f32`. Allocating it fresh per sample costs a
//! zero-fill (and, for memory the allocator had returned, page faults); the assembler copies
//! each sample into its batch and hands the buffer back here for the next sample instead.

use std::sync::{Arc, Mutex};

/// A bounded stack of equally sized `f32` buffers shared by threads.
#[derive(Clone)]
pub(crate) struct BufferPool {
    free: Arc<Mutex<Vec<Vec<f32>>>>,
    len: usize,
    cap: usize,
}

impl BufferPool {
    /// Buffers of `len` elements; at most `cap` are kept.
    pub(crate) fn new(len: usize, cap: usize) -> Self {
        BufferPool {
            free: Arc::new(Mutex::new(Vec::with_capacity(cap))),
            len,
            cap,
        }
    }

    /// A buffer of `len` elements: a returned one (old contents; the caller overwrites every
    /// element) or a new zeroed one.
    pub(crate) fn take(&self) -> Vec<f32> {
        let reused = self.free.lock().ok().and_then(|mut f| f.pop());
        reused.unwrap_or_else(|| vec![0f32; self.len])
    }

    /// Hands `buf` back for reuse (dropped if the pool is full or it has another length).
    pub(crate) fn give(&self, buf: Vec<f32>) {
        if buf.len() != self.len {
            return;
        }
        if let Ok(mut f) = self.free.lock() {
            if f.len() < self.cap {
                f.push(buf);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_up_to_the_cap_and_keep_their_length() {
        let pool = BufferPool::new(4, 1);
        let mut a = pool.take();
        assert_eq!(a, vec![0.0; 4]);
        a[0] = 7.0;
        let ptr = a.as_ptr();
        pool.give(a);
        pool.give(vec![1.0; 4]); // over the cap: dropped
        pool.give(vec![1.0; 3]); // wrong length: dropped
        let b = pool.take();
        assert_eq!(
            (b.as_ptr(), b[0]),
            (ptr, 7.0),
            "the returned buffer, as it was"
        );
        assert_eq!(
            pool.take(),
            vec![0.0; 4],
            "empty pool: a fresh zeroed buffer"
        );
    }
}
