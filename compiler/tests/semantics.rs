//! The meaning of checked recipes, tested through `compile`: losses against hand-computed
//! formulas, schedules through the reference interpreter, inference of lambda parameters from
//! the data, defaults filled, overrides, and several errors in one run.

// Parallel columns are indexed together in the hand-computed formulas.
#![allow(clippy::needless_range_loop)]

use recipe_compiler::compile;
use recipe_compiler::diag::Source;
use recipe_compiler::interp::{Interp, Value as IV};
use recipe_compiler::ir::FuncId;
use recipe_compiler::program::{LossTerm, Program, Value};
use recipe_compiler::tensor::{EvalInputs, Groups};
use std::collections::HashMap;

const HEAD: &str = "recipe \"t\" { seed = 3 }\nmodel m = tiny_lm()\ndata d = synth.addition(digits = 1..=2, count = 10)\ndata prefs = best_worst_pairs(synth.rated_responses())\n";

fn program(body: &str) -> Program {
    program_with(body, &[])
}

fn program_with(body: &str, overrides: &[(&str, &str)]) -> Program {
    let source = Source::new("t.recipe", format!("{HEAD}{body}"));
    let overrides: Vec<(String, String)> = overrides.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    compile(&source, &overrides).unwrap_or_else(|errors| {
        panic!("{:#?}", errors.iter().map(|d| (d.code, d.message.clone(), d.help.clone())).collect::<Vec<_>>())
    })
}

fn errors(body: &str, overrides: &[(&str, &str)]) -> Vec<&'static str> {
    let source = Source::new("t.recipe", format!("{HEAD}{body}"));
    let overrides: Vec<(String, String)> = overrides.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    match compile(&source, &overrides) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.iter().map(|d| d.code).collect(),
    }
}

fn loss(p: &Program, name: &str) -> Vec<LossTerm> {
    match &p.decl(name).expect("declared").value {
        Value::Loss(terms) => terms.clone(),
        other => panic!("{name} is not a loss: {other:?}"),
    }
}

fn batch() -> HashMap<String, Vec<f64>> {
    let cols = [
        ("policy_chosen", vec![-3.0, -5.0]),
        ("policy_rejected", vec![-4.0, -4.5]),
        ("ref_chosen", vec![-3.5, -5.0]),
        ("ref_rejected", vec![-3.9, -4.0]),
        ("len_chosen", vec![3.0, 4.0]),
        ("len_rejected", vec![2.0, 5.0]),
        ("wpo_chosen", vec![-0.2, -0.3]),
        ("wpo_rejected", vec![-0.1, -0.4]),
    ];
    cols.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// A loss's value on the two-pair `batch()` (its columns are per pair, `[G]`; the four
/// responses are only counted).
fn eval(terms: &[LossTerm], b: &HashMap<String, Vec<f64>>) -> f64 {
    let inputs = EvalInputs {
        batch: 4,
        group: b.clone(),
        groups: Some(Groups { index: vec![0, 1, 0, 1], count: 2 }),
        scalar: HashMap::from([("chosen_tokens".to_string(), b["len_chosen"].iter().sum())]),
        ..Default::default()
    };
    terms.iter().map(|t| t.weight * t.f.eval(&inputs, &|_, _| None).expect("evaluates")[0]).sum()
}

fn log_sigmoid(x: f64) -> f64 {
    -((-x).exp().ln_1p())
}

#[test]
fn mixed_loss_is_the_weighted_sum_of_its_parts() {
    let p = program("let mixed: Loss = 0.8 * dpo(beta = 0.1) + 0.2 * bco(beta = 0.1) + 1.0 * nll()\nstage s = preference(m, prefs, loss = mixed)\nrun s\n");
    let b = batch();
    let got = eval(&loss(&p, "mixed"), &b);
    let (mut dpo, mut bco, mut nll) = (0.0, 0.0, 0.0);
    for i in 0..2 {
        let (pc, pr, rc, rr) =
            (b["policy_chosen"][i], b["policy_rejected"][i], b["ref_chosen"][i], b["ref_rejected"][i]);
        let h = (pc - rc) - (pr - rr);
        dpo += -log_sigmoid(0.1 * h) / 2.0;
        bco += (-log_sigmoid(0.1 * (pc - rc)) - log_sigmoid(-0.1 * (pr - rr))) / 2.0;
        nll += -pc / (b["len_chosen"][0] + b["len_chosen"][1]);
    }
    let want = 0.8 * dpo + 0.2 * bco + nll;
    assert!((got - want).abs() < 1e-12, "got {got}, want {want}");
}

#[test]
fn ipo_simpo_and_wpo_match_their_formulas() {
    let p = program("let i: Loss = ipo(beta = 0.5)\nlet s: Loss = simpo(beta = 2.0, gamma = 0.5)\nlet w: Loss = wpo(beta = 0.1)\nstage st = preference(m, prefs)\nrun st\n");
    let b = batch();
    let (mut ipo, mut simpo, mut wpo) = (0.0, 0.0, 0.0);
    for i in 0..2 {
        let (pc, pr, rc, rr) =
            (b["policy_chosen"][i], b["policy_rejected"][i], b["ref_chosen"][i], b["ref_rejected"][i]);
        let (lc, lr) = (b["len_chosen"][i], b["len_rejected"][i]);
        let h = (pc - rc) - (pr - rr);
        let h_per_token = (pc - rc) / lc - (pr - rr) / lr;
        ipo += (h_per_token - 1.0 / (2.0 * 0.5)).powi(2) / 2.0;
        simpo += -log_sigmoid(2.0 * pc / lc - 2.0 * pr / lr - 0.5) / 2.0;
        let weight = (pc / lc - b["wpo_chosen"][i] + (pr / lr - b["wpo_rejected"][i])).exp();
        wpo += weight * -log_sigmoid(0.1 * h) / 2.0;
    }
    for (name, want) in [("i", ipo), ("s", simpo), ("w", wpo)] {
        let got = eval(&loss(&p, name), &b);
        assert!((got - want).abs() < 1e-12, "{name}: got {got}, want {want}");
    }
}

#[test]
fn a_scheduled_beta_becomes_a_per_batch_scalar_function() {
    let p =
        program("let l: Loss = dpo(beta = interpolate(0.1, 0.5))\nstage s = preference(m, prefs, loss = l)\nrun s\n");
    let t = &loss(&p, "l")[0].f;
    let scalar = t.nodes.iter().find_map(|n| match n {
        recipe_compiler::tensor::Node::Scalar { func, args } => Some((*func, args.clone())),
        _ => None,
    });
    let (func, args) = scalar.expect("beta is a scalar node");
    assert_eq!(args, vec!["step".to_string(), "total".to_string()]);
    let interp = Interp::new(&p.scalar).expect("valid IR");
    let beta = |step: i64| match interp.call(FuncId(func), &[IV::Int(step), IV::Int(100)]) {
        Ok(IV::Float(x)) => x,
        other => panic!("{other:?}"),
    };
    assert!((beta(0) - 0.1).abs() < 1e-12);
    assert!((beta(50) - 0.3).abs() < 1e-12);
}

#[test]
fn schedules_compile_to_scalar_ir_that_the_interpreter_runs() {
    let p = program("fn lr(step: Int, total: Int) -> Float = 1e-3 * warmup(step, 10) * cosine(step / total, floor = 0.1)\nstage s = sft(m, d, steps = 100, lr = lr)\nrun s\n");
    let Some(Value::Call { args, .. }) = p.decl("s").map(|d| &d.value) else { panic!("stage is a call") };
    let lr = args.iter().find(|(n, _)| n == "lr").map(|(_, v)| v.clone());
    let Some(Value::Scalar(id)) = lr else { panic!("lr is compiled: {lr:?}") };
    let interp = Interp::new(&p.scalar).expect("valid IR");
    let at = |step: i64| match interp.call(FuncId(id), &[IV::Int(step), IV::Int(100)]) {
        Ok(IV::Float(x)) => x,
        other => panic!("{other:?}"),
    };
    assert!((at(0) - 1e-4).abs() < 1e-12, "warm-up starts at 1/10 of the peak");
    assert!((at(100) - 1e-4).abs() < 1e-9, "cosine ends at the floor: {}", at(100));
    assert!((at(50) - 1e-3 * (0.1 + 0.9 * 0.5)).abs() < 1e-9, "half way: {}", at(50));
}

#[test]
fn lambda_parameters_are_typed_by_the_data_and_flattened_to_fields() {
    let p = program("stage s = preference(m, prefs, curriculum = buckets(by = |p| -p.gap, count = 2))\nrun s\n");
    let curriculum = p.decl("s").and_then(|d| d.value.arg("curriculum")).expect("curriculum");
    assert_eq!(curriculum.call_name(), Some("buckets"));
    // Every default filled in, by name.
    for arg in ["by", "count", "order", "mode", "rebind_reference"] {
        assert!(curriculum.arg(arg).is_some(), "buckets lacks {arg}");
    }
    let Some(Value::Scalar(id)) = curriculum.arg("by") else { panic!("by is compiled") };
    let f = &p.scalar.functions[*id as usize];
    assert_eq!(f.params.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), vec!["gap"]);
    // `reference` defaults to the policy.
    assert_eq!(p.decl("s").and_then(|d| d.value.arg("reference")), Some(&Value::Model("m".into())));
}

#[test]
fn rewards_see_the_row_and_the_rollout() {
    let p = program("stage s = rl(m, d, reward = |r| if trim(r.completion) == r.answer { 1.0 } else { 0.0 })\nrun s\n");
    let Some(Value::Scalar(id)) = p.decl("s").and_then(|d| d.value.arg("reward")) else { panic!() };
    let f = &p.scalar.functions[*id as usize];
    let mut names: Vec<&str> = f.params.iter().map(|p| p.name.as_str()).collect();
    names.sort();
    assert_eq!(names, vec!["answer", "completion"]);
}

#[test]
fn overrides_replace_lets_and_header_fields_and_are_checked() {
    let body = "let curriculum: Curriculum[Arith] = buckets(by = |r| float(r.digits))\nlet steps = 10\nstage s = sft(m, d, steps = steps, curriculum = curriculum)\nrun s\n";
    let p = program_with(body, &[("curriculum", "uniform()"), ("seed", "42"), ("steps", "20")]);
    assert_eq!(p.seed, 42);
    let stage = &p.decl("s").expect("stage").value;
    assert_eq!(stage.arg("curriculum").and_then(Value::call_name), Some("uniform"));
    assert_eq!(stage.arg("steps"), Some(&Value::Int(20)));
    assert_eq!(errors(body, &[("stesp", "3")]), vec!["recipe::override::unknown_key"]);
    assert_eq!(errors(body, &[("steps", "\"many\"")]), vec!["recipe::type::mismatch"]);
    assert_eq!(errors(body, &[("steps", "(")]).len(), 1);
}

#[test]
fn independent_errors_are_reported_together() {
    let codes = errors("stage s = sft(m, dd, stepz = 3)\nstage t = sft(s.model, d, lr = \"fast\")\nrun t -> s\n", &[]);
    for want in [
        "recipe::resolve::unknown_name",
        "recipe::call::unknown_argument",
        "recipe::type::mismatch",
        "recipe::run::order",
    ] {
        assert!(codes.contains(&want), "{want} missing from {codes:?}");
    }
}

#[test]
fn rounds_see_their_input_and_run_in_order() {
    let p = program("stage s = sft(m, d)\nrounds r = 2 from s.model {\n    stage p = self_pairs(r.input, d, judge = |x| exact(x.completion, x.answer))\n    stage t = preference(r.input, p, reference = r.input)\n}\nrun s -> r\n");
    assert_eq!(p.rounds.len(), 1);
    let r = &p.rounds[0];
    assert_eq!(r.count, 2);
    assert_eq!(r.from, Value::Stage { stage: "s".into(), field: Some("model".into()) });
    assert_eq!(r.stages[1].value.arg("reference"), Some(&Value::RoundInput("r".into())));
    assert_eq!(r.stages[1].value.arg("dataset"), Some(&Value::Stage { stage: "p".into(), field: Some("data".into()) }));
    assert_eq!(p.stage_order().len(), 2);
}

#[test]
fn tensors_never_flow_into_scalars() {
    let codes = errors(
        "fn f() -> Loss = |b| if mean(b.policy_chosen) > 0.0 { 1.0 } else { 0.0 }\nstage s = sft(m, d)\nrun s\n",
        &[],
    );
    assert_eq!(codes, vec!["recipe::type::tensor_in_scalar"]);
}

#[test]
fn builtins_fold_to_the_type_the_checker_gives() {
    // `clamp` on Ints is an Int (check/call.rs), so the folded `steps` is one: the runtime reads
    // it as an Int and the plan prints it without a decimal point.
    let p = program("stage s = sft(m, d, steps = clamp(500, 1, 20))\nrun s\n");
    assert_eq!(p.decl("s").unwrap().value.arg("steps"), Some(&Value::Int(20)));
    let plan = recipe_compiler::plan::render_text(&p);
    assert!(plan.lines().any(|l| l.trim() == "steps = 20,"), "{plan}");
    let p = program(
        "let lr = clamp(0.5, 0, 1)\nlet n = max(div(7, 2), -3)\nlet big = abs(-2)\nstage s = sft(m, d)\nrun s\n",
    );
    assert_eq!(p.decl("lr").unwrap().value, Value::Float(0.5));
    assert_eq!(p.decl("n").unwrap().value, Value::Int(3));
    assert_eq!(p.decl("big").unwrap().value, Value::Int(2));
}

#[test]
fn trigonometry_and_byte_counts_are_in_the_language() {
    // Folded at compile time, and lowered to scalar IR where they depend on the row or step.
    let p = program(concat!(
        "let c = cos(pi())\nlet s = sin(pi() / 2)\nlet n = len(\"héllo\")\nlet b = bytes(\"héllo\")\n",
        "fn lr(step: Int, total: Int) -> Float = 0.5 * (1.0 + cos(pi() * step / total))\n",
        "data short = filter(d, |r| bytes(r.prompt) <= 4)\n",
        "stage st = sft(m, short, lr = lr)\nrun st\n",
    ));
    assert_eq!(p.decl("c").unwrap().value, Value::Float(-1.0));
    assert_eq!(p.decl("s").unwrap().value, Value::Float(1.0));
    assert_eq!((&p.decl("n").unwrap().value, &p.decl("b").unwrap().value), (&Value::Int(5), &Value::Int(6)));
    let Some(Value::Scalar(lr)) = p.decl("st").unwrap().value.arg("lr") else { panic!("lr is not a function") };
    let interp = Interp::new(&p.scalar).unwrap();
    let at = |step: i64| match interp.call(FuncId(*lr), &[IV::Int(step), IV::Int(100)]) {
        Ok(IV::Float(x)) => x,
        other => panic!("{other:?}"),
    };
    assert_eq!((at(0), at(100)), (1.0, 0.0));
    assert!((at(50) - 0.5).abs() < 1e-15, "half way: {}", at(50));
    let Some(Value::Scalar(keep)) = p.decl("short").unwrap().value.arg("keep") else { panic!("keep is compiled") };
    let keep = interp.call(FuncId(*keep), &[IV::Str("é+1=".into())]);
    assert!(matches!(keep, Ok(IV::Bool(false))), "4 characters, 5 bytes: {keep:?}");
}

#[test]
fn fn_defaults_see_earlier_parameters_in_every_evaluator() {
    // The one inliner: a default may use an earlier parameter, whether the call is evaluated at
    // compile time, lowered to scalar IR or to a loss.
    let p = program(concat!(
        "fn scaled(x: Float, k: Float = 2.0 * x) -> Float = x + k\n",
        "let c = scaled(1.5)\n",
        "fn sched(step: Int, total: Int) -> Float = scaled(float(step))\n",
        "fn tscaled(x: Tensor, k: Tensor = 2.0 * x) -> Tensor = x + k\n",
        "let l: Loss = |b| mean(tscaled(b.policy_chosen))\n",
        "stage s = sft(m, d, lr = sched)\nstage t = preference(s.model, prefs, loss = l)\nrun s -> t\n",
    ));
    assert_eq!(p.decl("c").unwrap().value, Value::Float(4.5));
    let Some(Value::Scalar(f)) = p.decl("s").unwrap().value.arg("lr") else { panic!("lr is not a function") };
    let interp = Interp::new(&p.scalar).unwrap();
    assert_eq!(interp.call(FuncId(*f), &[IV::Int(2), IV::Int(10)]).unwrap(), IV::Float(6.0));
    let got = eval(&loss(&p, "l"), &batch());
    let want = 3.0 * (-3.0 + -5.0) / 2.0;
    assert!((got - want).abs() < 1e-12, "{got} vs {want}");
}

#[test]
fn policy_losses_read_the_rollout_batch_by_its_shapes() {
    use recipe_compiler::tensor::Shape;
    let p = program(concat!(
        "let g: PolicyLoss = grpo(beta = interpolate(0.0, 0.1), importance = sequence)\n",
        "let z: PolicyLoss = dapo()\nlet a: Advantages = group_relative(scale = batch)\n",
        "stage s = sft(m, d)\nrun s\n",
    ));
    let inputs = |name: &str| {
        let terms = loss(&p, name);
        assert_eq!(terms.len(), 1);
        let mut inputs: Vec<(String, Shape)> = terms[0].f.inputs().into_iter().map(|(n, s)| (n.into(), s)).collect();
        inputs.sort_by(|a, b| a.0.cmp(&b.0));
        (terms[0].name.clone(), inputs)
    };
    let field = |n: &str, s| (n.to_string(), s);
    assert_eq!(
        inputs("g"),
        (
            "grpo".into(),
            vec![
                field("advantage", Shape::Seq),
                field("old_token_logps", Shape::Token),
                field("ref_token_logps", Shape::Token),
                field("token_logps", Shape::Token),
            ]
        )
    );
    assert_eq!(p.decl("g").expect("declared").ty, "PolicyLoss");
    // TRL's default beta = 0 leaves the KL term, and the reference, out.
    assert_eq!(
        inputs("z"),
        (
            "dapo".into(),
            vec![
                field("advantage", Shape::Seq),
                field("old_token_logps", Shape::Token),
                field("token_logps", Shape::Token),
                field("tokens", Shape::Scalar)
            ]
        )
    );
    assert_eq!(inputs("a"), ("group_relative".into(), vec![field("reward", Shape::Seq)]));
    // A misspelt importance is an unknown name with the enum's constants as help.
    assert_eq!(
        errors("let l: PolicyLoss = grpo(importance = sequnce)\nstage s = sft(m, d)\nrun s\n", &[]),
        vec!["recipe::resolve::unknown_name"]
    );
}
