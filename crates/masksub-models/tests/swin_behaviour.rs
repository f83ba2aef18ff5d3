//! Behaviour of the Swin Transformer beyond numeric parity: what the mask token touches, plan and
//! input errors, drop-path, weight decay groups, layer ids, loading timm weights.

use candle_core::{DType, Device, Tensor};
use masksub_core::mask::{MaskStrategy, RandomUnitMask};
use masksub_core::rng::stream;
use masksub_core::{MaskKind, MaskPlan, TokenGrid};
use masksub_models::registry::lookup;
use masksub_models::weights::LoadOptions;
use masksub_models::{LoadedModel, ModelArch, ModelSpec};

fn spec(drop_path: f64) -> ModelSpec {
    lookup("swin_fmnist_small")
        .unwrap()
        .with_drop_path(drop_path)
}

fn build(s: &ModelSpec, seed: u64) -> LoadedModel {
    s.build(seed, DType::F32, &Device::Cpu).unwrap()
}

fn images(b: usize, seed: u64) -> Tensor {
    let mut rng = stream(seed, 9, 0);
    let v: Vec<f32> = (0..b * 28 * 28)
        .map(|_| (rand::RngCore::next_u32(&mut rng) as f32 / u32::MAX as f32) * 2.0 - 1.0)
        .collect();
    Tensor::from_vec(v, (b, 1, 28, 28), &Device::Cpu).unwrap()
}

fn host(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn unit_plan(b: usize, seed: u64) -> MaskPlan {
    RandomUnitMask::new(0.5)
        .unwrap()
        .plan(b, TokenGrid::new(7, 7), &mut stream(seed, 1, 0))
        .unwrap()
}

fn mask_token_var(m: &LoadedModel) -> candle_core::Var {
    m.named_parameters()
        .into_iter()
        .find(|(n, _)| n == "mask_token")
        .map(|(_, v)| v)
        .expect("mask_token parameter")
}

#[test]
fn family_masks_units_of_two_by_two_tokens() {
    let m = build(&spec(0.0), 0);
    assert_eq!(m.net.mask_kind(), MaskKind::MaskUnits);
    assert_eq!(m.net.token_grid(), TokenGrid::new(7, 7));
}

#[test]
fn the_plain_pass_never_touches_the_mask_token() {
    let m = build(&spec(0.0), 0);
    let x = images(4, 1);
    let mt = mask_token_var(&m);
    let plain = m.net.forward(&x, None, true).unwrap();
    let g = plain.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    assert!(
        g.get(mt.as_tensor()).is_none(),
        "plain pass has no mask_token gradient"
    );
    // Changing the mask token leaves the plain logits bit-identical and moves the masked ones.
    let plan = unit_plan(4, 2);
    let masked = host(&m.net.forward(&x, Some(&plan), false).unwrap());
    let plain = host(&m.net.forward(&x, None, false).unwrap());
    mt.set(&(mt.as_tensor() + 1.0).unwrap()).unwrap();
    assert_eq!(host(&m.net.forward(&x, None, false).unwrap()), plain);
    assert_ne!(
        host(&m.net.forward(&x, Some(&plan), false).unwrap()),
        masked
    );
    let g = m
        .net
        .forward(&x, Some(&plan), true)
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let gm = g
        .get(mt.as_tensor())
        .expect("masked pass reaches mask_token");
    assert!(
        gm.abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            > 0.0
    );
}

#[test]
fn pixels_under_a_masked_unit_do_not_reach_the_masked_logits() {
    let m = build(&spec(0.0), 3);
    let x = images(2, 4);
    let plan = unit_plan(2, 5);
    // Unit (r, c) of sample 0 covers pixels [4r, 4r+4) x [4c, 4c+4) (2x2 tokens of 2x2 px).
    let mask = plan.unit_mask(0).unwrap();
    let hidden = mask.iter().position(|&v| v == 1).unwrap();
    let shown = mask.iter().position(|&v| v == 0).unwrap();
    let bump = |unit: usize| {
        let (r, c) = (unit / 7, unit % 7);
        let mut v = host(&x);
        for y in 4 * r..4 * r + 4 {
            for xx in 4 * c..4 * c + 4 {
                v[y * 28 + xx] += 3.0;
            }
        }
        Tensor::from_vec(v, (2, 1, 28, 28), &Device::Cpu).unwrap()
    };
    let base = host(&m.net.forward(&x, Some(&plan), false).unwrap());
    assert_eq!(
        host(&m.net.forward(&bump(hidden), Some(&plan), false).unwrap()),
        base,
        "a hidden unit's pixels are replaced by the mask token"
    );
    assert_ne!(
        host(&m.net.forward(&bump(shown), Some(&plan), false).unwrap()),
        base
    );
    assert_ne!(
        host(&m.net.forward(&bump(hidden), None, false).unwrap()),
        host(&m.net.forward(&x, None, false).unwrap()),
        "the plain pass sees them"
    );
}

#[test]
fn wrong_plans_and_inputs_are_errors_naming_the_problem() {
    let m = build(&spec(0.0), 0);
    let x = images(2, 1);
    let keep = MaskPlan::KeepTokens {
        num_tokens: 49,
        keep_per_sample: 24,
        keep: (0..48).map(|i| i % 24).collect(),
    };
    let e = m
        .net
        .forward(&x, Some(&keep), true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("mask token") && e.contains("DropTokens"), "{e}");
    let other_grid = RandomUnitMask::new(0.5)
        .unwrap()
        .plan(2, TokenGrid::new(14, 14), &mut stream(0, 1, 0))
        .unwrap();
    let e = m
        .net
        .forward(&x, Some(&other_grid), true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("14x14") && e.contains("7x7"), "{e}");
    let e = m
        .net
        .forward(&x, Some(&unit_plan(3, 0)), true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("3 samples"), "{e}");
    let e = m
        .net
        .forward(&images(2, 1).reshape((2, 28, 28)).unwrap(), None, true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("batch, channels, height, width"), "{e}");
    let e = m
        .net
        .forward(
            &Tensor::zeros((2, 3, 28, 28), DType::F32, &Device::Cpu).unwrap(),
            None,
            true,
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("(1, 28, 28)"), "{e}");
}

#[test]
fn drop_path_acts_only_in_training_and_replays_from_its_seed() {
    let m = build(&spec(0.3), 0);
    let x = images(8, 2);
    let run = |train: bool, seed: u64| {
        m.net.reseed(seed);
        host(&m.net.forward(&x, None, train).unwrap())
    };
    let eval = run(false, 0);
    assert_eq!(eval, run(false, 1));
    assert_ne!(run(true, 1), eval);
    assert_eq!(run(true, 7), run(true, 7));
    assert_ne!(run(true, 7), run(true, 8));
    let plain = build(&spec(0.0), 0);
    assert_eq!(
        host(&plain.net.forward(&x, None, true).unwrap()),
        host(&plain.net.forward(&x, None, false).unwrap())
    );
}

#[test]
fn weight_decay_spares_norms_biases_tables_and_the_mask_token() {
    let m = build(&spec(0.0), 0);
    let decayed: Vec<String> = m
        .named_parameters()
        .into_iter()
        .filter(|(n, v)| m.decays(n, v.rank()))
        .map(|(n, _)| n)
        .collect();
    assert!(decayed.contains(&"layers.0.blocks.1.attn.qkv.weight".to_string()));
    assert!(decayed.contains(&"layers.1.downsample.reduction.weight".to_string()));
    assert!(decayed.contains(&"patch_embed.proj.weight".to_string()));
    assert!(decayed.contains(&"head.fc.weight".to_string()));
    assert!(!decayed
        .iter()
        .any(|n| n.contains("relative_position_bias_table") || n == "mask_token"));
    assert!(!decayed.iter().any(|n| n.ends_with(".bias")));
}

#[test]
fn layer_ids_follow_timms_group_matcher() {
    let m = build(&spec(0.0), 0);
    let id = |n: &str| m.net.layer_id(n);
    assert_eq!(id("patch_embed.proj.weight"), 0);
    assert_eq!(id("mask_token"), 0);
    assert_eq!(id("layers.0.blocks.0.norm1.weight"), 1);
    assert_eq!(id("layers.0.blocks.1.mlp.fc1.weight"), 2);
    assert_eq!(id("layers.1.downsample.norm.weight"), 3);
    assert_eq!(id("layers.1.blocks.0.attn.qkv.weight"), 3);
    assert_eq!(id("layers.1.blocks.1.attn.qkv.weight"), 4);
    assert_eq!(id("norm.weight"), 5);
    assert_eq!(id("head.fc.weight"), 5);
    assert_eq!(m.net.num_layers(), 5);
}

#[test]
fn a_timm_state_dict_loads_with_the_mask_token_allowed_missing() {
    let src = build(&spec(0.0), 1);
    let dst = build(&spec(0.0), 2);
    let mut sd: std::collections::HashMap<String, Tensor> =
        src.state_dict().unwrap().into_iter().collect();
    assert!(
        sd.remove("mask_token").is_some(),
        "checkpoints hold the mask token"
    );
    let e = dst
        .load_state_dict(&sd, "timm.safetensors", &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("timm.safetensors") && e.contains("mask_token"),
        "{e}"
    );
    let allow = LoadOptions {
        allow_missing: vec!["mask_token".into()],
        ..LoadOptions::default()
    };
    dst.load_state_dict(&sd, "timm.safetensors", &allow)
        .unwrap();
    let x = images(2, 3);
    assert_eq!(
        host(&dst.net.forward(&x, None, false).unwrap()),
        host(&src.net.forward(&x, None, false).unwrap())
    );
}

#[test]
fn kwargs_override_swin_fields() {
    let kw: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(r#"{"depths": [2, 4], "mask_unit": 7}"#).unwrap();
    let s = spec(0.0).with_kwargs(&kw).unwrap();
    let ModelArch::Swin(c) = &s.arch else {
        panic!("swin_fmnist_small is a Swin")
    };
    assert_eq!((c.depths.clone(), c.mask_unit), (vec![2, 4], 7));
    assert_eq!(build(&s, 0).net.token_grid(), TokenGrid::new(2, 2));
    let bad: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(r#"{"mask_unit": 3}"#).unwrap();
    let e = spec(0.0).with_kwargs(&bad).unwrap_err().to_string();
    assert!(e.contains("mask_unit"), "{e}");
}
