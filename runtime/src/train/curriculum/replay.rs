//! `replay(fraction, capacity, keep)`: uniform draws with the share `fraction` of each batch
//! replayed from a bank of past prompts ([`Mixed`]). After each micro-batch, a prompt whose
//! group statistics satisfy the recipe's `keep` (by default `g.variance > 0.0`: the groups that
//! still carry a gradient) joins the bank, the newest of at most `capacity`, and a banked prompt
//! that no longer does leaves it.
//!
//! Invariants: the draws are [`Mixed`]'s, so its state is the whole resumable state; `keep` is
//! a pure function of the statistics.

use super::bank::Mixed;
use super::{Curriculum, Feedback, GroupFn, GroupStats};
use crate::train::TrainError;
use serde_json::Value;

/// Uniform draws mixed with a bank of the past prompts `keep` chose.
pub struct Replay {
    stage: String,
    rows: Mixed,
    keep: GroupFn<GroupStats, bool>,
    /// Why `keep` could not be evaluated on the last feedback, reported by the next draw.
    error: Option<String>,
}

impl Replay {
    /// Over the `rows` rows of stage `stage`, `fraction` of each batch from a bank of at most
    /// `capacity` rows that `keep` chose.
    ///
    /// Errors: `TrainError::Config` when there are no rows, `fraction` is outside [0, 1] or
    /// `capacity` is 0.
    pub fn new(
        stage: &str,
        rows: usize,
        seed: u64,
        fraction: f64,
        capacity: usize,
        keep: GroupFn<GroupStats, bool>,
    ) -> Result<Replay, TrainError> {
        let rows = Mixed::new(stage, rows, seed, fraction, capacity)?;
        Ok(Replay { stage: stage.to_string(), rows, keep, error: None })
    }
}

impl Curriculum for Replay {
    /// Errors: `TrainError::Config` when `keep` failed on the last feedback.
    fn next_rows(&mut self, step: u64, total: u64, size: usize) -> Result<Vec<usize>, TrainError> {
        if let Some(message) = self.error.take() {
            return Err(TrainError::Config {
                stage: self.stage.clone(),
                message: format!("`keep` of `replay`: {message}"),
            });
        }
        self.rows.next_rows(step, total, size)
    }

    fn observe(&mut self, rows: &[usize], feedback: &Feedback) {
        let groups = GroupStats::from_feedback(feedback);
        if groups.is_empty() {
            return;
        }
        match (self.keep)(&groups) {
            Ok(keep) => {
                for (&row, kept) in rows.iter().zip(keep) {
                    if kept {
                        self.rows.put(row);
                    } else {
                        self.rows.remove(row);
                    }
                }
            }
            Err(e) => self.error = Some(e),
        }
    }

    /// [`Mixed::metrics`]: the bank's size and the share of the last batch replayed.
    fn metrics(&self) -> Vec<(String, f64)> {
        self.rows.metrics()
    }

    fn state(&self) -> Value {
        self.rows.state()
    }

    fn restore(&mut self, state: &Value) -> Result<(), String> {
        self.rows.restore(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn positive_variance() -> GroupFn<GroupStats, bool> {
        Box::new(|groups: &[GroupStats]| Ok(groups.iter().map(|g| g.variance > 0.0).collect()))
    }

    fn group(variance: f64) -> GroupStats {
        GroupStats { variance, size: 4, ..GroupStats::default() }
    }

    #[test]
    fn banks_the_rows_keep_chooses_and_mixes_them_in() {
        let mut r = Replay::new("s", 500, 1, 0.25, 4, positive_variance()).unwrap();
        let rows = r.next_rows(0, 20, 8).unwrap();
        r.observe(&rows[..4], &GroupStats::feedback(&[group(0.5), group(0.0), group(1.0), group(0.0)]));
        let metrics = r.metrics();
        assert_eq!(metrics[0], ("curriculum/bank".to_string(), 2.0));
        let banked = [rows[0], rows[2]];
        // Over many batches, a quarter of each comes from the two banked rows.
        for step in 1..20 {
            let next = r.next_rows(step, 20, 8).unwrap();
            assert!(next[..2].iter().all(|row| banked.contains(row)), "{next:?}");
            assert_eq!(r.metrics()[1], ("curriculum/replayed".to_string(), 0.25));
        }
        // Offline feedback (no group statistics) changes nothing.
        r.observe(&rows, &Feedback::default());
        assert_eq!(r.metrics()[0].1, 2.0);
        // A banked row whose group no longer passes `keep` leaves.
        r.observe(&[rows[0]], &GroupStats::feedback(&[group(0.0)]));
        assert_eq!(r.metrics()[0].1, 1.0);
        let mut again = Replay::new("s", 500, 1, 0.25, 4, positive_variance()).unwrap();
        again.restore(&r.state()).unwrap();
        assert_eq!(again.next_rows(20, 30, 8).unwrap(), r.next_rows(20, 30, 8).unwrap());
    }

    #[test]
    fn a_failing_keep_is_reported_by_the_next_draw() {
        let failing: GroupFn<GroupStats, bool> = Box::new(|_: &[GroupStats]| Err("no column `size`".to_string()));
        let mut r = Replay::new("s", 10, 1, 0.25, 4, failing).unwrap();
        r.observe(&[0], &GroupStats::feedback(&[group(1.0)]));
        let err = r.next_rows(1, 5, 2).unwrap_err().to_string();
        assert_eq!(err, "stage `s`: `keep` of `replay`: no column `size`");
        assert!(r.next_rows(1, 5, 2).is_ok());
    }
}
