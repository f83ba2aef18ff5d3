//! Checkpoints, written so a crash never leaves a broken one:
//! - `last.safetensors`: the model, timm key names only (loads in timm as is);
//! - `last.optim.safetensors`: AdamW moments (`m.<key>`, `v.<key>`);
//! - `last.state.json`: trainer state (epochs done, step, model spec) — written last, it is the
//!   commit point; all three carry the step and must agree on resume.
//!
//! Every file goes to a temporary name in the same folder, is synced, then renamed over the old.

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use masksub_models::ModelSpec;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const WEIGHTS_FILE: &str = "last.safetensors";
pub const OPTIM_FILE: &str = "last.optim.safetensors";
pub const STATE_FILE: &str = "last.state.json";

/// Where a run stands after its last completed epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    pub epochs_done: usize,
    pub step: u64,
    pub best_top1: f64,
    pub spec: ModelSpec,
}

/// Write `bytes` to `path` via a synced temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .with_context(|| format!("{}: not a file path", path.display()))?;
    let tmp = path.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("{}: write failed", tmp.display()))?;
    f.sync_all()
        .with_context(|| format!("{}: sync failed", tmp.display()))?;
    drop(f);
    std::fs::rename(&tmp, path)
        .with_context(|| format!("{}: cannot move into place", path.display()))?;
    Ok(())
}

fn serialize(tensors: &HashMap<String, Tensor>, step: u64) -> Result<Vec<u8>> {
    let mut sorted: Vec<(&String, &Tensor)> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let meta = HashMap::from([
        ("step".to_string(), step.to_string()),
        ("format".to_string(), "pt".to_string()),
    ]);
    Ok(safetensors::serialize(sorted, Some(meta))?)
}

/// Save model weights, optimizer moments and trainer state into `dir`.
pub fn save(
    dir: &Path,
    weights: &HashMap<String, Tensor>,
    optim: &HashMap<String, Tensor>,
    state: &TrainerState,
) -> Result<()> {
    write_atomic(&dir.join(WEIGHTS_FILE), &serialize(weights, state.step)?)?;
    write_atomic(&dir.join(OPTIM_FILE), &serialize(optim, state.step)?)?;
    write_atomic(
        &dir.join(STATE_FILE),
        serde_json::to_string_pretty(state)?.as_bytes(),
    )
}

/// The tensors of a checkpoint file and the `step` in its metadata, reading the file once.
fn read_with_step(path: &Path) -> Result<(HashMap<String, Tensor>, Option<u64>)> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .with_context(|| format!("{}: not a safetensors file", path.display()))?;
    let step = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("step"))
        .and_then(|s| s.parse().ok());
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
        .with_context(|| format!("{}: cannot load tensors", path.display()))?;
    Ok((tensors, step))
}

/// A checkpoint read back from a run folder.
pub struct Loaded {
    pub weights: HashMap<String, Tensor>,
    pub optim: HashMap<String, Tensor>,
    pub state: TrainerState,
}

/// Read the checkpoint of run folder `dir`, checking its three files agree.
pub fn load(dir: &Path) -> Result<Loaded> {
    let p = |f: &str| -> PathBuf { dir.join(f) };
    let state_path = p(STATE_FILE);
    let text = std::fs::read_to_string(&state_path)
        .with_context(|| format!("{}: no checkpoint to resume from", state_path.display()))?;
    let state: TrainerState = serde_json::from_str(&text)
        .with_context(|| format!("{}: invalid trainer state", state_path.display()))?;
    let read = |f: &str| -> Result<HashMap<String, Tensor>> {
        let (tensors, got) = read_with_step(&p(f))?;
        if got != Some(state.step) {
            bail!(
                "{}: holds step {:?} but {} says step {}; the checkpoint is inconsistent",
                p(f).display(),
                got,
                STATE_FILE,
                state.step
            );
        }
        Ok(tensors)
    };
    Ok(Loaded {
        weights: read(WEIGHTS_FILE)?,
        optim: read(OPTIM_FILE)?,
        state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use masksub_models::registry;

    fn state(step: u64) -> TrainerState {
        TrainerState {
            epochs_done: 1,
            step,
            best_top1: 0.5,
            spec: registry::lookup("vit_fmnist_tiny").unwrap(),
        }
    }

    #[test]
    fn save_then_load_round_trips_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let w = HashMap::from([(
            "a".to_string(),
            Tensor::arange(0f32, 6.0, &Device::Cpu).unwrap(),
        )]);
        let o = HashMap::from([(
            "m.a".to_string(),
            Tensor::ones(6, candle_core::DType::F32, &Device::Cpu).unwrap(),
        )]);
        save(dir.path(), &w, &o, &state(7)).unwrap();
        let l = load(dir.path()).unwrap();
        assert_eq!(l.state, state(7));
        assert_eq!(
            l.weights["a"].to_vec1::<f32>().unwrap(),
            vec![0., 1., 2., 3., 4., 5.]
        );
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    }

    #[test]
    fn inconsistent_or_missing_checkpoints_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path())
            .err()
            .unwrap()
            .to_string()
            .contains("no checkpoint"));
        let w = HashMap::from([(
            "a".to_string(),
            Tensor::zeros(2, candle_core::DType::F32, &Device::Cpu).unwrap(),
        )]);
        save(dir.path(), &w, &w, &state(3)).unwrap();
        // A crash between files: the weights moved on, the state did not.
        write_atomic(&dir.path().join(WEIGHTS_FILE), &serialize(&w, 4).unwrap()).unwrap();
        let e = load(dir.path()).err().unwrap().to_string();
        assert!(
            e.contains("inconsistent") && e.contains(WEIGHTS_FILE),
            "{e}"
        );
        std::fs::write(dir.path().join(OPTIM_FILE), b"garbage").unwrap();
        write_atomic(&dir.path().join(WEIGHTS_FILE), &serialize(&w, 3).unwrap()).unwrap();
        assert!(format!("{:#}", load(dir.path()).err().unwrap()).contains(OPTIM_FILE));
    }
}
