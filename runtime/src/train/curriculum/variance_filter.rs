//! `variance_filter(kappa, replay)`: VCRL ("VCRL: Variance-based Curriculum Reinforcement
//! Learning for Large Language Models", 2025). A group is trained on when its normalised
//! reward variance ([`GroupStats::variance`], k (G − k) / (G (G − 1)) / s_max for 0/1 rewards)
//! is at least `kappa`: the prompts the policy solves sometimes, which carry the most gradient.
//! An admitted prompt joins a replay bank (VCRL's memory bank) and the share `replay` of each
//! batch is drawn from it, the rest uniformly ([`Mixed`]); a banked prompt whose group is no
//! longer admitted leaves the bank. The bank holds the [`BANK_CAPACITY`] prompts most recently
//! admitted. VCRL orders its bank by a momentum priority; this draws from it uniformly.
//!
//! Invariants: the draws are [`Mixed`]'s; the resumable state is its state and the step's
//! admission counts.

use super::band_pass::Admission;
use super::bank::Mixed;
use super::{Curriculum, Feedback, GroupStats};
use crate::train::TrainError;
use serde_json::{json, Value};

/// Rows (prompts) the replay bank of `variance_filter` holds: the most recently admitted.
pub const BANK_CAPACITY: usize = 256;

/// Groups admitted by their reward variance, with admitted prompts replayed.
pub struct VarianceFilter {
    kappa: f64,
    rows: Mixed,
    admission: Admission,
}

impl VarianceFilter {
    /// Admits groups of variance at least `kappa` over the `rows` rows of stage `stage`, with
    /// the share `replay` of each batch from the bank.
    ///
    /// Errors: `TrainError::Config` when there are no rows, `kappa` is NaN or `replay` is
    /// outside [0, 1].
    pub fn new(stage: &str, rows: usize, seed: u64, kappa: f64, replay: f64) -> Result<VarianceFilter, TrainError> {
        if kappa.is_nan() {
            return Err(TrainError::Config { stage: stage.to_string(), message: "`kappa` is NaN".into() });
        }
        let rows = Mixed::new(stage, rows, seed, replay, BANK_CAPACITY)?;
        Ok(VarianceFilter { kappa, rows, admission: Admission::default() })
    }
}

impl Curriculum for VarianceFilter {
    fn next_rows(&mut self, step: u64, total: u64, size: usize) -> Result<Vec<usize>, TrainError> {
        self.admission.drawn(step);
        self.rows.next_rows(step, total, size)
    }

    fn admit(&mut self, rows: &[usize], groups: &[GroupStats]) -> Vec<bool> {
        let keep: Vec<bool> = groups.iter().map(|g| g.size > 0 && g.variance >= self.kappa).collect();
        for (&row, &kept) in rows.iter().zip(&keep) {
            if kept {
                self.rows.put(row);
            } else {
                self.rows.remove(row);
            }
        }
        self.admission.admitted(&keep);
        keep
    }

    fn observe(&mut self, _rows: &[usize], _feedback: &Feedback) {
        self.admission.observed();
    }

    /// The admission counts ([`Admission::metrics`]) and the bank's ([`Mixed::metrics`]).
    fn metrics(&self) -> Vec<(String, f64)> {
        let mut metrics = self.admission.metrics();
        metrics.extend(self.rows.metrics());
        metrics
    }

    fn state(&self) -> Value {
        json!({ "rows": self.rows.state(), "admission": self.admission.state() })
    }

    fn restore(&mut self, state: &Value) -> Result<(), String> {
        let field = |name: &str| state.get(name).ok_or_else(|| format!("expected `{name}` in {state}"));
        self.rows.restore(field("rows")?)?;
        self.admission.restore(field("admission")?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(variance: f64) -> GroupStats {
        GroupStats { variance, size: 8, ..GroupStats::default() }
    }

    #[test]
    fn admits_high_variance_groups_and_replays_them() {
        let mut v = VarianceFilter::new("s", 1000, 3, 0.3, 0.5).unwrap();
        let rows = v.next_rows(0, 10, 4).unwrap();
        let keep = v.admit(&rows, &[group(0.0), group(0.3), group(1.0), GroupStats::default()]);
        assert_eq!(keep, [false, true, true, false]);
        v.observe(&rows, &Feedback::default());
        let banked = [rows[1], rows[2]];
        // Half of the next batch comes from the two banked prompts.
        let next = v.next_rows(1, 10, 4).unwrap();
        let mut head = next[..2].to_vec();
        head.sort_unstable();
        let mut want = banked.to_vec();
        want.sort_unstable();
        assert_eq!(head, want, "{next:?}");
        // A banked prompt no longer admitted leaves the bank; step 1 is counted afresh.
        v.admit(&next, &[group(0.1), group(0.9), group(0.0), group(0.0)]);
        let metrics = v.metrics();
        assert!(metrics.contains(&("curriculum/bank".to_string(), 1.0)), "{metrics:?}");
        assert!(metrics.contains(&("curriculum/admitted_frac".to_string(), 0.25)), "{metrics:?}");
        let mut w = VarianceFilter::new("s", 1000, 3, 0.3, 0.5).unwrap();
        w.restore(&v.state()).unwrap();
        assert_eq!(w.metrics(), v.metrics());
        assert_eq!(w.next_rows(2, 10, 4).unwrap(), v.next_rows(2, 10, 4).unwrap());
        assert!(VarianceFilter::new("s", 10, 3, f64::NAN, 0.5).is_err());
    }
}
