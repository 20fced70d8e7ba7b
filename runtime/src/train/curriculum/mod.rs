//! Curricula: which rows of a stage's dataset each micro-batch trains on. One file per
//! scheduler; every stage kind draws its rows through this trait, so a curriculum written once
//! serves SFT, preference and RL stages alike.
//!
//! The offline schedulers order the rows by a difficulty score the stage's binding computed
//! (one `f64` per row, from the recipe's `by` function): [`Ordered`] walks the whole order,
//! [`Pacing`] reveals a growing prefix of it, [`Buckets`] cuts it into equal buckets that are
//! revealed one by one (cumulative) or trained on one per round (exclusive). They index rows
//! only, so every stage kind over any row type gets them.
//!
//! Invariants: a curriculum's choices are a pure function of its construction (seed, stage,
//! data), the calls made so far and the feedback observed; its whole resumable state is
//! [`Curriculum::state`], saved in every checkpoint, so a resumed stage draws the same rows.
//! Random draws come from streams named after the stage (`stage/<stage>/...`) and the draw's
//! index, never from a stream carried across calls.

mod buckets;
mod ordered;
mod pacing;
mod uniform;

pub use buckets::Buckets;
pub use ordered::Ordered;
pub use pacing::Pacing;
pub use uniform::Uniform;

use super::TrainError;
use crate::rng::Rng;
use serde_json::Value;
use std::collections::HashMap;

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

/// How the rows are ordered by their difficulty score (the stdlib's `Order`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Ascending score: the lowest score (easiest) first.
    EasyFirst,
    /// Descending score.
    HardFirst,
    /// A seeded random order that ignores the score: the control.
    Shuffled,
}

/// The row indices `0..scores.len()` in `order` by `scores` (ties keep the row order; the
/// `shuffled` order is the stream `stage/<stage>/curriculum/shuffled`).
///
/// Errors: `TrainError::Config` naming the first row (0-based index) whose score is NaN.
pub fn sorted_rows(stage: &str, scores: &[f64], order: Order, seed: u64) -> Result<Vec<usize>, TrainError> {
    if let Some(row) = scores.iter().position(|s| s.is_nan()) {
        return Err(TrainError::Config {
            stage: stage.to_string(),
            message: format!("the difficulty of row {row} is NaN, so the rows cannot be ordered"),
        });
    }
    let mut rows: Vec<usize> = (0..scores.len()).collect();
    match order {
        Order::EasyFirst => rows.sort_by(|&a, &b| scores[a].total_cmp(&scores[b])),
        Order::HardFirst => rows.sort_by(|&a, &b| scores[b].total_cmp(&scores[a])),
        Order::Shuffled => Rng::derive(seed, &format!("stage/{stage}/curriculum/shuffled")).shuffle(&mut rows),
    }
    Ok(rows)
}

/// `size` positions in `0..available` drawn uniformly from `rng`: without replacement within
/// each run of `available` draws (a batch larger than the available rows sees each of them
/// before any repeats).
pub(crate) fn draw(rng: &mut Rng, available: usize, size: usize) -> Vec<usize> {
    let mut out = Vec::with_capacity(size);
    while out.len() < size && available > 0 {
        // A partial Fisher–Yates over 0..available, with only the swapped entries stored.
        let mut swapped: HashMap<usize, usize> = HashMap::new();
        let take = (size - out.len()).min(available);
        for i in 0..take {
            let j = i + rng.below((available - i) as u64) as usize;
            let at_j = *swapped.get(&j).unwrap_or(&j);
            let at_i = *swapped.get(&i).unwrap_or(&i);
            swapped.insert(j, at_i);
            out.push(at_j);
        }
    }
    out
}

/// `value` of field `name` of a saved state, as a count.
fn count_field(state: &Value, name: &str) -> Result<u64, String> {
    state.get(name).and_then(Value::as_u64).ok_or_else(|| format!("expected a count `{name}`, found {state}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_rows_orders_by_score_with_stable_ties_and_refuses_nan() {
        let scores = [3.0, 1.0, 2.0, 1.0];
        assert_eq!(sorted_rows("s", &scores, Order::EasyFirst, 0).unwrap(), [1, 3, 2, 0]);
        assert_eq!(sorted_rows("s", &scores, Order::HardFirst, 0).unwrap(), [0, 2, 1, 3]);
        let mut shuffled = sorted_rows("s", &scores, Order::Shuffled, 0).unwrap();
        assert_eq!(shuffled, sorted_rows("s", &scores, Order::Shuffled, 0).unwrap(), "seeded");
        shuffled.sort_unstable();
        assert_eq!(shuffled, [0, 1, 2, 3]);
        let err = sorted_rows("s", &[0.0, f64::NAN], Order::EasyFirst, 0).unwrap_err();
        assert!(err.to_string().contains("row 1 is NaN"), "{err}");
    }

    #[test]
    fn draws_are_distinct_within_the_available_rows() {
        let mut rng = Rng::derive(1, "t");
        for (available, size) in [(10, 4), (5, 5), (3, 7), (1, 2)] {
            let drawn = draw(&mut rng, available, size);
            assert_eq!(drawn.len(), size);
            assert!(drawn.iter().all(|&p| p < available));
            for chunk in drawn.chunks(available) {
                let mut c = chunk.to_vec();
                c.sort_unstable();
                c.dedup();
                assert_eq!(c.len(), chunk.len(), "no repeat within {available} draws: {drawn:?}");
            }
        }
    }
}
