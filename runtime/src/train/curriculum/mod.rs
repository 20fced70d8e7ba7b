//! Curricula: which rows of a stage's dataset each micro-batch trains on. One file per
//! scheduler; every stage kind draws its rows through this trait, so a curriculum written once
//! serves SFT, preference and RL stages alike.
//!
//! Invariants: a curriculum's choices are a pure function of its construction (seed, stage,
//! data), the calls made so far and the feedback observed; its whole resumable state is
//! [`Curriculum::state`], saved in every checkpoint, so a resumed stage draws the same rows.

mod uniform;

pub use uniform::Uniform;

use super::TrainError;
use serde_json::Value;

/// Per-row statistics an objective measured on the rows it just trained on: named columns,
/// each one value per row of the experience, in its order (an RL objective reports `pass_rate`
/// and `reward` per prompt). Offline objectives report none.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Feedback {
    pub columns: Vec<(String, Vec<f64>)>,
}

/// Chooses the rows of every micro-batch and observes what training measured on them.
pub trait Curriculum {
    /// The next micro-batch's `size` row indices (into the stage's dataset) for 0-based `step`
    /// of `total` optimiser steps.
    fn next_rows(&mut self, step: u64, total: u64, size: usize) -> Result<Vec<usize>, TrainError>;

    /// What the objective measured on `rows` (as returned by the last `next_rows`). Feedback
    /// curricula (band-pass, bandits, target tracking) update their state here.
    fn observe(&mut self, _rows: &[usize], _feedback: &Feedback) {}

    /// The curriculum's state as metrics (`curriculum/bucket`, `curriculum/available`), logged
    /// with every metrics line.
    fn metrics(&self) -> Vec<(String, f64)> {
        Vec::new()
    }

    /// Resumable state (data position, estimates), saved in checkpoints.
    fn state(&self) -> Value;

    /// Restores what `state` returned; a message says why a state does not fit.
    fn restore(&mut self, state: &Value) -> Result<(), String>;
}
