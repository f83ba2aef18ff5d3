//! Metrics files of a run: `metrics.jsonl` (step rows and epoch rows, tagged by `kind`) and
//! `metrics.csv` (one row per epoch). Appended and flushed as the run goes, so a crashed or
//! resumed run keeps its history.

use anyhow::{Context, Result};
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StepRow {
    pub step: u64,
    pub epoch: usize,
    pub loss: f32,
    pub sub_loss: Option<f32>,
    pub lr: f64,
    pub grad_norm: Option<f32>,
    pub img_per_s: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EpochRow {
    pub epoch: usize,
    pub step: u64,
    pub train_loss: f64,
    pub train_sub_loss: Option<f64>,
    pub test_loss: f64,
    pub test_top1: f64,
    pub test_top5: f64,
    pub lr: f64,
    pub train_img_per_s: f64,
    pub epoch_seconds: f64,
    /// Bad samples skipped this epoch (streamed data; always 0 for IDX).
    pub skipped_samples: usize,
}

pub const CSV_HEADER: &str = "epoch,step,train_loss,train_sub_loss,test_loss,test_top1,test_top5,lr,train_img_per_s,epoch_seconds,skipped_samples";

pub struct MetricsWriter {
    jsonl: File,
    csv: File,
}

fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("{}: cannot open for append", path.display()))
}

impl MetricsWriter {
    /// Open (append) the metrics files in `dir`, writing the CSV header if the file is new.
    pub fn open(dir: &Path) -> Result<Self> {
        let csv_path = dir.join("metrics.csv");
        let fresh = !csv_path.exists() || std::fs::metadata(&csv_path)?.len() == 0;
        let mut csv = open_append(&csv_path)?;
        if fresh {
            writeln!(csv, "{CSV_HEADER}")?;
        }
        Ok(Self {
            jsonl: open_append(&dir.join("metrics.jsonl"))?,
            csv,
        })
    }

    fn json_line(&mut self, kind: &str, row: &impl Serialize) -> Result<()> {
        let mut v = serde_json::to_value(row)?;
        if let serde_json::Value::Object(m) = &mut v {
            m.insert("kind".into(), kind.into());
        }
        writeln!(self.jsonl, "{v}")?;
        self.jsonl.flush()?;
        Ok(())
    }

    pub fn step(&mut self, row: &StepRow) -> Result<()> {
        self.json_line("step", row)
    }

    pub fn epoch(&mut self, r: &EpochRow) -> Result<()> {
        self.json_line("epoch", r)?;
        let sub = r
            .train_sub_loss
            .map(|v| format!("{v:.6}"))
            .unwrap_or_default();
        writeln!(
            self.csv,
            "{},{},{:.6},{},{:.6},{:.4},{:.4},{:.3e},{:.1},{:.1},{}",
            r.epoch,
            r.step,
            r.train_loss,
            sub,
            r.test_loss,
            r.test_top1,
            r.test_top5,
            r.lr,
            r.train_img_per_s,
            r.epoch_seconds,
            r.skipped_samples
        )?;
        self.csv.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_tagged_json_lines_and_one_csv_row_per_epoch_with_a_single_header() {
        let dir = tempfile::tempdir().unwrap();
        let row = EpochRow {
            epoch: 1,
            step: 10,
            train_loss: 0.5,
            train_sub_loss: Some(0.25),
            test_loss: 0.4,
            test_top1: 88.5,
            test_top5: 99.0,
            lr: 1e-3,
            train_img_per_s: 100.0,
            epoch_seconds: 2.0,
            skipped_samples: 0,
        };
        {
            let mut w = MetricsWriter::open(dir.path()).unwrap();
            w.step(&StepRow {
                step: 5,
                epoch: 1,
                loss: 0.7,
                sub_loss: None,
                lr: 1e-3,
                grad_norm: None,
                img_per_s: 10.0,
            })
            .unwrap();
            w.epoch(&row).unwrap();
        }
        MetricsWriter::open(dir.path())
            .unwrap()
            .epoch(&EpochRow {
                epoch: 2,
                ..row.clone()
            })
            .unwrap();
        let csv = std::fs::read_to_string(dir.path().join("metrics.csv")).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], CSV_HEADER);
        assert!(
            lines[1].starts_with("1,10,0.500000,0.250000,0.400000,88.5000"),
            "{}",
            lines[1]
        );
        let jl: Vec<serde_json::Value> = std::fs::read_to_string(dir.path().join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(jl.len(), 3);
        assert_eq!(jl[0]["kind"], "step");
        assert_eq!(jl[1]["kind"], "epoch");
        assert_eq!(jl[1]["test_top1"], 88.5);
    }
}
