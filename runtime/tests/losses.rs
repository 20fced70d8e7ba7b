//! The stdlib's preference losses against TRL 1.16: each recipe loss is compiled by
//! `recipe_compiler::compile`, evaluated on candle by `train::loss::evaluate` from the
//! per-sequence log-probs that TRL recorded (`preference_losses_reference.json`, see
//! `../shared/fixtures/README.md`), and compared with the loss TRL computed from them.
//!
//! The fixture is found at `$RECIPE_FIXTURES` or `$CARGO_MANIFEST_DIR/../../shared/fixtures`;
//! without it the test prints why and passes.

use candle_core::{DType, Device, Tensor};
use recipe_compiler::diag::Source;
use recipe_compiler::program::Value;
use recipe_compiler::tensor::TensorFn;
use recipe_runtime::train::loss::{evaluate, LossInputs};
use serde_json::Value as Json;
use std::collections::HashMap;
use std::path::PathBuf;

fn fixture() -> Option<Json> {
    let dir = std::env::var_os("RECIPE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"));
    let path = dir.join("preference_losses_reference.json");
    match std::fs::read_to_string(&path) {
        Ok(text) => Some(serde_json::from_str(&text).expect("the fixture is JSON")),
        Err(e) => {
            eprintln!("skipped: {} is not readable ({e})", path.display());
            None
        }
    }
}

/// The `loss` argument of stage `s` in a recipe that trains with `loss`.
fn compiled_loss(loss: &str) -> TensorFn {
    let text = format!(
        "recipe \"t\" {{ seed = 3 }}\nmodel m = tiny_lm()\ndata prefs = best_worst_pairs(synth.rated_responses())\nstage s = preference(m, prefs, loss = {loss})\nrun s\n"
    );
    let program = recipe_compiler::compile(&Source::new("t.recipe", text), &[])
        .unwrap_or_else(|errors| panic!("{loss}: {:?}", errors.iter().map(|d| &d.message).collect::<Vec<_>>()));
    let Some(Value::Call { args, .. }) = program.decl("s").map(|d| &d.value) else { panic!("stage s is a call") };
    match args.iter().find(|(n, _)| n == "loss") {
        Some((_, Value::Loss(terms))) if terms.len() == 1 => terms[0].f.clone(),
        other => panic!("{loss}: the loss argument is {other:?}"),
    }
}

fn column(v: &Json) -> Vec<f64> {
    v.as_array().expect("a list").iter().map(|x| x.as_f64().expect("a number")).collect()
}

#[test]
fn preference_losses_match_trl() {
    let Some(fx) = fixture() else { return };
    let logps = &fx["logps"];
    let rel = fx["tolerances"]["loss_rel"].as_f64().expect("loss_rel");
    let pairs = column(&logps["policy_chosen"]).len();
    // TRL's per-sequence statistics, as the batch fields the recipe losses read.
    let mut seq: HashMap<String, Tensor> = HashMap::new();
    for (field, key) in [
        ("policy_chosen", "policy_chosen"),
        ("policy_rejected", "policy_rejected"),
        ("ref_chosen", "ref_chosen"),
        ("ref_rejected", "ref_rejected"),
        ("len_chosen", "chosen_lengths"),
        ("len_rejected", "rejected_lengths"),
    ] {
        seq.insert(field.into(), Tensor::new(column(&logps[key]), &Device::Cpu).expect("a tensor"));
    }
    // TRL's bco_pair has no running reward mean; the recipe's bco with delta 0 is the same loss.
    seq.insert("bco_delta".into(), Tensor::zeros(pairs, DType::F64, &Device::Cpu).expect("zeros"));
    let inputs = LossInputs {
        batch: pairs,
        device: Device::Cpu,
        dtype: DType::F64,
        seq,
        token: HashMap::new(),
        mask: None,
        groups: None,
        scalars: &|_, _| None,
    };
    let trl: HashMap<&str, f64> = fx["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| (c["name"].as_str().expect("a name"), c["loss"].as_f64().expect("a loss")))
        .collect();
    for (recipe, case) in [
        ("dpo(beta = 0.1)", "sigmoid"),
        ("ipo(beta = 0.1)", "ipo"),
        ("hinge(beta = 0.1)", "hinge"),
        ("robust(beta = 0.1, eps = 0.1)", "robust"),
        ("bco(beta = 0.1)", "bco_pair"),
        // CPOTrainer's SimPO: beta 0.1, gamma 0.5, per-token averaged log-probs, no NLL term.
        ("simpo(beta = 0.1, gamma = 0.5)", "simpo (cpo_alpha 0)"),
    ] {
        let loss = compiled_loss(recipe);
        let got = evaluate(&loss, &inputs).expect("evaluates").to_vec0::<f64>().expect("a scalar loss");
        let want = trl[case];
        assert!((got - want).abs() <= rel * want.abs(), "{recipe}: {got} against TRL's {case} {want}");
        println!("{recipe}: {got:.9} (TRL {case}: {want:.9}, relative difference {:.1e})", (got - want).abs() / want);
    }
}
