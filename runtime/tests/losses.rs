//! Every stdlib preference loss against TRL 1.16: each recipe loss is compiled by
//! `recipe_compiler::compile`, evaluated on candle by `train::loss::evaluate` over the batch
//! TRL recorded (`preference_losses_reference.json`: per-sequence and per-token log-probs of
//! the policy and the reference; see `../shared/fixtures/README.md`), and compared with the
//! loss TRL computed from them, within the fixture's tolerance. The same expressions run
//! through the model (gradient norms included) in the `recipe loss` tests.
//!
//! The fixture is found at `$RECIPE_FIXTURES` or `$CARGO_MANIFEST_DIR/../../shared/fixtures`.

use candle_core::{DType, Device, Tensor};
use recipe_compiler::diag::Source;
use recipe_compiler::program::{LossTerm, Value};
use recipe_compiler::tensor::Groups;
use recipe_runtime::train::loss::{evaluate, LossInputs};
use serde_json::Value as Json;
use std::collections::HashMap;
use std::path::PathBuf;

/// TRL's case name in the fixture, and the recipe expression for the same loss.
pub const TRL_CASES: &[(&str, &str)] = &[
    ("sigmoid", "dpo(beta = 0.1)"),
    ("hinge", "hinge(beta = 0.1)"),
    ("ipo", "ipo(beta = 0.1)"),
    ("exo_pair", "exo(beta = 0.1, eps = 1e-3)"),
    ("nca_pair", "nca(beta = 0.1)"),
    ("robust", "robust(beta = 0.1, eps = 0.1)"),
    ("bco_pair", "bco(beta = 0.1)"),
    ("sppo_hard", "sppo_hard(beta = 0.1)"),
    ("aot", "aot(beta = 0.1)"),
    ("aot_unpaired", "aot_unpaired(beta = 0.1)"),
    ("apo_zero", "apo_zero(beta = 0.1)"),
    ("apo_down", "apo_down(beta = 0.1)"),
    ("discopop", "discopop(beta = 0.1, tau = 0.05)"),
    ("sft", "nll()"),
    ("sigmoid_norm", "dpo_norm(beta = 0.1)"),
    ("rpo (sigmoid + sft, weights [1,1] == rpo_alpha 1.0)", "dpo(beta = 0.1) + nll()"),
    ("wpo (sigmoid, use_weighting=True)", "wpo(beta = 0.1)"),
    ("mpo (sigmoid, bco_pair, sft; weights 0.8, 0.2, 1.0)", "0.8 * dpo(beta = 0.1) + 0.2 * bco(beta = 0.1) + nll()"),
    ("sigmoid, f_divergence_type=forward_kl", "dpo(beta = 0.1, divergence = forward_kl)"),
    ("sigmoid, f_divergence_type=js_divergence", "dpo(beta = 0.1, divergence = js_divergence)"),
    ("sigmoid, f_divergence_type=alpha_divergence (coef 0.5)", "dpo(beta = 0.1, divergence = alpha_divergence(0.5))"),
    ("sigmoid, ld_alpha=0.5 (LD-DPO)", "ld_dpo(beta = 0.1, alpha = 0.5)"),
    ("simpo (cpo_alpha 0)", "simpo(beta = 0.1, gamma = 0.5)"),
    ("simpo (cpo_alpha 1)", "simpo(beta = 0.1, gamma = 0.5) + nll()"),
    ("cpo sigmoid (cpo_alpha 1)", "cpo(beta = 0.1) + nll()"),
];

fn fixture() -> Json {
    let dir = std::env::var_os("RECIPE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"));
    let path = dir.join("preference_losses_reference.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} is not readable ({e}); set RECIPE_FIXTURES", path.display()));
    serde_json::from_str(&text).expect("the fixture is JSON")
}

/// The terms of the `loss` argument of a preference stage that trains with `loss`.
fn compiled_loss(loss: &str) -> Vec<LossTerm> {
    let text = format!(
        "recipe \"t\" {{ seed = 3 }}\nmodel m = tiny_lm()\ndata prefs = best_worst_pairs(synth_rated_responses())\nstage s = preference(m, prefs, loss = {loss})\nrun s\n"
    );
    let program = recipe_compiler::compile(&Source::new("t.recipe", text), &[])
        .unwrap_or_else(|errors| panic!("{loss}: {:?}", errors.iter().map(|d| &d.message).collect::<Vec<_>>()));
    let Some(Value::Call { args, .. }) = program.decl("s").map(|d| &d.value) else { panic!("stage s is a call") };
    match args.iter().find(|(n, _)| n == "loss") {
        Some((_, Value::Loss(terms))) => terms.clone(),
        other => panic!("{loss}: the loss argument is {other:?}"),
    }
}

fn column(v: &Json) -> Vec<f64> {
    v.as_array().expect("a list").iter().map(|x| x.as_f64().expect("a number")).collect()
}

fn tensor(v: Vec<f64>, dims: &[usize]) -> Tensor {
    Tensor::from_vec(v, dims, &Device::Cpu).expect("a tensor")
}

/// TRL's batch as the `PrefBatch` inputs: B = 32 responses (chosen first), P = 16 pairs.
fn trl_batch(fx: &Json) -> LossInputs<'static> {
    let logps = &fx["logps"];
    let p = column(&logps["policy_chosen"]).len();
    let cat = |a: &str, b: &str| [column(&logps[a]), column(&logps[b])].concat();
    let lens = cat("chosen_lengths", "rejected_lengths");
    let per_token = |key: &str| -> Vec<Vec<f64>> { logps[key].as_array().expect("rows").iter().map(column).collect() };
    let (policy_tokens, ref_tokens) = (per_token("policy_per_token"), per_token("ref_per_token"));
    let time = lens.iter().map(|&l| l as usize).max().expect("rows");
    let padded = |rows: &[Vec<f64>], f: &dyn Fn(usize, f64) -> f64| -> Vec<f64> {
        rows.iter().flat_map(|r| (0..time).map(move |t| r.get(t).map_or(0.0, |v| f(t, *v)))).collect()
    };
    let mask: Vec<f64> = lens.iter().flat_map(|&l| (0..time).map(move |t| ((t as f64) < l) as u8 as f64)).collect();
    let position: Vec<f64> =
        lens.iter().flat_map(|&l| (0..time).map(move |t| if (t as f64) < l { t as f64 + 1.0 } else { 0.0 })).collect();

    // WPO's weights: TRL recorded each response's weight w = exp(logps / len − wpo); the
    // normaliser that gives it is logps / len − ln w.
    let wpo = &fx["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .find(|c| c["name"].as_str().unwrap().starts_with("wpo"))
        .expect("the wpo case")["per_pair_extra"];
    let normaliser = |logp: &str, len: &str, weight: &str| -> Vec<f64> {
        let (l, n, w) = (column(&logps[logp]), column(&logps[len]), column(&wpo[weight]));
        (0..p).map(|i| l[i] / n[i] - w[i].ln()).collect()
    };
    let mut group: HashMap<String, Tensor> = HashMap::new();
    for (field, key) in [
        ("policy_chosen", "policy_chosen"),
        ("policy_rejected", "policy_rejected"),
        ("ref_chosen", "ref_chosen"),
        ("ref_rejected", "ref_rejected"),
        ("len_chosen", "chosen_lengths"),
        ("len_rejected", "rejected_lengths"),
    ] {
        group.insert(field.into(), tensor(column(&logps[key]), &[p]));
    }
    group
        .insert("wpo_chosen".into(), tensor(normaliser("policy_chosen", "chosen_lengths", "wpo_weights_chosen"), &[p]));
    group.insert(
        "wpo_rejected".into(),
        tensor(normaliser("policy_rejected", "rejected_lengths", "wpo_weights_rejected"), &[p]),
    );
    let chosen: Vec<f64> = (0..2 * p).map(|i| (i < p) as u8 as f64).collect();
    let seq = HashMap::from([
        ("logps".to_string(), tensor(cat("policy_chosen", "policy_rejected"), &[2 * p])),
        ("ref_logps".to_string(), tensor(cat("ref_chosen", "ref_rejected"), &[2 * p])),
        ("len".to_string(), tensor(lens.clone(), &[2 * p])),
        ("chosen".to_string(), tensor(chosen, &[2 * p])),
    ]);
    let token = HashMap::from([
        ("token_logps".to_string(), tensor(padded(&policy_tokens, &|_, v| v), &[2 * p, time])),
        ("ref_token_logps".to_string(), tensor(padded(&ref_tokens, &|_, v| v), &[2 * p, time])),
        ("position".to_string(), tensor(position, &[2 * p, time])),
    ]);
    let chosen_tokens: f64 = column(&logps["chosen_lengths"]).iter().sum();
    LossInputs {
        batch: 2 * p,
        device: Device::Cpu,
        dtype: DType::F64,
        scalar: HashMap::from([("chosen_tokens".to_string(), chosen_tokens)]),
        seq,
        group,
        token,
        mask: Some(tensor(mask, &[2 * p, time])),
        groups: Some(Groups { index: (0..2 * p as u32).map(|i| i % p as u32).collect(), count: p }),
        totals: None,
        scalars: &|_, _| None,
    }
}

#[test]
fn every_preference_loss_matches_trl() {
    let fx = fixture();
    let rel = fx["tolerances"]["loss_rel"].as_f64().expect("loss_rel");
    let inputs = trl_batch(&fx);
    let cases = fx["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), TRL_CASES.len(), "every fixture case has a recipe expression");
    for (case, recipe) in TRL_CASES {
        let want = cases.iter().find(|c| c["name"] == *case).unwrap_or_else(|| panic!("case {case}"))["loss"]
            .as_f64()
            .expect("a loss");
        let got: f64 = compiled_loss(recipe)
            .iter()
            .map(|t| t.weight * evaluate(&t.f, &inputs).expect("evaluates").to_vec0::<f64>().expect("a scalar"))
            .sum();
        // Recorded log-probs are rounded to 1e-9; an absolute floor of 1e-6 for losses near 0.
        let tolerance = (rel * want.abs()).max(1e-6);
        assert!((got - want).abs() <= tolerance, "{recipe}: {got} against TRL's {case} {want}");
        println!("{recipe}: {got:.9} (TRL {case}: {want:.9}, difference {:.1e})", (got - want).abs());
    }
}

#[test]
fn terms_carry_their_names_weights_and_beta() {
    let terms = compiled_loss("0.8 * dpo(beta = 0.2) + 0.2 * bco() + nll() + 0.5 * (|b: PrefBatch| mean(b.logps))");
    let summary: Vec<(&str, f64, Option<&Value>)> =
        terms.iter().map(|t| (t.name.as_str(), t.weight, t.beta())).collect();
    assert_eq!(
        summary,
        vec![
            ("dpo", 0.8, Some(&Value::Float(0.2))),
            ("bco", 0.2, Some(&Value::Float(0.1))),
            ("nll", 1.0, None),
            ("loss", 0.5, None),
        ]
    );
}
