//! The step loop: one loop for every stage kind, composed from three parts a stage kind
//! supplies.
//!
//! - a [`Curriculum`] chooses each micro-batch's rows and observes what training measured on
//!   them (`curriculum/`, one file per scheduler);
//! - an [`ExperienceSource`] turns those rows into experience: the rows as they are for offline
//!   data, rollouts under the current policy for RL (`experience.rs`);
//! - an [`Objective`] turns experience into a differentiable loss under the models it names
//!   (the policy, a frozen reference), plus metrics and per-row feedback (`sft.rs`, …).
//!
//! The loop owns everything a stage kind should not re-implement: learning-rate and
//! weight-decay schedules, gradient accumulation, the point where data-parallel ranks would
//! all-reduce gradients, clipping, AdamW, non-finite detection, metrics lines, periodic
//! evaluation, checkpoints and progress events.
//!
//! Invariants: step `s` (0-based) evaluates schedules at `(s, total)`; metrics lines, evaluation
//! and checkpoints count completed steps (`s + 1`); nothing is written for a step that failed, so
//! after a non-finite error every metrics line and checkpoint on disk is from a healthy step; the
//! only state carried between steps is the model, the optimiser, the three parts' states and the
//! step counter, all of which a checkpoint saves, so a resumed stage continues bit for bit.
//! Stages that run in several rounds with re-bound models (exclusive buckets, `rounds` blocks)
//! are sequences of `run_stage` calls arranged by `exec`, never a second loop.

pub mod curriculum;
pub mod eval;
pub mod experience;
pub mod loss;
mod nll;
pub mod preference;
pub mod pretrain;
pub mod rl;
pub mod sft;

use crate::artifact::{ArtifactError, RunDir, TIMING_KEY};
use crate::checkpoint::{self, Checkpoint, CheckpointError, PartsState, RoundIndex, TrainState};
use crate::data::DataError;
use crate::model::{CausalLm, ModelError, Tensor};
use crate::optim::{self, AdamW, AdamWConfig, GradAccumulator, OptimError};
use crate::progress::Progress;
use recipe_compiler::diag::Diagnostic;
use serde_json::{json, Map, Value};
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

pub use curriculum::{Buckets, Curriculum, Feedback, GroupStats, Ordered, Pacing, Uniform};
pub use eval::{accuracy_metrics, Evaluator, ExactMatch, Greedy, LossOn, PairAccuracy};
pub use experience::{Experience, ExperienceSource, Offline};
pub use preference::PreferenceObjective;
pub use pretrain::PretrainObjective;
pub use rl::RlObjective;
pub use sft::SftObjective;

/// A numeric argument as a function of `(step, total_steps)`: constants, recipe functions
/// compiled by the JIT, or closures in tests. A named schedule is a recipe function, whose name
/// errors quote.
#[derive(Clone)]
pub struct Schedule {
    f: Arc<dyn Fn(u64, u64) -> f64 + Send + Sync>,
    name: Option<String>,
}

impl Schedule {
    pub fn new(f: impl Fn(u64, u64) -> f64 + Send + Sync + 'static) -> Schedule {
        Schedule { f: Arc::new(f), name: None }
    }

    /// A schedule that is the recipe function `name`.
    pub fn named(name: impl Into<String>, f: impl Fn(u64, u64) -> f64 + Send + Sync + 'static) -> Schedule {
        Schedule { f: Arc::new(f), name: Some(name.into()) }
    }

    pub fn constant(value: f64) -> Schedule {
        Schedule::new(move |_, _| value)
    }

    /// The recipe function's name; `None` for constants.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The value at 0-based `step` of `total`.
    pub fn at(&self, step: u64, total: u64) -> f64 {
        (self.f)(step, total)
    }

    /// The first 0-based step of `0..total` whose value is outside the domain of a learning rate
    /// or weight decay ([`in_domain`]), with that value; `None` when every step's is in it.
    pub fn first_out_of_domain(&self, total: u64) -> Option<(u64, f64)> {
        (0..total).map(|s| (s, self.at(s, total))).find(|&(_, v)| !in_domain(v))
    }
}

/// Whether `value` can be a learning rate or weight decay: finite and not negative.
pub fn in_domain(value: f64) -> bool {
    value.is_finite() && value >= 0.0
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Schedule(..)")
    }
}

/// What an objective computes for one micro-batch.
pub struct LossOutput {
    /// Scalar, differentiable loss: the micro-batch's share of the step's loss, so that the
    /// step's loss is the sum over its micro-batches (a token mean divides the micro-batch's
    /// token sum by the token count of the whole step, learnt in [`Objective::begin_step`]).
    /// The loop neither divides nor averages it.
    pub loss: Tensor,
    /// Tokens processed (for tokens/s).
    pub tokens: usize,
    /// Extra per-step metrics (averaged over the step's micro-batches), e.g. reward margins.
    pub metrics: Vec<(String, f64)>,
    /// Per-row statistics for the curriculum (empty for offline objectives).
    pub feedback: Feedback,
}

/// The models an objective scores experience under.
#[derive(Clone, Copy)]
pub struct Models<'m> {
    /// The model being trained.
    pub policy: &'m CausalLm,
    /// A frozen model (the preference and RL reference), when the stage names one.
    pub reference: Option<&'m CausalLm>,
}

/// A stage kind's training signal: the loss of one micro-batch of experience.
pub trait Objective {
    /// Called once per optimiser step with every micro-batch of the step, before the first
    /// [`Objective::loss`]: where an objective learns the step's totals (completion tokens,
    /// sequences, pairs) that its means divide by, so that `batch = 1, accumulate = 2` and
    /// `batch = 2, accumulate = 1` give the same loss and gradients. Nothing by default.
    fn begin_step(&mut self, _models: &Models<'_>, _micro_batches: &[Experience]) -> Result<(), TrainError> {
        Ok(())
    }

    /// The loss of `experience` under `models`.
    fn loss(&mut self, models: &Models<'_>, experience: &Experience) -> Result<LossOutput, TrainError>;

    /// Resumable state (a running mean such as BCO's δ); none by default.
    fn state(&self) -> Value {
        Value::Null
    }

    /// Restores what `state` returned.
    fn restore(&mut self, _state: &Value) -> Result<(), String> {
        Ok(())
    }
}

/// A stage kind's three parts, each with its own checkpointed state.
pub struct StageParts {
    pub curriculum: Box<dyn Curriculum>,
    pub experience: Box<dyn ExperienceSource>,
    pub objective: Box<dyn Objective>,
}

impl StageParts {
    /// Parts for offline data: `curriculum` chooses rows of `data`, which `objective` trains
    /// on as they are.
    pub fn offline(
        curriculum: Box<dyn Curriculum>,
        data: &crate::data::Dataset,
        objective: Box<dyn Objective>,
    ) -> StageParts {
        StageParts { curriculum, experience: Box::new(Offline::new(data.ids.clone())), objective }
    }

    fn state(&self) -> PartsState {
        PartsState {
            curriculum: self.curriculum.state(),
            experience: self.experience.state(),
            objective: self.objective.state(),
        }
    }

    fn restore(&mut self, stage: &str, state: &PartsState) -> Result<(), TrainError> {
        let restore_err = |part: &str, message: String| TrainError::Restore {
            stage: stage.to_string(),
            message: format!("{part}: {message}"),
        };
        self.curriculum.restore(&state.curriculum).map_err(|m| restore_err("curriculum", m))?;
        self.experience.restore(&state.experience).map_err(|m| restore_err("experience", m))?;
        self.objective.restore(&state.objective).map_err(|m| restore_err("objective", m))
    }
}

/// Loop settings shared by every stage kind.
#[derive(Clone, Debug)]
pub struct LoopConfig {
    /// Stage name (`sft`), and its position in the run (for checkpoint ordering).
    pub stage: String,
    pub stage_index: usize,
    /// Optimiser steps.
    pub steps: u64,
    /// Rows per micro-batch.
    pub batch: usize,
    /// Micro-batches per optimiser step.
    pub accumulate: u32,
    pub lr: Schedule,
    pub weight_decay: Schedule,
    pub adam: AdamWConfig,
    /// Global-norm clipping threshold (`None`: no clipping; the norm is still logged).
    pub clip: Option<f64>,
    /// Write a metrics line every this many steps (and at evaluation and the last step).
    pub log_every: u64,
    /// Evaluate every this many steps (and always at the end of the stage when evaluators exist).
    pub eval_every: Option<u64>,
    /// Evaluate before the first step too (TRL's `eval_on_start`), logged as `step = 0`.
    pub eval_on_start: bool,
    /// Which round of a stage that runs in rounds (exclusive buckets) this call is: a label
    /// the loop writes into metrics lines, its checkpoints' state and folder names, never
    /// logic (rounds are arranged by `exec`). `None` for a stage of one run.
    pub round: Option<RoundIndex>,
    /// Checkpoint every this many steps; `checkpoint_at_end` adds one when the stage finishes.
    pub checkpoint_every: Option<u64>,
    pub checkpoint_at_end: bool,
}

impl LoopConfig {
    /// TRL's defaults: AdamW (0.9, 0.999, 1e-8), no weight decay, clip at 1.0, log every step,
    /// a checkpoint at the end.
    pub fn new(stage: impl Into<String>, steps: u64, batch: usize, lr: Schedule) -> LoopConfig {
        LoopConfig {
            stage: stage.into(),
            stage_index: 0,
            steps,
            batch,
            accumulate: 1,
            lr,
            weight_decay: Schedule::constant(0.0),
            adam: AdamWConfig::default(),
            clip: Some(1.0),
            log_every: 1,
            eval_every: None,
            eval_on_start: false,
            round: None,
            checkpoint_every: None,
            checkpoint_at_end: true,
        }
    }
}

/// Where a stage resumes from: a checkpoint of the same stage.
pub struct Resume {
    pub step: u64,
    pub optimizer_steps: u64,
    pub moments: std::collections::HashMap<String, Tensor>,
    pub parts: PartsState,
}

impl Resume {
    pub fn from_checkpoint(ck: &Checkpoint, device: &crate::model::Device) -> Result<Resume, TrainError> {
        Ok(Resume {
            step: ck.state.step,
            optimizer_steps: ck.state.optimizer_steps,
            moments: ck.load_moments(device)?,
            parts: ck.state.parts.clone(),
        })
    }
}

/// What a finished stage reports.
#[derive(Clone, Debug, PartialEq)]
pub struct StageSummary {
    pub steps: u64,
    /// Loss of the last step.
    pub final_loss: f64,
    /// The last evaluation's metrics per evaluator.
    pub eval: Vec<(String, Vec<(String, f64)>)>,
    pub last_checkpoint: Option<std::path::PathBuf>,
}

/// Why a stage stopped.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A loss or gradient norm was NaN or infinite.
    #[error("stage `{stage}`, step {step}: {quantity} is {value}{}", ids(example_ids))]
    NonFinite { stage: String, step: u64, quantity: &'static str, value: f64, example_ids: Vec<u64> },
    /// A learning rate or weight decay outside [0, ∞) (negative, NaN or infinite) at 1-based
    /// `step`; `schedule` says where it came from (``schedule `lr` `` or a constant's argument),
    /// and the schedule itself saw `step - 1`.
    #[error("stage `{stage}`, step {step} ({schedule} at step = {}): {quantity} is {value}", step - 1)]
    Schedule { stage: String, step: u64, schedule: String, quantity: &'static str, value: f64 },
    /// A stage's configuration cannot run (e.g. batch 0, a dataset without the needed field).
    #[error("stage `{stage}`: {message}")]
    Config { stage: String, message: String },
    /// A saved curriculum, experience or objective state does not fit the stage.
    #[error("stage `{stage}`: cannot restore state: {message}")]
    Restore { stage: String, message: String },
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Optim(#[from] OptimError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// ` (examples 3, 17, …)` for an error message; empty when no batch was involved.
fn ids(ids: &[u64]) -> String {
    const SHOWN: usize = 16;
    if ids.is_empty() {
        return String::new();
    }
    let mut s: Vec<String> = ids.iter().take(SHOWN).map(u64::to_string).collect();
    if ids.len() > SHOWN {
        s.push(format!("… {} more", ids.len() - SHOWN));
    }
    format!(" (examples {})", s.join(", "))
}

impl TrainError {
    pub fn code(&self) -> &'static str {
        match self {
            TrainError::NonFinite { .. } => "recipe::train::non_finite",
            TrainError::Config { .. } => "recipe::train::config",
            TrainError::Schedule { .. } => "recipe::train::schedule",
            TrainError::Restore { .. } => "recipe::train::restore",
            TrainError::Data(e) => e.code(),
            TrainError::Artifact(e) => e.code(),
            TrainError::Model(_) | TrainError::Candle(_) | TrainError::Optim(_) => "recipe::train::internal",
            TrainError::Checkpoint(_) => "recipe::train::checkpoint",
        }
    }

    /// Whether the error is the user's to fix (data, configuration, divergence) rather than an
    /// internal fault.
    pub fn is_user_error(&self) -> bool {
        !matches!(self.code(), "recipe::train::internal" | "recipe::train::checkpoint" | "recipe::run::io")
    }

    pub fn to_diagnostic(&self) -> Diagnostic {
        match self {
            TrainError::Data(e) => e.to_diagnostic(),
            TrainError::NonFinite { .. } => Diagnostic::error(self.code(), self.to_string())
                .with_help("lower the learning rate, enable gradient clipping, or inspect the named examples")
                .with_note(
                    "metrics logged so far and earlier checkpoints are intact; fix the recipe and start a new run \
                     (`--resume` replays the locked recipe: it only continues an interrupted run)",
                ),
            _ => Diagnostic::error(self.code(), self.to_string()),
        }
    }
}

/// What the loop needs from the run: the folder (metrics, checkpoints) and a progress sink.
pub struct RunContext<'a> {
    pub run: &'a mut RunDir,
    pub progress: &'a mut dyn Progress,
}

/// Runs one stage: `cfg.steps` optimiser steps of `parts` training `models.policy` with
/// `optim`, evaluating with `evals`, from `resume` if given.
///
/// Errors: `TrainError::Config` for a zero `batch`, `accumulate` or `log_every`;
/// `TrainError::NonFinite` naming the step and example ids when a loss or gradient norm is NaN
/// or infinite; `TrainError::Schedule` when a learning rate or weight decay is negative, NaN or
/// infinite; I/O and checkpoint errors as they come.
pub fn run_stage(
    models: &Models<'_>,
    optim: &mut AdamW,
    parts: &mut StageParts,
    cfg: &LoopConfig,
    evals: &mut [Box<dyn Evaluator>],
    ctx: &mut RunContext<'_>,
    resume: Option<Resume>,
) -> Result<StageSummary, TrainError> {
    if cfg.batch == 0 || cfg.accumulate == 0 || cfg.log_every == 0 {
        return Err(TrainError::Config {
            stage: cfg.stage.clone(),
            message: "`batch`, `accumulate` and `log_every` must be at least 1".into(),
        });
    }
    let model = models.policy;
    let mut start = 0;
    if let Some(r) = resume {
        optim.load_state(&r.moments, r.optimizer_steps)?;
        parts.restore(&cfg.stage, &r.parts)?;
        start = r.step;
    }
    ctx.progress.stage_started(&cfg.stage, cfg.steps, start);
    let stage_clock = Instant::now();
    let mut window = LogWindow::default();
    let mut summary = StageSummary { steps: start, final_loss: f64::NAN, eval: Vec::new(), last_checkpoint: None };
    if cfg.eval_on_start && start == 0 && !evals.is_empty() {
        let eval = evaluate_all(evals, model, ctx, &cfg.stage, 0, &mut summary)?;
        let mut line = Map::new();
        line.insert("stage".into(), json!(cfg.stage));
        line.insert("step".into(), json!(0));
        if let Some(round) = cfg.round {
            line.insert("round".into(), json!(round.index));
        }
        line.insert("eval".into(), Value::Object(eval));
        ctx.run.append_metrics(&Value::Object(line))?;
    }

    for s in start..cfg.steps {
        let done = s + 1;
        let step_clock = Instant::now();
        let out = train_step(models, optim, parts, cfg, s)?;
        window.add(&out, step_clock.elapsed().as_secs_f64());
        summary.final_loss = out.loss;
        summary.steps = done;
        ctx.progress.step_done(&cfg.stage, done, cfg.steps, out.loss);

        let last = done == cfg.steps;
        let eval_now = !evals.is_empty() && (last || cfg.eval_every.is_some_and(|n| done % n == 0));
        let eval_fields =
            if eval_now { evaluate_all(evals, model, ctx, &cfg.stage, done, &mut summary)? } else { Map::new() };
        if last || eval_now || done % cfg.log_every == 0 {
            let mut line = window.line(&cfg.stage, done);
            if let Some(round) = cfg.round {
                line.insert("round".into(), json!(round.index));
            }
            for (k, v) in parts.curriculum.metrics() {
                line.insert(k, json!(v));
            }
            if eval_now {
                line.insert("eval".into(), Value::Object(eval_fields));
            }
            line.insert(
                TIMING_KEY.into(),
                json!({
                    "tokens_per_s": window.tokens as f64 / window.seconds.max(1e-9),
                    "elapsed_s": stage_clock.elapsed().as_secs_f64(),
                }),
            );
            ctx.run.append_metrics(&Value::Object(line))?;
            window = LogWindow::default();
        }
        if (last && cfg.checkpoint_at_end) || cfg.checkpoint_every.is_some_and(|n| done % n == 0) {
            ctx.run.sync()?;
            let state = TrainState {
                stage: cfg.stage.clone(),
                stage_index: cfg.stage_index,
                round: cfg.round,
                step: done,
                total_steps: cfg.steps,
                optimizer_steps: optim.steps(),
                parts: parts.state(),
                metrics_lines: ctx.run.metrics_lines(),
            };
            let path = checkpoint::write(&ctx.run.checkpoints(), model, optim, &state)?;
            ctx.progress.checkpointed(&cfg.stage, done, &path);
            summary.last_checkpoint = Some(path);
        }
    }
    ctx.progress.stage_finished(&cfg.stage, summary.steps);
    Ok(summary)
}

/// Runs every evaluator on `model` after `step` completed steps: their metrics by evaluator name
/// (for a metrics line), also kept as the summary's latest evaluation.
fn evaluate_all(
    evals: &mut [Box<dyn Evaluator>],
    model: &CausalLm,
    ctx: &mut RunContext<'_>,
    stage: &str,
    step: u64,
    summary: &mut StageSummary,
) -> Result<Map<String, Value>, TrainError> {
    summary.eval.clear();
    let mut fields = Map::new();
    for ev in evals.iter_mut() {
        let metrics = ev.evaluate(model)?;
        ctx.progress.evaluated(stage, step, ev.name(), &metrics);
        let values: Map<String, Value> = metrics.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        fields.insert(ev.name().to_string(), Value::Object(values));
        summary.eval.push((ev.name().to_string(), metrics));
    }
    Ok(fields)
}

/// One optimiser step's outcome.
struct StepOutput {
    loss: f64,
    lr: f64,
    grad_norm: f64,
    tokens: usize,
    metrics: Vec<(String, f64)>,
}

/// Accumulate → (all-reduce) → clip → AdamW for 0-based step `s`.
fn train_step(
    models: &Models<'_>,
    optim: &mut AdamW,
    parts: &mut StageParts,
    cfg: &LoopConfig,
    s: u64,
) -> Result<StepOutput, TrainError> {
    let scheduled = |schedule: &Schedule, arg: &str, quantity| {
        let value = schedule.at(s, cfg.steps);
        match in_domain(value) {
            true => Ok(value),
            false => Err(TrainError::Schedule {
                stage: cfg.stage.clone(),
                step: s + 1,
                schedule: schedule.name().map_or(format!("`{arg}`"), |n| format!("schedule `{n}`")),
                quantity,
                value,
            }),
        }
    };
    let lr = scheduled(&cfg.lr, "lr", "the learning rate")?;
    let weight_decay = scheduled(&cfg.weight_decay, "weight_decay", "the weight decay")?;

    let step = StepShape { stage: &cfg.stage, step: s, total: cfg.steps, batch: cfg.batch, accumulate: cfg.accumulate };
    let Accumulated { loss, mut grads, tokens, metrics, example_ids } = accumulate(models, parts, &step)?;

    // DATA-PARALLEL POINT: with one process per GPU, each rank would all-reduce (sum) `grads`
    // here, after local accumulation and before clipping, so every rank clips and steps on the
    // same global gradient (each rank's `begin_step` would learn the global token count the
    // same way). Ranks would then draw disjoint rows of the same seeded order (a rank-strided
    // `Curriculum::next_rows`); today the runtime is single-process, and nothing else in the
    // loop depends on a rank.

    let grad_norm = match cfg.clip {
        Some(max) => optim::clip_grad_norm(&mut grads, max)?,
        None => optim::global_norm(&grads)?,
    };
    if !grad_norm.is_finite() {
        return Err(TrainError::NonFinite {
            stage: cfg.stage.clone(),
            step: s + 1,
            quantity: "the gradient norm",
            value: grad_norm,
            example_ids,
        });
    }
    optim.step(&grads, lr, weight_decay)?;
    Ok(StepOutput { loss, lr, grad_norm, tokens, metrics })
}

/// What one optimiser step draws: `accumulate` micro-batches of `batch` rows at 0-based `step`
/// of `total`, for stage `stage` (named in errors).
#[derive(Clone, Copy, Debug)]
pub struct StepShape<'s> {
    /// The stage's name, for errors.
    pub stage: &'s str,
    /// 0-based optimiser step, of `total`.
    pub step: u64,
    pub total: u64,
    /// Rows per micro-batch, and micro-batches in the step.
    pub batch: usize,
    pub accumulate: u32,
}

/// One optimiser step's loss and gradient, before clipping.
pub struct Accumulated {
    /// The step's loss: the sum of its micro-batches' losses.
    pub loss: f64,
    /// The gradient of `loss` for every policy parameter, in [`CausalLm::params`] order.
    pub grads: Vec<Tensor>,
    /// Tokens processed (prompts and completions), for tokens/s.
    pub tokens: usize,
    /// The objective's metrics, averaged over the micro-batches.
    pub metrics: Vec<(String, f64)>,
    /// The stable ids of every row the step trained on, in order.
    pub example_ids: Vec<u64>,
}

/// Draws every micro-batch of one optimiser step (the curriculum's rows, made experience),
/// shows them all to the objective ([`Objective::begin_step`]), then adds up each micro-batch's
/// loss and gradient. Nothing is divided by `accumulate`: a micro-batch's loss is its share of
/// the step's loss, so `batch = 1, accumulate = 2` and `batch = 2, accumulate = 1` on the same
/// rows give the same loss and gradient. The curriculum observes each micro-batch's feedback
/// after its loss, so a step's rows are all chosen before it trains on any of them.
///
/// Errors: `TrainError::NonFinite` with the micro-batch's example ids for a NaN or infinite
/// loss; the parts' own errors.
pub fn accumulate(
    models: &Models<'_>,
    parts: &mut StageParts,
    step: &StepShape<'_>,
) -> Result<Accumulated, TrainError> {
    let mut micro_batches = Vec::with_capacity(step.accumulate as usize);
    for _ in 0..step.accumulate {
        let experience =
            parts.experience.collect(models.policy, parts.curriculum.as_mut(), step.batch, step.step, step.total)?;
        micro_batches.push(experience);
    }
    parts.objective.begin_step(models, &micro_batches)?;

    let mut acc = GradAccumulator::default();
    let mut example_ids = Vec::new();
    let (mut loss_sum, mut tokens) = (0.0, 0);
    let mut metrics: Vec<(String, f64)> = Vec::new();
    let metric_scale = 1.0 / f64::from(step.accumulate);
    for experience in micro_batches {
        let out = parts.objective.loss(models, &experience)?;
        let loss = scalar(&out.loss)?;
        if !loss.is_finite() {
            return Err(TrainError::NonFinite {
                stage: step.stage.to_string(),
                step: step.step + 1,
                quantity: "the loss",
                value: loss,
                example_ids: experience.example_ids,
            });
        }
        let grads = out.loss.backward()?;
        acc.add(models.policy.take_grads(&grads)?)?;
        parts.curriculum.observe(&experience.rows, &out.feedback);
        loss_sum += loss;
        tokens += out.tokens;
        add_scaled(&mut metrics, &out.metrics, metric_scale);
        example_ids.extend(experience.example_ids);
    }
    let grads = acc.take().unwrap_or_default();
    Ok(Accumulated { loss: loss_sum, grads, tokens, metrics, example_ids })
}

/// The value of a one-element loss tensor (rank 0 or `[1]`).
fn scalar(t: &Tensor) -> Result<f64, TrainError> {
    let values = t.to_dtype(candle_core::DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    match values.as_slice() {
        [v] => Ok(*v),
        _ => Err(candle_core::Error::Msg(format!("a loss must be one number, got shape {:?}", t.dims())).into()),
    }
}

/// Adds `scale × value` of each metric in `from` to the same-named total in `into`, appending
/// metrics seen for the first time (in first-seen order, so metrics lines are stable).
fn add_scaled(into: &mut Vec<(String, f64)>, from: &[(String, f64)], scale: f64) {
    for (k, v) in from {
        match into.iter_mut().find(|(n, _)| n == k) {
            Some((_, total)) => *total += v * scale,
            None => into.push((k.clone(), v * scale)),
        }
    }
}

/// Steps since the last metrics line, averaged into the next line.
#[derive(Default)]
struct LogWindow {
    steps: u64,
    loss: f64,
    lr: f64,
    grad_norm: f64,
    tokens: usize,
    seconds: f64,
    metrics: Vec<(String, f64)>,
}

impl LogWindow {
    fn add(&mut self, out: &StepOutput, seconds: f64) {
        self.steps += 1;
        self.loss += out.loss;
        self.grad_norm += out.grad_norm;
        self.lr = out.lr;
        self.tokens += out.tokens;
        self.seconds += seconds;
        add_scaled(&mut self.metrics, &out.metrics, 1.0);
    }

    /// The deterministic part of a metrics line: means over the window, the last step's lr.
    fn line(&self, stage: &str, step: u64) -> Map<String, Value> {
        let n = self.steps.max(1) as f64;
        let mut line = Map::new();
        line.insert("stage".into(), json!(stage));
        line.insert("step".into(), json!(step));
        line.insert("loss".into(), json!(self.loss / n));
        line.insert("lr".into(), json!(self.lr));
        line.insert("grad_norm".into(), json!(self.grad_norm / n));
        line.insert("tokens".into(), json!(self.tokens));
        for (k, v) in &self.metrics {
            line.insert(k.clone(), json!(v / n));
        }
        line
    }
}
