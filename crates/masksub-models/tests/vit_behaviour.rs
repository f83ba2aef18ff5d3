//! Behaviour of the ViT and of one MaskSub step on registry presets with random init: shapes,
//! the keep-all identity, input errors, gradient coverage, and the stop-gradient on the teacher.

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, D};
use masksub_core::loss::smoothed_one_hot;
use masksub_core::rng::stream;
use masksub_core::{LossKind, MaskPlan, SubModel, SubObjective};
use masksub_models::registry::lookup;
use masksub_models::{GlobalPool, LoadedModel, ModelArch, ModelSpec, VitConfig};
use rand::{Rng, SeedableRng};
use std::panic::{catch_unwind, AssertUnwindSafe};

const B: usize = 4;

fn vit_cfg(spec: &ModelSpec) -> &VitConfig {
    match &spec.arch {
        ModelArch::Vit(c) => c,
        other => panic!("{} is not a ViT: {other:?}", spec.name),
    }
}

/// DeiT-III-like: `vit_fmnist_tiny` (no_embed_class, LayerScale 0.1, cls pooling, final norm),
/// 28x28x1, patch 7 -> 16 tokens, D 32, depth 2, drop_path 0.
fn deit3_like() -> ModelSpec {
    let spec = lookup("vit_fmnist_tiny").unwrap().with_drop_path(0.0);
    let c = vit_cfg(&spec);
    assert!(c.no_embed_class && c.init_values.is_some() && c.global_pool == GlobalPool::Token);
    spec
}

/// MAE-like: the same size with a cls slot in pos_embed, no LayerScale, avg pool + fc_norm.
fn mae_like() -> ModelSpec {
    let mut spec = deit3_like();
    spec.name = "vit_fmnist_tiny_mae".into();
    match &mut spec.arch {
        ModelArch::Vit(c) => {
            c.no_embed_class = false;
            c.init_values = None;
            c.global_pool = GlobalPool::Avg;
        }
        other => panic!("not a ViT: {other:?}"),
    }
    spec
}

fn build(spec: &ModelSpec) -> LoadedModel {
    spec.build(7, DType::F32, &Device::Cpu).unwrap()
}

fn randn(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn input(spec: &ModelSpec, b: usize) -> Tensor {
    let (c, h, w) = spec.input_shape();
    randn(&[b, c, h, w], 11)
}

/// Smoothed one-hot soft targets (B, C).
fn targets(spec: &ModelSpec, b: usize) -> Tensor {
    let labels: Vec<u32> = (0..b as u32)
        .map(|i| (3 * i + 1) % spec.num_classes() as u32)
        .collect();
    let labels = Tensor::from_vec(labels, b, &Device::Cpu).unwrap();
    smoothed_one_hot(&labels, spec.num_classes(), 0.1).unwrap()
}

fn num_tokens(spec: &ModelSpec) -> usize {
    vit_cfg(spec).grid().len()
}

/// Per sample `k` distinct, sorted, sample-dependent tokens.
fn plan_keep(spec: &ModelSpec, b: usize, k: usize) -> MaskPlan {
    let n = num_tokens(spec);
    let keep = (0..b)
        .flat_map(|s| {
            let mut idx: Vec<u32> = (0..k).map(|j| ((j * 2 + s) % n) as u32).collect();
            idx.sort_unstable();
            idx.dedup();
            assert_eq!(idx.len(), k);
            idx
        })
        .collect();
    MaskPlan::KeepTokens {
        num_tokens: n,
        keep_per_sample: k,
        keep,
    }
}

fn keep_all(spec: &ModelSpec, b: usize) -> MaskPlan {
    let n = num_tokens(spec);
    MaskPlan::KeepTokens {
        num_tokens: n,
        keep_per_sample: n,
        keep: (0..b).flat_map(|_| 0..n as u32).collect(),
    }
}

fn host(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims());
    host(a)
        .iter()
        .zip(host(b))
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

fn max_abs(t: &Tensor) -> f64 {
    host(t).iter().map(|x| x.abs()).fold(0.0, f64::max)
}

fn grad<'a>(model: &LoadedModel, grads: &'a GradStore, name: &str) -> &'a Tensor {
    let (_, var) = model
        .named_parameters()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no parameter `{name}`"));
    grads
        .get(var.as_tensor())
        .unwrap_or_else(|| panic!("no gradient for `{name}`"))
}

/// Run `f`, which must return an error (not panic, not succeed); returns the error message.
fn expect_error<T, E: std::fmt::Display>(what: &str, f: impl FnOnce() -> Result<T, E>) -> String {
    match catch_unwind(AssertUnwindSafe(f)) {
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("{what}: panicked instead of returning an error: {msg}")
        }
        Ok(Ok(_)) => panic!("{what}: succeeded, expected an error"),
        Ok(Err(e)) => e.to_string(),
    }
}

fn assert_mentions(what: &str, msg: &str, needles: &[&str]) {
    for n in needles {
        assert!(
            msg.contains(n),
            "{what}: error message does not mention `{n}`: {msg}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Shapes
// ---------------------------------------------------------------------------------------------

#[test]
fn output_and_feature_shapes_with_and_without_keep_indices() {
    for name in ["vit_fmnist_tiny", "vit_fmnist_small"] {
        let spec = lookup(name).unwrap();
        let model = build(&spec);
        let c = vit_cfg(&spec).clone();
        let (l, d, nc) = (c.grid().len(), c.embed_dim, c.num_classes);
        let x = input(&spec, B);
        let k = l / 2;
        let plan = plan_keep(&spec, B, k);
        for train in [false, true] {
            let plain = model.net.forward(&x, None, train).unwrap();
            assert_eq!(plain.dims(), &[B, nc], "{name} plain logits");
            let masked = model.net.forward(&x, Some(&plan), train).unwrap();
            assert_eq!(masked.dims(), &[B, nc], "{name} masked logits");
            let f = model.net.forward_features(&x, None, train).unwrap();
            assert_eq!(f.dims(), &[B, 1 + l, d], "{name} plain features");
            let fm = model.net.forward_features(&x, Some(&plan), train).unwrap();
            assert_eq!(fm.dims(), &[B, 1 + k, d], "{name} masked features");
            assert_eq!(
                model.net.forward_head(&fm).unwrap().dims(),
                &[B, nc],
                "{name} head of masked features"
            );
        }
        // A batch of one works too.
        let one = model.forward(&input(&spec, 1), false).unwrap();
        assert_eq!(one.dims(), &[1, nc]);
    }
    let mae = mae_like();
    let model = build(&mae);
    let x = input(&mae, B);
    let plan = plan_keep(&mae, B, 5);
    let fm = model.net.forward_features(&x, Some(&plan), false).unwrap();
    assert_eq!(fm.dims(), &[B, 6, 32]);
    let z = model.net.forward(&x, Some(&plan), false).unwrap();
    assert_eq!(z.dims(), &[B, 10]);
}

#[test]
fn keeping_every_token_reproduces_the_plain_forward_in_both_layouts() {
    for spec in [deit3_like(), mae_like()] {
        let model = build(&spec);
        let x = input(&spec, B);
        let all = keep_all(&spec, B);
        for train in [false, true] {
            let plain = model.net.forward(&x, None, train).unwrap();
            let kept = model.net.forward(&x, Some(&all), train).unwrap();
            let d = max_abs_diff(&plain, &kept);
            assert!(d <= 1e-6, "{} (train={train}): max diff {d:e}", spec.name);
            let fp = model.net.forward_features(&x, None, train).unwrap();
            let fk = model.net.forward_features(&x, Some(&all), train).unwrap();
            assert!(max_abs_diff(&fp, &fk) <= 1e-6, "{} features", spec.name);
        }
        // ... while a real mask changes the output.
        let plain = model.net.forward(&x, None, false).unwrap();
        let masked = model
            .net
            .forward(&x, Some(&plan_keep(&spec, B, 8)), false)
            .unwrap();
        assert!(
            max_abs_diff(&plain, &masked) > 1e-4,
            "{}: masking did not change the logits",
            spec.name
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

#[test]
fn wrong_inputs_and_plans_are_errors_that_say_what_is_wrong() {
    let spec = deit3_like();
    let model = build(&spec);
    let x = input(&spec, 2);

    // Input shape.
    let rank3 = randn(&[2, 28, 28], 1);
    let e = expect_error("rank-3 input", || model.net.forward(&rank3, None, false));
    assert_mentions(
        "rank-3 input",
        &e,
        &["[2, 28, 28]", "(batch, channels, height, width)"],
    );
    let rgb = randn(&[2, 3, 28, 28], 1);
    let e = expect_error("3 channels", || model.net.forward(&rgb, None, false));
    assert_mentions("3 channels", &e, &["[2, 3, 28, 28]", "(1, 28, 28)"]);
    let big = randn(&[2, 1, 32, 32], 1);
    let e = expect_error("32x32 image", || model.net.forward(&big, None, false));
    assert_mentions("32x32 image", &e, &["[2, 1, 32, 32]", "(1, 28, 28)"]);
    // With a plan the input is still checked.
    let plan = plan_keep(&spec, 2, 8);
    let e = expect_error("rgb input + plan", || {
        model.net.forward(&rgb, Some(&plan), false)
    });
    assert_mentions("rgb input + plan", &e, &["(1, 28, 28)"]);

    // Plan made for another token grid (7x7 = 49 tokens; the model has 4x4 = 16).
    let wrong_grid = MaskPlan::KeepTokens {
        num_tokens: 49,
        keep_per_sample: 8,
        keep: (0..2).flat_map(|_| 0..8u32).collect(),
    };
    let e = expect_error("plan for 49 tokens", || {
        model.net.forward(&x, Some(&wrong_grid), false)
    });
    assert_mentions("plan for 49 tokens", &e, &["49", "16"]);

    // Plan made for another batch size (3 samples, batch 2).
    let wrong_batch = plan_keep(&spec, 3, 8);
    let e = expect_error("plan for 3 samples", || {
        model.net.forward(&x, Some(&wrong_batch), false)
    });
    assert_mentions("plan for 3 samples", &e, &["3 samples", "batch has 2"]);

    // Keep index out of range (16 on a 16-token grid).
    let out_of_range = MaskPlan::KeepTokens {
        num_tokens: 16,
        keep_per_sample: 2,
        keep: vec![0, 5, 3, 16],
    };
    let e = expect_error("keep index 16", || {
        model.net.forward(&x, Some(&out_of_range), false)
    });
    assert_mentions("keep index 16", &e, &["keep index 16", "16 tokens"]);

    // The same errors surface through the MaskSub step (sub pass), not as panics.
    let obj = SubObjective::new(SubModel::Masking { ratio: 0.5 }, LossKind::SoftCe).unwrap();
    let t = targets(&spec, 2);
    let e = expect_error("step with out-of-range plan", || {
        obj.step_with_plan(&model, &x, &t, Some(&out_of_range))
    });
    assert_mentions("step with out-of-range plan", &e, &["keep index 16"]);
    let e = expect_error("step with wrong-grid plan", || {
        obj.step_with_plan(&model, &x, &t, Some(&wrong_grid))
    });
    assert_mentions("step with wrong-grid plan", &e, &["49", "16"]);
    let e = expect_error("step with rgb input", || {
        obj.step(&model, &rgb, &t, &mut stream(0, 1, 0))
    });
    assert_mentions("step with rgb input", &e, &["(1, 28, 28)"]);
    // Targets of the wrong shape.
    let t3 = targets(&spec, 3);
    let e = expect_error("step with 3 targets", || {
        obj.step(&model, &x, &t3, &mut stream(0, 1, 0))
    });
    assert_mentions(
        "step with 3 targets",
        &e,
        &["targets", "[2, 10]", "[3, 10]"],
    );
}

// ---------------------------------------------------------------------------------------------
// Gradients
// ---------------------------------------------------------------------------------------------

/// One MaskSub step with a seeded mask; every trainable parameter must get a gradient that is
/// non-zero, element by element (a single exact zero in a tensor would reveal an op that drops
/// part of the gradient, e.g. a gather without scatter-add). The one structural exception is
/// the key slice of `attn.qkv.bias` (elements D..2D): adding a constant to every key shifts a
/// query's scores uniformly, which softmax ignores, so its gradient is analytically zero; there
/// we only require it to be tiny relative to the rest of the tensor.
#[test]
fn every_parameter_gets_a_gradient_from_one_masksub_step_in_both_layouts() {
    for spec in [deit3_like(), mae_like()] {
        let model = build(&spec);
        let d = vit_cfg(&spec).embed_dim;
        let x = input(&spec, B);
        let t = targets(&spec, B);
        for loss in [LossKind::SoftCe, LossKind::Bce] {
            let obj = SubObjective::new(SubModel::Masking { ratio: 0.5 }, loss).unwrap();
            let (losses, grads) = obj.step(&model, &x, &t, &mut stream(0, 1, 0)).unwrap();
            assert!(losses.loss.is_finite() && losses.sub_loss.is_some_and(f32::is_finite));
            let params = model.named_parameters();
            assert!(params.len() > 20, "{}", params.len());
            let mut problems = Vec::new();
            for (name, var) in &params {
                let Some(g) = grads.get(var.as_tensor()) else {
                    problems.push(format!("{name}: no gradient"));
                    continue;
                };
                assert_eq!(g.dims(), var.dims(), "{name}");
                let v = host(g);
                if v.iter().any(|x| !x.is_finite()) {
                    problems.push(format!("{name}: non-finite gradient"));
                }
                let scale = v.iter().map(|x| x.abs()).fold(0.0, f64::max);
                if scale == 0.0 {
                    problems.push(format!("{name}: all-zero gradient"));
                    continue;
                }
                let zeros: Vec<usize> = if name.ends_with("attn.qkv.bias") {
                    let key = v[d..2 * d].iter().map(|x| x.abs()).fold(0.0, f64::max);
                    if key > 1e-5 * scale {
                        problems.push(format!(
                            "{name}: key-bias gradient {key:e} vs {scale:e} (should be ~0)"
                        ));
                    }
                    (0..v.len())
                        .filter(|&i| !(d..2 * d).contains(&i) && v[i] == 0.0)
                        .collect()
                } else {
                    (0..v.len()).filter(|&i| v[i] == 0.0).collect()
                };
                if !zeros.is_empty() {
                    problems.push(format!(
                        "{name}: {} of {} elements have an exactly zero gradient (first {:?})",
                        zeros.len(),
                        v.len(),
                        &zeros[..zeros.len().min(5)]
                    ));
                }
            }
            assert!(
                problems.is_empty(),
                "{} {loss:?}: {}",
                spec.name,
                problems.join("; ")
            );
        }
    }
}

/// Softmax over the last dim from candle primitives (differentiable, independent of the crate).
fn softmax(z: &Tensor) -> Tensor {
    let e = z
        .broadcast_sub(&z.max_keepdim(D::Minus1).unwrap())
        .unwrap()
        .exp()
        .unwrap();
    e.broadcast_div(&e.sum_keepdim(D::Minus1).unwrap()).unwrap()
}

fn sigmoid(z: &Tensor) -> Tensor {
    (z.neg().unwrap().exp().unwrap() + 1.0)
        .unwrap()
        .recip()
        .unwrap()
}

/// s(z) without detaching: the graph reaches back into z.
fn teacher_attached(loss: LossKind, z: &Tensor) -> Tensor {
    match loss {
        LossKind::SoftCe => softmax(z),
        LossKind::Bce => sigmoid(z),
    }
}

/// A copy of `t` with no graph at all (a constant made from the values).
fn constant(t: &Tensor) -> Tensor {
    Tensor::from_vec(
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        t.dims(),
        t.device(),
    )
    .unwrap()
}

/// The largest |g_a - g_b| over all parameters, and the largest |g_a|.
fn grad_diff(model: &LoadedModel, a: &GradStore, b: &GradStore) -> (f64, f64, String) {
    let (mut diff, mut scale, mut worst) = (0.0f64, 0.0f64, String::new());
    for (name, var) in model.named_parameters() {
        let ga = a
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name}: no gradient (a)"));
        let gb = b
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name}: no gradient (b)"));
        let d = max_abs_diff(ga, gb);
        if d > diff {
            (diff, worst) = (d, name);
        }
        scale = scale.max(max_abs(ga));
    }
    (diff, scale, worst)
}

/// The MaskSub step's gradient equals that of 0.5 main + 0.5 sub with the teacher a constant
/// computed beforehand from the main logits, and differs from the gradient with a teacher that
/// is NOT detached: no gradient flows into the main logits through the teacher.
#[test]
fn the_teacher_is_a_stop_gradient_constant() {
    for spec in [deit3_like(), mae_like()] {
        let model = build(&spec);
        let x = input(&spec, B);
        let t = targets(&spec, B);
        let plan = plan_keep(&spec, B, 8);
        for loss in [LossKind::SoftCe, LossKind::Bce] {
            let obj = SubObjective::new(SubModel::Masking { ratio: 0.5 }, loss).unwrap();
            let (losses, g_step) = obj.step_with_plan(&model, &x, &t, Some(&plan)).unwrap();

            // Teacher as a constant, computed before the graph of the reference loss exists.
            let z0 = model.net.forward(&x, None, true).unwrap();
            let teacher = constant(&teacher_attached(loss, &z0));
            let z = model.net.forward(&x, None, true).unwrap();
            let zs = model.net.forward(&x, Some(&plan), true).unwrap();
            let main = loss.loss(&z, &t).unwrap();
            let sub = loss.loss(&zs, &teacher).unwrap();
            let total = ((&main * 0.5).unwrap() + (&sub * 0.5).unwrap()).unwrap();
            let g_const = total.backward().unwrap();
            let scalar = |t: &Tensor| t.to_scalar::<f32>().unwrap();
            assert!((scalar(&main) - losses.loss).abs() < 1e-6);
            assert!((scalar(&sub) - losses.sub_loss.unwrap()).abs() < 1e-6);
            assert!((scalar(&total) - losses.total).abs() < 1e-6);

            let (d, scale, worst) = grad_diff(&model, &g_step, &g_const);
            println!(
                "{} {loss:?}: |g_step - g_const_teacher| = {d:.2e} (max|g| {scale:.2e}, at {worst})",
                spec.name
            );
            assert!(
                d <= 1e-6,
                "{} {loss:?}: step gradient differs from the constant-teacher gradient by {d:e} at {worst}",
                spec.name
            );

            // Without the detach, one backward of the same loss value.
            let z = model.net.forward(&x, None, true).unwrap();
            let zs = model.net.forward(&x, Some(&plan), true).unwrap();
            let main = loss.loss(&z, &t).unwrap();
            let sub = loss.loss(&zs, &teacher_attached(loss, &z)).unwrap();
            let total_attached = ((main * 0.5).unwrap() + (sub * 0.5).unwrap()).unwrap();
            assert!((scalar(&total_attached) - losses.total).abs() < 1e-6);
            let g_attached = total_attached.backward().unwrap();
            let (d, scale, worst) = grad_diff(&model, &g_step, &g_attached);
            println!(
                "{} {loss:?}: |g_step - g_attached_teacher| = {d:.2e} (max|g| {scale:.2e}, at {worst})",
                spec.name
            );
            assert!(
                d > 1e-3 * scale,
                "{} {loss:?}: the step gradient equals the non-detached one ({d:e} vs scale {scale:e}): \
                 gradient flows through the teacher",
                spec.name
            );
        }
    }
}

/// Hand derivation: d/db_head of 0.5 * CE(z_s, softmax(z)) is 0.5 * mean_b (softmax(z_s) -
/// softmax(z)) (the CE gradient w.r.t. logits is (softmax(z_s) - target) / B, and the head bias
/// adds to every logit). The sub term alone is the step's gradient minus half the gradient of
/// the main loss (a `SubModel::None` step). Likewise main: mean_b (softmax(z) - t); for BCE the
/// logit gradient is (sigmoid(z_s) - sigmoid(z)) / (B * C), summed over the batch for the bias.
#[test]
fn head_bias_gradient_of_the_sub_term_matches_the_hand_derivation() {
    for spec in [deit3_like(), mae_like()] {
        let model = build(&spec);
        let x = input(&spec, B);
        let t = targets(&spec, B);
        let plan = plan_keep(&spec, B, 8);
        let nc = spec.num_classes();
        for loss in [LossKind::SoftCe, LossKind::Bce] {
            let obj = SubObjective::new(SubModel::Masking { ratio: 0.5 }, loss).unwrap();
            let (_, g_step) = obj.step_with_plan(&model, &x, &t, Some(&plan)).unwrap();
            let plain = SubObjective::new(SubModel::None, loss).unwrap();
            let (l_main, g_main) = plain.step_with_plan(&model, &x, &t, None).unwrap();
            assert!(l_main.sub_loss.is_none());

            let gb_step = host(grad(&model, &g_step, "head.bias"));
            let gb_main = host(grad(&model, &g_main, "head.bias"));
            let sub_alone: Vec<f64> = gb_step
                .iter()
                .zip(&gb_main)
                .map(|(s, m)| s - 0.5 * m)
                .collect();

            let z = host(&model.net.forward(&x, None, true).unwrap());
            let zs = host(&model.net.forward(&x, Some(&plan), true).unwrap());
            let tv = host(&t);
            let (s_z, s_zs) = match loss {
                LossKind::SoftCe => (softmax_rows(&z, nc), softmax_rows(&zs, nc)),
                LossKind::Bce => (sigmoid_all(&z), sigmoid_all(&zs)),
            };
            // Per-logit normaliser of the mean: B for CE (mean over samples), B*C for BCE.
            let norm = match loss {
                LossKind::SoftCe => B as f64,
                LossKind::Bce => (B * nc) as f64,
            };
            for c in 0..nc {
                let want_sub: f64 = 0.5
                    * (0..B)
                        .map(|b| s_zs[b * nc + c] - s_z[b * nc + c])
                        .sum::<f64>()
                    / norm;
                let want_main: f64 = (0..B)
                    .map(|b| s_z[b * nc + c] - tv[b * nc + c])
                    .sum::<f64>()
                    / norm;
                assert!(
                    (sub_alone[c] - want_sub).abs() <= 1e-6,
                    "{} {loss:?} class {c}: sub-term head.bias grad {} vs hand {want_sub}",
                    spec.name,
                    sub_alone[c]
                );
                assert!(
                    (gb_main[c] - want_main).abs() <= 1e-6,
                    "{} {loss:?} class {c}: main head.bias grad {} vs hand {want_main}",
                    spec.name,
                    gb_main[c]
                );
            }
            // Not vacuous: the sub term contributes.
            assert!(sub_alone.iter().any(|v| v.abs() > 1e-4), "{sub_alone:?}");
        }
    }
}

fn softmax_rows(z: &[f64], n: usize) -> Vec<f64> {
    z.chunks(n)
        .flat_map(|r| {
            let m = r.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = r.iter().map(|v| (v - m).exp()).collect();
            let s: f64 = e.iter().sum();
            e.into_iter().map(move |v| v / s)
        })
        .collect()
}

fn sigmoid_all(z: &[f64]) -> Vec<f64> {
    z.iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect()
}
