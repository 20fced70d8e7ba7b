use super::batch::{self, tensor_fields, RefCache, StepTotals};
use super::Share;
use super::*;
use crate::data::Dataset;
use crate::model::{Device, LlamaConfig, Tensor};
use crate::rng::Rng;
use recipe_compiler::column::Column;
use recipe_compiler::tensor::{Axis, BinaryOp, Builder, Node, NodeId, Reduce, Shape, UnaryOp};

fn model(seed: u64) -> CausalLm {
    let cfg = LlamaConfig {
        hidden_size: 32,
        intermediate_size: 48,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        num_key_value_heads: 2,
        max_position_embeddings: 32,
        ..LlamaConfig::default()
    };
    CausalLm::tiny(cfg, &mut Rng::derive(seed, "preference-test"), &Device::Cpu).unwrap()
}

fn data(rows: &[(&str, &str, &str)]) -> Dataset {
    let col = |i: usize| Column::Str(rows.iter().map(|r| Arc::from([r.0, r.1, r.2][i])).collect());
    let columns = vec![("prompt".into(), col(0)), ("chosen".into(), col(1)), ("rejected".into(), col(2))];
    Dataset::new("pairs", (0..rows.len() as u64).collect(), columns).unwrap()
}

const ROWS: &[(&str, &str, &str)] = &[
    ("1+1=", "2", "11"),
    ("12+30=", "42", "7"),
    ("5+5=", "10", "100"),
    ("3+4=", "7", "8"),
    ("20+2=", "22", "2"),
    ("9+0=", "9", "90"),
];

fn pairs(m: &CausalLm) -> Arc<Pairs> {
    Arc::new(Pairs::tokenize(&data(ROWS), m.tokenizer(), 32).unwrap())
}

fn no_scalars() -> ScalarFns {
    Arc::new(|_, _| None)
}

fn add(b: &mut Builder, node: Node) -> NodeId {
    b.add(node).unwrap()
}

/// TRL's sigmoid DPO written over Seq fields with the pair as the group:
/// mean over pairs of −log σ(β Σ_{seq of the pair} ±(logps − ref_logps)).
fn dpo(beta: f64) -> LossTerm {
    let mut b = Builder::default();
    let logps = add(&mut b, Node::Input { name: "logps".into(), shape: Shape::Seq });
    let reference = add(&mut b, Node::Input { name: "ref_logps".into(), shape: Shape::Seq });
    let chosen = add(&mut b, Node::Input { name: "chosen".into(), shape: Shape::Seq });
    let ratio = add(&mut b, Node::Binary(BinaryOp::Sub, logps, reference));
    let two = b.constant(2.0);
    let one = b.constant(1.0);
    let twice = add(&mut b, Node::Binary(BinaryOp::Mul, two, chosen));
    let sign = add(&mut b, Node::Binary(BinaryOp::Sub, twice, one));
    let signed = add(&mut b, Node::Binary(BinaryOp::Mul, sign, ratio));
    let margin = add(&mut b, Node::Reduce(Reduce::Sum, Axis::SeqToGroup, signed));
    let beta_node = b.constant(beta);
    let scaled = add(&mut b, Node::Binary(BinaryOp::Mul, beta_node, margin));
    let ls = add(&mut b, Node::Unary(UnaryOp::LogSigmoid, scaled));
    let neg = add(&mut b, Node::Unary(UnaryOp::Neg, ls));
    let out = add(&mut b, Node::Reduce(Reduce::Mean, Axis::GroupToScalar, neg));
    LossTerm { name: "dpo".into(), weight: 1.0, params: vec![("beta".into(), Value::Float(beta))], f: b.finish(out) }
}

/// Every Seq and Token field summed into one number, so that the batch must provide them all.
fn reads_everything() -> LossTerm {
    let mut b = Builder::default();
    let mut total = b.constant(0.0);
    for (name, shape) in tensor_fields() {
        let axis = match shape {
            Shape::Seq => Axis::SeqToScalar,
            Shape::Token => Axis::TokenToScalar,
            _ => continue,
        };
        let x = add(&mut b, Node::Input { name: name.into(), shape });
        let m = add(&mut b, Node::Reduce(Reduce::Mean, axis, x));
        total = add(&mut b, Node::Binary(BinaryOp::Add, total, m));
    }
    LossTerm { name: "all".into(), weight: 0.5, params: Vec::new(), f: b.finish(total) }
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn the_batch_has_trls_layout() {
    let policy = model(1);
    let reference = policy.frozen().unwrap();
    let pairs = pairs(&policy);
    let rows = [1, 0, 3];
    // Every field: the Seq and Token ones summed, the Group ones each in a term of its own.
    let mut terms = vec![reads_everything()];
    for (name, shape) in tensor_fields() {
        if shape == Shape::Group {
            terms.push(LossTerm { f: input_term(name), ..reads_everything() });
        }
    }
    let reads = batch::reads(&terms).unwrap();
    assert!(batch::reads_wpo(&reads) && reads.has("ref_token_logps"));
    let mut cache = RefCache::new(pairs.len(), true);
    cache.fill(&reference, &pairs, &rows, 2).unwrap();
    assert_eq!((cache.passes, cache.rows), (2, 3), "3 rows, 2 per pass");
    let totals = StepTotals::of(&pairs, [&rows[..]]);
    let b = batch::build(&policy, &pairs, &rows, &cache, &reads, &totals).unwrap();
    let p = rows.len();
    assert_eq!(b.groups.index, vec![0, 1, 2, 0, 1, 2], "the pair is the group");
    assert_eq!(b.groups.count, p);
    assert_eq!(values(&b.seq["chosen"]), vec![1.0, 1.0, 1.0, 0.0, 0.0, 0.0]);
    // "42"+EOS, "2"+EOS, "7"+EOS then "7"+EOS, "11"+EOS, "8"+EOS.
    assert_eq!(values(&b.seq["len"]), vec![3.0, 2.0, 2.0, 2.0, 3.0, 2.0]);
    assert_eq!(totals, StepTotals { tokens: 14.0, sequences: 6.0, groups: 3.0, chosen_tokens: 7.0 });
    assert_eq!(b.scalar["chosen_tokens"], 7.0);

    let (_, t) = b.tokens.dims().unwrap();
    let mask = values(b.mask());
    let position = values(&b.token["position"]);
    for i in 0..2 * p {
        let start = b.tokens.prompt_lens[i];
        let len = b.tokens.completion_lens[i];
        for s in 0..t {
            let inside = s >= start && s < start + len;
            assert_eq!(mask[i * t + s], f32::from(u8::from(inside)), "mask of sequence {i} at {s}");
            let want = if inside { (s - start + 1) as f32 } else { 0.0 };
            assert_eq!(position[i * t + s], want, "1-based position of sequence {i} at {s}");
        }
    }
    // Per-token values sum to the sequence values; the reference (= the policy) agrees.
    let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-4);
    let token_sum = |name: &str| values(&b.token[name].sum(1).unwrap());
    assert!(close(&token_sum("token_logps"), &values(&b.seq["logps"])));
    assert!(close(&token_sum("ref_token_logps"), &values(&b.seq["ref_logps"])));
    assert!(close(&values(&b.seq["logps"]), &values(&b.seq["ref_logps"])), "reference = policy at the start");
    assert_eq!(values(&b.group["wpo_chosen"]), b.wpo.as_ref().unwrap()[..p].to_vec());
    for (name, shape) in tensor_fields() {
        let map = match shape {
            Shape::Seq => &b.seq,
            Shape::Token => &b.token,
            _ => &b.group,
        };
        let dims = map.get(name).unwrap_or_else(|| panic!("`{name}` is built")).dims().to_vec();
        let want = match shape {
            Shape::Seq => vec![2 * p],
            Shape::Token => vec![2 * p, t],
            _ => vec![p],
        };
        assert_eq!(dims, want, "`{name}` is {shape}");
    }

    // WPO's statistic against a direct computation from the logits of sequence 0.
    let logits = policy.forward(&b.tokens.input_ids).unwrap().to_dtype(candle_core::DType::F64).unwrap();
    let logits: Vec<Vec<Vec<f64>>> = logits.to_vec3().unwrap();
    let (start, len) = (b.tokens.prompt_lens[0], b.tokens.completion_lens[0]);
    let mut mean = 0.0;
    for s in start..start + len {
        let row = &logits[0][s - 1];
        let max = row.iter().cloned().fold(f64::MIN, f64::max);
        let z: f64 = row.iter().map(|x| (x - max).exp()).sum();
        mean += row.iter().map(|x| ((x - max).exp() / z).powi(2)).sum::<f64>().ln() / len as f64;
    }
    let got = f64::from(b.wpo.as_ref().unwrap()[0]);
    assert!((got - mean).abs() < 1e-4, "wpo statistic {got}, direct {mean}");
}

/// A term that reads one field of any kind (as its mean).
fn input_term(name: &str) -> recipe_compiler::tensor::TensorFn {
    let mut b = Builder::default();
    let x = add(&mut b, Node::Input { name: name.into(), shape: Shape::Seq });
    let m = add(&mut b, Node::Reduce(Reduce::Mean, Axis::SeqToScalar, x));
    b.finish(m)
}

#[test]
fn the_reference_is_scored_once_per_row_and_never_from_the_live_policy() {
    let mut policy = model(2);
    let reference = policy.frozen().unwrap();
    let pairs = pairs(&policy);
    let mut objective = PreferenceObjective::new("po", pairs.clone(), vec![dpo(0.1)], no_scalars()).unwrap();
    let mut first_margins: Option<Vec<f64>> = None;
    let mut first_loss = 0.0;
    for epoch in 0..3 {
        for step in 0..3u64 {
            let models = Models { policy: &policy, reference: Some(&reference) };
            let micro: Vec<Experience> = (0..2)
                .map(|m| {
                    let rows = vec![(2 * step as usize + m) % 6];
                    Experience {
                        example_ids: rows.iter().map(|&r| r as u64).collect(),
                        rows,
                        step,
                        total: 3,
                        rollouts: None,
                    }
                })
                .collect();
            objective.begin_step(&models, &micro).unwrap();
            for e in &micro {
                let out = objective.loss(&models, e).unwrap();
                assert_eq!(out.feedback.columns[0].1.len(), e.rows.len(), "one margin per row");
                if epoch == 0 && step == 0 {
                    // Each micro-batch's loss is its share of the step's mean.
                    first_loss += super::super::scalar(&out.loss).unwrap();
                    first_margins.get_or_insert_with(Vec::new).extend(&out.feedback.columns[0].1);
                }
                let _ = out.loss.backward().unwrap();
                let _ = policy.take_grads(&Default::default()).unwrap();
            }
        }
        // Move the policy: the cached reference must not follow it.
        policy = model(100 + epoch);
    }
    // Epoch 0: each step's two one-row micro-batches, one pass each; later epochs: none.
    assert_eq!(objective.reference_passes(), (6, 6), "each of the 6 rows scored once");
    assert!(first_margins.unwrap().iter().all(|m| m.abs() < 1e-6));
    assert!((first_loss - std::f64::consts::LN_2).abs() < 1e-5, "policy = reference: ln 2, got {first_loss}");
    let models = Models { policy: &policy, reference: Some(&reference) };
    let e = Experience { rows: vec![0, 1], example_ids: vec![0, 1], step: 0, total: 1, rollouts: None };
    let out = objective.loss(&models, &e).unwrap();
    assert_eq!(objective.reference_passes().1, 6, "cached rows are not scored again");
    assert!(out.feedback.columns[0].1.iter().any(|m| m.abs() > 1e-4), "a new policy moves away from the reference");
}

#[test]
fn step_totals_cover_every_micro_batch_of_the_step() {
    let policy = model(3);
    let reference = policy.frozen().unwrap();
    let pairs = pairs(&policy);
    let mut objective = PreferenceObjective::new("po", pairs.clone(), vec![dpo(0.1)], no_scalars()).unwrap();
    let models = Models { policy: &policy, reference: Some(&reference) };
    let exp = |rows: Vec<usize>| Experience {
        example_ids: rows.iter().map(|&r| r as u64).collect(),
        rows,
        step: 0,
        total: 1,
        rollouts: None,
    };
    let micro = [exp(vec![0, 1]), exp(vec![2])];
    objective.begin_step(&models, &micro).unwrap();
    assert_eq!(objective.reference_passes(), (2, 3), "2 rows per pass, as the largest micro-batch");
    let step = StepTotals::of(&pairs, [&[0usize, 1][..], &[2][..]]);
    let planned = Share { totals: step, step_wide: true, micro_batches: 2 };
    assert_eq!(objective.share_of(&[0, 1]), planned);
    let own = Share { totals: StepTotals::of(&pairs, [&[4usize][..]]), step_wide: false, micro_batches: 1 };
    assert_eq!(objective.share_of(&[4]), own, "not of this step");
    assert_eq!(objective.share_of(&[2]), planned);
    assert!(objective.plan.is_none(), "the step is over");
}

#[test]
fn metrics_have_trls_names_and_every_weighted_term() {
    let policy = model(4);
    let reference = model(5).into_frozen();
    let pairs = pairs(&policy);
    let terms = vec![dpo(0.1), reads_everything(), dpo(0.1)];
    let report = loss_on_all_rows(&policy, &reference, pairs.clone(), terms, no_scalars(), 0, 1).unwrap();
    let names: Vec<&str> = report.metrics.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "rewards/chosen",
            "rewards/rejected",
            "rewards/margins",
            "rewards/accuracies",
            "logps/chosen",
            "logps/rejected",
            "loss/dpo",
            "loss/all"
        ]
    );
    let metric = |n: &str| report.metrics.iter().find(|(k, _)| k == n).unwrap().1;
    let sum = metric("loss/dpo") + metric("loss/all");
    assert!((report.loss - sum).abs() < 1e-4 * report.loss.abs().max(1.0), "{} vs {sum}", report.loss);
    let margins = metric("rewards/chosen") - metric("rewards/rejected");
    assert!((metric("rewards/margins") - margins).abs() < 1e-6);
    assert!(report.grad_norm > 0.0 && report.grad_norm.is_finite());
    assert_eq!(report.pairs, ROWS.len());

    // The same loss through a frozen copy of the policy as its reference: DPO is ln 2.
    let same = policy.frozen().unwrap();
    let report = loss_on_all_rows(&policy, &same, pairs, vec![dpo(0.1)], no_scalars(), 0, 1).unwrap();
    assert!((report.loss - std::f64::consts::LN_2).abs() < 1e-5);
    assert_eq!(metric("rewards/accuracies").clamp(0.0, 1.0), metric("rewards/accuracies"));
}

#[test]
fn a_loss_reading_an_unknown_field_or_without_a_reference_is_refused() {
    let policy = model(6);
    let pairs = pairs(&policy);
    let bad = LossTerm { name: "mine".into(), weight: 1.0, params: Vec::new(), f: input_term("rating") };
    let err = PreferenceObjective::new("po", pairs.clone(), vec![bad], no_scalars()).err().unwrap();
    assert!(err.0.contains("`mine`") && err.0.contains("`rating`"), "{}", err.0);
    // A field of another batch record (a rollout's) is not a preference batch's.
    let rollout = LossTerm { name: "grpo".into(), weight: 1.0, params: Vec::new(), f: input_term("advantage") };
    let err = PreferenceObjective::new("po", pairs.clone(), vec![rollout], no_scalars()).err().unwrap();
    assert!(err.0.contains("`advantage`"), "{}", err.0);

    let mut objective = PreferenceObjective::new("po", pairs, vec![dpo(0.1)], no_scalars()).unwrap();
    let models = Models { policy: &policy, reference: None };
    let e = Experience { rows: vec![0], example_ids: vec![0], step: 0, total: 1, rollouts: None };
    assert!(matches!(objective.loss(&models, &e), Err(TrainError::Config { .. })));
}

#[test]
fn beta_is_the_first_terms_and_may_be_a_schedule() {
    let policy = model(7);
    let pairs = pairs(&policy);
    let scheduled = LossTerm { params: vec![("beta".into(), Value::Scalar(3))], ..dpo(0.1) };
    let nll = LossTerm { name: "nll".into(), params: Vec::new(), ..reads_everything() };
    let scalars: ScalarFns = Arc::new(|f, args| (f == 3).then(|| 0.1 + args[0] / args[1]));
    let objective = PreferenceObjective::new("po", pairs.clone(), vec![nll.clone(), scheduled], scalars).unwrap();
    assert_eq!(objective.beta(1, 4), 0.35, "the first term with a beta, at step 1 of 4");
    let objective = PreferenceObjective::new("po", pairs, vec![nll], no_scalars()).unwrap();
    assert_eq!(objective.beta(0, 1), 1.0, "no term has a beta");
}

/// The mean NLL of every completion token of the step (TRL's `sft` loss type).
fn token_nll(weight: f64) -> LossTerm {
    let mut b = Builder::default();
    let lp = add(&mut b, Node::Input { name: "token_logps".into(), shape: Shape::Token });
    let neg = add(&mut b, Node::Unary(UnaryOp::Neg, lp));
    let out = add(&mut b, Node::Reduce(Reduce::Mean, Axis::TokenToScalar, neg));
    LossTerm { name: "nll".into(), weight, params: Vec::new(), f: b.finish(out) }
}

/// One step over `micro` as the loop runs it: `begin_step`, then each micro-batch's loss and
/// gradient summed, metrics averaged over the micro-batches.
fn step(policy: &CausalLm, reference: &CausalLm, micro: &[Vec<usize>]) -> (f64, Vec<Vec<f32>>, Vec<(String, f64)>) {
    let pairs = pairs(policy);
    let mut objective = PreferenceObjective::new("po", pairs, vec![dpo(0.1), token_nll(0.5)], no_scalars()).unwrap();
    let models = Models { policy, reference: Some(reference) };
    let exps: Vec<Experience> = micro
        .iter()
        .map(|rows| Experience {
            rows: rows.clone(),
            example_ids: rows.iter().map(|&r| r as u64).collect(),
            step: 0,
            total: 1,
            rollouts: None,
        })
        .collect();
    objective.begin_step(&models, &exps).unwrap();
    let (mut loss, mut grads, mut metrics) = (0.0, Vec::<Vec<f32>>::new(), Vec::<(String, f64)>::new());
    for e in &exps {
        let out = objective.loss(&models, e).unwrap();
        loss += super::super::scalar(&out.loss).unwrap();
        let g = policy.take_grads(&out.loss.backward().unwrap()).unwrap();
        let g: Vec<Vec<f32>> = g.iter().map(values).collect();
        if grads.is_empty() {
            grads = g;
        } else {
            for (acc, x) in grads.iter_mut().zip(g) {
                acc.iter_mut().zip(x).for_each(|(a, x)| *a += x);
            }
        }
        super::super::add_scaled(&mut metrics, &out.metrics, 1.0 / exps.len() as f64);
    }
    (loss, grads, metrics)
}

/// `batch = 3, accumulate = 1` and the same rows as `batch = 1` then `batch = 2` give the same
/// loss, gradient and `loss/<term>` metrics, with responses of different lengths (a token mean
/// divides by the whole step's tokens).
#[test]
fn accumulation_gives_the_steps_loss_gradient_and_term_metrics() {
    let policy = model(8);
    let reference = model(9).into_frozen();
    let (one, one_grads, one_metrics) = step(&policy, &reference, &[vec![0, 1, 2]]);
    let (two, two_grads, two_metrics) = step(&policy, &reference, &[vec![0], vec![1, 2]]);
    assert!((one - two).abs() < 1e-5 * one.abs().max(1.0), "loss {one} vs {two}");
    for (a, b) in one_grads.iter().flatten().zip(two_grads.iter().flatten()) {
        assert!((a - b).abs() <= 1e-5 * a.abs().max(1e-3), "gradient {a} vs {b}");
    }
    let metric = |m: &[(String, f64)], n: &str| m.iter().find(|(k, _)| k == n).unwrap().1;
    for name in ["loss/dpo", "loss/nll"] {
        let (a, b) = (metric(&one_metrics, name), metric(&two_metrics, name));
        assert!((a - b).abs() < 1e-5, "{name}: {a} vs {b}");
    }
    let terms = metric(&two_metrics, "loss/dpo") + metric(&two_metrics, "loss/nll");
    assert!((terms - two).abs() < 1e-5, "the terms add up to the step's loss");
}
