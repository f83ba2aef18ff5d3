//! End-to-end MaskSub training of the small ResNet on real Fashion-MNIST images: BatchNorm
//! statistics are updated by both passes, saved under timm's keys, and evaluation uses them.

use candle_core::{DType, Device};
use masksub_cli::checkpoint;
use masksub_cli::trainer::{train, RunOptions};
use masksub_cli::TrainConfig;
use masksub_models::weights::LoadOptions;

const STEPS: u64 = 30;

fn config() -> TrainConfig {
    TrainConfig {
        model: "resnet_fmnist_small".into(),
        train_subset: Some(1500),
        epochs: 1,
        batch_size: 50,
        lr: 5e-3,
        warmup_epochs: 0.2,
        log_every: 1,
        ..TrainConfig::default()
    }
}

#[test]
fn resnet_masksub_trains_saves_batchnorm_statistics_and_evaluates_with_them() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let cfg = config();
    let opts = RunOptions {
        progress: false,
        ..RunOptions::new(out.clone(), Device::Cpu)
    };
    let s = train(&cfg, opts).unwrap();
    assert_eq!(s.steps, STEPS);
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v["kind"] == "step")
        .collect();
    assert_eq!(rows.len() as u64, STEPS);
    assert!(rows.iter().all(|r| r["sub_loss"].as_f64().is_some()));
    let mean = |r: &[serde_json::Value]| {
        r.iter().map(|v| v["loss"].as_f64().unwrap()).sum::<f64>() / r.len() as f64
    };
    let (first, last) = (mean(&rows[..5]), mean(&rows[25..]));
    assert!(
        last < 0.8 * first,
        "loss should fall: {first:.3} -> {last:.3}"
    );
    assert!(
        s.test_top1 > 30.0,
        "test top-1 {:.1}% after {STEPS} steps (chance is 10%)",
        s.test_top1
    );

    // The checkpoint holds the running statistics under timm's keys; MaskSub runs BatchNorm in
    // train mode in both passes, so every layer counted two batches per step.
    let ck = checkpoint::load(&out).unwrap();
    for key in [
        "bn1.running_mean",
        "layer4.1.bn2.running_var",
        "layer2.0.downsample.1.running_mean",
    ] {
        let t = &ck.weights[key];
        let v = t.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap();
        assert!(
            v.iter().all(|x| x.is_finite()) && v.iter().any(|&x| x != 0.0 && x != 1.0),
            "{key} was never updated: {v:?}"
        );
    }
    let nbt = &ck.weights["layer3.1.bn1.num_batches_tracked"];
    assert_eq!(nbt.dtype(), DType::I64);
    assert_eq!(nbt.to_scalar::<i64>().unwrap(), 2 * STEPS as i64);

    // A fresh model that loads the checkpoint scores exactly the reported accuracy (eval mode
    // normalizes with the loaded statistics, not the batch's).
    let model = ck.state.spec.build(7, DType::F32, &Device::Cpu).unwrap();
    model
        .load_state_dict(&ck.weights, "last.safetensors", &LoadOptions::default())
        .unwrap();
    let test =
        masksub_data::InMemoryDataset::from_idx_dir(&cfg.data, masksub_data::Split::Test).unwrap();
    let ev = masksub_cli::eval::evaluate(&model, &test, 1000, &Device::Cpu).unwrap();
    assert_eq!(ev.top1, s.test_top1);
}
