//! What every xtask benchmark shares: the repo root, building the release binary, medians,
//! machine facts, and replacing a generated section of a Markdown file.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The final weights a `masksub train` run folder holds (masksub-cli's checkpoint::WEIGHTS_FILE).
pub const WEIGHTS_FILE: &str = "last.safetensors";

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `cargo build --release -p masksub-cli [--features F]`; returns the binary's path.
pub fn build_masksub(features: &[&str]) -> Result<PathBuf> {
    let root = repo_root();
    let mut c = Command::new("cargo");
    c.current_dir(&root)
        .args(["build", "--release", "-p", "masksub-cli"]);
    if !features.is_empty() {
        c.args(["--features", &features.join(",")]);
    }
    if !c.status()?.success() {
        bail!("cargo build --release -p masksub-cli {features:?} failed");
    }
    Ok(root.join("target/release/masksub"))
}

/// A run folder's summary.json.
pub fn read_summary(out: &Path) -> Result<serde_json::Value> {
    let p = out.join("summary.json");
    let text =
        std::fs::read_to_string(&p).with_context(|| format!("{}: cannot read", p.display()))?;
    Ok(serde_json::from_str(&text)?)
}

pub fn summary_f64(s: &serde_json::Value, key: &str) -> Result<f64> {
    s[key]
        .as_f64()
        .with_context(|| format!("summary.json has no `{key}`"))
}

pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// A command's trimmed stdout, empty when it cannot run.
pub fn capture(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// 1-minute load average (Linux), so a section says whether the machine was shared.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

/// One line: CPU, cores, rustc, git revision, date.
pub fn machine_line() -> String {
    format!(
        "Machine: {} ({} cores visible), {}; masksub {}; date {}.",
        cpu_model(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        capture("rustc", &["--version"]),
        capture("git", &["rev-parse", "--short", "HEAD"]),
        chrono::Local::now().format("%Y-%m-%d %H:%M"),
    )
}

/// Replace the section between `<!-- xtask NAME: begin ... -->` and `<!-- xtask NAME: end -->`
/// in `file` (relative to the repo root) with `body`, or append it.
pub fn write_section(file: &Path, name: &str, body: &str) -> Result<PathBuf> {
    let begin = format!("<!-- xtask {name}: begin (generated, do not edit) -->");
    let end = format!("<!-- xtask {name}: end -->");
    let section = format!("{begin}\n{}\n{end}\n", body.trim_end());
    let path = if file.is_absolute() {
        file.to_path_buf()
    } else {
        repo_root().join(file)
    };
    let old = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        "# masksub benchmarks\n\nEvery number here is written by an xtask command; rerun it to refresh.\n\n".into()
    });
    let new = match (old.find(&begin), old.find(&end)) {
        (Some(b), Some(e)) if e > b => format!(
            "{}{}{}",
            &old[..b],
            section,
            old[e + end.len()..].trim_start_matches('\n')
        ),
        _ => format!("{}\n\n{}", old.trim_end(), section),
    };
    std::fs::write(&path, new).with_context(|| format!("{}: cannot write", path.display()))?;
    Ok(path)
}

/// A fresh scratch folder for one xtask invocation.
pub fn scratch_dir(what: &str) -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("masksub-{what}-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_section_is_appended_once_then_replaced_in_place() {
        let dir = scratch_dir("section-test").unwrap();
        let f = dir.join("B.md");
        std::fs::write(&f, "# title\n\nintro\n").unwrap();
        write_section(&f, "a", "first").unwrap();
        write_section(&f, "b", "other").unwrap();
        write_section(&f, "a", "second").unwrap();
        let s = std::fs::read_to_string(&f).unwrap();
        assert!(s.starts_with("# title\n\nintro\n"));
        assert!(!s.contains("first") && s.contains("second") && s.contains("other"));
        assert!(s.find("second").unwrap() < s.find("other").unwrap(), "{s}");
        assert_eq!(s.matches("xtask a: begin").count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
