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
//! The online schedulers of RL stages see each prompt's group of rollouts ([`GroupStats`]):
//! [`BandPass`] and [`VarianceFilter`] leave groups out in [`Curriculum::admit`] (the first
//! may have more prompts sampled to refill the batch), [`VarianceFilter`] and [`Replay`] mix a
//! bank of past rows into each batch, [`Bandit`] chooses each batch's category by its arms'
//! values, and [`TargetTracking`] moves a target difficulty with the batch's reward.
//!
//! Invariants: a curriculum's choices are a pure function of its construction (seed, stage,
//! data), the calls made so far and the feedback observed; its whole resumable state is
//! [`Curriculum::state`], saved in every checkpoint, so a resumed stage draws the same rows.
//! Random draws come from streams named after the stage (`stage/<stage>/...`) and the draw's
//! index, never from a stream carried across calls.

mod band_pass;
mod bandit;
mod bank;
mod buckets;
mod ordered;
mod pacing;
mod replay;
mod target_tracking;
mod uniform;
mod variance_filter;

pub use band_pass::BandPass;
pub use bandit::{ArmState, Bandit, BanditPolicy};
pub use buckets::Buckets;
pub use ordered::Ordered;
pub use pacing::Pacing;
pub use replay::Replay;
pub use target_tracking::{TargetTracking, TargetUpdate};
pub use uniform::Uniform;
pub use variance_filter::VarianceFilter;

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

/// What an online curriculum sees of one prompt's group of rollouts: statistics of its scored
/// rollouts (a reward of NaN means unscored and is in none of them).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GroupStats {
    /// Share of the scored rollouts whose reward is positive (k / G for 0/1 rewards).
    pub pass_rate: f64,
    /// The unbiased variance of the scored rewards over its largest value for rewards in
    /// [0, 1], G / (4 (G - 1)): VCRL's normalised variance k (G - k) / (G (G - 1)) / s_max for
    /// 0/1 rewards; 0 for fewer than two scored rollouts.
    pub variance: f64,
    /// Mean |advantage| over the scored rollouts (Self-Evolving Curriculum's reward signal).
    pub mean_abs_advantage: f64,
    /// Mean scored reward.
    pub reward: f64,
    /// Scored rollouts.
    pub size: usize,
}

impl GroupStats {
    /// The feedback columns, by field name (`pass_rate`, `variance`, `mean_abs_advantage`,
    /// `reward`, `size`), one value per group.
    pub const COLUMNS: [&'static str; 5] = ["pass_rate", "variance", "mean_abs_advantage", "reward", "size"];

    /// Statistics of one group from its rewards and advantages (NaN rewards are unscored and
    /// left out, with their advantages).
    pub fn of(rewards: &[f64], advantages: &[f64]) -> GroupStats {
        let scored: Vec<(f64, f64)> =
            rewards.iter().zip(advantages).filter(|(r, _)| !r.is_nan()).map(|(&r, &a)| (r, a)).collect();
        let n = scored.len();
        if n == 0 {
            return GroupStats::default();
        }
        let nf = n as f64;
        let reward = scored.iter().map(|p| p.0).sum::<f64>() / nf;
        let variance = match n {
            1 => 0.0,
            _ => {
                let var = scored.iter().map(|p| (p.0 - reward).powi(2)).sum::<f64>() / (nf - 1.0);
                var / (nf / (4.0 * (nf - 1.0)))
            }
        };
        GroupStats {
            pass_rate: scored.iter().filter(|p| p.0 > 0.0).count() as f64 / nf,
            variance,
            mean_abs_advantage: scored.iter().map(|p| p.1.abs()).sum::<f64>() / nf,
            reward,
            size: n,
        }
    }

    /// Groups as feedback columns ([`GroupStats::COLUMNS`]).
    pub fn feedback(groups: &[GroupStats]) -> Feedback {
        let column = |f: fn(&GroupStats) -> f64| groups.iter().map(f).collect::<Vec<f64>>();
        let columns = vec![
            column(|g| g.pass_rate),
            column(|g| g.variance),
            column(|g| g.mean_abs_advantage),
            column(|g| g.reward),
            column(|g| g.size as f64),
        ];
        Feedback { columns: GroupStats::COLUMNS.iter().map(|c| c.to_string()).zip(columns).collect() }
    }

    /// The groups in `feedback` (empty when it carries no group statistics, as an offline
    /// stage's does).
    pub fn from_feedback(feedback: &Feedback) -> Vec<GroupStats> {
        let col = |name: &str| feedback.columns.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice());
        let cols: Option<Vec<&[f64]>> = GroupStats::COLUMNS.iter().map(|c| col(c)).collect();
        let Some(cols) = cols else { return Vec::new() };
        (0..cols[0].len())
            .map(|i| GroupStats {
                pass_rate: cols[0][i],
                variance: cols[1][i],
                mean_abs_advantage: cols[2][i],
                reward: cols[3][i],
                size: cols[4][i] as usize,
            })
            .collect()
    }
}

/// Chooses the rows of every micro-batch and observes what training measured on them.
pub trait Curriculum {
    /// The next micro-batch's `size` row indices (into the stage's dataset) for 0-based `step`
    /// of `total` optimiser steps.
    fn next_rows(&mut self, step: u64, total: u64, size: usize) -> Result<Vec<usize>, TrainError>;

    /// What the objective measured on `rows` (the rows of the micro-batch it just trained on,
    /// in its order). Feedback curricula (bandits, target tracking, replay) update their state
    /// here; an RL stage's feedback is [`GroupStats::feedback`], one group per row.
    fn observe(&mut self, _rows: &[usize], _feedback: &Feedback) {}

    /// Which of the groups just sampled for `rows` (one prompt each, with its statistics) to
    /// train on: an online filter (band-pass, variance) leaves groups out here, before any
    /// gradient. Every group by default.
    fn admit(&mut self, rows: &[usize], _groups: &[GroupStats]) -> Vec<bool> {
        vec![true; rows.len()]
    }

    /// When `admit` left groups out: how many more rounds of prompts an online source may draw
    /// and sample to fill the micro-batch (verl's `max_num_gen_batches`); 0, the default,
    /// trains on the groups admitted.
    fn refill_rounds(&self) -> u32 {
        0
    }

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

/// A recipe function of per-group values evaluated once per group (the `keep` of `replay`,
/// the `update` of `bandit`): its inputs, one slice per group, to one result per group; a
/// message says why it could not be evaluated.
pub type GroupFn<In, Out> = Box<dyn Fn(&[In]) -> Result<Vec<Out>, String>>;

/// A float of a saved state, as its bits: serde_json parses floats best-effort (without its
/// `float_roundtrip` feature), so a state read back from a checkpoint file keeps every bit only
/// this way, and a resumed stage draws what the uninterrupted one would.
fn float_bits(x: f64) -> Value {
    Value::from(x.to_bits())
}

/// The float saved by [`float_bits`] as field `name` of `state`.
fn float_field(state: &Value, name: &str) -> Result<f64, String> {
    Ok(f64::from_bits(count_field(state, name)?))
}

/// The floats saved by [`float_bits`] as the list `name` of `state`.
fn float_list(state: &Value, name: &str) -> Result<Vec<f64>, String> {
    let list =
        state.get(name).and_then(Value::as_array).ok_or_else(|| format!("expected a list `{name}`, found {state}"))?;
    list.iter()
        .map(|v| v.as_u64().map(f64::from_bits).ok_or_else(|| format!("`{name}` holds {v}, not float bits")))
        .collect()
}

/// The counts saved as the list `name` of `state`.
fn count_list(state: &Value, name: &str) -> Result<Vec<u64>, String> {
    let list =
        state.get(name).and_then(Value::as_array).ok_or_else(|| format!("expected a list `{name}`, found {state}"))?;
    list.iter().map(|v| v.as_u64().ok_or_else(|| format!("`{name}` holds {v}, not a count"))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_stats_leave_unscored_rollouts_out_and_normalise_the_variance() {
        // 0/1 rewards, k = 2 of G = 4: VCRL's p = k (G - k) / (G (G - 1)) / s_max = 1.
        let g = GroupStats::of(&[1.0, 0.0, 1.0, 0.0, f64::NAN], &[0.5, -0.5, 0.5, -0.5, 9.0]);
        assert_eq!((g.size, g.pass_rate, g.reward, g.mean_abs_advantage), (4, 0.5, 0.5, 0.5));
        assert!((g.variance - 1.0).abs() < 1e-12, "{}", g.variance);
        let k1 = GroupStats::of(&[1.0, 0.0, 0.0, 0.0], &[0.0; 4]);
        assert!((k1.variance - 0.75).abs() < 1e-12, "k (G - k) / (G (G - 1)) / (1/3) = 0.75: {}", k1.variance);
        assert_eq!(GroupStats::of(&[f64::NAN], &[0.0]), GroupStats::default());
        let groups = vec![g, k1];
        assert_eq!(GroupStats::from_feedback(&GroupStats::feedback(&groups)), groups);
        assert!(GroupStats::from_feedback(&Feedback::default()).is_empty());
    }

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
