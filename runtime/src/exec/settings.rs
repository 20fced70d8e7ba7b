//! The optimiser and loop settings every training stage builtin takes (TRL's names: `lr`,
//! `weight_decay`, `max_grad_norm`, `accumulate`, `adam_beta1`, `adam_beta2`, `adam_epsilon`,
//! plus `steps`, `batch` and the `optimizer` policy at the stage boundary), decoded and
//! validated once, before any compute.

use super::args::{self, Call, Constant, Functions};
use super::ExecError;
use crate::optim::AdamWConfig;
use crate::train::{LoopConfig, Schedule};
use std::sync::Arc;

/// The most rows a micro-batch (and micro-batches a step) may have: far beyond any memory, but
/// small enough that a typo such as `batch = 1e12` is an error, not an allocation failure.
const MAX_BATCH: u64 = 1 << 20;

/// Schedules of stages up to this many steps are evaluated at every step before any compute;
/// longer ones are checked step by step as they train.
pub const CHECKED_SCHEDULE_STEPS: u64 = 1_000_000;

/// What happens to AdamW's moments when a stage starts from another stage's model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptimizerPolicy {
    /// Continue the moments (and step count) of the stage the model comes from.
    Keep,
    /// Fresh moments.
    Reset,
}

impl Constant for OptimizerPolicy {
    const TYPE: &'static str = "Optimizer";

    fn from_name(name: &str) -> Option<OptimizerPolicy> {
        match name {
            "keep" => Some(OptimizerPolicy::Keep),
            "reset" => Some(OptimizerPolicy::Reset),
            _ => None,
        }
    }
}

/// A training stage's settings, validated.
#[derive(Clone, Debug)]
pub struct TrainSettings {
    /// Optimiser steps (capped by `--max-steps`).
    pub steps: u64,
    /// Rows per micro-batch (TRL's `per_device_train_batch_size`).
    pub batch: usize,
    /// Micro-batches per optimiser step (TRL's `gradient_accumulation_steps`).
    pub accumulate: u32,
    pub lr: Schedule,
    pub weight_decay: Schedule,
    /// Global-norm clipping threshold; `None` (from `max_grad_norm <= 0`) disables clipping.
    pub clip: Option<f64>,
    pub adam: AdamWConfig,
    pub optimizer: OptimizerPolicy,
    /// Write a metrics line every this many steps (TRL's `logging_steps`); evaluation steps and
    /// the last step always write one.
    pub log_every: u64,
}

impl TrainSettings {
    /// Reads the settings of a stage call; `max_steps` caps `steps`.
    ///
    /// Errors: `ExecError::Config` at the offending argument for `batch = 0`, `accumulate = 0`,
    /// negative counts, `adam_beta1`/`adam_beta2` outside [0, 1), `adam_epsilon <= 0`,
    /// `log_every = 0`, and an
    /// `lr` or `weight_decay` that is negative, NaN or infinite at some step of a stage of at most
    /// [`CHECKED_SCHEDULE_STEPS`] steps (the message names the schedule and the first such 0-based
    /// `step` it was given).
    pub fn decode(
        call: &Call<'_>,
        functions: &Arc<Functions>,
        max_steps: Option<u64>,
    ) -> Result<TrainSettings, ExecError> {
        let batch = call.count("batch")?;
        if !(1..=MAX_BATCH).contains(&batch) {
            return Err(call.invalid("batch", format!("must be in 1..={MAX_BATCH}, found {batch}")));
        }
        // A stage of no steps would leave no checkpoint to resume later stages from.
        let steps = call.count("steps")?;
        if steps == 0 {
            return Err(call.invalid("steps", "must be at least 1"));
        }
        let accumulate = u32::try_from(call.count("accumulate")?)
            .ok()
            .filter(|&a| (1..=MAX_BATCH as u32).contains(&a))
            .ok_or_else(|| call.invalid("accumulate", format!("must be in 1..={MAX_BATCH}")))?;
        let unit = |arg: &str| -> Result<f64, ExecError> {
            let value = call.float(arg)?;
            match (0.0..1.0).contains(&value) {
                true => Ok(value),
                false => Err(call.invalid(arg, format!("must be in [0, 1), found {value}"))),
            }
        };
        let adam =
            AdamWConfig { beta1: unit("adam_beta1")?, beta2: unit("adam_beta2")?, eps: call.float("adam_epsilon")? };
        if !(adam.eps > 0.0) {
            return Err(call.invalid("adam_epsilon", "must be positive"));
        }
        let steps = steps.min(max_steps.unwrap_or(u64::MAX));
        let log_every = call.count("log_every")?;
        if log_every == 0 {
            return Err(call.invalid("log_every", "must be at least 1 (every step)"));
        }
        let schedule = |arg: &str, what: &str| -> Result<Schedule, ExecError> {
            let schedule = args::schedule(call, arg, functions)?;
            let bad = (steps <= CHECKED_SCHEDULE_STEPS).then(|| schedule.first_out_of_domain(steps)).flatten();
            match (bad, schedule.name()) {
                (None, _) => Ok(schedule),
                (Some((_, value)), None) => {
                    Err(call.invalid(arg, format!("is {value}: {what} must be finite and not negative")))
                }
                (Some((step, value)), Some(name)) => Err(call.invalid(
                    arg,
                    format!(
                        "(schedule `{name}`) is {value} at step = {step} of total = {steps}: \
                         {what} must be finite and not negative at every step"
                    ),
                )),
            }
        };
        Ok(TrainSettings {
            steps,
            batch: batch as usize,
            accumulate,
            lr: schedule("lr", "a learning rate")?,
            weight_decay: schedule("weight_decay", "a weight decay")?,
            clip: Some(call.float("max_grad_norm")?).filter(|c| *c > 0.0),
            adam,
            optimizer: call.constant("optimizer")?,
            log_every,
        })
    }

    /// The loop settings for stage `stage` at position `stage_index` of the run.
    pub fn loop_config(&self, stage: &str, stage_index: usize) -> LoopConfig {
        LoopConfig {
            stage_index,
            accumulate: self.accumulate,
            weight_decay: self.weight_decay.clone(),
            adam: self.adam,
            clip: self.clip,
            log_every: self.log_every,
            ..LoopConfig::new(stage, self.steps, self.batch, self.lr.clone())
        }
    }
}
