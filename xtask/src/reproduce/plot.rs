//! PNG plots of one pair: main-model training loss and test top-1 per epoch, both arms (mean
//! over seeds as a thick line, each seed thin).

use super::results::{mean_curve, RunResult};
use anyhow::{anyhow, bail, Result};
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use std::path::Path;
use std::sync::OnceLock;

/// Fonts tried in order (Debian's fonts-dejavu-core first); MASKSUB_PLOT_FONT overrides.
const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
];

/// plotters draws text with a font we register once per process.
fn ensure_font() -> Result<()> {
    static DONE: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let env = std::env::var("MASKSUB_PLOT_FONT").ok();
        let candidates: Vec<String> = env
            .into_iter()
            .chain(FONT_PATHS.iter().map(|s| s.to_string()))
            .collect();
        let (path, bytes) = candidates
            .iter()
            .find_map(|p| std::fs::read(p).ok().map(|b| (p.clone(), b)))
            .ok_or_else(|| {
                format!(
                    "no TrueType font for the plots (tried {}); install fonts-dejavu-core or set MASKSUB_PLOT_FONT",
                    candidates.join(", ")
                )
            })?;
        // plotters keeps the font for the whole process.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| format!("{path}: not a usable TrueType font"))
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

fn series(runs: &[RunResult], pick: fn(&(f64, f64)) -> f64) -> (Vec<Vec<f64>>, Vec<f64>) {
    let each = runs
        .iter()
        .map(|r| r.curve.iter().map(pick).collect())
        .collect();
    (each, mean_curve(runs, pick))
}

/// Write `path` (PNG, 1200x450): loss on the left, top-1 on the right.
pub fn pair_plot(path: &Path, title: &str, base: &[RunResult], ms: &[RunResult]) -> Result<()> {
    ensure_font()?;
    if base.is_empty() || ms.is_empty() {
        bail!("{title}: nothing to plot");
    }
    let root = BitMapBackend::new(path, (1200, 450)).into_drawing_area();
    let err = |e: DrawingAreaErrorKind<_>| anyhow!("{}: {e:?}", path.display());
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(err)?;
    let panels = root.split_evenly((1, 2));
    let arms = [
        ("baseline", base, RGBColor(60, 90, 200)),
        ("MaskSub", ms, RGBColor(210, 70, 40)),
    ];
    for (panel, (label, pick)) in panels.iter().zip([
        (
            "main-model train loss",
            (|c: &(f64, f64)| c.0) as fn(&(f64, f64)) -> f64,
        ),
        ("test top-1 (%)", |c: &(f64, f64)| c.1),
    ]) {
        let all: Vec<f64> = arms
            .iter()
            .flat_map(|(_, rs, _)| rs.iter().flat_map(|r| r.curve.iter().map(pick)))
            .filter(|v| v.is_finite())
            .collect();
        let (lo, hi) = all
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                (a.min(*v), b.max(*v))
            });
        let pad = ((hi - lo) * 0.08).max(1e-3);
        let epochs = arms
            .iter()
            .flat_map(|(_, rs, _)| rs.iter().map(|r| r.curve.len()))
            .max()
            .unwrap_or(1);
        let mut chart = ChartBuilder::on(panel)
            .margin(12)
            .caption(label, ("sans-serif", 18))
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(1f64..(epochs.max(2) as f64), (lo - pad)..(hi + pad))
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(err)?;
        for (name, runs, color) in &arms {
            let (each, mean) = series(runs, pick);
            for s in &each {
                chart
                    .draw_series(LineSeries::new(
                        s.iter().enumerate().map(|(i, v)| (i as f64 + 1.0, *v)),
                        color.mix(0.35).stroke_width(1),
                    ))
                    .map_err(err)?;
            }
            let c = *color;
            chart
                .draw_series(LineSeries::new(
                    mean.iter().enumerate().map(|(i, v)| (i as f64 + 1.0, *v)),
                    c.stroke_width(3),
                ))
                .map_err(err)?
                .label(format!("{name} (mean of {})", runs.len()))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_png_of_both_arms() {
        let run = |shift: f64| RunResult {
            top1: 80.0,
            wall_s: 1.0,
            img_per_s: 1.0,
            curve: (0..5)
                .map(|e| (1.0 / (e as f64 + 1.0) + shift, 70.0 + e as f64 + shift))
                .collect(),
        };
        let dir = crate::common::scratch_dir("plot-test").unwrap();
        let path = dir.join("p.png");
        pair_plot(&path, "test", &[run(0.0), run(0.1)], &[run(0.05)]).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        assert!(bytes.len() > 5_000, "a real picture, {} bytes", bytes.len());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
