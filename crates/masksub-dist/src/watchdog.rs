//! A peer that died or hangs leaves the other ranks blocked inside a collective forever. The
//! watchdog thread notices a collective that has not returned within the timeout and ends this
//! process with an error naming the operation; the launcher (mpirun) then ends the job.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct InFlight {
    since: Option<(Instant, &'static str)>,
}

/// Tracks the collective in flight; one background thread per process checks it.
#[derive(Debug, Clone)]
pub struct Watchdog {
    state: Arc<Mutex<InFlight>>,
    timeout: Duration,
}

/// Marks a collective as in flight until dropped.
pub struct Guard<'a>(&'a Watchdog);

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if let Ok(mut s) = self.0.state.lock() {
            s.since = None;
        }
    }
}

impl Watchdog {
    /// Start the checking thread. `on_timeout` gets the message and must end the process.
    pub fn start(timeout: Duration, rank: usize, on_timeout: fn(&str) -> !) -> Self {
        let w = Self {
            state: Arc::new(Mutex::new(InFlight::default())),
            timeout,
        };
        let state = Arc::clone(&w.state);
        let tick = (timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        std::thread::Builder::new()
            .name("masksub-dist-watchdog".into())
            .spawn(move || loop {
                std::thread::sleep(tick);
                let stuck = state
                    .lock()
                    .ok()
                    .and_then(|s| s.since)
                    .filter(|(t, _)| t.elapsed() > timeout);
                if let Some((t, op)) = stuck {
                    on_timeout(&format!(
                        "masksub rank {rank}: collective `{op}` has not completed after {:.0}s \
                         (MASKSUB_DIST_TIMEOUT={}); a peer rank died or hangs — ending this rank",
                        t.elapsed().as_secs_f64(),
                        timeout.as_secs_f64()
                    ));
                }
            })
            .ok();
        w
    }

    /// Mark `op` in flight until the guard drops.
    pub fn enter(&self, op: &'static str) -> Guard<'_> {
        if let Ok(mut s) = self.state.lock() {
            s.since = Some((Instant::now(), op));
        }
        Guard(self)
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    static FIRED: AtomicBool = AtomicBool::new(false);

    fn record(_msg: &str) -> ! {
        FIRED.store(true, Ordering::SeqCst);
        // Park the watchdog thread forever instead of exiting the test process.
        loop {
            std::thread::park();
        }
    }

    #[test]
    fn fires_only_for_a_collective_stuck_past_the_timeout() {
        let w = Watchdog::start(Duration::from_millis(200), 0, record);
        {
            let _g = w.enter("quick");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(400));
        assert!(
            !FIRED.load(Ordering::SeqCst),
            "a finished collective never fires"
        );
        let _g = w.enter("stuck");
        let t = Instant::now();
        while !FIRED.load(Ordering::SeqCst) && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(FIRED.load(Ordering::SeqCst), "a stuck collective fires");
    }
}
