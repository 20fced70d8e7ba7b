//! Experience sources: what a micro-batch's rows become before the objective scores them.
//! Offline stages (SFT, pretraining, preference) train on the rows as they are; an online
//! stage samples completions of them under the current policy here, so rollouts never hide
//! inside a loss.
//!
//! Invariants: a source draws randomness only from streams derived from the seed, stage, step
//! and row, so what it produces does not depend on how often the stage was resumed; its
//! resumable state is [`ExperienceSource::state`], saved in checkpoints.

use super::rl::rollouts::Rollouts;
use super::{Curriculum, TrainError};
use crate::model::CausalLm;
use serde_json::Value;
use std::sync::Arc;

/// One micro-batch's experience: the dataset rows it came from and their stable ids (what
/// errors and logs report), in the order the objective sees them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Experience {
    /// Row indices into the stage's dataset.
    pub rows: Vec<usize>,
    /// The rows' stable ids (`file:line` numbers or generated ids).
    pub example_ids: Vec<u64>,
    /// The 0-based optimiser step of `total` it was collected for: what an objective evaluates
    /// its schedules at (a loss's `beta = interpolate(0.05, 0.2)`).
    pub step: u64,
    pub total: u64,
    /// The sampled, scored groups an online source collected (`None` for offline data).
    pub rollouts: Option<Arc<Rollouts>>,
}

/// Turns the rows a curriculum chooses into experience.
pub trait ExperienceSource {
    /// One micro-batch of experience from `size` rows drawn from `curriculum` at 0-based
    /// `step` of `total`; `policy` is the model being trained, as it is now (an online source
    /// generates with it). The source draws the rows itself, so an online source can ask for
    /// more when a filter left groups out ([`Curriculum::admit`]) or draw none on a step that
    /// reuses earlier rollouts (TRL's `num_iterations`).
    fn collect(
        &mut self,
        policy: &CausalLm,
        curriculum: &mut dyn Curriculum,
        size: usize,
        step: u64,
        total: u64,
    ) -> Result<Experience, TrainError>;

    /// Resumable state; none for a source that keeps nothing between steps.
    fn state(&self) -> Value {
        Value::Null
    }

    /// Restores what `state` returned.
    fn restore(&mut self, _state: &Value) -> Result<(), String> {
        Ok(())
    }
}

/// Offline data: the rows as they are.
pub struct Offline {
    ids: Vec<u64>,
}

impl Offline {
    /// A source over a dataset whose rows have these stable ids.
    pub fn new(ids: Vec<u64>) -> Offline {
        Offline { ids }
    }
}

impl ExperienceSource for Offline {
    fn collect(
        &mut self,
        _policy: &CausalLm,
        curriculum: &mut dyn Curriculum,
        size: usize,
        step: u64,
        total: u64,
    ) -> Result<Experience, TrainError> {
        let rows = curriculum.next_rows(step, total, size)?;
        let example_ids = rows.iter().map(|&r| self.ids[r]).collect();
        Ok(Experience { rows, example_ids, step, total, rollouts: None })
    }
}
