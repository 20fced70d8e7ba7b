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
//!
//! A training stage whose curriculum trains in rounds (exclusive `buckets`) is run as one
//! `run_stage` call per round (`rounds.rs`): round r starts from round r − 1's model, and scores
//! against it when the curriculum re-binds the reference; each round has its own steps,
//! checkpoints (`01-dpo-r02-step000080`) and resume point. A stage of one run is the same code
//! with one unit.
//!
//! A `rounds` block is prepared as its stages bound once per round, in order, each in the
//! round's [`rounds::Scope`] (what `block.input` and the block's stage names mean in it) and
//! with its own position in the run order; from there on a block stage of a round is a stage
//! like any other (with the round as a label in checkpoints, metrics and data files).

mod contrast;
mod generation;
mod preference;
mod pretrain;
mod rl;
mod rounds;
mod score;
mod self_pairs;
mod sft;

use super::args::Call;
use super::build::{self, Builder};
use super::conversations;
use super::curricula::{self, CurriculumSpec};
use super::evals::{self, Eval};
use super::models::{Limits, ModelRef, ModelStore};
use super::settings::{OptimizerPolicy, TrainSettings};
use super::ExecError;
use crate::artifact::{self, ReferenceDigest, RunDir};
use crate::checkpoint::{Checkpoint, RoundIndex};
use crate::data::jsonl;
use crate::data::Dataset;
use crate::model::{self, CausalLm, Tokenizer};
use crate::progress::Progress;
use crate::train::{StageParts, StageSummary};
use recipe_compiler::program::{Decl, Program, Step, Value};

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
    StageKind { name: "preference", bind: Bind::Train(preference::bind) },
    StageKind { name: "pretrain", bind: Bind::Train(pretrain::bind) },
    StageKind { name: "rl", bind: Bind::Train(rl::bind) },
    StageKind { name: "score", bind: Bind::Transform(score::bind) },
    StageKind { name: "contrast_pairs", bind: Bind::Transform(contrast::bind) },
    StageKind { name: "self_pairs", bind: Bind::Transform(self_pairs::bind) },
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
    /// The round of the `rounds` block the stage is in, if any.
    scope: Option<&'b rounds::Scope>,
}

impl Binding<'_, '_> {
    /// The model the `Model` argument `arg` names (in the block's round, inside a `rounds`
    /// block).
    pub fn model(&self, arg: &str) -> Result<ModelRef, ExecError> {
        let value = self.call.get(arg)?;
        match self.scope {
            Some(scope) => scope.model(value),
            None => ModelRef::of(value),
        }
    }

    /// The `rounds` block round the stage runs in, if any.
    pub fn round(&self) -> Option<RoundIndex> {
        self.scope.map(|s| s.round)
    }

    /// The stage's `dataset` argument, built.
    ///
    /// TRL's conversational rows (`Messages` fields) come rendered by the policy's chat template
    /// (`exec::conversations`), as text the stage tokenises.
    ///
    /// Errors: the build's, and `ExecError::Config` for a dataset with no rows or conversations
    /// that cannot be rendered, at the argument.
    pub fn dataset(&mut self) -> Result<Dataset, ExecError> {
        let value = self.call.get("dataset")?;
        let data = self.builder.dataset(value).map_err(|e| self.call.locate(e, Some("dataset")))?;
        if data.is_empty() {
            return Err(self.call.invalid("dataset", format!("({}) has no rows", data.origin)));
        }
        if !conversations::is_conversational(&data) {
            return Ok(data);
        }
        let tokenizer = self.limits("policy")?.tokenizer;
        conversations::render(&data, &tokenizer).map_err(|e| {
            let e = ExecError::Config(format!("stage `{}`: {e}", self.stage));
            self.call.locate(e, Some("dataset"))
        })
    }

    /// The tokenizer, context and vocabulary of the model argument `arg` names.
    pub fn limits(&mut self, arg: &str) -> Result<Limits, ExecError> {
        let r = self.model(arg)?;
        self.models.limits(self.builder, &r)
    }

    /// The stage's `curriculum` argument, decoded against its `data` (for a stage of
    /// `settings.steps` steps): any curriculum serves any stage kind over any row type.
    ///
    /// Errors: the curriculum's, at its arguments.
    pub fn curriculum(&self, data: &Dataset, settings: &TrainSettings) -> Result<CurriculumSpec, ExecError> {
        let call = self.call.nested("curriculum")?;
        curricula::bind(&call, self.stage, data, self.builder.seed, settings.steps, &self.builder.functions)
    }

    /// How the stage's steps are split when `curriculum` trains in rounds: the written `steps`
    /// evenly over the rounds (the first `steps % rounds` rounds one step more), each capped by
    /// `--max-steps` (a smoke test runs every round); `None` for a stage of one run.
    ///
    /// Errors: `ExecError::Config` at `steps` when there are fewer steps than rounds, and at
    /// `lr` or `weight_decay` when a schedule leaves its domain over a round's steps.
    pub fn round_plan(
        &self,
        curriculum: &CurriculumSpec,
        settings: &TrainSettings,
    ) -> Result<Option<RoundPlan>, ExecError> {
        let Some(rounds) = curriculum.rounds() else { return Ok(None) };
        let (written, count) = (self.call.count("steps")?, u64::from(rounds.count));
        if written < count {
            let message = format!("is {written}: the curriculum trains {count} rounds, each needs at least one step");
            return Err(self.call.invalid("steps", message));
        }
        let steps = split_steps(written, count, self.max_steps);
        for &total in &steps {
            for (arg, schedule) in [("lr", &settings.lr), ("weight_decay", &settings.weight_decay)] {
                if let Some((step, value)) = schedule.first_out_of_domain(total) {
                    let message = format!(
                        "is {value} at step = {step} of a round's total = {total}: it must be finite and not negative"
                    );
                    return Err(self.call.invalid(arg, message));
                }
            }
        }
        Ok(Some(RoundPlan { steps, rebind_reference: rounds.rebind_reference }))
    }
}

/// `steps` split over `count` rounds as evenly as whole steps allow (the first `steps % count`
/// rounds one more), each capped by `max_steps`.
fn split_steps(steps: u64, count: u64, max_steps: Option<u64>) -> Vec<u64> {
    let cap = max_steps.unwrap_or(u64::MAX);
    (0..count).map(|r| (steps / count + u64::from(r < steps % count)).min(cap)).collect()
}

/// A stage that runs in rounds: the steps of each, and whether round r > 0 scores against
/// round r − 1's model in place of the stage's reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct RoundPlan {
    pub steps: Vec<u64>,
    /// A no-op for a stage without a reference (`sft`, `pretrain`): there is none to re-bind.
    pub rebind_reference: bool,
}

/// A stage whose arguments are decoded and validated.
pub(super) struct Bound {
    /// The model the stage trains (a copy of it).
    pub policy: ModelRef,
    /// The frozen model its objective scores against, if any.
    pub reference: Option<ModelRef>,
    pub settings: TrainSettings,
    /// Set when the stage's curriculum trains in rounds.
    pub rounds: Option<RoundPlan>,
    /// Builds the stage's parts for a round (0 for a stage of one run), fresh (a checkpoint's
    /// state is restored into them).
    pub parts: Box<dyn Fn(u32) -> Result<StageParts, ExecError>>,
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

/// A stage ready to run (inside a `rounds` block: one round of it).
pub(super) struct Prepared {
    /// Its position in the run order: every round of a block stage has its own.
    index: usize,
    name: String,
    /// The round of the `rounds` block it is in, if any.
    scope: Option<rounds::Scope>,
    /// Its kind's binding, run again just before the stage starts when it reads data an
    /// earlier stage produces (`reads`), against the produced rows.
    bind: Bind,
    /// The positions of the stages whose data it reads.
    reads: Vec<usize>,
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

/// Binds every stage of the run order (a `rounds` block's stages once per round) and checks
/// everything that needs no compute. Builds (or loads) each declared model once, into `models`.
pub(super) fn prepare<'p>(
    program: &'p Program,
    builder: &mut Builder<'p>,
    models: &mut ModelStore,
    max_steps: Option<u64>,
) -> Result<(Vec<Prepared>, Vec<Eval>), ExecError> {
    let mut evals = evals::prepare(program, builder)?;
    let eval_every = evals.iter().map(|e| e.every).filter(|&e| e > 0).min();
    let eval_on_start = matches!(program.header_field("eval_on_start"), Some(Value::Bool(true)));
    let mut prepared: Vec<Prepared> = Vec::new();
    for (index, Planned { decl, scope, closes }) in planned(program)?.into_iter().enumerate() {
        let call = Call::of_decl(program, &decl.name)?;
        let kind = kind_of(program, &decl.name, &call)?;
        let mut reads = Vec::new();
        for stage in build::stage_data_read_by(program, &decl.value) {
            // The latest bound stage of that name: a block stage reads its own round's data.
            let producer = prepared.iter().rev().find(|p| p.name == stage).ok_or_else(|| {
                ExecError::Internal(format!("stage `{}` reads `{stage}.data` before it runs", decl.name))
            })?;
            reads.push(producer.index);
        }
        let (name, bind) = (decl.name.clone(), kind.bind);
        let output = rounds::output(&name, scope.as_ref());
        let mut binding = Binding { stage: &decl.name, call, builder, models, max_steps, scope: scope.as_ref() };
        let bind_train = match kind.bind {
            Bind::Train(bind) => bind,
            Bind::Transform(bind_transform) => {
                let transform = bind_transform(&mut binding)?;
                models.register_alias(output, &transform.policy)?;
                builder.set_stage_data(&decl.name, transform.preview.clone());
                let work = Work::Transform(transform);
                prepared.push(Prepared { index, name, scope, bind, reads, max_steps, work });
                continue;
            }
        };
        let bound = bind_train(&mut binding)?;
        let call = binding.call;
        check_models(&call, &bound, models)?;
        if scope.is_some() && bound.rounds.is_some() {
            let e = ExecError::Unsupported(format!(
                "an exclusive curriculum (rounds within rounds) in stage `{name}` of a `rounds` block"
            ));
            return Err(call.locate(e, Some("curriculum")));
        }
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
        // Every evaluation runs during this stage on its policy: its rows must fit the model.
        for eval in &mut evals {
            eval.check(program, &decl.name, &tok, context)?;
        }
        let checkpoint_every = match &bound.rounds {
            None => {
                models.register(&decl.name, &bound.policy, bound.reference.as_ref())?;
                checkpoint_every(program, bound.settings.steps)
            }
            Some(plan) => {
                let (policy, reference) = (&bound.policy, bound.reference.as_ref());
                let rounds = plan.steps.len() as u32;
                models.register_rounds(&decl.name, policy, reference, rounds, plan.rebind_reference)?;
                checkpoint_every(program, plan.steps.iter().copied().max().unwrap_or(1))
            }
        };
        let training = Training { bound, eval_every, eval_on_start, checkpoint_every };
        prepared.push(Prepared { index, name, scope, bind, reads, max_steps, work: Work::Train(training) });
        if let Some((block, output)) = closes {
            models.alias(ModelRef::Stage(block), &output)?;
        }
    }
    Ok((prepared, evals))
}

/// A stage to bind: a top-level stage, or one round of a `rounds` block's stage.
struct Planned<'p> {
    decl: &'p Decl,
    scope: Option<rounds::Scope>,
    /// On the last stage of a block's last round: the block's name and its output model.
    closes: Option<(String, ModelRef)>,
}

/// The run order's stages to bind, in order, each block's stages once per round.
///
/// Errors: a block with no stage or fewer than one round (`ExecError::Config`), a stage of a kind
/// this runtime does not execute.
fn planned(program: &Program) -> Result<Vec<Planned<'_>>, ExecError> {
    let mut out = Vec::new();
    for step in program.stage_order() {
        let block = match step {
            Step::Stage(decl) => {
                out.push(Planned { decl, scope: None, closes: None });
                continue;
            }
            Step::Rounds(block) => block,
        };
        if block.stages.is_empty() {
            return Err(ExecError::Config(format!("`rounds {}` has no stage", block.name)));
        }
        let mut last_training = None;
        for decl in &block.stages {
            let call = Call::of_decl(program, &decl.name)?;
            if let Bind::Train(_) = kind_of(program, &decl.name, &call)?.bind {
                last_training = Some(decl.name.as_str());
            }
        }
        let (scopes, output) = rounds::scopes(block, last_training)?;
        for scope in scopes {
            out.extend(block.stages.iter().map(|decl| Planned { decl, scope: Some(scope.clone()), closes: None }));
        }
        if let Some(last) = out.last_mut() {
            last.closes = Some((block.name.clone(), output));
        }
    }
    Ok(out)
}

/// The stage kind of declaration `decl`, whose call is `call`.
fn kind_of(program: &Program, decl: &str, call: &Call<'_>) -> Result<&'static StageKind, ExecError> {
    STAGE_KINDS.iter().find(|k| k.name == call.name).ok_or_else(|| {
        ExecError::Unsupported(format!("stage `{decl}` of kind `{}`", call.name)).in_recipe(program, decl, None)
    })
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

/// Runs the prepared stages in order (a stage in rounds, round by round). With `resume`, stages
/// (and rounds) finished before it are restored from their final checkpoints where a later stage
/// reads them, and the one it belongs to continues from it.
pub(super) fn execute(
    stages: &[Prepared],
    evals: &[Eval],
    builder: &mut Builder<'_>,
    models: &mut ModelStore,
    run: &mut RunDir,
    progress: &mut dyn Progress,
    resume: Option<Checkpoint>,
) -> Result<Vec<(String, StageSummary)>, ExecError> {
    let mut summaries = Vec::new();
    let resume_at = resume.as_ref().map(|c| c.state.stage_index);
    // Finished: before the resume point, or the stage it belongs to with its last round done (a
    // block stage's round is one run: its round is a label).
    let finished = |stage: &Prepared| {
        let complete = |c: &Checkpoint| match stage.scope {
            Some(_) => c.state.complete(),
            None => c.state.stage_complete(),
        };
        resume_at.is_some_and(|at| stage.index < at)
            || resume.as_ref().is_some_and(|c| c.state.stage_index == stage.index && complete(c))
    };
    for stage in stages {
        let done = finished(stage);
        // A finished transform computes its data again only for a stage still to run.
        let needed = match stage.work {
            Work::Transform(_) => !done || stages.iter().any(|s| !finished(s) && s.reads.contains(&stage.index)),
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
        // Every unit (the stage, or each round) before the resume point is restored, not trained.
        let training = rounds::Training {
            index: stage.index,
            name: &stage.name,
            bound: &training.bound,
            block_round: stage.scope.as_ref().map(|s| s.round),
            output: rounds::output(&stage.name, stage.scope.as_ref()),
            eval_every: training.eval_every,
            eval_on_start: training.eval_on_start,
            checkpoint_every: training.checkpoint_every,
        };
        if let Some(summary) = rounds::train(&training, evals, builder, models, run, progress, resume.as_ref())? {
            summaries.push((stage.name.clone(), summary));
        }
    }
    Ok(summaries)
}

/// Records the sha256 of the reference weights of stage `stage` (its round `round`, in rounds)
/// in the lock. A resumed run must rebuild the same reference: a different one is refused.
pub(super) fn record_reference(
    run: &RunDir,
    stage: &str,
    round: Option<RoundIndex>,
    named: &ModelRef,
    model: &model::CausalLm,
) -> Result<(), ExecError> {
    let sha256 = artifact::weights_sha256(model.params().iter().map(|(n, v)| (n.as_str(), v.as_tensor())))?;
    let named = match named {
        ModelRef::Declared(name) => name.clone(),
        ModelRef::Stage(stage) => format!("{stage}.model"),
        ModelRef::Round { stage, round } => format!("round {} of `{stage}`", round + 1),
    };
    let round = round.map(|r| r.index + 1);
    let mut lock = artifact::read_lock(run.root())?;
    match lock.references.iter().find(|d| d.stage == stage && d.round == round) {
        Some(d) if d.sha256 == sha256 => return Ok(()),
        Some(d) => {
            let at = round.map_or(String::new(), |r| format!(", round {r}"));
            return Err(ExecError::Input(format!(
                "cannot resume: the reference of stage `{stage}`{at} ({named}) differs from the one the run \
                 started with (weights sha256 {} in recipe.lock, {sha256} now)",
                d.sha256
            )));
        }
        None => lock.references.push(ReferenceDigest { stage: stage.to_string(), round, model: named, sha256 }),
    }
    Ok(run.write_lock(&lock)?)
}

/// `stage` bound again, against the data the stages it reads have produced by now.
fn rebind(stage: &Prepared, builder: &mut Builder<'_>, models: &mut ModelStore) -> Result<Work, ExecError> {
    let program = builder.program;
    let decl =
        program.any_decl(&stage.name).ok_or_else(|| ExecError::Internal(format!("no stage `{}`", stage.name)))?;
    let call = Call::of_decl(program, &decl.name)?;
    let scope = stage.scope.as_ref();
    let mut binding = Binding { stage: &decl.name, call, builder, models, max_steps: stage.max_steps, scope };
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
/// run folder (`data/NN-STAGE.jsonl`, `data/NN-STAGE-rRR.jsonl` in round RR of a `rounds` block,
/// hashed in the lock) and its metrics line (with `"round"` in a block), and hands the
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
    let mut produced = (transform.run)(&policy)?;
    drop(policy);
    if !done {
        let (file, note) = match &stage.scope {
            None => (format!("{:02}-{}.jsonl", stage.index, stage.name), produced.note),
            Some(scope) => {
                let r = scope.round;
                if let Some(line) = produced.metrics.as_object_mut() {
                    line.insert("round".into(), r.index.into());
                }
                let note = format!("{} (`{}` round {} of {})", produced.note, scope.block, r.index + 1, r.count);
                (format!("{:02}-{}-r{:02}.jsonl", stage.index, stage.name, r.index), note)
            }
        };
        run.write_data(&file, &jsonl::to_jsonl(&produced.data))?;
        run.append_metrics(&produced.metrics)?;
        progress.note(&note);
    }
    builder.set_stage_data(&stage.name, produced.data);
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::split_steps;

    #[test]
    fn rounds_split_the_steps_evenly_and_each_is_capped() {
        assert_eq!(split_steps(240, 3, None), [80, 80, 80]);
        assert_eq!(split_steps(7, 3, None), [3, 2, 2]);
        assert_eq!(split_steps(3, 3, None), [1, 1, 1]);
        assert_eq!(split_steps(240, 3, Some(2)), [2, 2, 2], "--max-steps caps each round");
        assert_eq!(split_steps(7, 3, None).iter().sum::<u64>(), 7);
    }
}
