//! Reading finished arms back (summary.json, metrics.csv) and the results table.

use super::plan::Pair;
use anyhow::{Context, Result};
use std::path::Path;

/// One finished run of one arm and seed.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub top1: f64,
    pub wall_s: f64,
    pub img_per_s: f64,
    /// Per epoch: (mean train loss of the main model, test top-1).
    pub curve: Vec<(f64, f64)>,
}

pub fn read_run(dir: &Path) -> Result<RunResult> {
    let s = crate::common::read_summary(dir)?;
    let f = |k: &str| crate::common::summary_f64(&s, k);
    let csv_path = dir.join("metrics.csv");
    let csv = std::fs::read_to_string(&csv_path)
        .with_context(|| format!("{}: cannot read", csv_path.display()))?;
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .with_context(|| format!("{}: no column `{name}`", csv_path.display()))
    };
    let (loss_c, top1_c) = (col("train_loss")?, col("test_top1")?);
    let curve = lines
        .map(|l| {
            let v: Vec<&str> = l.split(',').collect();
            let num = |c: usize| -> Result<f64> {
                v.get(c)
                    .and_then(|x| x.parse().ok())
                    .with_context(|| format!("{}: bad row `{l}`", csv_path.display()))
            };
            Ok((num(loss_c)?, num(top1_c)?))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RunResult {
        top1: f("test_top1")?,
        wall_s: f("wall_seconds")?,
        img_per_s: f("train_img_per_s")?,
        curve,
    })
}

/// Mean and sample standard deviation (0 for one value).
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// Per epoch, the mean over seeds of one curve component.
pub fn mean_curve(runs: &[RunResult], pick: fn(&(f64, f64)) -> f64) -> Vec<f64> {
    let epochs = runs.iter().map(|r| r.curve.len()).min().unwrap_or(0);
    (0..epochs)
        .map(|e| runs.iter().map(|r| pick(&r.curve[e])).sum::<f64>() / runs.len() as f64)
        .collect()
}

/// The results of one pair: rows of the table and the two claims, as Markdown.
pub fn pair_section(pair: &Pair, base: &[RunResult], ms: &[RunResult]) -> (String, String) {
    let (bm, bs) = mean_std(&base.iter().map(|r| r.top1).collect::<Vec<_>>());
    let (mm, mstd) = mean_std(&ms.iter().map(|r| r.top1).collect::<Vec<_>>());
    let wall = |rs: &[RunResult]| rs.iter().map(|r| r.wall_s).sum::<f64>() / 60.0;
    let ips = |rs: &[RunResult]| mean_std(&rs.iter().map(|r| r.img_per_s).collect::<Vec<_>>()).0;
    let epochs = base.first().map(|r| r.curve.len()).unwrap_or(0);
    let paper = |v: Option<f64>| v.map(|x| format!("{x:.1}")).unwrap_or_else(|| "—".into());
    let row = format!(
        "| {} | {} | {} / {} (+{:.1}) | {bm:.2} ± {bs:.2} | {mm:.2} ± {mstd:.2} | {:+.2} | {} | {epochs} | {:.0} / {:.0} | {:.0} / {:.0} |",
        pair.name,
        pair.paper.setting,
        paper(pair.paper.baseline),
        paper(pair.paper.masksub),
        pair.paper.gain,
        mm - bm,
        base.len().min(ms.len()),
        wall(base),
        wall(ms),
        ips(base),
        ips(ms),
    );
    let (lb, lm) = (mean_curve(base, |c| c.0), mean_curve(ms, |c| c.0));
    let not_worse = lb.iter().zip(&lm).filter(|(b, m)| m <= b).count();
    let claims = format!(
        "- **{}**: MaskSub test top-1 {} the baseline's at {epochs} epochs ({mm:.2} vs {bm:.2}, {:+.2} points; seed std {mstd:.2} / {bs:.2}). \
         Main-model training loss: MaskSub's mean epoch loss is at or below the baseline's in {not_worse} of {} epochs \
         (last epoch {:.4} vs {:.4}).",
        pair.name,
        if mm > bm { "is above" } else { "is not above" },
        mm - bm,
        lb.len().min(lm.len()),
        lm.last().copied().unwrap_or(f64::NAN),
        lb.last().copied().unwrap_or(f64::NAN),
    );
    (row, claims)
}

pub const TABLE_HEADER: &str = "| pair | paper setting (ImageNet-1k) | paper baseline / MaskSub (gain) | baseline top-1 | MaskSub top-1 | delta | seeds | epochs | wall min (baseline / MaskSub, all seeds) | img/s (baseline / MaskSub) |\n|---|---|---|---|---|---|---|---|---|---|";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_std() {
        let (m, s) = mean_std(&[1.0, 2.0, 3.0]);
        assert!((m - 2.0).abs() < 1e-12 && (s - 1.0).abs() < 1e-12);
        assert_eq!(mean_std(&[5.0]), (5.0, 0.0));
    }

    #[test]
    fn a_run_folder_is_read_back_and_bad_rows_name_the_file() {
        let dir = crate::common::scratch_dir("results-test").unwrap();
        std::fs::write(
            dir.join("summary.json"),
            r#"{"test_top1": 80.5, "wall_seconds": 60.0, "train_img_per_s": 900.0}"#,
        )
        .unwrap();
        std::fs::write(
            dir.join("metrics.csv"),
            "epoch,step,train_loss,train_sub_loss,test_loss,test_top1\n1,10,1.5,,0.9,70.0\n2,20,1.2,,0.8,80.5\n",
        )
        .unwrap();
        let r = read_run(&dir).unwrap();
        assert_eq!(r.curve, vec![(1.5, 70.0), (1.2, 80.5)]);
        assert_eq!(r.top1, 80.5);
        std::fs::write(
            dir.join("metrics.csv"),
            "epoch,train_loss,test_top1\n1,x,2\n",
        )
        .unwrap();
        let e = read_run(&dir).unwrap_err().to_string();
        assert!(e.contains("metrics.csv") && e.contains("bad row"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
