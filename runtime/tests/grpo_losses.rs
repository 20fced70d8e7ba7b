//! Every stdlib policy-gradient loss against TRL 1.16's `GRPOTrainer`: the batch is the one TRL
//! recorded (`grpo_loss_reference.json`: 4 prompts × 4 completions, the per-token log-probs of
//! the policy and the reference, the completion mask and the rewards; see
//! `../shared/fixtures/README.md`). The advantages come from the stdlib's estimator
//! (`group_relative(scale)`, compared with TRL's), each case's loss expression is compiled by
//! `recipe_compiler::compile` and evaluated on candle by `train::loss::evaluate` in f64, and the
//! loss and TRL's `kl` metric are compared with TRL's within the fixture's tolerances. The
//! gradient with respect to the policy's log-probs is checked in form: with the old policy's
//! log-probs the policy's own, detached (TRL's `num_iterations = 1`), candle's backward agrees
//! with finite differences of the IR's f64 reference. Then through the model: the fixture's
//! rollouts on the real checkpoints (policy `tiny-llama-sft5`, reference `tiny-llama`), every
//! case evaluated by `train::rl::loss_on_rollouts` (what `recipe loss --rollouts` prints) gives
//! TRL's loss, gradient norm over the model's parameters and `kl` metric.
//!
//! The fixture is found at `$RECIPE_FIXTURES` or `$CARGO_MANIFEST_DIR/../../shared/fixtures`.

use candle_core::{DType, Device, Tensor, Var};
use recipe_compiler::diag::Source;
use recipe_compiler::program::{LossTerm, Value};
use recipe_compiler::tensor::{EvalInputs, Groups, TensorFn};
use recipe_runtime::model::CausalLm;
use recipe_runtime::train::loss::{evaluate, LossInputs};
use recipe_runtime::train::preference::ScalarFns;
use recipe_runtime::train::rl::advantages::AdvantageFn;
use recipe_runtime::train::rl::loss_on_rollouts;
use recipe_runtime::train::rl::rollouts::{Completion, Group, Rollouts};
use serde_json::Value as Json;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// TRL's case name in the fixture, and the recipe expression for the same loss. TRL's
/// `epsilon = 0.2, epsilon_high = 0.28, beta = 0.04` in every case; `scale_rewards` picks the
/// advantage estimator (`ADVANTAGES`).
pub const TRL_CASES: &[(&str, &str)] = &[
    ("grpo / scale_rewards=group", "grpo(eps_low = 0.2, eps_high = 0.28, beta = 0.04)"),
    ("grpo / scale_rewards=batch", "grpo(eps_low = 0.2, eps_high = 0.28, beta = 0.04)"),
    ("grpo / scale_rewards=none", "grpo(eps_low = 0.2, eps_high = 0.28, beta = 0.04)"),
    ("bnpo / scale_rewards=group", "bnpo(eps_low = 0.2, eps_high = 0.28, beta = 0.04)"),
    ("bnpo / scale_rewards=batch", "bnpo(eps_low = 0.2, eps_high = 0.28, beta = 0.04)"),
    ("bnpo / scale_rewards=none", "bnpo(eps_low = 0.2, eps_high = 0.28, beta = 0.04)"),
    ("dr_grpo / scale_rewards=group", "dr_grpo(eps_low = 0.2, eps_high = 0.28, beta = 0.04)"),
    ("dr_grpo / scale_rewards=batch", "dr_grpo(eps_low = 0.2, eps_high = 0.28, beta = 0.04)"),
    ("dr_grpo / scale_rewards=none", "dr_grpo(eps_low = 0.2, eps_high = 0.28, beta = 0.04)"),
    ("dapo / scale_rewards=group", "dapo(eps_low = 0.2, eps_high = 0.28, beta = 0.04)"),
    ("dapo / scale_rewards=batch", "dapo(eps_low = 0.2, eps_high = 0.28, beta = 0.04)"),
    ("dapo / scale_rewards=none", "dapo(eps_low = 0.2, eps_high = 0.28, beta = 0.04)"),
    ("cispo / scale_rewards=group", "cispo(eps_high = 0.28, beta = 0.04)"),
    ("cispo / scale_rewards=batch", "cispo(eps_high = 0.28, beta = 0.04)"),
    ("cispo / scale_rewards=none", "cispo(eps_high = 0.28, beta = 0.04)"),
    ("sapo / scale_rewards=group", "sapo(beta = 0.04)"),
    ("sapo / scale_rewards=batch", "sapo(beta = 0.04)"),
    ("sapo / scale_rewards=none", "sapo(beta = 0.04)"),
    ("luspo / scale_rewards=group", "luspo(eps_low = 0.2, eps_high = 0.28, beta = 0.04, importance = sequence)"),
    ("luspo / scale_rewards=batch", "luspo(eps_low = 0.2, eps_high = 0.28, beta = 0.04, importance = sequence)"),
    ("luspo / scale_rewards=none", "luspo(eps_low = 0.2, eps_high = 0.28, beta = 0.04, importance = sequence)"),
    ("vespo / scale_rewards=group", "vespo(beta = 0.04)"),
    ("vespo / scale_rewards=batch", "vespo(beta = 0.04)"),
    ("vespo / scale_rewards=none", "vespo(beta = 0.04)"),
    (
        "gspo (grpo + importance_sampling_level=sequence)",
        "grpo(eps_low = 0.2, eps_high = 0.28, beta = 0.04, importance = sequence)",
    ),
    (
        "grpo, use_bias_correction_kl=False",
        "grpo(eps_low = 0.2, eps_high = 0.28, beta = 0.04, bias_correction = false)",
    ),
    (
        "dapo, use_bias_correction_kl=False",
        "dapo(eps_low = 0.2, eps_high = 0.28, beta = 0.04, bias_correction = false)",
    ),
];

/// TRL's `scale_rewards`, and the stdlib advantage estimator for it.
pub const ADVANTAGES: &[(&str, &str)] = &[
    ("group", "group_relative(scale = group)"),
    ("batch", "group_relative(scale = batch)"),
    ("none", "group_relative(scale = none)"),
];

fn fixture() -> Json {
    let dir = std::env::var_os("RECIPE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"));
    let path = dir.join("grpo_loss_reference.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} is not readable ({e}); set RECIPE_FIXTURES", path.display()));
    serde_json::from_str(&text).expect("the fixture is JSON")
}

/// The one term of the tensor function `expr`, compiled as `let l: ty = expr` in a recipe.
fn compiled(expr: &str, ty: &str) -> LossTerm {
    let text = format!(
        "recipe \"t\" {{ seed = 3 }}\nmodel m = tiny_lm()\ndata d = synth.addition()\nlet l: {ty} = {expr}\nstage s = sft(m, d)\nrun s\n"
    );
    let program = recipe_compiler::compile(&Source::new("t.recipe", text), &[])
        .unwrap_or_else(|errors| panic!("{expr}: {:?}", errors.iter().map(|d| &d.message).collect::<Vec<_>>()));
    match program.decl("l").map(|d| &d.value) {
        Some(Value::Loss(terms)) if terms.len() == 1 => terms[0].clone(),
        other => panic!("{expr}: the let is {other:?}"),
    }
}

fn column(v: &Json) -> Vec<f64> {
    v.as_array().expect("a list").iter().map(|x| x.as_f64().expect("a number")).collect()
}

fn rows(v: &Json) -> Vec<f64> {
    v.as_array().expect("rows").iter().flat_map(column).collect()
}

fn tensor(v: &[f64], dims: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), dims, &Device::Cpu).expect("a tensor")
}

/// TRL's rollout batch in plain f64: B = 16 completions of 4 prompts, T = 6 positions.
struct Batch {
    b: usize,
    t: usize,
    seq: HashMap<String, Vec<f64>>,
    token: HashMap<String, Vec<f64>>,
    scalar: HashMap<String, f64>,
    mask: Vec<bool>,
    groups: Groups,
}

impl Batch {
    fn from_fixture(fx: &Json) -> Batch {
        let mask_rows = &fx["completion_mask"];
        let (b, t) = (mask_rows.as_array().expect("rows").len(), mask_rows[0].as_array().expect("a row").len());
        let mask: Vec<bool> = rows(mask_rows).iter().map(|v| *v != 0.0).collect();
        let len: Vec<f64> = (0..b).map(|i| mask[i * t..(i + 1) * t].iter().filter(|v| **v).count() as f64).collect();
        let truncated = fx["is_truncated"].as_array().expect("flags").iter().map(|v| v.as_bool().unwrap() as u8 as f64);
        let policy = rows(&fx["policy_per_token_logps"]);
        let group_size = fx["num_generations"].as_u64().expect("num_generations") as usize;
        Batch {
            b,
            t,
            seq: HashMap::from([
                ("reward".to_string(), column(&fx["rewards"])),
                ("len".to_string(), len.clone()),
                ("truncated".to_string(), truncated.collect()),
            ]),
            token: HashMap::from([
                ("token_logps".to_string(), policy.clone()),
                // num_iterations = 1: the old policy is the policy (detached where it matters).
                ("old_token_logps".to_string(), policy),
                ("ref_token_logps".to_string(), rows(&fx["ref_per_token_logps"])),
            ]),
            scalar: HashMap::from([
                ("tokens".to_string(), fx["num_items_in_batch"].as_f64().expect("num_items_in_batch")),
                ("max_tokens".to_string(), fx["max_completion_length"].as_f64().expect("max_completion_length")),
                ("accumulate".to_string(), 1.0),
            ]),
            mask,
            groups: Groups { index: (0..b).map(|i| (i / group_size) as u32).collect(), count: b / group_size },
        }
    }

    /// The reference evaluator's inputs.
    fn eval_inputs(&self) -> EvalInputs {
        EvalInputs {
            batch: self.b,
            time: self.t,
            scalar: self.scalar.clone(),
            seq: self.seq.clone(),
            group: HashMap::new(),
            token: self.token.clone(),
            mask: self.mask.clone(),
            groups: Some(self.groups.clone()),
            totals: None,
        }
    }

    /// The candle evaluator's inputs, F64 on the CPU.
    fn loss_inputs(&self) -> LossInputs<'static> {
        let (b, t) = (self.b, self.t);
        let mask: Vec<f64> = self.mask.iter().map(|v| *v as u8 as f64).collect();
        LossInputs {
            batch: b,
            device: Device::Cpu,
            dtype: DType::F64,
            scalar: self.scalar.clone(),
            seq: self.seq.iter().map(|(n, v)| (n.clone(), tensor(v, &[b]))).collect(),
            group: HashMap::new(),
            token: self.token.iter().map(|(n, v)| (n.clone(), tensor(v, &[b, t]))).collect(),
            mask: Some(tensor(&mask, &[b, t])),
            groups: Some(self.groups.clone()),
            totals: None,
            scalars: &|_, _| None,
        }
    }

    fn value(&self, f: &TensorFn) -> Vec<f64> {
        let out = evaluate(f, &self.loss_inputs()).expect("evaluates");
        out.flatten_all().and_then(|t| t.to_vec1::<f64>()).expect("values")
    }

    /// The batch with the advantages of `scale` from the stdlib's estimator.
    fn with_advantages(&self, scale: &str) -> Batch {
        let expr = ADVANTAGES.iter().find(|(s, _)| *s == scale).unwrap_or_else(|| panic!("scale {scale}")).1;
        let advantages = self.value(&compiled(expr, "Advantages").f);
        let mut seq = self.seq.clone();
        seq.insert("advantage".into(), advantages);
        Batch {
            seq,
            token: self.token.clone(),
            scalar: self.scalar.clone(),
            mask: self.mask.clone(),
            groups: self.groups.clone(),
            ..*self
        }
    }
}

fn case<'f>(fx: &'f Json, name: &str) -> &'f Json {
    fx["cases"].as_array().expect("cases").iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("case {name}"))
}

#[test]
fn the_advantage_estimators_match_trl() {
    let fx = fixture();
    let tolerance = fx["tolerances"]["advantages_abs"].as_f64().expect("advantages_abs");
    let batch = Batch::from_fixture(&fx);
    for (scale, expr) in ADVANTAGES {
        let got = batch.with_advantages(scale).seq["advantage"].clone();
        let want = column(&fx["advantages"][scale]);
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= tolerance, "{expr}: advantage {i} is {g}, TRL's {w}");
        }
        // The last group's rewards are all equal: its advantages are 0.
        assert!(got[12..].iter().all(|a| *a == 0.0), "{expr}: {:?}", &got[12..]);
    }
    // RLOO: each reward minus the mean of the other three of its group.
    let rloo = batch.value(&compiled("rloo()", "Advantages").f);
    let rewards = &batch.seq["reward"];
    for (i, a) in rloo.iter().enumerate() {
        let group = i / 4 * 4..i / 4 * 4 + 4;
        let others: f64 = group.filter(|j| *j != i).map(|j| rewards[j]).sum::<f64>() / 3.0;
        assert!((a - (rewards[i] - others)).abs() < 1e-12, "rloo {i}: {a}");
    }
}

#[test]
fn every_policy_loss_matches_trl() {
    let fx = fixture();
    let rel = fx["tolerances"]["loss_rel"].as_f64().expect("loss_rel");
    let cases = fx["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), TRL_CASES.len(), "every fixture case has a recipe expression");
    let plain = Batch::from_fixture(&fx);
    for (name, expr) in TRL_CASES {
        let c = case(&fx, name);
        let batch = plain.with_advantages(c["scale_rewards"].as_str().expect("scale_rewards"));
        let config = &c["config"];
        assert_eq!(config["beta"].as_f64(), Some(0.04), "{name}");
        assert_eq!((config["epsilon"].as_f64(), config["epsilon_high"].as_f64()), (Some(0.2), Some(0.28)), "{name}");

        let term = compiled(expr, "PolicyLoss");
        let got = batch.value(&term.f);
        assert_eq!(got.len(), 1, "{expr} is one value");
        let want = c["loss"].as_f64().expect("a loss");
        // Recorded log-probs are float32; an absolute floor of 1e-6 for losses near 0.
        let tolerance = (rel * want.abs()).max(1e-6);
        assert!((got[0] - want).abs() <= tolerance, "{expr}: {} against TRL's {name} {want}", got[0]);
        // The reference evaluator agrees with candle.
        let reference = term.f.eval(&batch.eval_inputs(), &|_, _| None).expect("the reference evaluates");
        assert!((reference[0] - got[0]).abs() <= 1e-12 * got[0].abs().max(1.0), "{expr}: reference {reference:?}");

        // TRL's `kl` metric: the per-token KL (with its bias correction) over the batch's tokens.
        let bias = config["use_bias_correction_kl"].as_bool().unwrap_or(true);
        let importance = config["importance_sampling_level"].as_str().unwrap_or("token");
        let kl_expr = format!("mean_kl(bias_correction = {bias}, importance = {importance})");
        let kl = batch.value(&compiled(&kl_expr, "PolicyLoss").f)[0];
        let want_kl = c["mean_kl"].as_f64().expect("mean_kl");
        assert!((kl - want_kl).abs() <= rel * want_kl.abs(), "{kl_expr}: {kl} against TRL's {want_kl}");
        println!(
            "{name}: {expr}: {:.9} (TRL {want:.9}, difference {:.1e}); kl {kl:.9} (TRL {want_kl:.9})",
            got[0],
            (got[0] - want).abs()
        );
    }
}

/// k3 per token is TRL's `per_token_kl`, and the names of the loss terms are the functions'.
#[test]
fn the_k3_estimator_is_trls_per_token_kl() {
    let fx = fixture();
    let batch = Batch::from_fixture(&fx);
    let k3 = batch.value(&compiled("|b| kl_k3(b.token_logps, b.ref_token_logps)", "PolicyLoss").f);
    let want = rows(&fx["per_token_kl"]);
    for (j, (g, w)) in k3.iter().zip(&want).enumerate() {
        // TRL computed exp(ref − pol) − (ref − pol) − 1 in float32 (terms up to e^4).
        assert!(!batch.mask[j] || (g - w).abs() <= 1e-5 * w.abs().max(1.0), "token {j}: {g} against TRL's {w}");
    }
    let k1 = batch.value(&compiled("|b| kl_k1(b.token_logps, b.ref_token_logps)", "PolicyLoss").f);
    let k2 = batch.value(&compiled("|b| kl_k2(b.token_logps, b.ref_token_logps)", "PolicyLoss").f);
    for j in (0..k3.len()).filter(|j| batch.mask[*j]) {
        let d = batch.token["ref_token_logps"][j] - batch.token["token_logps"][j];
        assert!((k1[j] + d).abs() < 1e-12 && (k2[j] - 0.5 * d * d).abs() < 1e-12, "token {j}");
        assert!(k2[j] >= 0.0 && k3[j] >= 0.0, "k2 and k3 are never negative");
    }
    let term = compiled("grpo(beta = 0.04)", "PolicyLoss");
    assert_eq!((term.name.as_str(), term.beta()), ("grpo", Some(&Value::Float(0.04))));
    assert_eq!(compiled("vespo()", "PolicyLoss").name, "vespo");
    assert_eq!(compiled("group_relative()", "Advantages").name, "group_relative");
}

/// d loss / d token_logps by candle's backward, with `old_token_logps` the same values detached,
/// and by central differences of the f64 reference with the old log-probs held fixed.
fn gradient(f: &TensorFn, batch: &Batch) -> (Vec<f64>, Vec<f64>) {
    let mut inputs = batch.loss_inputs();
    let var = Var::from_tensor(&inputs.token["token_logps"]).expect("a var");
    inputs.token.insert("token_logps".into(), var.as_tensor().clone());
    inputs.token.insert("old_token_logps".into(), var.as_tensor().detach());
    let grads = evaluate(f, &inputs).expect("evaluates").backward().expect("backward");
    let backward: Vec<f64> = grads
        .get(&var)
        .map(|g| g.flatten_all().and_then(|g| g.to_vec1::<f64>()).expect("values"))
        .unwrap_or_else(|| vec![0.0; batch.b * batch.t]);
    let reference = |e: &EvalInputs| f.eval(e, &|_, _| None).expect("the reference evaluates")[0];
    let mut e = batch.eval_inputs();
    let differences = (0..batch.b * batch.t)
        .map(|j| {
            let x = batch.token["token_logps"][j];
            let h = 1e-6 * x.abs().max(1.0);
            e.token.get_mut("token_logps").unwrap()[j] = x + h;
            let up = reference(&e);
            e.token.get_mut("token_logps").unwrap()[j] = x - h;
            let down = reference(&e);
            e.token.get_mut("token_logps").unwrap()[j] = x;
            (up - down) / (2.0 * h)
        })
        .collect();
    (backward, differences)
}

#[test]
fn gradients_through_the_ratio_agree_with_finite_differences() {
    let fx = fixture();
    let batch = Batch::from_fixture(&fx).with_advantages("group");
    // VESPO is left out: its weight phi(w) has no gradient by definition, which differences
    // of the reference cannot hold fixed.
    for expr in [
        "grpo(eps_high = 0.28, beta = 0.04)",
        "grpo(eps_high = 0.28, beta = 0.04, bias_correction = false)",
        "grpo(eps_high = 0.28, beta = 0.04, importance = sequence)",
        "bnpo(eps_high = 0.28, beta = 0.04)",
        "dr_grpo(eps_high = 0.28, beta = 0.04)",
        "dapo(eps_high = 0.28, beta = 0.04)",
        "luspo(eps_high = 0.28, beta = 0.04, importance = sequence)",
        "cispo(eps_high = 0.28, beta = 0.04)",
        "sapo(beta = 0.04)",
    ] {
        let f = compiled(expr, "PolicyLoss").f;
        let (backward, differences) = gradient(&f, &batch);
        for (j, (g, d)) in backward.iter().zip(&differences).enumerate() {
            assert!(
                (g - d).abs() <= 1e-6 + 1e-5 * d.abs(),
                "{expr}: d/d token_logps[{j}]: backward {g}, differences {d}"
            );
            if !batch.mask[j] {
                assert_eq!(*g, 0.0, "{expr}: padding {j} has no gradient");
            }
        }
    }
}

/// TRL's note: the ratio is 1 in value, not in gradient. With old = stop_gradient(policy), GRPO's
/// gradient at a token is -A / (len B) (+ the KL's), the bias correction changes the gradient
/// and not the loss, and a constant-0 `beta` leaves the reference out.
#[test]
fn the_ratio_is_one_in_value_not_in_gradient() {
    let fx = fixture();
    let batch = Batch::from_fixture(&fx).with_advantages("group");
    let plain = compiled("grpo(eps_high = 0.28)", "PolicyLoss").f;
    assert!(plain.inputs().iter().all(|(n, _)| *n != "ref_token_logps"), "beta = 0 reads no reference: {plain}");
    let (g, _) = gradient(&plain, &batch);
    let (a, len, b) = (&batch.seq["advantage"], &batch.seq["len"], batch.b as f64);
    assert_eq!(g.len(), batch.b * batch.t);
    for (j, got) in g.iter().enumerate() {
        let i = j / batch.t;
        let want = if batch.mask[j] { -a[i] / (len[i] * b) } else { 0.0 };
        assert!((got - want).abs() < 1e-12, "token {j}: {got} against {want}");
    }
    let with = compiled("grpo(eps_high = 0.28, beta = 0.04)", "PolicyLoss").f;
    let without = compiled("grpo(eps_high = 0.28, beta = 0.04, bias_correction = false)", "PolicyLoss").f;
    assert_eq!(batch.value(&with), batch.value(&without));
    assert_ne!(gradient(&with, &batch).0, gradient(&without, &batch).0);
}

// ---- through the model ----------------------------------------------------------------------

fn load(name: &str) -> CausalLm {
    let dir = std::env::var_os("RECIPE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"));
    CausalLm::load(&dir.join(name), &Device::Cpu).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn ids(v: &Json) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn no_scalars() -> ScalarFns {
    Arc::new(|_, _| None)
}

/// The fixture's 16 completions as 4 groups, with the advantages of `scale`.
fn rollouts(fx: &Json, scale: &str) -> Rollouts {
    let g = fx["num_generations"].as_u64().unwrap() as usize;
    let completions = fx["completion_ids_unpadded"].as_array().unwrap();
    let rewards = fx["rewards"].as_array().unwrap();
    let truncated = fx["is_truncated"].as_array().unwrap();
    let texts = fx["completions_text"].as_array().unwrap();
    let mut groups: Vec<Group> = (0..completions.len() / g)
        .map(|p| Group {
            row: p,
            example_id: p as u64,
            // Each completion row carries its prompt (left padding would show in the mask).
            prompt: ids(&fx["prompt_ids"][p * g]),
            completions: (p * g..(p + 1) * g)
                .map(|i| Completion {
                    ids: ids(&completions[i]),
                    text: texts[i].as_str().unwrap().to_string(),
                    reward: rewards[i].as_f64().unwrap(),
                    truncated: truncated[i].as_bool().unwrap(),
                    advantage: 0.0,
                    old_logps: None,
                    entropy: None,
                })
                .collect(),
        })
        .collect();
    assert!(fx["prompt_mask"].as_array().unwrap().iter().all(|m| ids(m).iter().all(|&v| v == 1)), "no prompt padding");
    let expr = ADVANTAGES.iter().find(|(s, _)| *s == scale).unwrap().1;
    let estimator = AdvantageFn::new(compiled(expr, "Advantages"), no_scalars()).unwrap();
    let values = estimator.over(&groups, 0, 1).unwrap();
    for (c, a) in groups.iter_mut().flat_map(|g| g.completions.iter_mut()).zip(values) {
        c.advantage = a;
    }
    Rollouts { groups, metrics: Vec::new(), reused: false }
}

#[test]
fn every_policy_loss_through_the_model_matches_trl() {
    let fx = fixture();
    let tol = &fx["tolerances"];
    let (loss_rel, grad_rel) = (tol["loss_rel"].as_f64().unwrap(), tol["grad_norm_rel"].as_f64().unwrap());
    let adv_abs = tol["advantages_abs"].as_f64().unwrap();
    let (policy, reference) = (load("tiny-llama-sft5"), load("tiny-llama"));
    let max_tokens = fx["max_completion_length"].as_u64().unwrap() as usize;
    let mut worst: (f64, f64) = (0.0, 0.0);
    for (name, expr) in TRL_CASES {
        let c = fx["cases"].as_array().unwrap().iter().find(|c| c["name"] == *name).unwrap();
        let scale = c["scale_rewards"].as_str().unwrap();
        let batch = rollouts(&fx, scale);
        let advantages: Vec<f64> = batch.completions().map(|(_, _, c)| c.advantage).collect();
        for (i, (got, want)) in advantages.iter().zip(fx["advantages"][scale].as_array().unwrap()).enumerate() {
            let want = want.as_f64().unwrap();
            assert!((got - want).abs() <= adv_abs, "{scale}: advantage {i} is {got}, TRL's {want}");
        }
        let report = loss_on_rollouts(
            &policy,
            &reference,
            batch,
            vec![compiled(expr, "PolicyLoss")],
            no_scalars(),
            max_tokens,
            (0, 1),
        )
        .unwrap_or_else(|e| panic!("{expr}: {e}"));
        let (want, want_grad) = (c["loss"].as_f64().unwrap(), c["grad_norm"].as_f64().unwrap());
        let loss_err = (report.loss - want).abs();
        assert!(
            loss_err <= (loss_rel * want.abs()).max(1e-6),
            "{name}: {expr}: loss {} against TRL's {want}",
            report.loss
        );
        let grad_err = (report.grad_norm - want_grad).abs() / want_grad;
        assert!(grad_err <= grad_rel, "{name}: {expr}: grad norm {} against TRL's {want_grad}", report.grad_norm);
        let kl = report.metrics.iter().find(|(k, _)| k == "kl").map(|(_, v)| *v).expect("the loss reads the reference");
        let want_kl = c["mean_kl"].as_f64().unwrap();
        assert!((kl - want_kl).abs() <= loss_rel * want_kl, "{name}: kl {kl} against TRL's {want_kl}");
        let clipped = report.metrics.iter().filter(|(k, _)| k.starts_with("clip_ratio/"));
        for (k, v) in clipped {
            let want = c["trl_logged_metrics"][k].as_f64().unwrap();
            assert_eq!(*v, want, "{name}: {k}");
        }
        worst = (worst.0.max(loss_err), worst.1.max(grad_err));
    }
    println!("worst loss difference {:.1e}, worst relative grad-norm difference {:.1e}", worst.0, worst.1);
}

#[test]
fn a_loss_that_reads_a_preference_field_is_refused() {
    let fx = fixture();
    let (policy, reference) = (load("tiny-llama-sft5"), load("tiny-llama"));
    let preference = compiled("dpo()", "Loss");
    let err = loss_on_rollouts(&policy, &reference, rollouts(&fx, "group"), vec![preference], no_scalars(), 6, (0, 1))
        .unwrap_err();
    assert!(err.to_string().contains("which a rollout batch does not have"), "{err}");
    assert_eq!(compiled("dapo(beta = 0.04)", "PolicyLoss").beta(), Some(&Value::Float(0.04)));
}
