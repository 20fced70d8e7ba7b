//! Stages: `prepare` binds each step of the run order through the stage-kind table (decoding
//! and validating its arguments, checking its data against its model, all without compute),
//! `execute` runs the bound stages through the one step loop, resuming from a checkpoint where
//! one exists.
//!
//! A stage kind is a row of [`STAGE_KINDS`]: the builtin's name and its binding, a function
//! that decodes the call into typed settings. A kind that trains returns a [`Bound`] stage —
//! which models it reads and how to build its curriculum, experience source and objective; a
//! kind that trains nothing and produces data (`score`, `contrast_pairs`) returns a
//! [`Transform`] — the model it reads, a preview of its rows, and the computation. Adding a
//! kind adds a row and a file; nothing here changes.
//!
//! Data a stage produces is consumable by later stages: a stage reading it is bound at
//! `prepare` against the producer's preview (every row it may keep, so every check that needs
//! no compute runs before the first step), and bound again just before it runs, against the
//! rows produced. A transform's output model is the model it read (an alias in the model store).

mod contrast;
mod score;
mod sft;

use super::args::Call;
use super::build::{self, Builder};
use super::models::{Limits, ModelRef, ModelStore, StageOutput};
use super::settings::{OptimizerPolicy, TrainSettings};
use super::ExecError;
use crate::artifact::RunDir;
use crate::checkpoint::Checkpoint;
use crate::data::jsonl;
use crate::data::Dataset;
use crate::model::{self, CausalLm, Tokenizer};
use crate::optim::AdamW;
use crate::progress::Progress;
use crate::train::{self, Evaluator, ExactMatch, Models, Resume, RunContext, StageParts, StageSummary};
use recipe_compiler::program::{DeclKind, Program, Step, Value};
use std::path::Path;

/// A stage builtin this runtime executes.
pub(super) struct StageKind {
    /// The builtin's name (`sft`).
    pub name: &'static str,
    /// Decodes and validates a call of it, without compute.
    pub bind: Bind,
}

/// How a stage kind binds: into a training stage or a transform.
#[derive(Clone, Copy)]
pub(super) enum Bind {
    /// A stage that trains its policy through the one step loop.
    Train(fn(&mut Binding<'_, '_>) -> Result<Bound, ExecError>),
    /// A stage that computes data with its policy and trains nothing.
    Transform(fn(&mut Binding<'_, '_>) -> Result<Transform, ExecError>),
}

/// Every stage kind the runtime executes.
pub(super) const STAGE_KINDS: &[StageKind] = &[
    StageKind { name: "sft", bind: Bind::Train(sft::bind) },
    StageKind { name: "score", bind: Bind::Transform(score::bind) },
    StageKind { name: "contrast_pairs", bind: Bind::Transform(contrast::bind) },
];

/// The difficulty measures (`score`'s `measure`) this runtime executes.
pub(super) use score::MEASURES;

/// What a binding reads: the stage's call and everything needed to decode and check it.
pub(super) struct Binding<'b, 'p> {
    /// The stage's name.
    pub stage: &'b str,
    pub call: Call<'p>,
    pub builder: &'b mut Builder<'p>,
    pub models: &'b mut ModelStore,
    /// `--max-steps`: caps every stage's steps.
    pub max_steps: Option<u64>,
}

impl Binding<'_, '_> {
    /// The stage's `dataset` argument, built.
    ///
    /// Errors: the build's, and `ExecError::Config` for a dataset with no rows, at the argument.
    pub fn dataset(&mut self) -> Result<Dataset, ExecError> {
        let value = self.call.get("dataset")?;
        let data = self.builder.dataset(value).map_err(|e| self.call.locate(e, Some("dataset")))?;
        if data.is_empty() {
            return Err(self.call.invalid("dataset", format!("({}) has no rows", data.origin)));
        }
        Ok(data)
    }

    /// The tokenizer, context and vocabulary of the model argument `arg` names.
    pub fn limits(&mut self, arg: &str) -> Result<Limits, ExecError> {
        let r = ModelRef::of(self.call.get(arg)?)?;
        self.models.limits(self.builder, &r)
    }
}

/// A stage whose arguments are decoded and validated.
pub(super) struct Bound {
    /// The model the stage trains (a copy of it).
    pub policy: ModelRef,
    /// The frozen model its objective scores against, if any.
    pub reference: Option<ModelRef>,
    pub settings: TrainSettings,
    /// Builds the stage's parts, fresh (a checkpoint's state is restored into them).
    pub parts: Box<dyn Fn() -> Result<StageParts, ExecError>>,
}

/// A stage that trains nothing: it reads a model and produces data (`score`, `contrast_pairs`).
pub(super) struct Transform {
    /// The model it reads; its output `model` is this model, unchanged.
    pub policy: ModelRef,
    /// Every row it may produce, as later stages will see them (placeholder values in the fields
    /// it computes): what stages reading its data are checked against before compute.
    pub preview: Dataset,
    /// Computes its output with the policy (frozen: no gradient).
    pub run: Compute,
}

/// A transform's computation.
pub(super) type Compute = Box<dyn Fn(&CausalLm) -> Result<Produced, ExecError>>;

/// What a transform produced.
pub(super) struct Produced {
    pub data: Dataset,
    /// Its one metrics line (an `"event"` line).
    pub metrics: serde_json::Value,
    /// A summary for the user.
    pub note: String,
}

/// A stage ready to run.
pub(super) struct Prepared {
    index: usize,
    name: String,
    /// Its kind's binding, run again just before the stage starts when it reads data an
    /// earlier stage produces (`reads`), against the produced rows.
    bind: Bind,
    /// The stages whose data it reads.
    reads: Vec<String>,
    /// `--max-steps`, for that binding.
    max_steps: Option<u64>,
    work: Work,
}

/// What a prepared stage does.
enum Work {
    Train(Training),
    Transform(Transform),
}

/// A training stage, bound.
struct Training {
    bound: Bound,
    /// Evaluate every this many steps (the smallest `every` of the evals).
    eval_every: Option<u64>,
    /// The header's `eval_on_start`: evaluate before the first step too.
    eval_on_start: bool,
    checkpoint_every: Option<u64>,
}

/// Binds every stage of the run order and checks everything that needs no compute. Builds
/// (or loads) each declared model once, into `models`.
pub(super) fn prepare<'p>(
    program: &'p Program,
    builder: &mut Builder<'p>,
    models: &mut ModelStore,
    max_steps: Option<u64>,
) -> Result<(Vec<Prepared>, Vec<Eval>), ExecError> {
    let evals = prepare_evals(program, builder)?;
    let eval_every = evals.iter().map(|e| e.every).filter(|&e| e > 0).min();
    let eval_on_start = matches!(program.header_field("eval_on_start"), Some(Value::Bool(true)));
    let mut prepared: Vec<Prepared> = Vec::new();
    for (index, step) in program.stage_order().into_iter().enumerate() {
        let decl = match step {
            Step::Stage(decl) => decl,
            Step::Rounds(rounds) => {
                return Err(ExecError::Unsupported(format!("`rounds {}` (iterative rounds)", rounds.name)))
            }
        };
        let call = Call::of_decl(program, &decl.name)?;
        let kind = STAGE_KINDS.iter().find(|k| k.name == call.name).ok_or_else(|| {
            ExecError::Unsupported(format!("stage `{}` of kind `{}`", decl.name, call.name))
                .in_recipe(program, &decl.name, None)
        })?;
        let reads = build::stage_data_read_by(program, &decl.value);
        let (name, bind) = (decl.name.clone(), kind.bind);
        let mut binding = Binding { stage: &decl.name, call, builder, models, max_steps };
        let bind_train = match kind.bind {
            Bind::Train(bind) => bind,
            Bind::Transform(bind_transform) => {
                let transform = bind_transform(&mut binding)?;
                models.register_alias(&decl.name, &transform.policy)?;
                builder.set_stage_data(&decl.name, transform.preview.clone());
                prepared.push(Prepared { index, name, bind, reads, max_steps, work: Work::Transform(transform) });
                continue;
            }
        };
        let bound = bind_train(&mut binding)?;
        let call = binding.call;
        check_models(&call, &bound, models)?;
        // The reference is loaded (and its files hashed for the lock) now, not after earlier
        // stages have trained; it must speak the policy's vocabulary.
        let Limits { tokenizer: tok, context, vocab_size } = models.limits(builder, &bound.policy)?;
        if let Some(reference) = &bound.reference {
            let reference = models.limits(builder, reference)?.vocab_size;
            if reference != vocab_size {
                let message = format!("has a vocabulary of {reference} tokens; the policy's has {vocab_size}");
                return Err(call.invalid("reference", message));
            }
        }
        // Every evaluation runs during this stage on its policy: its prompts plus the
        // generation budget must fit the model, and generation needs a prompt.
        for eval in &evals {
            let budget = eval.evaluator.budget(&tok)?;
            let what = format!("eval `{}` of stage `{}`", eval.evaluator.name(), decl.name);
            super::check_context(&what, &eval.data, context, |p, _| Ok(tok.encode(p)?.len() + budget))
                .and_then(|()| super::check_prompts_not_empty(&what, &eval.data, &tok))
                .map_err(|e| e.in_recipe(program, eval.evaluator.name(), Some("dataset")))?;
        }
        models.register(&decl.name, &bound.policy, bound.reference.as_ref())?;
        let checkpoint_every = checkpoint_every(program, bound.settings.steps);
        let training = Training { bound, eval_every, eval_on_start, checkpoint_every };
        prepared.push(Prepared { index, name, bind, reads, max_steps, work: Work::Train(training) });
    }
    Ok((prepared, evals))
}

/// Refuses model settings that cannot do what they say: `optimizer = keep` on a policy that no
/// earlier stage trained (there are no moments to keep).
fn check_models(call: &Call<'_>, bound: &Bound, models: &ModelStore) -> Result<(), ExecError> {
    let policy = models.resolve(&bound.policy);
    if bound.settings.optimizer == OptimizerPolicy::Keep && matches!(policy, ModelRef::Declared(_)) {
        return Err(call.invalid("optimizer", "is `keep`, but the policy is a declared model: no stage trained it, so there are no optimiser moments to keep"));
    }
    Ok(())
}

/// The header's `checkpoint_every` when given, else about ten checkpoints a stage.
fn checkpoint_every(program: &Program, steps: u64) -> Option<u64> {
    match program.header_field("checkpoint_every").and_then(Value::as_int) {
        Some(n) if n > 0 => Some(n as u64),
        _ => Some((steps / 10).max(1)),
    }
}

/// An evaluation declared with `eval name = ...`, run during every stage.
pub(super) struct Eval {
    evaluator: ExactMatch,
    /// Its rows, for errors that name one.
    data: Dataset,
    every: u64,
}

fn prepare_evals(program: &Program, builder: &mut Builder<'_>) -> Result<Vec<Eval>, ExecError> {
    let mut evals = Vec::new();
    for decl in program.decls_of(DeclKind::Eval) {
        let call = Call::of_decl(program, &decl.name)?;
        if call.name != "accuracy" {
            let e = ExecError::Unsupported(format!("eval `{}` of kind `{}`", decl.name, call.name));
            return Err(call.locate(e, None));
        }
        let data = builder.dataset(call.get("dataset")?).map_err(|e| call.locate(e, Some("dataset")))?;
        let max_tokens = call.count("max_tokens")? as usize;
        if max_tokens == 0 {
            return Err(call.invalid("max_tokens", "must be at least 1"));
        }
        if data.column("completion").is_none() && data.column("answer").is_none() {
            let message = format!("`accuracy` needs a `completion` or `answer` field; the rows have {}", fields(&data));
            return Err(call.locate(ExecError::Config(message), Some("dataset")));
        }
        let evaluator = ExactMatch::new(&decl.name, &data, 64)?.max_tokens(max_tokens);
        evals.push(Eval { evaluator, data, every: call.count("every")? });
    }
    Ok(evals)
}

/// `` `prompt`, `level` `` for a message.
fn fields(data: &Dataset) -> String {
    data.columns.iter().map(|(name, _)| format!("`{name}`")).collect::<Vec<_>>().join(", ")
}

/// Runs the prepared stages in order. With `resume`, stages finished before it are restored
/// from their final checkpoints and the stage it belongs to continues from it.
pub(super) fn execute(
    stages: &[Prepared],
    evals: &[Eval],
    builder: &mut Builder<'_>,
    models: &mut ModelStore,
    run: &mut RunDir,
    progress: &mut dyn Progress,
    resume: Option<Checkpoint>,
) -> Result<Vec<(String, StageSummary)>, ExecError> {
    let device = builder.device.clone();
    let mut summaries = Vec::new();
    let resume_at = resume.as_ref().map(|c| c.state.stage_index);
    let finished = |stage: &Prepared| {
        resume_at.is_some_and(|at| stage.index < at)
            || resume.as_ref().is_some_and(|c| c.state.stage_index == stage.index && c.state.complete())
    };
    for stage in stages {
        let done = finished(stage);
        // A finished transform computes its data again only for a stage still to run.
        let needed = match stage.work {
            Work::Transform(_) => !done || stages.iter().any(|s| !finished(s) && s.reads.contains(&stage.name)),
            Work::Train(_) => !done,
        };
        // Bound again against the data earlier stages produced, when it computes.
        let rebound = match needed && !stage.reads.is_empty() {
            true => Some(rebind(stage, builder, models)?),
            false => None,
        };
        let training = match rebound.as_ref().unwrap_or(&stage.work) {
            Work::Transform(transform) => {
                run_transform(stage, transform, done, needed, builder, models, run, progress)?;
                continue;
            }
            Work::Train(training) => training,
        };
        let bound = &training.bound;
        let mut cfg = bound.settings.loop_config(&stage.name, stage.index);
        cfg.eval_every = training.eval_every;
        cfg.checkpoint_every = training.checkpoint_every;
        cfg.eval_on_start = training.eval_on_start;
        // A stage that finished before the resume point: restore its output and move on.
        if done {
            models.skip(&bound.policy);
            bound.reference.iter().for_each(|r| models.skip(r));
            // Only an output a later stage starts from or scores against is read back.
            if models.is_read_later(&stage.name) {
                let ck = final_checkpoint(&run.checkpoints(), stage)?;
                let model = ck.load_model(&device)?;
                let mut optim = AdamW::new(model.params(), cfg.adam)?;
                optim.load_state(&ck.load_moments(&device)?, ck.state.optimizer_steps)?;
                progress.note(&format!("stage `{}` restored from {}", stage.name, ck.dir.display()));
                models.finish(&stage.name, StageOutput { model, optim });
            }
            models.release_unread();
            continue;
        }
        let resuming = resume.as_ref().filter(|c| c.state.stage_index == stage.index);
        let (model, mut optim, state) = match resuming {
            Some(ck) => {
                models.skip(&bound.policy);
                let model = ck.load_model(&device)?;
                let optim = AdamW::new(model.params(), cfg.adam)?;
                (model, optim, Some(Resume::from_checkpoint(ck, &device)?))
            }
            None => {
                let (model, previous) = models.start(builder, &bound.policy)?;
                let mut optim = AdamW::new(model.params(), cfg.adam)?;
                if let (OptimizerPolicy::Keep, Some(previous)) = (bound.settings.optimizer, previous) {
                    let moments = previous.state_tensors()?.into_iter().collect();
                    optim.load_state(&moments, previous.steps())?;
                }
                (model, optim, None)
            }
        };
        // The reference is rebuilt from what it names, also on resume.
        let reference = bound.reference.as_ref().map(|r| models.frozen(builder, r)).transpose()?;
        models.release_unread();
        let mut parts = (bound.parts)()?;
        let mut evaluators: Vec<Box<dyn Evaluator>> =
            evals.iter().map(|e| Box::new(e.evaluator.clone()) as Box<dyn Evaluator>).collect();
        let mut ctx = RunContext { run, progress };
        let roles = Models { policy: &model, reference: reference.as_ref() };
        let summary = train::run_stage(&roles, &mut optim, &mut parts, &cfg, &mut evaluators, &mut ctx, state)?;
        summaries.push((stage.name.clone(), summary));
        models.finish(&stage.name, StageOutput { model, optim });
    }
    Ok(summaries)
}

/// `stage` bound again, against the data the stages it reads have produced by now.
fn rebind(stage: &Prepared, builder: &mut Builder<'_>, models: &mut ModelStore) -> Result<Work, ExecError> {
    let program = builder.program;
    let decl = program.decl(&stage.name).ok_or_else(|| ExecError::Internal(format!("no stage `{}`", stage.name)))?;
    let call = Call::of_decl(program, &decl.name)?;
    let mut binding = Binding { stage: &decl.name, call, builder, models, max_steps: stage.max_steps };
    Ok(match (stage.bind, &stage.work) {
        (Bind::Train(bind), Work::Train(t)) => Work::Train(Training {
            bound: bind(&mut binding)?,
            eval_every: t.eval_every,
            eval_on_start: t.eval_on_start,
            checkpoint_every: t.checkpoint_every,
        }),
        (Bind::Transform(bind), Work::Transform(_)) => Work::Transform(bind(&mut binding)?),
        _ => return Err(ExecError::Internal(format!("stage `{}` changed kind between bindings", stage.name))),
    })
}

/// Runs a transform: computes its data with a frozen copy of its model, writes the rows to the
/// run folder (`data/NN-STAGE.jsonl`, hashed in the lock) and its metrics line, and hands the
/// rows to the stages that read them. One that finished (`done`) before the resume point is
/// computed again (it is deterministic) when `needed` by a stage still to run, but neither
/// written nor logged again: its file and line are already there.
#[allow(clippy::too_many_arguments)]
fn run_transform(
    stage: &Prepared,
    transform: &Transform,
    done: bool,
    needed: bool,
    builder: &mut Builder<'_>,
    models: &mut ModelStore,
    run: &mut RunDir,
    progress: &mut dyn Progress,
) -> Result<(), ExecError> {
    if !needed {
        models.skip(&transform.policy);
        models.release_unread();
        return Ok(());
    }
    let policy = models.frozen(builder, &transform.policy)?;
    models.release_unread();
    let produced = (transform.run)(&policy)?;
    drop(policy);
    if !done {
        run.write_data(&format!("{:02}-{}.jsonl", stage.index, stage.name), &jsonl::to_jsonl(&produced.data))?;
        run.append_metrics(&produced.metrics)?;
        progress.note(&produced.note);
    }
    builder.set_stage_data(&stage.name, produced.data);
    Ok(())
}

/// The last checkpoint a finished stage wrote.
fn final_checkpoint(checkpoints: &Path, stage: &Prepared) -> Result<Checkpoint, ExecError> {
    let prefix = format!("{:02}-{}-step", stage.index, stage.name);
    let mut best: Option<Checkpoint> = None;
    let entries = std::fs::read_dir(checkpoints).map_err(|e| ExecError::io(checkpoints, e))?;
    for entry in entries {
        let path = entry.map_err(|e| ExecError::io(checkpoints, e))?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.starts_with(&prefix) && !name.contains(".tmp-") {
            let ck = Checkpoint::open(&path)?;
            if ck.state.complete() && best.as_ref().is_none_or(|b| ck.state.step > b.state.step) {
                best = Some(ck);
            }
        }
    }
    best.ok_or_else(|| {
        ExecError::Input(format!(
            "cannot resume: no final checkpoint of stage `{}` in {}",
            stage.name,
            checkpoints.display()
        ))
    })
}

/// Refuses rows of `data` whose prompt, completion and EOS need more positions than
/// `context` (the rule [`model::training_positions`] states).
pub(super) fn check_training_rows(
    what: &str,
    data: &Dataset,
    tok: &Tokenizer,
    context: usize,
) -> Result<(), ExecError> {
    super::check_context(what, data, context, |p, c| model::training_positions(tok, p, c))
}
