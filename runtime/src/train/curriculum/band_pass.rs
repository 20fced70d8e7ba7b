//! `band_pass(low, high, refill, max_rounds)`: online difficulty filtering ("Online Difficulty
//! Filtering for Reasoning Oriented Reinforcement Learning", Bae et al., 2025). Prompts are
//! drawn uniformly (shuffled epochs, as [`Uniform`]); of each prompt's group of rollouts only
//! those whose pass rate lies in `[low, high]` are trained on, so a group whose rollouts all
//! pass or all fail (zero advantage, no gradient) is left out before any gradient. A group with
//! no scored rollout has no pass rate and is left out too. With `refill`, an RL source may draw
//! and sample up to `max_rounds` more rounds of prompts to fill the micro-batch (DAPO's dynamic
//! sampling; verl's `max_num_gen_batches`, which counts the first batch too).
//!
//! Invariants: the rows drawn are [`Uniform`]'s, whatever was admitted; the resumable state is
//! the uniform position and the step's admission counts.

use super::{count_field, Curriculum, GroupStats, Uniform};
use crate::train::TrainError;
use serde_json::{json, Value};

/// Uniform prompts whose groups are admitted when their pass rate is in a band.
pub struct BandPass {
    low: f64,
    high: f64,
    max_rounds: u32,
    rows: Uniform,
    admission: Admission,
}

impl BandPass {
    /// A band `[low, high]` of pass rates over the `rows` rows of stage `stage`, with at most
    /// `max_rounds` refill rounds per micro-batch (0: no refill).
    ///
    /// Errors: `TrainError::Config` when there are no rows, or `low > high` (nothing admitted)
    /// or either is NaN.
    pub fn new(
        stage: &str,
        rows: usize,
        seed: u64,
        low: f64,
        high: f64,
        max_rounds: u32,
    ) -> Result<BandPass, TrainError> {
        if low.is_nan() || high.is_nan() || low > high {
            let message = format!("the band [{low}, {high}] of pass rates is empty: `low` must be at most `high`");
            return Err(TrainError::Config { stage: stage.to_string(), message });
        }
        let rows = Uniform::new(stage, rows, seed)?;
        Ok(BandPass { low, high, max_rounds, rows, admission: Admission::default() })
    }
}

impl Curriculum for BandPass {
    fn next_rows(&mut self, step: u64, total: u64, size: usize) -> Result<Vec<usize>, TrainError> {
        self.admission.drawn(step);
        self.rows.next_rows(step, total, size)
    }

    fn admit(&mut self, _rows: &[usize], groups: &[GroupStats]) -> Vec<bool> {
        let keep: Vec<bool> =
            groups.iter().map(|g| g.size > 0 && g.pass_rate >= self.low && g.pass_rate <= self.high).collect();
        self.admission.admitted(&keep);
        keep
    }

    fn observe(&mut self, _rows: &[usize], _feedback: &super::Feedback) {
        self.admission.observed();
    }

    fn refill_rounds(&self) -> u32 {
        self.max_rounds
    }

    /// [`Admission::metrics`].
    fn metrics(&self) -> Vec<(String, f64)> {
        self.admission.metrics()
    }

    fn state(&self) -> Value {
        json!({ "uniform": self.rows.state(), "admission": self.admission.state() })
    }

    fn restore(&mut self, state: &Value) -> Result<(), String> {
        let field = |name: &str| state.get(name).ok_or_else(|| format!("expected `{name}` in {state}"));
        self.rows.restore(field("uniform")?)?;
        self.admission.restore(field("admission")?)
    }
}

/// What an online filter admitted over the micro-batches of the current step: one micro-batch
/// is the draws between two `observe` calls, its first draw the batch and the others refills.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Admission {
    /// The step counted.
    step: u64,
    /// Draws since the last `observe`.
    draws: u64,
    /// Groups sampled and admitted, and refill rounds drawn, over the step.
    sampled: u64,
    admitted: u64,
    refills: u64,
}

impl Admission {
    /// A round of prompts was drawn for `step`.
    pub fn drawn(&mut self, step: u64) {
        if step != self.step {
            *self = Admission { step, ..Admission::default() };
        }
        if self.draws > 0 {
            self.refills += 1;
        }
        self.draws += 1;
    }

    /// The filter decided `keep` for one round's groups.
    pub fn admitted(&mut self, keep: &[bool]) {
        self.sampled += keep.len() as u64;
        self.admitted += keep.iter().filter(|&&k| k).count() as u64;
    }

    /// The micro-batch was trained on: the next draw starts another.
    pub fn observed(&mut self) {
        self.draws = 0;
    }

    /// Over the step's micro-batches: `curriculum/sampled` (groups sampled), `curriculum/kept`
    /// (groups admitted), `curriculum/admitted_frac` (their share) and
    /// `curriculum/refill_rounds` (rounds drawn beyond each micro-batch's first); none before a
    /// group was sampled (an offline stage never samples one).
    pub fn metrics(&self) -> Vec<(String, f64)> {
        if self.sampled == 0 {
            return Vec::new();
        }
        vec![
            ("curriculum/sampled".into(), self.sampled as f64),
            ("curriculum/kept".into(), self.admitted as f64),
            ("curriculum/admitted_frac".into(), self.admitted as f64 / self.sampled as f64),
            ("curriculum/refill_rounds".into(), self.refills as f64),
        ]
    }

    pub fn state(&self) -> Value {
        json!({
            "step": self.step,
            "draws": self.draws,
            "sampled": self.sampled,
            "admitted": self.admitted,
            "refills": self.refills,
        })
    }

    pub fn restore(&mut self, state: &Value) -> Result<(), String> {
        *self = Admission {
            step: count_field(state, "step")?,
            draws: count_field(state, "draws")?,
            sampled: count_field(state, "sampled")?,
            admitted: count_field(state, "admitted")?,
            refills: count_field(state, "refills")?,
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::curriculum::Feedback;

    fn group(pass_rate: f64) -> GroupStats {
        GroupStats { pass_rate, size: 8, ..GroupStats::default() }
    }

    #[test]
    fn admits_only_groups_in_the_band_and_counts_refills() {
        let mut b = BandPass::new("s", 20, 4, 0.2, 0.8, 3).unwrap();
        assert_eq!(b.refill_rounds(), 3);
        let rows = b.next_rows(0, 5, 4).unwrap();
        let groups = [group(0.0), group(0.2), group(0.5), group(1.0)];
        assert_eq!(b.admit(&rows, &groups), [false, true, true, false], "the bounds are in the band");
        let unscored = GroupStats { pass_rate: 0.5, size: 0, ..GroupStats::default() };
        // The source refills the two missing groups.
        let more = b.next_rows(0, 5, 2).unwrap();
        assert_eq!(b.admit(&more, &[group(0.9), unscored]), [false, false], "no scored rollout: no pass rate");
        let last = b.next_rows(0, 5, 2).unwrap();
        assert_eq!(b.admit(&last, &[group(0.7), group(0.3)]), [true, true]);
        b.observe(&[rows[1], rows[2], last[0], last[1]], &Feedback::default());
        // A second micro-batch of the same step, admitted at once.
        let rows = b.next_rows(0, 5, 2).unwrap();
        b.admit(&rows, &[group(0.5), group(0.5)]);
        b.observe(&rows, &Feedback::default());
        let m: Vec<(String, f64)> = b.metrics();
        let get = |k: &str| m.iter().find(|(n, _)| n == k).unwrap().1;
        assert_eq!((get("curriculum/sampled"), get("curriculum/kept")), (10.0, 6.0));
        assert_eq!(get("curriculum/admitted_frac"), 0.6);
        assert_eq!(get("curriculum/refill_rounds"), 2.0);
        // The next step counts afresh.
        let rows = b.next_rows(1, 5, 2).unwrap();
        b.admit(&rows, &[group(0.5), group(0.0)]);
        assert_eq!(b.metrics()[2], ("curriculum/admitted_frac".to_string(), 0.5));
        assert!(BandPass::new("s", 20, 4, 0.9, 0.1, 3).is_err());
        assert!(BandPass::new("s", 20, 4, f64::NAN, 0.1, 3).is_err());
    }

    #[test]
    fn draws_uniformly_and_restore_continues() {
        let mut a = BandPass::new("s", 12, 4, 0.2, 0.8, 0).unwrap();
        let mut u = Uniform::new("s", 12, 4).unwrap();
        assert_eq!(a.next_rows(0, 4, 5).unwrap(), u.next_rows(0, 4, 5).unwrap(), "the draws are uniform's");
        a.admit(&[0; 5], &[group(0.5); 5]);
        let mut b = BandPass::new("s", 12, 4, 0.2, 0.8, 0).unwrap();
        b.restore(&a.state()).unwrap();
        assert_eq!(b.state(), a.state());
        assert_eq!(b.metrics(), a.metrics());
        assert_eq!(b.next_rows(1, 4, 5).unwrap(), a.next_rows(1, 4, 5).unwrap());
        assert!(b.restore(&json!({"uniform": {"epoch": 0, "position": 0}})).is_err());
    }
}
