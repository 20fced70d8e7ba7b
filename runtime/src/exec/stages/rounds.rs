//! Running one bound training stage: a single `run_stage` call, or — when its curriculum trains
//! in rounds (exclusive `buckets`) — one call per round, arranged here so the loop never learns
//! about rounds; and what a `rounds` block's stages read in each round ([`Scope`]).
//!
//! Round r reads round r − 1's output as its policy (with its optimiser moments when the stage
//! says `optimizer = keep`) and, when the curriculum re-binds the reference, as its reference;
//! round 0 reads what the stage names. Each round has its own step count and schedules
//! (`(step, round's steps)`), its own checkpoints (`01-dpo-r02-step000080`, the round in
//! `TrainState`) and metrics lines (`"round": r`); the stage's output is its last round's.
//!
//! A `rounds name = N from MODEL { stages }` block runs its stages N times: `prepare` binds
//! each stage once per round in a [`Scope`], where `name.input` is MODEL in round 0 and round
//! r − 1's output after, and a block stage's name is its output of that round
//! (`ModelRef::Round`, `ModelRef::Stage` in the last round, which later steps read). A round's
//! output is its last training stage's model (its input when it trains nothing); the block's
//! output is its last round's. Each bound stage of a round is a unit like a round above: its
//! round label goes into its checkpoints (`03-step-r01-step000100`) and metrics lines.
//!
//! Invariants: a unit of work (a stage, or one round of it) before the resume point is never
//! trained again — its output is read back from its final checkpoint only when a later unit
//! reads it; the unit the resume point belongs to continues from it; the model store counts one
//! read per unit, so no round frees a model a later round reads.

use super::{Bound, OptimizerPolicy};
use crate::artifact::RunDir;
use crate::checkpoint::{folder_prefix, Checkpoint, RoundIndex};
use crate::exec::build::Builder;
use crate::exec::evals::Eval;
use crate::exec::models::{ModelRef, ModelStore, StageOutput};
use crate::exec::ExecError;
use crate::optim::AdamW;
use crate::progress::Progress;
use crate::train::{self, Models, Resume, RunContext, StageSummary};
use recipe_compiler::program::{Rounds, Value};
use std::path::Path;

/// A round of a `rounds` block, as its stages see it.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Scope {
    /// The block's name (`irpo`).
    pub block: String,
    pub round: RoundIndex,
    /// The model the round starts from (`irpo.input`).
    pub input: ModelRef,
    /// The block's stages, by name.
    pub stages: Vec<String>,
}

impl Scope {
    /// The output model of the block's stage `stage` in this round: `ModelRef::Round`, or in
    /// the last round `ModelRef::Stage` (what a step after the block reads).
    pub fn output(&self, stage: &str) -> ModelRef {
        match self.round.index + 1 == self.round.count {
            true => ModelRef::Stage(stage.to_string()),
            false => ModelRef::Round { stage: stage.to_string(), round: self.round.index },
        }
    }

    /// The model a `Model`-typed argument value names in this round.
    pub fn model(&self, value: &Value) -> Result<ModelRef, ExecError> {
        match value {
            Value::RoundInput(block) if *block == self.block => Ok(self.input.clone()),
            Value::Stage { stage, .. } if self.stages.contains(stage) => Ok(self.output(stage)),
            other => ModelRef::of(other),
        }
    }
}

/// The output model of stage `stage`: in a `rounds` block's round, that round's
/// ([`Scope::output`]); elsewhere the stage's.
pub(super) fn output(stage: &str, scope: Option<&Scope>) -> ModelRef {
    scope.map_or_else(|| ModelRef::Stage(stage.to_string()), |s| s.output(stage))
}

/// The rounds of `block` in order, and the block's output model: round 0 starts from the
/// block's `from`, round r from round r − 1's output — the model of `last_training`, the
/// block's last stage that trains, or the round's input when none does.
///
/// Errors: `ExecError::Config` for a block of fewer than one round.
pub(super) fn scopes(block: &Rounds, last_training: Option<&str>) -> Result<(Vec<Scope>, ModelRef), ExecError> {
    let count = u32::try_from(block.count).ok().filter(|&n| n >= 1).ok_or_else(|| {
        ExecError::Config(format!("`rounds {}` runs {} rounds; it needs at least one", block.name, block.count))
    })?;
    let stages: Vec<String> = block.stages.iter().map(|d| d.name.clone()).collect();
    let mut input = ModelRef::of(&block.from)?;
    let mut scopes = Vec::with_capacity(count as usize);
    for index in 0..count {
        let scope =
            Scope { block: block.name.clone(), round: RoundIndex { index, count }, input, stages: stages.clone() };
        input = match last_training {
            Some(stage) => scope.output(stage),
            None => scope.input.clone(),
        };
        scopes.push(scope);
    }
    Ok((scopes, input))
}

/// A bound training stage and the run-level settings of its loop.
pub(super) struct Training<'s> {
    /// Its position in the run order, and its name.
    pub index: usize,
    pub name: &'s str,
    pub bound: &'s Bound,
    /// Inside a `rounds` block: the block's round (a label: the unit is one run) and the model
    /// it outputs; `None` and `ModelRef::Stage(name)` elsewhere.
    pub block_round: Option<RoundIndex>,
    pub output: ModelRef,
    pub eval_every: Option<u64>,
    pub eval_on_start: bool,
    pub checkpoint_every: Option<u64>,
}

/// One `run_stage` call of a stage: the round (if in rounds), its steps, what it reads and what
/// its output is.
struct Unit {
    round: Option<RoundIndex>,
    steps: u64,
    policy: ModelRef,
    reference: Option<ModelRef>,
    output: ModelRef,
}

impl Training<'_> {
    /// The stage's units in order: itself, or its rounds.
    fn units(&self) -> Vec<Unit> {
        let bound = self.bound;
        let Some(plan) = &bound.rounds else {
            return vec![Unit {
                round: self.block_round,
                steps: bound.settings.steps,
                policy: bound.policy.clone(),
                reference: bound.reference.clone(),
                output: self.output.clone(),
            }];
        };
        let count = plan.steps.len() as u32;
        let round_output = |round: u32| ModelRef::Round { stage: self.name.to_string(), round };
        (0..count)
            .zip(&plan.steps)
            .map(|(r, &steps)| {
                let previous = r.checked_sub(1).map(round_output);
                let reference = match (&previous, plan.rebind_reference) {
                    (Some(previous), true) => bound.reference.as_ref().map(|_| previous.clone()),
                    _ => bound.reference.clone(),
                };
                Unit {
                    round: Some(RoundIndex { index: r, count }),
                    steps,
                    policy: previous.unwrap_or_else(|| bound.policy.clone()),
                    reference,
                    output: if r + 1 == count { ModelRef::Stage(self.name.to_string()) } else { round_output(r) },
                }
            })
            .collect()
    }
}

/// Trains `training` (every unit after the resume point, continuing the one it belongs to), its
/// evaluations run on its policy. The summary of the last unit trained; `None` when every unit
/// finished before the resume point.
///
/// Errors: the loop's, the model store's, and `ExecError::Input` when a finished unit a later
/// one reads has no final checkpoint to read back.
pub(super) fn train(
    training: &Training<'_>,
    evals: &[Eval],
    builder: &mut Builder<'_>,
    models: &mut ModelStore,
    run: &mut RunDir,
    progress: &mut dyn Progress,
    resume: Option<&Checkpoint>,
) -> Result<Option<StageSummary>, ExecError> {
    let device = builder.device.clone();
    let bound = training.bound;
    let resume_at = resume.map(|c| (c.state.stage_index, c.state.round.map_or(0, |r| r.index)));
    let mut summary: Option<StageSummary> = None;
    let units = training.units();
    let total_steps = units.iter().map(|u| u.steps).sum();
    for unit in units {
        let round = unit.round.map_or(0, |r| r.index);
        let mut cfg = bound.settings.loop_config(training.name, training.index);
        cfg.steps = unit.steps;
        cfg.round = unit.round;
        cfg.eval_every = training.eval_every;
        cfg.checkpoint_every = training.checkpoint_every;
        cfg.eval_on_start = training.eval_on_start && round == 0;
        let here = (training.index, round);
        let resuming = resume.filter(|_| resume_at == Some(here));
        // A unit that finished before the resume point: restore its output if read, move on.
        if resume_at.is_some_and(|at| here < at) || resuming.is_some_and(|c| c.state.complete()) {
            models.skip(&unit.policy);
            unit.reference.iter().for_each(|r| models.skip(r));
            if models.is_read(&unit.output) {
                let ck = final_checkpoint(&run.checkpoints(), training.index, training.name, unit.round)?;
                let model = ck.load_model(&device)?;
                let mut optim = AdamW::new(model.params(), cfg.adam)?;
                optim.load_state(&ck.load_moments(&device)?, ck.state.optimizer_steps)?;
                progress.note(&format!("stage `{}` restored from {}", training.name, ck.dir.display()));
                models.finish_output(unit.output, StageOutput { model, optim });
            }
            models.release_unread();
            continue;
        }
        let (model, mut optim, state) = match resuming {
            Some(ck) => {
                models.skip(&unit.policy);
                let model = ck.load_model(&device)?;
                let optim = AdamW::new(model.params(), cfg.adam)?;
                (model, optim, Some(Resume::from_checkpoint(ck, &device)?))
            }
            None => {
                let (model, previous) = models.start(builder, &unit.policy)?;
                let mut optim = AdamW::new(model.params(), cfg.adam)?;
                if let (OptimizerPolicy::Keep, Some(previous)) = (bound.settings.optimizer, previous) {
                    let moments = previous.state_tensors()?.into_iter().collect();
                    optim.load_state(&moments, previous.steps())?;
                }
                (model, optim, None)
            }
        };
        // The reference is rebuilt from what it names, also on resume.
        let reference = unit.reference.as_ref().map(|r| models.frozen(builder, r)).transpose()?;
        if let (Some(r), Some(model)) = (&unit.reference, &reference) {
            super::record_reference(run, training.name, unit.round, r, model)?;
        }
        models.release_unread();
        if let Some(r) = unit.round {
            let note =
                format!("stage `{}`: round {} of {} ({} steps)", training.name, r.index + 1, r.count, unit.steps);
            progress.note(&note);
        }
        let mut parts = (bound.parts)(round)?;
        let mut evaluators = evals.iter().map(|e| e.evaluator(model.tokenizer())).collect::<Result<Vec<_>, _>>()?;
        let mut ctx = RunContext { run: &mut *run, progress: &mut *progress };
        let roles = Models { policy: &model, reference: reference.as_ref() };
        summary = Some(train::run_stage(&roles, &mut optim, &mut parts, &cfg, &mut evaluators, &mut ctx, state)?);
        models.finish_output(unit.output, StageOutput { model, optim });
    }
    // A stage in rounds reports all its steps; its loss and evaluation are its last round's.
    Ok(summary.map(|s| StageSummary { steps: total_steps, ..s }))
}

/// The last checkpoint a finished stage (or round) wrote.
fn final_checkpoint(
    checkpoints: &Path,
    index: usize,
    stage: &str,
    round: Option<RoundIndex>,
) -> Result<Checkpoint, ExecError> {
    let prefix = folder_prefix(index, stage, round.map(|r| r.index));
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
    let what = match round {
        Some(r) => format!("round {} of stage `{stage}`", r.index),
        None => format!("stage `{stage}`"),
    };
    best.ok_or_else(|| {
        ExecError::Input(format!("cannot resume: no final checkpoint of {what} in {}", checkpoints.display()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::settings::TrainSettings;
    use crate::exec::stages::RoundPlan;
    use crate::optim::AdamWConfig;
    use crate::train::Schedule;

    fn training_with(bound: &Bound) -> Training<'_> {
        Training {
            index: 1,
            name: "dpo",
            bound,
            block_round: None,
            output: ModelRef::Stage("dpo".into()),
            eval_every: None,
            eval_on_start: false,
            checkpoint_every: None,
        }
    }

    fn bound(rounds: Option<RoundPlan>) -> Bound {
        let settings = TrainSettings {
            steps: 6,
            batch: 2,
            accumulate: 1,
            lr: Schedule::constant(1e-3),
            weight_decay: Schedule::constant(0.0),
            clip: None,
            adam: AdamWConfig::default(),
            optimizer: OptimizerPolicy::Reset,
            log_every: 1,
        };
        Bound {
            policy: ModelRef::Stage("sft".into()),
            reference: Some(ModelRef::Declared("base".into())),
            settings,
            rounds,
            parts: Box::new(|_| Err(ExecError::Internal("not built in this test".into()))),
        }
    }

    /// The hook a stage with a reference (`preference`) gets: with `rebind_reference`, round r
    /// scores against round r − 1's model; without it, against the stage's reference throughout.
    #[test]
    fn rounds_read_the_previous_round_and_rebind_the_reference() {
        let round = |i| ModelRef::Round { stage: "dpo".into(), round: i };
        let rebound = bound(Some(RoundPlan { steps: vec![2, 2, 2], rebind_reference: true }));
        let units = training_with(&rebound).units();
        let reads: Vec<(ModelRef, Option<ModelRef>, ModelRef)> =
            units.iter().map(|u| (u.policy.clone(), u.reference.clone(), u.output.clone())).collect();
        assert_eq!(
            reads,
            [
                (ModelRef::Stage("sft".into()), Some(ModelRef::Declared("base".into())), round(0)),
                (round(0), Some(round(0)), round(1)),
                (round(1), Some(round(1)), ModelRef::Stage("dpo".into())),
            ]
        );
        assert_eq!(units[2].round, Some(RoundIndex { index: 2, count: 3 }));

        let kept = bound(Some(RoundPlan { steps: vec![3, 3], rebind_reference: false }));
        let references: Vec<_> = training_with(&kept).units().into_iter().map(|u| u.reference).collect();
        assert_eq!(references, [Some(ModelRef::Declared("base".into())), Some(ModelRef::Declared("base".into()))]);

        let single = bound(None);
        let units = training_with(&single).units();
        assert_eq!((units.len(), units[0].round, units[0].steps), (1, None, 6));
    }

    /// In a `rounds` block, round r reads round r − 1's last training stage's model as its
    /// input; a block stage's name is its output of the round being bound.
    #[test]
    fn block_rounds_start_from_the_previous_rounds_training_output() {
        let recipe = "recipe \"t\" {}\nmodel m = tiny_lm()\ndata d = synth.addition()\nstage s = sft(m, d)\n\
                      rounds b = 3 from s.model {\n\
                      stage p = self_pairs(b.input, d, judge = |r| exact(r.completion, r.answer))\n\
                      stage t = preference(b.input, p, reference = b.input)\n}\nrun s -> b\n";
        let source = recipe_compiler::diag::Source::new("t.recipe", recipe);
        let program = recipe_compiler::compile(&source, &[]).expect("compiles");
        let block = &program.rounds[0];
        let round = |stage: &str, i| ModelRef::Round { stage: stage.into(), round: i };
        let (rounds, output) = scopes(block, Some("t")).unwrap();
        let inputs: Vec<_> = rounds.iter().map(|s| s.input.clone()).collect();
        assert_eq!(inputs, [ModelRef::Stage("s".into()), round("t", 0), round("t", 1)]);
        assert_eq!(output, ModelRef::Stage("t".into()), "the last round's output is what `b.model` reads");
        let input = Value::RoundInput("b".into());
        let pairs = Value::Stage { stage: "p".into(), field: Some("model".into()) };
        assert_eq!(rounds[1].model(&input).unwrap(), round("t", 0));
        assert_eq!(rounds[1].model(&pairs).unwrap(), round("p", 1));
        assert_eq!(rounds[2].model(&pairs).unwrap(), ModelRef::Stage("p".into()));
        assert_eq!(rounds[0].model(&Value::Model("m".into())).unwrap(), ModelRef::Declared("m".into()));
        assert_eq!(rounds[2].round, RoundIndex { index: 2, count: 3 });

        let (untrained, output) = scopes(block, None).unwrap();
        assert!(untrained.iter().all(|s| s.input == ModelRef::Stage("s".into())));
        assert_eq!(output, ModelRef::Stage("s".into()), "a block that trains nothing passes its input on");
    }
}
