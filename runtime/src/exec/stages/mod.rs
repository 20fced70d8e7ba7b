//! Stages: `prepare` binds each step of the run order through the stage-kind table (decoding
//! and validating its arguments, checking its data against its model, all without compute),
//! `execute` runs the bound stages through the one step loop, resuming from a checkpoint where
//! one exists.
//!
//! A stage kind is a row of [`STAGE_KINDS`]: the builtin's name and its binding, a function
//! that decodes the call into typed settings and returns a [`Bound`] stage — which models it
//! reads and how to build its curriculum, experience source and objective. Adding a kind adds
//! a row and a file; nothing here changes.
//!
//! A stage whose curriculum trains in rounds (exclusive `buckets`) is run here as one
//! `run_stage` call per round (`rounds.rs`): round r starts from round r − 1's model, and scores
//! against it when the curriculum re-binds the reference; each round has its own steps,
//! checkpoints (`01-dpo-r02-step000080`) and resume point.

mod pretrain;
mod rounds;
mod sft;

use super::args::Call;
use super::build::Builder;
use super::curricula::{self, CurriculumSpec};
use super::evals::{self, Eval};
use super::models::{Limits, ModelRef, ModelStore};
use super::settings::{OptimizerPolicy, TrainSettings};
use super::ExecError;
use crate::artifact::RunDir;
use crate::checkpoint::Checkpoint;
use crate::data::Dataset;
use crate::model::{self, Tokenizer};
use crate::progress::Progress;
use crate::train::{StageParts, StageSummary};
use recipe_compiler::program::{Program, Step, Value};

/// A stage builtin this runtime executes.
pub(super) struct StageKind {
    /// The builtin's name (`sft`).
    pub name: &'static str,
    /// Decodes and validates a call of it, without compute.
    pub bind: fn(&mut Binding<'_, '_>) -> Result<Bound, ExecError>,
}

/// Every stage kind the runtime executes.
pub(super) const STAGE_KINDS: &[StageKind] =
    &[StageKind { name: "sft", bind: sft::bind }, StageKind { name: "pretrain", bind: pretrain::bind }];

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

/// A stage ready to run.
pub(super) struct Prepared {
    index: usize,
    name: String,
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
    let evals = evals::prepare(program, builder)?;
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
        let mut binding = Binding { stage: &decl.name, call, builder, models, max_steps };
        let bound = (kind.bind)(&mut binding)?;
        let call = binding.call;
        check_models(&call, &bound)?;
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
        for eval in &evals {
            eval.check(program, &decl.name, &tok, context)?;
        }
        let checkpoint_every = match &bound.rounds {
            None => {
                models.register(&decl.name, &bound.policy, bound.reference.as_ref())?;
                checkpoint_every(program, bound.settings.steps)
            }
            Some(plan) => {
                let (policy, reference) = (&bound.policy, bound.reference.as_ref());
                models.register_rounds(
                    &decl.name,
                    policy,
                    reference,
                    plan.steps.len() as u32,
                    plan.rebind_reference,
                )?;
                checkpoint_every(program, plan.steps.iter().copied().max().unwrap_or(1))
            }
        };
        prepared.push(Prepared { index, name: decl.name.clone(), bound, eval_every, eval_on_start, checkpoint_every });
    }
    Ok((prepared, evals))
}

/// Refuses model settings that cannot do what they say: `optimizer = keep` on a policy that no
/// earlier stage trained (there are no moments to keep).
fn check_models(call: &Call<'_>, bound: &Bound) -> Result<(), ExecError> {
    if bound.settings.optimizer == OptimizerPolicy::Keep && matches!(bound.policy, ModelRef::Declared(_)) {
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
/// (and rounds) finished before it are restored from their final checkpoints and the one it
/// belongs to continues from it.
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
    for stage in stages {
        let training = rounds::Training {
            index: stage.index,
            name: &stage.name,
            bound: &stage.bound,
            eval_every: stage.eval_every,
            eval_on_start: stage.eval_on_start,
            checkpoint_every: stage.checkpoint_every,
        };
        if let Some(summary) = rounds::train(&training, evals, builder, models, run, progress, resume.as_ref())? {
            summaries.push((stage.name.clone(), summary));
        }
    }
    Ok(summaries)
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
