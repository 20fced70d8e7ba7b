//! The preference objective on a real checkpoint pair against TRL 1.16
//! (`preference_losses_reference.json`: policy `tiny-llama-sft5`, reference `tiny-llama`; see
//! `../shared/fixtures/README.md`): the pairs collate to TRL's ids, the log-probabilities match,
//! and losses evaluated through `train::preference::loss_on_all_rows` — the function
//! `recipe loss` prints — give TRL's loss and gradient norm.
//!
//! The fixtures are found at `$RECIPE_FIXTURES` or `$CARGO_MANIFEST_DIR/../../shared/fixtures`.
//! A missing fixture folder fails the tests (it is part of CI's checkout).

use candle_core::Device;
use recipe_compiler::column::Column;
use recipe_compiler::program::{LossTerm, Value as Program};
use recipe_compiler::tensor::{Axis, BinaryOp, Builder, Node, NodeId, Reduce, Shape, UnaryOp};
use recipe_runtime::data::Dataset;
use recipe_runtime::exec::args::Functions;
use recipe_runtime::exec::loss::{compile_loss, LossKind};
use recipe_runtime::model::{completion_logprobs, CausalLm, TokenBatch};
use recipe_runtime::train::preference::{loss_on_all_rows, Pairs, ScalarFns};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;

/// The stdlib expression of each TRL case (`TRL_CASES`), shared with the loss-only tests.
#[path = "losses.rs"]
mod losses;

fn fixtures() -> PathBuf {
    let dir = std::env::var_os("RECIPE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"));
    assert!(dir.join("preference_losses_reference.json").is_file(), "fixtures not found at {}", dir.display());
    dir
}

fn reference_json() -> Value {
    let path = fixtures().join("preference_losses_reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn load(name: &str) -> CausalLm {
    CausalLm::load(&fixtures().join(name), &Device::Cpu).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

/// The rows TRL's collator saw: the fixture records each response with its EOS text ("\n",
/// id 10) appended; the dataset rows had none, and the collator appended EOS.
fn dataset(fx: &Value) -> Dataset {
    let pairs = fx["pairs"].as_array().unwrap();
    let field = |name: &str| {
        let values = pairs.iter().map(|p| {
            let text = p[name].as_str().unwrap();
            Arc::from(if name == "prompt" { text } else { text.strip_suffix('\n').expect("ends with EOS text") })
        });
        (name.to_string(), Column::Str(values.collect()))
    };
    let columns = vec![field("prompt"), field("chosen"), field("rejected")];
    Dataset::new("fixture pairs", (0..pairs.len() as u64).collect(), columns).unwrap()
}

#[test]
fn the_fixture_strings_collate_to_trls_ids_and_log_probs() {
    let fx = reference_json();
    let policy = load("tiny-llama-sft5");
    let pairs = Pairs::tokenize(&dataset(&fx), policy.tokenizer(), 512).unwrap();
    for (r, p) in fx["pairs"].as_array().unwrap().iter().enumerate() {
        assert_eq!(pairs.prompt(r), ids(&p["prompt_ids"]), "prompt of pair {r}");
        assert_eq!(pairs.chosen(r), ids(&p["chosen_ids"]), "chosen of pair {r}");
        assert_eq!(pairs.rejected(r), ids(&p["rejected_ids"]), "rejected of pair {r}");
    }
    let rows: Vec<usize> = (0..pairs.len()).collect();
    let batch = TokenBatch::from_ids(&pairs.sequences(&rows), policy.tokenizer().pad_id(), &Device::Cpu).unwrap();
    let input_ids: Vec<Vec<u32>> = batch.input_ids.to_vec2().unwrap();
    let mask: Vec<Vec<f32>> = batch.completion_mask.to_vec2().unwrap();
    let trl = &fx["batch"];
    for (i, row) in input_ids.iter().enumerate() {
        assert_eq!(row, &ids(&trl["input_ids"][i]), "input_ids row {i}");
        let want: Vec<f32> = ids(&trl["completion_mask"][i]).iter().map(|&m| m as f32).collect();
        assert_eq!(mask[i], want, "completion_mask row {i}");
    }
    let logps = &fx["logps"];
    for (model, chosen, rejected) in
        [(&policy, "policy_chosen", "policy_rejected"), (&load("tiny-llama"), "ref_chosen", "ref_rejected")]
    {
        let (sum, _) = completion_logprobs(&model.frozen().unwrap(), &batch).unwrap();
        let got: Vec<f32> = sum.to_vec1().unwrap();
        let mut want = floats(&logps[chosen]);
        want.extend(floats(&logps[rejected]));
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((f64::from(*g) - w).abs() < 1e-4, "{chosen} / {rejected} [{i}]: {g} against TRL's {w}");
        }
    }
}

fn add(b: &mut Builder, node: Node) -> NodeId {
    b.add(node).unwrap()
}

/// TRL's sigmoid DPO over the sequence fields, written out node by node so that this test
/// checks the batch and the gradient path whatever the stdlib's `dpo` reads: the pair is the
/// group, and its margin is Σ ±(logps − ref_logps) over its two sequences.
fn dpo_by_hand(beta: f64) -> LossTerm {
    let mut b = Builder::default();
    let logps = add(&mut b, Node::Input { name: "logps".into(), shape: Shape::Seq });
    let reference = add(&mut b, Node::Input { name: "ref_logps".into(), shape: Shape::Seq });
    let chosen = add(&mut b, Node::Input { name: "chosen".into(), shape: Shape::Seq });
    let ratio = add(&mut b, Node::Binary(BinaryOp::Sub, logps, reference));
    let (two, one) = (b.constant(2.0), b.constant(1.0));
    let twice = add(&mut b, Node::Binary(BinaryOp::Mul, two, chosen));
    let sign = add(&mut b, Node::Binary(BinaryOp::Sub, twice, one));
    let signed = add(&mut b, Node::Binary(BinaryOp::Mul, sign, ratio));
    let margin = add(&mut b, Node::Reduce(Reduce::Sum, Axis::SeqToGroup, signed));
    let beta_node = b.constant(beta);
    let scaled = add(&mut b, Node::Binary(BinaryOp::Mul, beta_node, margin));
    let ls = add(&mut b, Node::Unary(UnaryOp::LogSigmoid, scaled));
    let neg = add(&mut b, Node::Unary(UnaryOp::Neg, ls));
    let out = add(&mut b, Node::Reduce(Reduce::Mean, Axis::GroupToScalar, neg));
    LossTerm { name: "dpo".into(), weight: 1.0, params: vec![("beta".into(), Program::Float(beta))], f: b.finish(out) }
}

fn case<'a>(fx: &'a Value, name: &str) -> &'a Value {
    fx["cases"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("case {name}"))
}

fn relative(got: f64, want: f64) -> f64 {
    (got - want).abs() / want.abs()
}

#[test]
fn dpo_loss_gradient_norm_and_metrics_match_trl() {
    let fx = reference_json();
    let (policy, reference) = (load("tiny-llama-sft5"), load("tiny-llama").into_frozen());
    let pairs = Arc::new(Pairs::tokenize(&dataset(&fx), policy.tokenizer(), 512).unwrap());
    let no_scalars: ScalarFns = Arc::new(|_, _| None);
    let report = loss_on_all_rows(&policy, &reference, pairs, vec![dpo_by_hand(0.1)], no_scalars, 0, 1).unwrap();
    let sigmoid = case(&fx, "sigmoid");
    let (loss, grad_norm) = (sigmoid["loss"].as_f64().unwrap(), sigmoid["grad_norm"].as_f64().unwrap());
    println!("dpo: loss {:.9} (TRL {loss:.9}), grad_norm {:.9} (TRL {grad_norm:.9})", report.loss, report.grad_norm);
    assert!(relative(report.loss, loss) < 1e-5, "loss {} against TRL's {loss}", report.loss);
    assert!(relative(report.grad_norm, grad_norm) < 1e-4, "grad_norm {} against TRL's {grad_norm}", report.grad_norm);
    let metrics = &sigmoid["trl_logged_metrics"];
    for (name, value) in &report.metrics {
        if let Some(want) = metrics[name.as_str()].as_f64() {
            // Rewards and log-probs are f32 sums of a few tokens: 1e-4 absolute, as log-probs.
            assert!((value - want).abs() < 1e-4, "{name}: {value} against TRL's {want}");
        }
    }
    for name in ["rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen"] {
        assert!(report.metrics.iter().any(|(n, _)| n == name), "{name} is reported");
    }
}

/// Every TRL case of the fixture through the model: the stdlib expression compiled as
/// `recipe loss` compiles it, one forward and backward pass of the policy over the 32
/// sequences, against TRL's loss (1e-5 relative) and gradient norm (1e-4 relative; 1e-3 for
/// the saturated forward-KL and JS extras, whose norms are about 2e-4, as the fixture says).
#[test]
fn every_trl_case_matches_through_the_model() {
    let fx = reference_json();
    let (policy, reference) = (load("tiny-llama-sft5"), load("tiny-llama").into_frozen());
    let pairs = Arc::new(Pairs::tokenize(&dataset(&fx), policy.tokenizer(), 512).unwrap());
    let mut worst = (0.0f64, 0.0f64);
    for &(name, expr) in losses::TRL_CASES {
        let loss = compile_loss(expr, &LossKind::Pairs, None).unwrap_or_else(|e| panic!("{expr}: {e:?}"));
        let scalars = Functions::numeric(&loss.functions);
        let report = loss_on_all_rows(&policy, &reference, pairs.clone(), loss.terms, scalars, 0, 1)
            .unwrap_or_else(|e| panic!("{expr}: {e}"));
        let trl = case(&fx, name);
        let (want_loss, want_norm) = (trl["loss"].as_f64().unwrap(), trl["grad_norm"].as_f64().unwrap());
        let (loss_rel, norm_rel) = (relative(report.loss, want_loss), relative(report.grad_norm, want_norm));
        println!(
            "{expr}: loss {:.9} (TRL {want_loss:.9}, {loss_rel:.1e}), grad_norm {:.9} (TRL {want_norm:.9}, {norm_rel:.1e})",
            report.loss, report.grad_norm
        );
        let norm_tol = if name.contains("forward_kl") || name.contains("js_divergence") { 1e-3 } else { 1e-4 };
        assert!(loss_rel < 1e-5, "{name} ({expr}): loss {} against TRL's {want_loss}", report.loss);
        assert!(norm_rel < norm_tol, "{name} ({expr}): grad_norm {} against TRL's {want_norm}", report.grad_norm);
        worst = (worst.0.max(loss_rel), if norm_tol == 1e-4 { worst.1.max(norm_rel) } else { worst.1 });
    }
    println!("worst relative differences: loss {:.1e}, grad_norm {:.1e}", worst.0, worst.1);
}
