//! End-to-end training on real Fashion-MNIST images (a tiny ViT so the suite stays quick).

use candle_core::{DType, Device};
use masksub_cli::checkpoint;
use masksub_cli::trainer::{train, RunOptions};
use masksub_cli::TrainConfig;
use masksub_core::{LossKind, OptimizerKind, SubModel};
use masksub_models::weights::LoadOptions;
use std::path::Path;

fn quick_config() -> TrainConfig {
    TrainConfig {
        model: "vit_fmnist_tiny".into(),
        train_subset: Some(2000),
        epochs: 3,
        batch_size: 50,
        lr: 3e-3,
        warmup_epochs: 0.5,
        log_every: 1,
        ..TrainConfig::default()
    }
}

fn opts(out: &Path) -> RunOptions {
    RunOptions {
        progress: false,
        ..RunOptions::new(out.to_path_buf(), Device::Cpu)
    }
}

fn resume_opts(out: &Path) -> RunOptions {
    RunOptions {
        resume: true,
        ..opts(out)
    }
}

fn jsonl(out: &Path, kind: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == kind)
        .collect()
}

#[test]
fn masksub_training_on_real_images_lowers_the_loss_and_writes_the_run_folder() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let s = train(&quick_config(), opts(&out)).unwrap();
    let steps = jsonl(&out, "step");
    assert_eq!(steps.len(), 120, "3 epochs x 40 steps, one row per step");
    let mean = |rows: &[serde_json::Value]| {
        rows.iter()
            .map(|r| r["loss"].as_f64().unwrap())
            .sum::<f64>()
            / rows.len() as f64
    };
    let (first, last) = (mean(&steps[..10]), mean(&steps[110..]));
    assert!(
        last < 0.75 * first,
        "loss should fall: first {first:.3}, last {last:.3}"
    );
    assert!(
        steps.iter().all(|r| r["sub_loss"].as_f64().is_some()),
        "MaskSub reports sub_loss"
    );
    assert!(
        s.test_top1 > 40.0,
        "test top-1 {:.1}% after 3 epochs on 2000 images (chance is 10%)",
        s.test_top1
    );
    assert_eq!(jsonl(&out, "epoch").len(), 3);
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4);
    for f in [
        "config.json",
        "summary.json",
        checkpoint::WEIGHTS_FILE,
        checkpoint::OPTIM_FILE,
        checkpoint::STATE_FILE,
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let saved = TrainConfig::load(&out.join("config.json")).unwrap();
    assert_eq!(saved, quick_config());
}

#[test]
fn checkpoint_reloads_to_identical_logits_and_matches_the_reported_accuracy() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let cfg = TrainConfig {
        epochs: 1,
        ..quick_config()
    };
    let s = train(&cfg, opts(&out)).unwrap();
    let ck = checkpoint::load(&out).unwrap();
    // Two fresh models with different random inits, both loading the checkpoint.
    let a = ck.state.spec.build(1, DType::F32, &Device::Cpu).unwrap();
    let b = ck.state.spec.build(2, DType::F32, &Device::Cpu).unwrap();
    for m in [&a, &b] {
        m.load_state_dict(&ck.weights, "last.safetensors", &LoadOptions::default())
            .unwrap();
    }
    let test =
        masksub_data::InMemoryDataset::from_idx_dir(&cfg.data, masksub_data::Split::Test).unwrap();
    let ev = masksub_cli::eval::evaluate(&a, &test, 1000, &Device::Cpu).unwrap();
    assert_eq!(
        ev.top1, s.test_top1,
        "the saved weights are the evaluated weights"
    );
    let x = candle_core::Tensor::randn(0f32, 1.0, (4, 1, 28, 28), &Device::Cpu).unwrap();
    let la = a
        .forward(&x, false)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let lb = b
        .forward(&x, false)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(la, lb);
}

#[test]
fn an_interrupted_run_resumes_at_the_right_step_and_ends_where_an_uninterrupted_one_does() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        epochs: 2,
        ..quick_config()
    };
    let full = dir.path().join("full");
    train(&cfg, opts(&full)).unwrap();

    let split = dir.path().join("split");
    train(
        &cfg,
        RunOptions {
            max_epochs_this_run: Some(1),
            ..opts(&split)
        },
    )
    .unwrap();
    let mid = checkpoint::load(&split).unwrap().state;
    assert_eq!((mid.epochs_done, mid.step), (1, 40));
    let s = train(&cfg, resume_opts(&split)).unwrap();
    assert_eq!(s.steps, 80);
    let steps: Vec<u64> = jsonl(&split, "step")
        .iter()
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(
        steps,
        (1..=80).collect::<Vec<_>>(),
        "no step repeated or skipped"
    );

    let d = max_weight_diff(&full, &split);
    assert!(d < 1e-4, "resumed and uninterrupted runs differ by {d}");
    // A finished run cannot be resumed further without more epochs.
    let e = train(&cfg, resume_opts(&split)).err().unwrap().to_string();
    assert!(e.contains("already finished"), "{e}");
}

#[test]
fn a_fresh_run_never_overwrites_an_existing_one_and_resume_needs_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let cfg = TrainConfig {
        epochs: 1,
        train_subset: Some(200),
        ..quick_config()
    };
    train(&cfg, opts(&out)).unwrap();
    let before = std::fs::read(out.join(checkpoint::WEIGHTS_FILE)).unwrap();
    let e = train(&cfg, opts(&out)).err().unwrap().to_string();
    assert!(e.contains("already holds a run"), "{e}");
    assert_eq!(
        std::fs::read(out.join(checkpoint::WEIGHTS_FILE)).unwrap(),
        before,
        "checkpoint untouched"
    );
    let e = train(&cfg, resume_opts(&dir.path().join("nothing")))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("no checkpoint"), "{e}");
}

#[test]
fn a_diverging_run_stops_with_a_non_finite_loss_error_and_keeps_its_folder() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let cfg = TrainConfig {
        lr: 1e12,
        warmup_epochs: 0.0,
        epochs: 2,
        train_subset: Some(400),
        ..quick_config()
    };
    let e = train(&cfg, opts(&out)).err().unwrap().to_string();
    assert!(e.contains("non-finite"), "{e}");
    assert!(out.join("config.json").is_file());
}

#[test]
fn plain_training_reports_no_sub_loss() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let cfg = TrainConfig {
        sub: SubModel::None,
        epochs: 1,
        train_subset: Some(300),
        ..quick_config()
    };
    train(&cfg, opts(&out)).unwrap();
    assert!(jsonl(&out, "step").iter().all(|r| r["sub_loss"].is_null()));
    assert!(jsonl(&out, "epoch")
        .iter()
        .all(|r| r["train_sub_loss"].is_null()));
}

/// Largest |a - b| over every tensor of two checkpoints' weights.
fn max_weight_diff(a: &Path, b: &Path) -> f32 {
    let (a, b) = (
        checkpoint::load(a).unwrap().weights,
        checkpoint::load(b).unwrap().weights,
    );
    a.iter()
        .map(|(k, ta)| {
            (ta - &b[k])
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        })
        .fold(0.0, f32::max)
}

#[test]
fn lamb_with_bce_trains_and_its_state_survives_a_resume() {
    // The DeiT-III / RSB pairing: LAMB (trust ratio, built-in clip at 1.0) with BCE.
    let dir = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        opt: OptimizerKind::Lamb,
        loss: LossKind::Bce,
        // LAMB's trust ratio moves each weight matrix by ~lr of its norm per step: in this
        // 80-step run it needs a larger lr than AdamW (measured: 21% at 2e-2, 10% at 5e-3).
        lr: 2e-2,
        epochs: 2,
        ..quick_config()
    };
    let full = dir.path().join("full");
    let s = train(&cfg, opts(&full)).unwrap();
    let steps = jsonl(&full, "step");
    let first: f64 = steps[..10]
        .iter()
        .map(|r| r["loss"].as_f64().unwrap())
        .sum();
    let last: f64 = steps[70..]
        .iter()
        .map(|r| r["loss"].as_f64().unwrap())
        .sum();
    assert!(
        last < 0.8 * first,
        "BCE loss should fall: {first} -> {last}"
    );
    assert!(
        s.test_top1 > 15.0,
        "LAMB + BCE test top-1 {:.1}% (chance is 10%)",
        s.test_top1
    );
    let saved = TrainConfig::load(&full.join("config.json")).unwrap();
    assert_eq!(saved.opt, OptimizerKind::Lamb);

    let split = dir.path().join("split");
    train(
        &cfg,
        RunOptions {
            max_epochs_this_run: Some(1),
            ..opts(&split)
        },
    )
    .unwrap();
    train(&cfg, resume_opts(&split)).unwrap();
    let d = max_weight_diff(&full, &split);
    assert!(d < 1e-4, "resumed LAMB run differs by {d}");
}

#[test]
fn dropsub_and_pathsub_train_with_a_sub_loss_and_differ_from_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let mut finals = Vec::new();
    for (name, sub) in [
        ("dropout", SubModel::Dropout { ratio: 0.3 }),
        ("droppath", SubModel::DropPath { ratio: 0.3 }),
    ] {
        let cfg = TrainConfig {
            sub,
            train_subset: Some(400),
            epochs: 1,
            ..quick_config()
        };
        let out = dir.path().join(name);
        let s = train(&cfg, opts(&out)).unwrap();
        let steps = jsonl(&out, "step");
        assert_eq!(steps.len(), 8);
        assert!(
            steps
                .iter()
                .all(|r| r["sub_loss"].as_f64().is_some_and(f64::is_finite)),
            "{name} reports a sub loss every step"
        );
        assert!(s.final_train_loss < steps[0]["loss"].as_f64().unwrap());
        finals.push(out);
    }
    assert!(max_weight_diff(&finals[0], &finals[1]) > 1e-4);
}
