//! State dicts: strict loading (every missing, unexpected and mis-shaped key reported at once)
//! and reading/writing safetensors with timm's key names.

use crate::{ModelError, Result};
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Relaxations of strict loading, each by key prefix.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Model keys that may be absent from the file (they keep their initial values).
    pub allow_missing: Vec<String>,
    /// File keys that may have no model parameter (e.g. a head being replaced, optimizer state).
    pub allow_unexpected: Vec<String>,
}

fn matches_any(key: &str, prefixes: &[String]) -> bool {
    prefixes.iter().any(|p| key.starts_with(p.as_str()))
}

/// Copy `tensors` into the model's parameters, or fail listing every problem by name.
pub fn load_into(
    varmap: &VarMap,
    tensors: &HashMap<String, Tensor>,
    source_name: &str,
    opts: &LoadOptions,
) -> Result<()> {
    load_into_all(&[varmap], tensors, source_name, opts)
}

/// [`load_into`] over several maps at once (parameters and buffers): a key is expected when any
/// map holds it, so the strict report covers the whole state dict.
pub fn load_into_all(
    varmaps: &[&VarMap],
    tensors: &HashMap<String, Tensor>,
    source_name: &str,
    opts: &LoadOptions,
) -> Result<()> {
    let mut map: HashMap<String, candle_core::Var> = HashMap::new();
    for vm in varmaps {
        let m = vm
            .data()
            .lock()
            .map_err(|_| ModelError::config("varmap", "poisoned lock"))?;
        map.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    let mut missing: Vec<String> = map
        .keys()
        .filter(|k| !tensors.contains_key(*k) && !matches_any(k, &opts.allow_missing))
        .cloned()
        .collect();
    let mut unexpected: Vec<String> = tensors
        .keys()
        .filter(|k| !map.contains_key(*k) && !matches_any(k, &opts.allow_unexpected))
        .cloned()
        .collect();
    let mut mismatched: Vec<(String, Vec<usize>, Vec<usize>)> = map
        .iter()
        .filter_map(|(k, v)| {
            tensors
                .get(k)
                .filter(|t| t.dims() != v.dims())
                .map(|t| (k.clone(), v.dims().to_vec(), t.dims().to_vec()))
        })
        .collect();
    if !(missing.is_empty() && unexpected.is_empty() && mismatched.is_empty()) {
        missing.sort();
        unexpected.sort();
        mismatched.sort();
        return Err(ModelError::StateDict {
            source_name: source_name.into(),
            missing,
            unexpected,
            mismatched,
        });
    }
    for (k, var) in map.iter() {
        if let Some(t) = tensors.get(k) {
            var.set(&t.to_device(var.device())?.to_dtype(var.dtype())?)?;
        }
    }
    Ok(())
}

/// The parameters as name -> tensor, sorted.
pub fn state_dict(varmap: &VarMap) -> Result<BTreeMap<String, Tensor>> {
    let map = varmap
        .data()
        .lock()
        .map_err(|_| ModelError::config("varmap", "poisoned lock"))?;
    Ok(map
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect())
}

/// Read every tensor of a safetensors file onto the CPU; errors name the file.
pub fn read_safetensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    if !path.is_file() {
        return Err(ModelError::File {
            path: path.into(),
            reason: "no such file".into(),
        });
    }
    candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| ModelError::File {
        path: path.into(),
        reason: format!("not a readable safetensors file: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Var};

    fn varmap() -> VarMap {
        let vm = VarMap::new();
        {
            let mut m = vm.data().lock().unwrap();
            m.insert(
                "a.weight".into(),
                Var::zeros((2, 3), DType::F32, &Device::Cpu).unwrap(),
            );
            m.insert(
                "a.bias".into(),
                Var::zeros(2, DType::F32, &Device::Cpu).unwrap(),
            );
            m.insert(
                "head.weight".into(),
                Var::zeros((4, 2), DType::F32, &Device::Cpu).unwrap(),
            );
        }
        vm
    }

    #[test]
    fn reports_all_problems_at_once_by_name() {
        let vm = varmap();
        let mut t = HashMap::new();
        t.insert(
            "a.weight".to_string(),
            Tensor::ones((3, 2), DType::F32, &Device::Cpu).unwrap(),
        );
        t.insert(
            "extra".to_string(),
            Tensor::ones(1, DType::F32, &Device::Cpu).unwrap(),
        );
        let e = load_into(&vm, &t, "ckpt.safetensors", &LoadOptions::default())
            .unwrap_err()
            .to_string();
        for needle in [
            "ckpt.safetensors",
            "missing keys (2): a.bias, head.weight",
            "unexpected keys (1): extra",
            "`a.weight`: model [2, 3], file [3, 2]",
        ] {
            assert!(e.contains(needle), "{needle} not in {e}");
        }
    }

    #[test]
    fn loads_values_and_honours_allowances() {
        let vm = varmap();
        let mut t = HashMap::new();
        t.insert(
            "a.weight".to_string(),
            Tensor::ones((2, 3), DType::F32, &Device::Cpu).unwrap(),
        );
        t.insert(
            "a.bias".to_string(),
            Tensor::ones(2, DType::F32, &Device::Cpu).unwrap(),
        );
        t.insert(
            "optim.m.x".to_string(),
            Tensor::ones(1, DType::F32, &Device::Cpu).unwrap(),
        );
        let opts = LoadOptions {
            allow_missing: vec!["head.".into()],
            allow_unexpected: vec!["optim.".into()],
        };
        load_into(&vm, &t, "x", &opts).unwrap();
        let sd = state_dict(&vm).unwrap();
        assert_eq!(
            sd["a.weight"]
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
            6.0
        );
        assert_eq!(
            sd["head.weight"]
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
            0.0
        );
    }

    #[test]
    fn unreadable_files_are_named() {
        let dir = std::env::temp_dir().join("masksub-weights-test");
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("garbage.safetensors");
        std::fs::write(&p, b"not safetensors").unwrap();
        assert!(read_safetensors(&p)
            .unwrap_err()
            .to_string()
            .contains("garbage.safetensors"));
        assert!(read_safetensors(&dir.join("nope.safetensors"))
            .unwrap_err()
            .to_string()
            .contains("nope.safetensors"));
    }
}
