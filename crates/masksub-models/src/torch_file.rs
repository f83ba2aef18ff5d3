//! PyTorch checkpoints (`torch.save`) without Python: the zip format (torch >= 1.6) through
//! candle's reader, and the legacy format (torch < 1.6: five pickles back to back, then the raw
//! storages) with our own reader, since candle's `pickle` module reads only the zip layout.

use crate::{ModelError, Result};
use candle_core::pickle::{Object, Stack};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::path::Path;

/// The first pickle of a legacy file: protocol 2, LONG1 of 10 bytes holding
/// torch.serialization.MAGIC_NUMBER (0x1950a86a20f9469cfc6c), STOP. Compared as bytes: the
/// number does not fit the i64 of candle's pickle objects.
const LEGACY_MAGIC: [u8; 15] = [
    0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e,
];

/// Read every tensor of a `.pth`/`.pt`/`.bin` file onto the CPU, either layout. `key` picks a
/// nested state dict (`"model"` in MAE's and DeiT-III's checkpoints); errors name the file.
pub fn read_torch(path: &Path, key: Option<&str>) -> Result<HashMap<String, Tensor>> {
    let file_err = |reason: String| ModelError::File {
        path: path.into(),
        reason,
    };
    let mut head = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .map_err(|e| file_err(format!("cannot read: {e}")))?;
    if &head == b"PK\x03\x04" {
        let v = candle_core::pickle::read_all_with_key(path, key)
            .map_err(|e| file_err(format!("not a readable torch zip checkpoint: {e}")))?;
        return Ok(v.into_iter().collect());
    }
    let f = std::fs::File::open(path).map_err(|e| file_err(format!("cannot open: {e}")))?;
    read_legacy(&mut BufReader::new(f), key).map_err(file_err)
}

/// One pickle from the stream.
fn unpickle<R: std::io::BufRead>(r: &mut R) -> std::result::Result<Object, String> {
    let mut stack = Stack::empty();
    stack.read_loop(r).map_err(|e| format!("bad pickle: {e}"))?;
    stack.finalize().map_err(|e| format!("bad pickle: {e}"))
}

/// A tensor view on a storage, as `torch._utils._rebuild_tensor_v2` describes it.
struct TensorRef {
    storage_key: String,
    dtype: DType,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

fn storage_dtype(class_name: &str) -> std::result::Result<DType, String> {
    Ok(match class_name {
        "FloatStorage" => DType::F32,
        "DoubleStorage" => DType::F64,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "LongStorage" => DType::I64,
        "ByteStorage" => DType::U8,
        other => return Err(format!("unsupported storage type {other}")),
    })
}

fn ints(o: Object) -> std::result::Result<Vec<usize>, String> {
    match o {
        Object::Tuple(v) | Object::List(v) => v
            .into_iter()
            .map(|x| match x {
                Object::Int(i) if i >= 0 => Ok(i as usize),
                Object::Long(i) if i >= 0 => Ok(i as usize),
                other => Err(format!("expected a size, got {other:?}")),
            })
            .collect(),
        other => Err(format!("expected a tuple of sizes, got {other:?}")),
    }
}

/// `_rebuild_tensor_v2(storage, offset, size, stride, ...)` -> a view description.
fn tensor_ref(o: Object) -> Option<std::result::Result<TensorRef, String>> {
    let Object::Reduce { callable, args } = o else {
        return None;
    };
    let is_rebuild = matches!(&*callable, Object::Class { module_name, class_name }
        if module_name == "torch._utils" && class_name == "_rebuild_tensor_v2");
    if !is_rebuild {
        // nn.Parameter wraps the tensor in `_rebuild_parameter(tensor, requires_grad, hooks)`.
        let is_param = matches!(&*callable, Object::Class { module_name, class_name }
            if module_name == "torch._utils" && class_name == "_rebuild_parameter");
        if let (true, Object::Tuple(mut a)) = (is_param, *args) {
            if !a.is_empty() {
                return tensor_ref(a.remove(0));
            }
        }
        return None;
    }
    Some((|| {
        let Object::Tuple(mut a) = *args else {
            return Err("tensor args are not a tuple".to_string());
        };
        if a.len() < 4 {
            return Err("tensor args too short".into());
        }
        let stride = ints(a.remove(3))?;
        let shape = ints(a.remove(2))?;
        let offset = match a.remove(1) {
            Object::Int(i) if i >= 0 => i as usize,
            Object::Long(i) if i >= 0 => i as usize,
            other => return Err(format!("bad storage offset {other:?}")),
        };
        let Object::PersistentLoad(pid) = a.remove(0) else {
            return Err("tensor without a storage".into());
        };
        // ('storage', storage_type, key, location, numel[, view_metadata])
        let Object::Tuple(mut p) = *pid else {
            return Err("bad storage id".into());
        };
        if p.len() < 3 {
            return Err("storage id too short".into());
        }
        let storage_key = match p.remove(2) {
            Object::Unicode(s) => s,
            other => return Err(format!("bad storage key {other:?}")),
        };
        let dtype = match p.remove(1) {
            Object::Class { class_name, .. } => storage_dtype(&class_name)?,
            other => return Err(format!("bad storage type {other:?}")),
        };
        Ok(TensorRef {
            storage_key,
            dtype,
            offset,
            shape,
            stride,
        })
    })())
}

/// The legacy layout: magic, protocol version, system info, the object, the storage keys,
/// then per key (in that order) an i64 element count and the raw little-endian data.
fn read_legacy<R: std::io::BufRead>(
    r: &mut R,
    key: Option<&str>,
) -> std::result::Result<HashMap<String, Tensor>, String> {
    let mut magic = [0u8; 15];
    if r.read_exact(&mut magic).is_err() || magic != LEGACY_MAGIC {
        return Err("not a torch checkpoint (neither zip nor the legacy format)".into());
    }
    let _protocol = unpickle(r)?;
    let _sys_info = unpickle(r)?;
    let mut obj = unpickle(r)?;
    if let Some(k) = key {
        if let Object::Dict(kv) = obj {
            obj = kv
                .into_iter()
                .find(|(name, _)| *name == Object::Unicode(k.to_string()))
                .map(|(_, v)| v)
                .ok_or_else(|| format!("no key `{k}` in the checkpoint"))?;
        }
    }
    let Object::Dict(entries) = obj else {
        return Err("the checkpoint does not hold a state dict".into());
    };
    let mut refs = Vec::new();
    for (name, value) in entries {
        let Object::Unicode(name) = name else {
            continue;
        };
        match tensor_ref(value) {
            Some(t) => {
                let t = t.map_err(|e| format!("`{name}`: {e}"))?;
                refs.push((name, t));
            }
            None => continue,
        }
    }
    let keys = match unpickle(r)? {
        Object::List(v) | Object::Tuple(v) => v,
        other => return Err(format!("bad storage key list {other:?}")),
    };
    let dtypes: HashMap<&str, DType> = refs
        .iter()
        .map(|(_, t)| (t.storage_key.as_str(), t.dtype))
        .collect();
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    for k in keys {
        let Object::Unicode(k) = k else {
            return Err("bad storage key".into());
        };
        let mut n = [0u8; 8];
        r.read_exact(&mut n)
            .map_err(|e| format!("storage `{k}`: truncated ({e})"))?;
        let numel = i64::from_le_bytes(n);
        // A storage no tensor of the state dict uses still has to be skipped over.
        let elem = dtypes.get(k.as_str()).map_or(4, |d| d.size_in_bytes());
        let len = usize::try_from(numel)
            .ok()
            .and_then(|n| n.checked_mul(elem))
            .ok_or_else(|| format!("storage `{k}`: bad size {numel}"))?;
        let mut buf = vec![0u8; len];
        r.read_exact(&mut buf)
            .map_err(|e| format!("storage `{k}`: truncated ({e})"))?;
        storages.insert(k, buf);
    }
    let mut out = HashMap::new();
    for (name, t) in refs {
        let data = storages
            .get(&t.storage_key)
            .ok_or_else(|| format!("`{name}`: storage `{}` missing", t.storage_key))?;
        out.insert(
            name.clone(),
            view(data, &t).map_err(|e| format!("`{name}`: {e}"))?,
        );
    }
    Ok(out)
}

/// Copy a strided view out of a storage's bytes.
fn view(data: &[u8], t: &TensorRef) -> std::result::Result<Tensor, String> {
    let es = t.dtype.size_in_bytes();
    if t.shape.len() != t.stride.len() {
        return Err("size and stride ranks differ".into());
    }
    let numel: usize = t.shape.iter().product();
    let mut bytes = Vec::with_capacity(numel * es);
    if numel > 0 {
        let last = t.offset
            + t.shape
                .iter()
                .zip(&t.stride)
                .map(|(d, s)| (d - 1) * s)
                .sum::<usize>();
        if (last + 1) * es > data.len() {
            return Err("view runs past its storage".into());
        }
        let mut idx = vec![0usize; t.shape.len()];
        for _ in 0..numel {
            let off = t.offset + idx.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<usize>();
            bytes.extend_from_slice(&data[off * es..(off + 1) * es]);
            for d in (0..idx.len()).rev() {
                idx[d] += 1;
                if idx[d] < t.shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
    }
    Tensor::from_raw_buffer(&bytes, t.dtype, &t.shape, &Device::Cpu).map_err(|e| e.to_string())
}
