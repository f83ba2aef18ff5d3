//! A file rendezvous for the NCCL unique id when no MPI launched the job: rank 0 writes the id
//! to a file every rank can read (a shared filesystem across nodes), the others wait for it.
//! The file is written to a temporary name and renamed, so a reader never sees half an id.

use crate::{DistError, Result};
use std::path::Path;
use std::time::{Duration, Instant};

/// Publish `bytes` at `path` (rank 0). An existing file is replaced: it is a stale id of an
/// earlier job.
pub fn publish(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |e: std::io::Error| DistError::Rendezvous {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Wait until `path` holds exactly `len` bytes written after `not_before`, then return them.
/// `not_before` keeps a rank from reading a stale file left by an earlier job.
pub fn wait_for(
    path: &Path,
    len: usize,
    not_before: std::time::SystemTime,
    timeout: Duration,
) -> Result<Vec<u8>> {
    let start = Instant::now();
    loop {
        let fresh = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .map(|t| t >= not_before)
            .unwrap_or(false);
        if fresh {
            if let Ok(bytes) = std::fs::read(path) {
                if bytes.len() == len {
                    return Ok(bytes);
                }
                return Err(DistError::Rendezvous {
                    path: path.display().to_string(),
                    reason: format!("holds {} bytes, expected {len}", bytes.len()),
                });
            }
        }
        if start.elapsed() > timeout {
            return Err(DistError::Rendezvous {
                path: path.display().to_string(),
                reason: format!(
                    "rank 0 did not publish the id within {:.0}s (MASKSUB_DIST_TIMEOUT)",
                    timeout.as_secs_f64()
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn a_waiting_rank_gets_the_published_bytes() {
        let dir = std::env::temp_dir().join(format!("masksub-rdv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("nccl.id");
        let since = SystemTime::now() - Duration::from_secs(1);
        let p = path.clone();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(120));
            publish(&p, &[7u8; 128]).unwrap();
        });
        let got = wait_for(&path, 128, since, Duration::from_secs(10)).unwrap();
        writer.join().unwrap();
        assert_eq!(got, vec![7u8; 128]);
        // A file of the wrong size is refused, naming the file.
        publish(&path, &[1u8; 5]).unwrap();
        let e = wait_for(&path, 128, since, Duration::from_secs(1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nccl.id") && e.contains("5 bytes"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_publisher_times_out_with_the_path() {
        let path = std::env::temp_dir().join(format!("masksub-rdv-none-{}", std::process::id()));
        let e = wait_for(&path, 128, SystemTime::now(), Duration::from_millis(200))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("did not publish") && e.contains("masksub-rdv-none"),
            "{e}"
        );
    }
}
