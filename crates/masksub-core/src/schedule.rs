//! Learning-rate schedule stepped every iteration: linear warmup, then cosine to `min_lr`.

use crate::{CoreError, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CosineSchedule {
    pub base_lr: f64,
    pub min_lr: f64,
    pub warmup_lr: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
}

impl CosineSchedule {
    pub fn new(
        base_lr: f64,
        min_lr: f64,
        warmup_lr: f64,
        warmup_steps: u64,
        total_steps: u64,
    ) -> Result<Self> {
        if total_steps == 0 {
            return Err(CoreError::config("epochs", "the schedule has no steps"));
        }
        if warmup_steps > total_steps {
            return Err(CoreError::config(
                "warmup_epochs",
                format!("{warmup_steps} warmup steps exceed {total_steps} total"),
            ));
        }
        if !(base_lr.is_finite() && base_lr > 0.0) {
            return Err(CoreError::config(
                "lr",
                format!("{base_lr} must be positive"),
            ));
        }
        Ok(Self {
            base_lr,
            min_lr,
            warmup_lr,
            warmup_steps,
            total_steps,
        })
    }

    /// The lr used for optimizer step `step` (0-based).
    pub fn lr(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            let f = step as f64 / self.warmup_steps as f64;
            return self.warmup_lr + (self.base_lr - self.warmup_lr) * f;
        }
        let span = (self.total_steps - self.warmup_steps).max(1) as f64;
        let f = ((step - self.warmup_steps) as f64 / span).min(1.0);
        self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1.0 + (std::f64::consts::PI * f).cos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine() {
        let s = CosineSchedule::new(1.0, 0.0, 0.0, 10, 110).unwrap();
        assert_eq!(s.lr(0), 0.0);
        assert!((s.lr(5) - 0.5).abs() < 1e-12);
        assert!((s.lr(10) - 1.0).abs() < 1e-12);
        assert!((s.lr(60) - 0.5).abs() < 1e-12); // half-way through the cosine
        assert!(s.lr(110).abs() < 1e-12);
        assert!(s.lr(30) > s.lr(31));
    }

    #[test]
    fn rejects_bad_settings() {
        assert!(CosineSchedule::new(1.0, 0.0, 0.0, 0, 0)
            .unwrap_err()
            .to_string()
            .contains("epochs"));
        assert!(CosineSchedule::new(1.0, 0.0, 0.0, 5, 4)
            .unwrap_err()
            .to_string()
            .contains("warmup"));
        assert!(CosineSchedule::new(-1.0, 0.0, 0.0, 0, 4)
            .unwrap_err()
            .to_string()
            .contains("lr"));
    }
}
