//! LAMB against timm's `Lamb` (fixture from tools/parity/make_lamb_fixture.py): three steps on a
//! decayed 2-D group and a non-decayed 1-D group at half the lr, with gradients large enough
//! that the built-in global clip acts.

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use masksub_core::{Lamb, LambConfig, Optimizer, ParamGroup};
use serde_json::Value;

fn fixture() -> Value {
    let text = include_str!("fixtures/lamb_timm.json");
    serde_json::from_str(text).expect("fixture is JSON")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

fn tensor(v: &Value, shape: &[usize], dtype: DType) -> Tensor {
    Tensor::from_vec(floats(v), shape, &Device::Cpu)
        .and_then(|t| t.to_dtype(dtype))
        .expect("tensor")
}

/// Run the fixture's steps in `dtype`; returns the largest |ours - timm| over all steps.
fn max_abs_diff(dtype: DType) -> f64 {
    let fx = fixture();
    let shape = |k: &str| -> Vec<usize> {
        floats(&fx["shapes"][k])
            .into_iter()
            .map(|d| d as usize)
            .collect()
    };
    let (ws, bs) = (shape("w"), shape("b"));
    let w = Var::from_tensor(&tensor(&fx["init"]["w"], &ws, dtype)).unwrap();
    let b = Var::from_tensor(&tensor(&fx["init"]["b"], &bs, dtype)).unwrap();
    let cfg = LambConfig {
        lr: fx["lr"].as_f64().unwrap(),
        ..Default::default()
    };
    let groups = vec![
        ParamGroup {
            name: "decay".into(),
            params: vec![("w".into(), w.clone())],
            weight_decay: fx["weight_decay"].as_f64().unwrap(),
            lr_scale: 1.0,
        },
        ParamGroup {
            name: "no_decay".into(),
            params: vec![("b".into(), b.clone())],
            weight_decay: 0.0,
            lr_scale: fx["b_lr_scale"].as_f64().unwrap(),
        },
    ];
    let mut opt = Lamb::new(groups, cfg).unwrap();
    let mut worst = 0f64;
    let steps = fx["grads"].as_array().unwrap().len();
    assert_eq!(steps, 3);
    for s in 0..steps {
        let mut grads = GradStore::default();
        grads.insert(w.as_tensor(), tensor(&fx["grads"][s]["w"], &ws, dtype));
        grads.insert(b.as_tensor(), tensor(&fx["grads"][s]["b"], &bs, dtype));
        opt.step(&grads).unwrap();
        for (var, key) in [(&w, "w"), (&b, "b")] {
            let got: Vec<f64> = var
                .as_tensor()
                .to_dtype(DType::F64)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            for (g, e) in got.iter().zip(floats(&fx["after"][s][key])) {
                worst = worst.max((g - e).abs());
            }
        }
    }
    assert_eq!(opt.step_count(), 3);
    worst
}

#[test]
fn lamb_matches_timm_in_f64() {
    let d = max_abs_diff(DType::F64);
    assert!(d < 1e-12, "max |diff| {d}");
}

#[test]
fn lamb_matches_timm_in_f32() {
    let d = max_abs_diff(DType::F32);
    assert!(d < 1e-5, "max |diff| {d}");
}

#[test]
fn lamb_rejects_a_non_positive_clip_naming_the_field() {
    let cfg = LambConfig {
        max_grad_norm: Some(0.0),
        ..Default::default()
    };
    let e = Lamb::new(vec![], cfg).err().expect("error").to_string();
    assert!(e.contains("max_grad_norm"), "{e}");
}
