//! Progress: an indicatif bar (loss, lr, img/s, ETA) on a terminal; plain log lines otherwise.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::Instant;

pub struct Progress {
    bar: Option<ProgressBar>,
    /// Step-level output at all (epoch summaries print regardless).
    enabled: bool,
    total_steps: u64,
    start: Instant,
    start_step: u64,
    log_every: u64,
}

impl Progress {
    /// `total_steps` for the whole run, starting at `start_step` (non-zero when resuming).
    pub fn new(total_steps: u64, start_step: u64, log_every: u64, enabled: bool) -> Self {
        let bar = (enabled && std::io::stdout().is_terminal()).then(|| {
            let b = ProgressBar::new(total_steps);
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} steps, ETA {eta} | {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b.set_position(start_step);
            b
        });
        Self {
            bar,
            enabled,
            total_steps,
            start: Instant::now(),
            start_step,
            log_every: log_every.max(1),
        }
    }

    pub fn update(
        &self,
        step: u64,
        epoch: usize,
        loss: f32,
        sub_loss: Option<f32>,
        lr: f64,
        img_per_s: f64,
    ) {
        let sub = sub_loss
            .map(|s| format!(" sub_loss {s:.4}"))
            .unwrap_or_default();
        let msg = format!("ep {epoch} loss {loss:.4}{sub} lr {lr:.2e} {img_per_s:.0} img/s");
        match &self.bar {
            Some(b) => {
                b.set_position(step);
                b.set_message(msg);
            }
            None if self.enabled && step.is_multiple_of(self.log_every) => {
                let done = (step - self.start_step) as f64;
                let eta = if done > 0.0 {
                    self.start.elapsed().as_secs_f64() / done * (self.total_steps - step) as f64
                } else {
                    0.0
                };
                println!("step {step}/{} {msg} eta {eta:.0}s", self.total_steps);
            }
            None => {}
        }
    }

    /// A line that must not be overwritten by the bar (epoch summaries).
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(b) => b.println(line),
            None => println!("{line}"),
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
