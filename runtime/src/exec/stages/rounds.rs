//! Running one bound training stage: a single `run_stage` call, or — when its curriculum trains
//! in rounds (exclusive `buckets`) — one call per round, arranged here so the loop never learns
//! about rounds.
//!
//! Round r reads round r − 1's output as its policy (with its optimiser moments when the stage
//! says `optimizer = keep`) and, when the curriculum re-binds the reference, as its reference;
//! round 0 reads what the stage names. Each round has its own step count and schedules
//! (`(step, round's steps)`), its own checkpoints (`01-dpo-r02-step000080`, the round in
//! `TrainState`) and metrics lines (`"round": r`); the stage's output is its last round's.
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
use std::path::Path;

/// A bound training stage and the run-level settings of its loop.
pub(super) struct Training<'s> {
    /// Its position in the run order, and its name.
    pub index: usize,
    pub name: &'s str,
    pub bound: &'s Bound,
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
                round: None,
                steps: bound.settings.steps,
                policy: bound.policy.clone(),
                reference: bound.reference.clone(),
                output: ModelRef::Stage(self.name.to_string()),
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
        let mut evaluators: Vec<_> = evals.iter().map(Eval::evaluator).collect();
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
        Training { index: 1, name: "dpo", bound, eval_every: None, eval_on_start: false, checkpoint_every: None }
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
}
