//! End-to-end: `masksub train --model swin_fmnist_small --epochs 1` on real Fashion-MNIST images
//! (a 1000-image subset so the suite stays quick), MaskSub with the Swin's mask-token units.

use candle_core::Device;
use masksub_cli::checkpoint;
use masksub_cli::trainer::{train, RunOptions};
use masksub_cli::TrainConfig;

#[test]
fn swin_trains_one_epoch_with_masksub_on_real_images() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let cfg = TrainConfig {
        model: "swin_fmnist_small".into(),
        train_subset: Some(1000),
        epochs: 1,
        batch_size: 50,
        log_every: 1,
        ..TrainConfig::default()
    };
    let opts = RunOptions {
        progress: false,
        ..RunOptions::new(out.clone(), Device::Cpu)
    };
    let s = train(&cfg, opts).unwrap();
    let steps: Vec<serde_json::Value> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "step")
        .collect();
    assert_eq!(steps.len(), 20, "1000 images / batch 50");
    assert!(
        steps.iter().all(|r| r["sub_loss"].as_f64().is_some()),
        "MaskSub reports the sub loss"
    );
    let loss = |r: &serde_json::Value| r["loss"].as_f64().unwrap();
    let first = steps[..3].iter().map(loss).sum::<f64>() / 3.0;
    let last = steps[17..].iter().map(loss).sum::<f64>() / 3.0;
    assert!(
        last < first - 0.05,
        "loss should fall: {first:.3} -> {last:.3}"
    );
    // 20 steps: ~20% observed; chance is 10%.
    assert!(s.test_top1 > 14.0, "test top-1 {:.2}%", s.test_top1);
    // The checkpoint holds timm's keys plus the mask token.
    let ck = checkpoint::load(&out).unwrap();
    for k in [
        "patch_embed.proj.weight",
        "patch_embed.norm.weight",
        "layers.0.blocks.1.attn.relative_position_bias_table",
        "layers.1.downsample.reduction.weight",
        "norm.weight",
        "head.fc.weight",
        "mask_token",
    ] {
        assert!(ck.weights.contains_key(k), "checkpoint lacks `{k}`");
    }
    assert_eq!(ck.state.spec.name, "swin_fmnist_small");
}
