//! Fine-tuning features end to end: starting weights from a checkpoint file, layer-wise lr
//! decay groups, and MobileNetV2 training with MaskSub's pixel masking on real images.

use candle_core::{DType, Device, Tensor};
use masksub_cli::step::param_groups_layer_decay;
use masksub_cli::trainer::{train, RunOptions};
use masksub_cli::TrainConfig;
use masksub_models::registry;
use std::collections::HashMap;
use std::path::Path;

fn opts(out: &Path) -> RunOptions {
    RunOptions {
        progress: false,
        ..RunOptions::new(out.to_path_buf(), Device::Cpu)
    }
}

#[test]
fn layer_decay_scales_follow_beit_and_keep_no_weight_decay() {
    let m = registry::lookup("vit_fmnist_tiny")
        .unwrap()
        .build(0, DType::F32, &Device::Cpu)
        .unwrap();
    let groups = param_groups_layer_decay(&m, 0.05, Some(0.5));
    let find = |name: &str| {
        groups
            .iter()
            .find(|g| g.params.iter().any(|(n, _)| n == name))
            .unwrap_or_else(|| panic!("{name} in no group"))
    };
    // depth 2: embeddings 0.5^3, block 0 0.5^2, block 1 0.5, head and final norm 1.
    for (name, scale, wd) in [
        ("cls_token", 0.125, 0.0),
        ("pos_embed", 0.125, 0.0),
        ("patch_embed.proj.weight", 0.125, 0.05),
        ("patch_embed.proj.bias", 0.125, 0.0),
        ("blocks.0.attn.qkv.weight", 0.25, 0.05),
        ("blocks.0.norm1.weight", 0.25, 0.0),
        ("blocks.1.mlp.fc2.weight", 0.5, 0.05),
        ("head.weight", 1.0, 0.05),
        ("norm.bias", 1.0, 0.0),
    ] {
        let g = find(name);
        assert_eq!(
            (g.lr_scale, g.weight_decay),
            (scale, wd),
            "{name} in {}",
            g.name
        );
    }
    let n: usize = groups.iter().map(|g| g.params.len()).sum();
    assert_eq!(n, m.named_parameters().len());
    // Without layer decay: the two plain groups.
    assert_eq!(param_groups_layer_decay(&m, 0.05, None).len(), 2);
}

#[test]
fn a_run_starts_from_the_checkpoint_file_and_refuses_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let start = registry::lookup("vit_fmnist_tiny")
        .unwrap()
        .build(77, DType::F32, &Device::Cpu)
        .unwrap();
    let ck = dir.path().join("start.safetensors");
    let sd: HashMap<String, Tensor> = start.state_dict().unwrap().into_iter().collect();
    candle_core::safetensors::save(&sd, &ck).unwrap();
    let cfg = TrainConfig {
        model: "vit_fmnist_tiny".into(),
        train_subset: Some(100),
        epochs: 1,
        batch_size: 50,
        lr: 1e-9,
        warmup_lr: 1e-9,
        min_lr: 0.0,
        checkpoint_path: Some(ck.clone()),
        layer_decay: Some(0.75),
        ..TrainConfig::default()
    };
    let out = dir.path().join("run");
    train(&cfg, opts(&out)).unwrap();
    let after = candle_core::safetensors::load(out.join("last.safetensors"), &Device::Cpu).unwrap();
    // lr ~ 0: the trained weights are the checkpoint's, not the seed-0 initialisation.
    for (k, v) in &sd {
        let d = (v - &after[k]).unwrap().abs().unwrap().max_all().unwrap();
        assert!(d.to_scalar::<f32>().unwrap() < 1e-5, "{k}");
    }
    // A checkpoint of another architecture is refused naming the file and the keys.
    let bad = TrainConfig {
        model: "vit_fmnist_small".into(),
        ..cfg.clone()
    };
    let e = format!(
        "{:#}",
        train(&bad, opts(&dir.path().join("bad"))).unwrap_err()
    );
    assert!(
        e.contains("start.safetensors") && e.contains("shape mismatch"),
        "{e}"
    );
    // --pretrained on weights that are not on the Hub says where to get them.
    let tv = TrainConfig {
        model: "mobilenetv2_100.tv_in1k".into(),
        model_kwargs: serde_json::json!({"img_size": 28, "mask_patch_size": 4})
            .as_object()
            .unwrap()
            .clone(),
        pretrained: true,
        checkpoint_path: None,
        ..cfg
    };
    let e = format!(
        "{:#}",
        train(&tv, opts(&dir.path().join("tv"))).unwrap_err()
    );
    assert!(e.contains("--checkpoint-path"), "{e}");
}

#[test]
fn mobilenetv2_trains_with_pixel_patch_masksub_on_fashion_mnist() {
    let dir = tempfile::tempdir().unwrap();
    let kw = serde_json::json!({"img_size": 28, "mask_patch_size": 4});
    let cfg = TrainConfig {
        model: "mobilenetv2_100".into(),
        model_kwargs: kw.as_object().unwrap().clone(),
        train_subset: Some(64),
        epochs: 1,
        batch_size: 32,
        eval_batch_size: 250,
        log_every: 1,
        ..TrainConfig::default()
    };
    let out = dir.path().join("run");
    train(&cfg, opts(&out)).unwrap();
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let steps: Vec<&serde_json::Value> = rows.iter().filter(|r| r["kind"] == "step").collect();
    assert_eq!(steps.len(), 2);
    for r in steps {
        let (l, s) = (r["loss"].as_f64().unwrap(), r["sub_loss"].as_f64().unwrap());
        assert!(l.is_finite() && s.is_finite() && s > 0.0, "{r}");
    }
}
