//! Data loading, the step loop with the SFT objective, evaluation, non-finite detection and
//! checkpoint resume, on a tiny model (hidden 32, 2 layers) so the whole file runs in seconds.

use recipe_compiler::column::Column;
use recipe_runtime::artifact::{self, RunDir};
use recipe_runtime::checkpoint::{Checkpoint, MODEL_DIR, OPTIMIZER_FILE};
use recipe_runtime::data::jsonl::read_jsonl;
use recipe_runtime::data::{synth, BadRowPolicy, DataError, Dataset, FieldType, Schema};
use recipe_runtime::model::{completion_logprobs, sft_loss, CausalLm, Device, LlamaConfig, TokenBatch};
use recipe_runtime::optim::AdamW;
use recipe_runtime::progress::{Recorder, Silent};
use recipe_runtime::rng::Rng;
use recipe_runtime::train::{
    accumulate, run_stage, Curriculum, Evaluator, ExactMatch, Experience, LoopConfig, LossOn, LossOutput, Models,
    Objective, Ordered, PairAccuracy, Resume, RunContext, Schedule, SftObjective, StageParts, StepShape, TrainError,
    Uniform,
};
use serde_json::Value;
use std::path::Path;

fn tiny_model(seed: u64) -> CausalLm {
    let cfg = LlamaConfig {
        hidden_size: 32,
        intermediate_size: 64,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        max_position_embeddings: 64,
        ..LlamaConfig::default()
    };
    CausalLm::tiny(cfg, &mut Rng::derive(seed, "init"), &Device::Cpu).unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

// ---------------------------------------------------------------------------------------------
// Data

#[test]
fn jsonl_reads_exactly_the_declared_fields() {
    let dir = tempfile::tempdir().unwrap();
    let text = concat!(
        r#"{"prompt": "1+1=", "completion": "2", "level": 1, "tag": "a", "w": 1}"#,
        "\n\n",
        r#"{"prompt": "9+9=", "completion": "18", "level": 2, "w": 0.5}"#,
        "\n"
    );
    let path = write(dir.path(), "d.jsonl", text);
    let (data, report) = read_jsonl(&path, &Schema::prompt_completion(), BadRowPolicy::Fail).unwrap();
    assert_eq!(data.ids, vec![1, 3], "ids are line numbers; blank lines are not rows");
    assert_eq!(report.rows, 2);
    let names: Vec<&str> = data.columns.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["prompt", "completion"], "fields the row type does not declare are not read");
    // A row type that declares only `prompt` does not read `completion`, though every row has it.
    let prompts = Schema::new([("prompt", FieldType::Str)]);
    let (data, _) = read_jsonl(&path, &prompts, BadRowPolicy::Fail).unwrap();
    assert!(data.column("completion").is_none() && data.column("level").is_none());
    assert_eq!(data.sources.len(), 1);
    assert_eq!(data.sources[0].sha256, artifact::sha256_hex(text.as_bytes()));
}

#[test]
fn malformed_rows_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let text = concat!(
        r#"{"prompt": "a", "chosen": "b", "rejected": "c"}"#,
        "\n",
        r#"{"prompt": "a", "chosen": "b", "rejected": "c""#,
        "\n",
        r#"{"prompt": "a", "chosen": "b"}"#,
        "\n",
        r#"{"prompt": 3, "chosen": "b", "rejected": "c"}"#,
        "\n",
        "[1, 2]\n",
        r#"{"prompt": "x", "chosen": "y", "rejected": "z", "margin": 0.5}"#,
        "\n"
    );
    let path = write(dir.path(), "pairs.jsonl", text);
    let err = read_jsonl(&path, &Schema::preference(), BadRowPolicy::Fail).unwrap_err();
    assert!(matches!(err, DataError::BadJson { line: 2, .. }), "{err:?}");
    assert!(err.to_string().starts_with(&format!("{}:2:", path.display())), "{err}");
    assert_eq!(err.code(), "recipe::data::malformed");

    let (data, report) = read_jsonl(&path, &Schema::preference(), BadRowPolicy::Skip).unwrap();
    assert_eq!(data.ids, vec![1, 6]);
    assert_eq!(report.skipped, 4);
    let msgs: Vec<String> = report.examples.iter().map(|e| e.to_string()).collect();
    assert!(matches!(&report.examples[1], DataError::MissingField { line: 3, field, .. } if field == "rejected"));
    assert!(msgs[1].contains(":3: missing field `rejected`"), "{msgs:?}");
    assert!(matches!(
        &report.examples[2],
        DataError::WrongType { line: 4, field, expected: FieldType::Str, .. } if field == "prompt"
    ));
    assert!(msgs[2].contains(":4: field `prompt` should be String, found a number `3`"), "{msgs:?}");
    assert!(msgs[3].contains(":5: not a JSON object: found an array"), "{msgs:?}");
}

#[test]
fn missing_file_and_all_bad_rows_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.jsonl");
    let err = read_jsonl(&missing, &Schema::prompt_completion(), BadRowPolicy::Fail).unwrap_err();
    assert_eq!(err.code(), "recipe::data::io");
    assert!(err.to_string().contains("nope.jsonl"), "{err}");

    let path = write(dir.path(), "bad.jsonl", "{}\n{\"prompt\": 1}\n");
    let err = read_jsonl(&path, &Schema::prompt_completion(), BadRowPolicy::Skip).unwrap_err();
    assert!(matches!(err, DataError::Empty { skipped: 2, .. }), "{err:?}");
}

#[test]
fn synthetic_splits_do_not_leak() {
    let train = synth::addition(2..=2, 3000, 1).unwrap();
    let held = synth::addition(2..=2, 300, 99).unwrap();
    let clean = train.without_keys_of(&held, "prompt").unwrap();
    assert!(clean.len() < train.len(), "2-digit sums repeat, so some rows must be removed");
    let held_prompts: std::collections::HashSet<String> =
        (0..held.len()).map(|r| held.text_at("prompt", r).unwrap()).collect();
    assert!((0..clean.len()).all(|r| !held_prompts.contains(&clean.text_at("prompt", r).unwrap())));
    assert_eq!(synth::addition(2..=2, 3000, 1).unwrap(), train, "same arguments, same rows");
}

// ---------------------------------------------------------------------------------------------
// The step loop

fn sums(count: usize) -> Dataset {
    synth::addition(1..=1, count, 3).unwrap()
}

const SEED: u64 = 11;

fn sft_config(steps: u64) -> LoopConfig {
    let mut cfg = LoopConfig::new("sft", steps, 8, Schedule::new(|s, _| 3e-3 * ((s + 1) as f64 / 5.0).min(1.0)));
    cfg.weight_decay = Schedule::constant(0.01);
    cfg
}

/// SFT on `data` in shuffled epochs, with `objective` in place of the plain SFT objective.
fn sft_parts(data: &Dataset, stage: &str, objective: Option<Box<dyn Objective>>) -> StageParts {
    let curriculum = Box::new(Uniform::new(stage, data.len(), SEED).unwrap());
    let objective = objective.unwrap_or_else(|| Box::new(SftObjective::new(data).unwrap()));
    StageParts::offline(curriculum, data, objective)
}

/// Runs stage `sft` of `cfg` with `parts` and a fresh optimiser, logging into `run`.
fn sft_stage(
    model: &CausalLm,
    cfg: &LoopConfig,
    run: &mut RunDir,
    parts: &mut StageParts,
    resume: Option<Resume>,
) -> Result<recipe_runtime::train::StageSummary, TrainError> {
    let mut optim = AdamW::new(model.params(), cfg.adam).unwrap();
    let models = Models { policy: model, reference: None };
    run_stage(&models, &mut optim, parts, cfg, &mut [], &mut RunContext { run, progress: &mut Silent }, resume)
}

#[test]
fn sft_reduces_loss_and_logs_every_step() {
    let dir = tempfile::tempdir().unwrap();
    let mut run = RunDir::create_at(&dir.path().join("run")).unwrap();
    let model = tiny_model(1);
    let data = sums(200);
    let cfg = sft_config(40);
    let mut parts = sft_parts(&data, "sft", None);
    let summary = sft_stage(&model, &cfg, &mut run, &mut parts, None).unwrap();
    let lines = artifact::read_metrics(run.root()).unwrap();
    assert_eq!(lines.len(), 40);
    let loss = |i: usize| lines[i]["loss"].as_f64().unwrap();
    let first = (0..3).map(loss).sum::<f64>() / 3.0;
    let last = (37..40).map(loss).sum::<f64>() / 3.0;
    assert!(last < 0.6 * first, "loss {first} → {last}");
    assert_eq!(summary.final_loss, loss(39));
    let l = &lines[10];
    for key in ["stage", "step", "loss", "lr", "grad_norm", "tokens"] {
        assert!(l.get(key).is_some(), "metrics line lacks {key}: {l}");
    }
    assert_eq!(l["step"], 11);
    assert!((l["lr"].as_f64().unwrap() - 3e-3).abs() < 1e-12);
    assert!(l["timing"]["tokens_per_s"].as_f64().unwrap() > 0.0);
    assert!(artifact::without_timing(l).get("timing").is_none());
    let position = parts.curriculum.state();
    assert_eq!(position, serde_json::json!({"epoch": 1, "position": 120}), "320 rows from 200: an epoch, then 120");
}

#[test]
fn exact_match_scores_greedy_completions() {
    let dir = tempfile::tempdir().unwrap();
    let mut run = RunDir::create_at(&dir.path().join("run")).unwrap();
    let model = tiny_model(2);
    let row = |p: &str, c: &str| -> (std::sync::Arc<str>, std::sync::Arc<str>) { (p.into(), c.into()) };
    let rows = [row("7+5=", "12"), row("7+5=", "13")];
    let data = Dataset::new(
        "two",
        vec![1, 2],
        vec![
            ("prompt".into(), Column::Str(rows.iter().map(|r| r.0.clone()).collect())),
            ("completion".into(), Column::Str(rows.iter().map(|r| r.1.clone()).collect())),
        ],
    )
    .unwrap();
    let train = data.select(&[0]);
    let mut cfg = LoopConfig::new("memorise", 60, 4, Schedule::constant(1e-2));
    cfg.eval_every = Some(30);
    let mut parts = sft_parts(&train, "memorise", None);
    let mut evals: Vec<Box<dyn Evaluator>> = vec![Box::new(ExactMatch::new("held", &data, 2).unwrap())];
    let mut optim = AdamW::new(model.params(), cfg.adam).unwrap();
    let mut progress = Recorder::default();
    let summary = run_stage(
        &Models { policy: &model, reference: None },
        &mut optim,
        &mut parts,
        &cfg,
        &mut evals,
        &mut RunContext { run: &mut run, progress: &mut progress },
        None,
    )
    .unwrap();
    // Memorised "12": one of the two targets matches exactly, the other cannot.
    let (name, metrics) = &summary.eval[0];
    assert_eq!(name, "held");
    assert_eq!(metrics[0], ("accuracy".to_string(), 0.5), "{metrics:?}");
    let lines = artifact::read_metrics(run.root()).unwrap();
    assert_eq!(lines[29]["eval"]["held"]["total"], 2.0);
    assert!(lines[28].get("eval").is_none());
    assert_eq!(progress.events.iter().filter(|e| e.starts_with("eval ")).count(), 2);

    // `max_tokens` caps generation; an answer cut at the cap is compared as it stands.
    let mut capped = ExactMatch::new("held", &data, 2).unwrap().max_tokens(1);
    assert_eq!(capped.evaluate(&model).unwrap()[0], ("accuracy".to_string(), 0.0), "\"1\" is not \"12\"");
    let mut cut = ExactMatch::new("held", &data, 2).unwrap().max_tokens(2);
    assert_eq!(cut.evaluate(&model).unwrap()[0], ("accuracy".to_string(), 0.5));
}

/// An objective that delegates to SFT but, at 1-based step `at_step`, poisons the loss
/// (multiplies it by `factor`) or fails as if the process died there.
struct Faulty {
    inner: SftObjective,
    at_step: u64,
    factor: f64,
    crash: bool,
    /// Micro-batches per step, and micro-batches seen so far.
    accumulate: u64,
    calls: u64,
}

impl Faulty {
    fn new(data: &Dataset, at_step: u64, factor: f64, crash: bool, accumulate: u64) -> Faulty {
        Faulty { inner: SftObjective::new(data).unwrap(), at_step, factor, crash, accumulate, calls: 0 }
    }
}

impl Objective for Faulty {
    fn begin_step(&mut self, models: &Models<'_>, micro_batches: &[Experience]) -> Result<(), TrainError> {
        self.inner.begin_step(models, micro_batches)
    }

    fn loss(&mut self, models: &Models<'_>, experience: &Experience) -> Result<LossOutput, TrainError> {
        let step = self.calls / self.accumulate + 1;
        self.calls += 1;
        if self.crash && step == self.at_step {
            return Err(TrainError::Config { stage: "sft".into(), message: "simulated crash".into() });
        }
        let mut out = self.inner.loss(models, experience)?;
        if step == self.at_step {
            out.loss = out.loss.affine(self.factor, 0.0)?;
        }
        Ok(out)
    }
}

#[test]
fn non_finite_values_stop_with_an_error_and_keep_earlier_output() {
    let dir = tempfile::tempdir().unwrap();
    let data = sums(64);

    // A NaN learning rate is caught before it touches the weights.
    let mut run = RunDir::create_at(&dir.path().join("nan-lr")).unwrap();
    let mut cfg = sft_config(5);
    cfg.lr = Schedule::constant(f64::NAN);
    let model = tiny_model(3);
    let err = sft_stage(&model, &cfg, &mut run, &mut sft_parts(&data, "sft", None), None).unwrap_err();
    assert_eq!(err.code(), "recipe::train::schedule");
    assert_eq!(err.to_string(), "stage `sft`, step 1 (`lr` at step = 0): the learning rate is NaN");

    // So is a negative one, at the step it turns negative, named with the `step` the schedule saw.
    let mut run = RunDir::create_at(&dir.path().join("negative-lr")).unwrap();
    let mut cfg = sft_config(5);
    cfg.lr = Schedule::named("lr", |s, _| 1e-3 * (2.0 - s as f64));
    let err = sft_stage(&model, &cfg, &mut run, &mut sft_parts(&data, "sft", None), None).unwrap_err();
    assert_eq!(err.to_string(), "stage `sft`, step 4 (schedule `lr` at step = 3): the learning rate is -0.001");
    assert_eq!(artifact::read_metrics(run.root()).unwrap().len(), 3, "the three steps before it stay logged");

    // An infinite loss at step 4 names the step and the batch's examples; the checkpoint of
    // step 2 and the three metrics lines stay.
    let mut run = RunDir::create_at(&dir.path().join("inf-loss")).unwrap();
    let mut cfg = sft_config(6);
    cfg.checkpoint_every = Some(2);
    let model = tiny_model(3);
    let mut probe = Uniform::new("sft", data.len(), SEED).unwrap();
    let rows = (0..4).map(|s| probe.next_rows(s, 6, cfg.batch).unwrap()).last().unwrap();
    let expected_ids: Vec<u64> = rows.iter().map(|&r| data.ids[r]).collect();
    let faulty = Box::new(Faulty::new(&data, 4, f64::INFINITY, false, 1));
    let err = sft_stage(&model, &cfg, &mut run, &mut sft_parts(&data, "sft", Some(faulty)), None).unwrap_err();
    match &err {
        TrainError::NonFinite { stage, step, quantity, example_ids, .. } => {
            assert_eq!((stage.as_str(), *step, *quantity), ("sft", 4, "the loss"));
            assert_eq!(example_ids, &expected_ids);
            let listed =
                format!("(examples {})", expected_ids.iter().map(u64::to_string).collect::<Vec<_>>().join(", "));
            assert!(err.to_string().ends_with(&listed), "{err}");
        }
        other => panic!("expected a non-finite error, got {other:?}"),
    }
    assert!(err.to_diagnostic().help.is_some());
    assert_eq!(artifact::read_metrics(run.root()).unwrap().len(), 3);
    let latest = Checkpoint::latest(&run.checkpoints()).unwrap().unwrap();
    assert_eq!(latest.state.step, 2);
    latest.load_model(&Device::Cpu).unwrap();
}

#[test]
fn resumed_run_is_bit_identical_to_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = sums(20);
    let mut cfg = sft_config(6);
    cfg.batch = 4;
    cfg.accumulate = 2; // 6 steps × 8 rows cross two epoch boundaries of 20 rows
    cfg.checkpoint_every = Some(3);

    // Uninterrupted.
    let mut run_a = RunDir::create_at(&dir.path().join("a")).unwrap();
    let model_a = tiny_model(4);
    sft_stage(&model_a, &cfg, &mut run_a, &mut sft_parts(&data, "sft", None), None).unwrap();

    // Dies at step 4, after the step-3 checkpoint.
    let root_b = dir.path().join("b");
    let mut run_b = RunDir::create_at(&root_b).unwrap();
    let model_b = tiny_model(4);
    let crashing = Box::new(Faulty::new(&data, 4, 1.0, true, 2));
    assert!(sft_stage(&model_b, &cfg, &mut run_b, &mut sft_parts(&data, "sft", Some(crashing)), None).is_err());
    drop(run_b);

    // Resume from the latest checkpoint in a fresh model, objective and run handle.
    let ck = Checkpoint::latest(&root_b.join("checkpoints")).unwrap().unwrap();
    assert_eq!(ck.state.step, 3);
    let model_c = ck.load_model(&Device::Cpu).unwrap();
    let mut run_c = RunDir::reopen(&root_b, ck.state.metrics_lines).unwrap();
    let resume = Resume::from_checkpoint(&ck, &Device::Cpu).unwrap();
    sft_stage(&model_c, &cfg, &mut run_c, &mut sft_parts(&data, "sft", None), Some(resume)).unwrap();

    let final_a = Checkpoint::latest(&run_a.checkpoints()).unwrap().unwrap();
    let final_c = Checkpoint::latest(&run_c.checkpoints()).unwrap().unwrap();
    assert_eq!((final_a.state.step, final_c.state.step), (6, 6));
    for file in [format!("{MODEL_DIR}/model.safetensors"), OPTIMIZER_FILE.to_string()] {
        let a = std::fs::read(final_a.dir.join(&file)).unwrap();
        let c = std::fs::read(final_c.dir.join(&file)).unwrap();
        assert!(a == c, "{file} differs between the uninterrupted and the resumed run");
    }
    assert_eq!(final_a.state, final_c.state);
    let strip = |root: &Path| -> Vec<Value> {
        artifact::read_metrics(root).unwrap().iter().map(artifact::without_timing).collect()
    };
    assert_eq!(strip(run_a.root()), strip(&root_b));
}

// ---------------------------------------------------------------------------------------------
// Gradient accumulation and the log-probability evaluations

/// A dataset of `(prompt, completion)` rows with ids 1, 2, ...
fn rows(pairs: &[(&str, &str)]) -> Dataset {
    let prompts = Column::Str(pairs.iter().map(|p| p.0.into()).collect());
    let completions = Column::Str(pairs.iter().map(|p| p.1.into()).collect());
    let ids = (1..=pairs.len() as u64).collect();
    Dataset::new("rows", ids, vec![("prompt".into(), prompts), ("completion".into(), completions)]).unwrap()
}

/// `batch = 1, accumulate = 2` and `batch = 2, accumulate = 1` over rows whose completions differ
/// in length give the same loss — the token mean over the whole step (TRL: completions of 2
/// tokens with NLL 1 each and of 6 with NLL 3 each give 20/8 = 2.5, not the 2.0 of a mean of
/// micro-batch means) — and the same gradient for every parameter.
#[test]
fn accumulation_normalises_by_the_whole_step() {
    let model = tiny_model(5);
    let models = Models { policy: &model, reference: None };
    let data = rows(&[("7+5=", "1"), ("12+34=", "46 is the sum")]);
    let step = |batch: usize, accumulate_by: u32| {
        let curriculum = Box::new(Ordered::new("s", vec![0, 1]).unwrap());
        let mut parts = StageParts::offline(curriculum, &data, Box::new(SftObjective::new(&data).unwrap()));
        let shape = StepShape { stage: "s", step: 0, total: 1, batch, accumulate: accumulate_by };
        accumulate(&models, &mut parts, &shape).unwrap()
    };
    let (split, whole) = (step(1, 2), step(2, 1));
    assert_eq!(split.example_ids, whole.example_ids);
    assert!((split.loss - whole.loss).abs() < 1e-5, "{} vs {}", split.loss, whole.loss);

    // The loss is the token mean over both rows (2 and 14 completion tokens with EOS), which a
    // mean of the two rows' own means is not.
    let row_nll = |r: usize| {
        let batch = TokenBatch::collate(model.tokenizer(), &[data_pair(&data, r)], true, &Device::Cpu).unwrap();
        let (lp, n) = completion_logprobs(&model, &batch).unwrap();
        (-lp.to_vec1::<f32>().unwrap()[0] as f64, n.to_vec1::<f32>().unwrap()[0] as f64)
    };
    let ((nll_a, n_a), (nll_b, n_b)) = (row_nll(0), row_nll(1));
    assert_eq!((n_a, n_b), (2.0, 14.0));
    assert!((whole.loss - (nll_a + nll_b) / (n_a + n_b)).abs() < 1e-4, "{}", whole.loss);
    let mean_of_means = (nll_a / n_a + nll_b / n_b) / 2.0;
    assert!((whole.loss - mean_of_means).abs() > 1e-2, "the rows must tell the two rules apart");

    assert_eq!(split.grads.len(), model.params().len());
    for ((name, _), (a, b)) in model.params().iter().zip(split.grads.iter().zip(&whole.grads)) {
        let scale = b.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap().max(1e-6);
        let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff <= 1e-4 * scale, "{name}: gradients differ by {diff} (largest {scale})");
    }
}

fn data_pair(data: &Dataset, r: usize) -> (&str, &str) {
    (&data.strings("prompt").unwrap()[r], &data.strings("completion").unwrap()[r])
}

/// `loss_on` is the SFT loss of one batch of all its rows; `pair_accuracy` compares the summed
/// response log-probabilities, so swapping chosen and rejected turns every win into a loss.
#[test]
fn log_probability_evaluations_agree_with_the_training_quantities() {
    let model = tiny_model(6);
    let data = rows(&[("7+5=", "12"), ("1+1=", "2"), ("99+1=", "100")]);
    let mut loss_on = LossOn::new("held", &data, 2).unwrap();
    let metrics = loss_on.evaluate(&model).unwrap();
    let pairs: Vec<(&str, &str)> = (0..3).map(|r| data_pair(&data, r)).collect();
    let batch = TokenBatch::collate(model.tokenizer(), &pairs, true, &Device::Cpu).unwrap();
    let sft = sft_loss(&model, &batch).unwrap().to_scalar::<f32>().unwrap() as f64;
    assert_eq!(metrics[1], ("tokens".to_string(), 9.0), "3 + 2 + 4 completion tokens with EOS");
    assert!((metrics[0].1 - sft).abs() < 1e-5, "{metrics:?} vs {sft}");

    let pair_rows = |flip: bool| {
        let (good, bad) = (["12", "2", "100"], ["13", "3", "10"]);
        let (chosen, rejected) = if flip { (bad, good) } else { (good, bad) };
        let col = |v: [&str; 3]| Column::Str(v.iter().map(|s| (*s).into()).collect());
        Dataset::new(
            "pairs",
            vec![1, 2, 3],
            vec![
                ("prompt".into(), col(["7+5=", "1+1=", "99+1="])),
                ("chosen".into(), col(chosen)),
                ("rejected".into(), col(rejected)),
            ],
        )
        .unwrap()
    };
    let score = |flip: bool| PairAccuracy::new("pairs", &pair_rows(flip), 2).unwrap().evaluate(&model).unwrap();
    let (straight, flipped) = (score(false), score(true));
    assert_eq!(straight[2], ("total".to_string(), 3.0));
    assert!((straight[0].1 + flipped[0].1 - 1.0).abs() < 1e-12, "{straight:?} / {flipped:?}");
    assert!((straight[3].1 + flipped[3].1).abs() < 1e-4, "margins change sign");
    // The first pair's margin, from the training log-probabilities directly.
    let lp = |c: &str| {
        let b = TokenBatch::collate(model.tokenizer(), &[("7+5=", c)], true, &Device::Cpu).unwrap();
        completion_logprobs(&model, &b).unwrap().0.to_vec1::<f32>().unwrap()[0] as f64
    };
    let first = PairAccuracy::new("one", &pair_rows(false).select(&[0]), 1).unwrap().evaluate(&model).unwrap();
    assert!((first[3].1 - (lp("12") - lp("13"))).abs() < 1e-4, "{first:?}");
}
