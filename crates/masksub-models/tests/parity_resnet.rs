//! Parity with timm / PyTorch for the ResNet: the golden fixtures written by
//! `tools/parity/make_fixtures.py --only resnet` (`tools/parity/fixtures_resnet.py`; tensor list
//! in `tools/parity/README.md`). One BasicBlock net and one Bottleneck net, 2 blocks per stage,
//! 32 px, batch 16.
//!
//! Per fixture: strict loading of parameters AND BatchNorm buffers (the names are timm's
//! state_dict keys); eval-mode logits, plain and with zeroed pixel patches; the train-mode
//! logits of the main and the sub pass and the running statistics after each (both passes run
//! BatchNorm in train mode, so the sub pass updates the statistics again); one MaskSub step's
//! losses and every gradient; the parameters after one AdamW step; the eval-mode logits with the
//! updated parameters and running statistics.
//!
//! Metric: `max|rust - fixture| / (max|fixture| + 1e-6)` per tensor, at most 1e-4.
//! `cargo test --release -p masksub-models --test parity_resnet -- --nocapture` prints the table.

mod common;

use candle_core::{DType, Tensor};
use common::{adamw, host, rel_err, Fixture};
use masksub_core::{
    LossKind, MaskPlan, Optimizer, SubModel, SubModelForward, SubObjective, TokenGrid,
};
use masksub_models::{BlockType, LoadedModel, ModelArch, ResNetConfig};
use std::collections::{BTreeSet, HashMap};

const TOL: f64 = 1e-4;
/// param_after elements whose fixture gradient is below this are ill-conditioned: AdamW's first
/// step is `lr * g / (|g| + eps)`, so rounding noise in a tiny `g` moves it by up to ~lr.
const SMALL_GRAD: f64 = 1e-6;
const TOL_WELL_CONDITIONED: f64 = 1e-5;
const LR: f64 = 1e-3;
const WEIGHT_DECAY: f64 = 0.05;

impl Fixture {
    /// `<a>K` for parameters and `<b>K` for buffers, as one state dict.
    fn state(&self, params: &str, buffers: &str) -> HashMap<String, Tensor> {
        let mut sd = self.with_prefix(params);
        sd.extend(self.with_prefix(buffers));
        sd
    }

    fn config(&self) -> ResNetConfig {
        assert_eq!(self.meta::<String>("family"), "resnet");
        assert_eq!(
            self.meta::<f64>("bn_eps"),
            masksub_models::cnn_layers::BN_EPS
        );
        assert_eq!(
            self.meta::<f64>("bn_momentum"),
            masksub_models::cnn_layers::BN_MOMENTUM
        );
        ResNetConfig {
            block: self.meta::<BlockType>("block"),
            layers: self.meta("layers"),
            channels: self.meta("channels"),
            in_chans: self.meta("in_chans"),
            num_classes: self.meta("num_classes"),
            img_size: self.meta("img_size"),
            mask_patch_size: self.meta("mask_patch_size"),
            drop_path_rate: 0.0,
            zero_init_last: true,
        }
    }

    /// A model holding the state `state` (strictly loaded: every key, no allowances).
    fn model_with(&self, state: &HashMap<String, Tensor>) -> LoadedModel {
        self.strict_model(ModelArch::Resnet(self.config()), state)
    }

    fn model(&self) -> LoadedModel {
        self.model_with(&self.state("param.", "buffer."))
    }

    fn plan(&self) -> MaskPlan {
        let m = self.tensor("unit_mask");
        assert_eq!(m.dtype(), DType::I64);
        let (_, gh, gw) = m.dims3().unwrap();
        assert_eq!(vec![gh, gw], self.meta::<Vec<usize>>("mask_grid"));
        let masked: Vec<u8> = m
            .flatten_all()
            .unwrap()
            .to_vec1::<i64>()
            .unwrap()
            .into_iter()
            .map(|v| u8::try_from(v).unwrap())
            .collect();
        MaskPlan::MaskUnits {
            grid: TokenGrid::new(gh, gw),
            masked_per_sample: self.meta("n_masked"),
            masked,
        }
    }
}

struct Report {
    fixture: &'static str,
    rows: Vec<(String, f64, f64, String)>,
}

impl Report {
    fn row(&mut self, quantity: impl Into<String>, err: f64, tol: f64, note: impl Into<String>) {
        self.rows.push((quantity.into(), err, tol, note.into()));
    }

    fn tensor(&mut self, quantity: &str, got: &Tensor, want: &Tensor) {
        self.row(quantity, rel_err(got, want), TOL, "");
    }

    fn scalar(&mut self, quantity: &str, got: f32, want: f32) {
        let e = (got as f64 - want as f64).abs() / (want.abs() as f64 + 1e-6);
        self.row(quantity, e, TOL, format!("{got} vs {want}"));
    }

    /// Every tensor of `got` against `want` by name (the same name sets); the worst one.
    fn named(
        &mut self,
        quantity: &str,
        got: &HashMap<String, Tensor>,
        want: &HashMap<String, Tensor>,
    ) {
        let a: BTreeSet<&String> = got.keys().collect();
        let b: BTreeSet<&String> = want.keys().collect();
        assert_eq!(a, b, "{} {quantity}: name sets differ", self.fixture);
        let (mut err, mut worst) = (0.0f64, String::new());
        for (k, t) in got {
            // num_batches_tracked is an integer count: exact.
            let e = if t.dtype() == DType::I64 {
                let (x, y) = (
                    t.to_scalar::<i64>().unwrap(),
                    want[k].to_scalar::<i64>().unwrap(),
                );
                if x == y {
                    0.0
                } else {
                    f64::INFINITY
                }
            } else {
                rel_err(t, &want[k])
            };
            if e > err || worst.is_empty() {
                (err, worst) = (e.max(err), k.clone());
            }
        }
        self.row(
            format!("{quantity} ({} tensors)", got.len()),
            err,
            TOL,
            worst,
        );
    }

    fn finish(self) {
        let mut out = format!(
            "\n{}: relative error max|rust - fixture| / (max|fixture| + 1e-6)\n",
            self.fixture
        );
        for (q, e, t, n) in &self.rows {
            out += &format!("  {q:<46} {e:>10.3e} {t:>8.0e}  {n}\n");
        }
        println!("{out}");
        let failed: Vec<String> = self
            .rows
            .iter()
            .filter(|(_, e, t, _)| e.is_nan() || e > t)
            .map(|(q, e, t, n)| format!("{q} ({e:.3e} > {t:.0e}, {n})"))
            .collect();
        assert!(
            failed.is_empty(),
            "{}: over tolerance: {}",
            self.fixture,
            failed.join("; ")
        );
    }
}

fn buffers_of(model: &LoadedModel) -> HashMap<String, Tensor> {
    masksub_models::weights::state_dict(&model.buffers)
        .unwrap()
        .into_iter()
        .map(|(k, t)| (k, t.copy().unwrap()))
        .collect()
}

fn params_of(model: &LoadedModel) -> HashMap<String, Tensor> {
    model
        .named_parameters()
        .into_iter()
        .map(|(n, v)| (n, v.as_tensor().copy().unwrap()))
        .collect()
}

fn check_fixture(name: &'static str) {
    let fx = Fixture::load(name);
    let mut report = Report {
        fixture: name,
        rows: Vec::new(),
    };
    assert_eq!(fx.meta::<f64>("lr"), LR);
    assert_eq!(fx.meta::<f64>("weight_decay"), WEIGHT_DECAY);
    assert_eq!(fx.meta::<Vec<f64>>("betas"), vec![0.9, 0.999]);
    assert_eq!(fx.meta::<f64>("eps"), 1e-8);

    let x = fx.tensor("input").clone();
    let targets = fx.tensor("targets_soft").clone();
    let plan = fx.plan();
    let buffers0 = fx.with_prefix("buffer.");

    // --- Eval mode: running statistics, untouched --------------------------------------------
    let model = fx.model();
    let no_decay: BTreeSet<String> = model
        .named_parameters()
        .into_iter()
        .filter(|(n, v)| !model.decays(n, v.rank()))
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        no_decay,
        fx.meta::<BTreeSet<String>>("no_decay"),
        "{name}: decay groups"
    );
    assert_eq!(
        model.net.token_grid(),
        match &plan {
            MaskPlan::MaskUnits { grid, .. } => *grid,
            _ => unreachable!(),
        }
    );
    report.tensor(
        "logits_plain (eval)",
        &model.forward(&x, false).unwrap(),
        fx.tensor("logits_plain"),
    );
    let masked = model.net.forward(&x, Some(&plan), false).unwrap();
    report.tensor("logits_masked (eval)", &masked, fx.tensor("logits_masked"));
    report.named(
        "buffers after eval forwards == buffer.*",
        &buffers_of(&model),
        &buffers0,
    );

    // --- Train mode, pass by pass: logits and running statistics ------------------------------
    let model = fx.model();
    let z = model.forward_train(&x, None).unwrap();
    report.tensor("ce.logits_main (train)", &z, fx.tensor("ce.logits_main"));
    report.named(
        "ce.buffer_after_main",
        &buffers_of(&model),
        &fx.with_prefix("ce.buffer_after_main."),
    );
    let zs = model.forward_train(&x, Some(&plan)).unwrap();
    report.tensor(
        "ce.logits_sub (train, masked)",
        &zs,
        fx.tensor("ce.logits_sub"),
    );
    report.named(
        "ce.buffer_after (main, then sub)",
        &buffers_of(&model),
        &fx.with_prefix("ce.buffer_after."),
    );

    // --- One MaskSub step through the objective, then AdamW -----------------------------------
    let model = fx.model();
    let obj = SubObjective::new(
        SubModel::Masking {
            ratio: fx.meta("mask_ratio"),
        },
        LossKind::SoftCe,
    )
    .unwrap();
    let (losses, grads) = obj
        .step_with_plan(&model, &x, &targets, Some(&plan))
        .unwrap();
    report.scalar("ce.loss_main", losses.loss, fx.scalar("ce.loss_main"));
    report.scalar(
        "ce.loss_sub",
        losses.sub_loss.expect("sub loss"),
        fx.scalar("ce.loss_sub"),
    );
    report.scalar("ce.loss_total", losses.total, fx.scalar("ce.loss_total"));
    let g: HashMap<String, Tensor> = model
        .named_parameters()
        .into_iter()
        .map(|(n, v)| {
            let t = grads
                .get(v.as_tensor())
                .unwrap_or_else(|| panic!("no gradient for {n}"))
                .clone();
            (n, t)
        })
        .collect();
    let gf = fx.with_prefix("ce.grad.");
    report.named("ce.grad", &g, &gf);
    for v in masksub_models::weights::state_dict(&model.buffers)
        .unwrap()
        .values()
    {
        assert!(
            grads.get(v).is_none(),
            "{name}: a BatchNorm buffer got a gradient"
        );
    }
    report.named(
        "ce.buffer_after (objective step)",
        &buffers_of(&model),
        &fx.with_prefix("ce.buffer_after."),
    );

    let before = fx.with_prefix("param.");
    let mut opt = adamw(&model, LR, WEIGHT_DECAY);
    opt.step(&grads).unwrap();
    let after = params_of(&model);
    let want_after = fx.with_prefix("ce.param_after.");
    // The whole-tensor metric is shown but not asserted: it includes elements whose gradient is
    // analytically zero but holds rounding noise (a per-channel constant that a later train-mode
    // BatchNorm removes, e.g. `bn1.bias` of a channel whose weight is near 0 and whose ReLU
    // passes the bias), where AdamW's first step is +-lr either way. The split below asserts.
    report.named("ce.param_after", &after, &want_after);
    if let Some(last) = report.rows.last_mut() {
        last.2 = f64::INFINITY;
        last.3 += " (info)";
    }
    // Split by the fixture gradient (see SMALL_GRAD).
    let (mut well, mut well_at, mut step, mut step_at, mut n_small) =
        (0.0f64, String::new(), 0.0f64, String::new(), 0);
    for (k, t) in &after {
        let wd = if model.decays(k, t.rank()) {
            WEIGHT_DECAY
        } else {
            0.0
        };
        let (a, b, gfx, gr, p) = (
            host(t),
            host(&want_after[k]),
            host(&gf[k]),
            host(&g[k]),
            host(&before[k]),
        );
        let scale = b.iter().map(|y| y.abs()).fold(0.0, f64::max) + 1e-6;
        for i in 0..a.len() {
            if gfx[i].abs() >= SMALL_GRAD {
                let e = (a[i] - b[i]).abs() / scale;
                if e > well {
                    (well, well_at) = (e, format!("{k}[{i}]"));
                }
            } else {
                n_small += 1;
                let expect = p[i] * (1.0 - LR * wd) - LR * gr[i] / (gr[i].abs() + 1e-8);
                let s = (a[i] - expect).abs() / LR;
                if s > step {
                    (step, step_at) = (s, format!("{k}[{i}]"));
                }
            }
        }
    }
    report.row(
        format!("  where fixture |g| >= {SMALL_GRAD:.0e}"),
        well,
        TOL_WELL_CONDITIONED,
        well_at,
    );
    report.row(
        format!("  |g| < {SMALL_GRAD:.0e} ({n_small}): vs AdamW(rust g), /lr"),
        step,
        1e-3,
        step_at,
    );

    // Eval with this model's own updated weights and statistics: AdamW's sign-like first step on
    // the tiny-gradient elements above moves some weights by up to lr between any two correct
    // float32 runs (the generator's float64 re-run differs from the fixture by ~5e-4 here, this
    // port by ~1e-3), so this chain gets a loose bound (an eval that ignored the updated
    // statistics is off by far more); the strict check is the next one.
    let eval_after = model.forward(&x, false).unwrap();
    report.row(
        "ce.logits_eval_after (own step; chain)",
        rel_err(&eval_after, fx.tensor("ce.logits_eval_after")),
        1e-2,
        "",
    );
    // Eval mode with the fixture's updated parameters and running statistics.
    let updated = fx.model_with(&fx.state("ce.param_after.", "ce.buffer_after."));
    report.tensor(
        "ce.logits_eval_after (fixture state)",
        &updated.forward(&x, false).unwrap(),
        fx.tensor("ce.logits_eval_after"),
    );
    report.finish();
}

#[test]
fn resnet_basic_fixture_matches_timm() {
    check_fixture("resnet_basic");
}

#[test]
fn resnet_bottleneck_fixture_matches_timm() {
    check_fixture("resnet_bottleneck");
}
