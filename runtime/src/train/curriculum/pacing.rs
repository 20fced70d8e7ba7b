//! `pacing(by, pace, until, order)`: competence-based curriculum (Platanios et al., 2019). The
//! rows, sorted by difficulty, are revealed by a pacing function: at 0-based step `s` of `T`
//! the first `ceil(pace(s, T) · N)` rows of the order are available (the fraction clamped to
//! (0, 1], and never fewer rows than one batch), and each batch is drawn uniformly from them.
//! From step `until · T` on, every row is available: uniform sampling over everything.
//!
//! Invariants: the `d`-th batch ever drawn comes from the stream
//! `stage/<stage>/pacing/<d>`, so the resumable state is the number of batches drawn; a batch
//! has no repeated row unless it is larger than the available rows.

use super::{count_field, draw, Curriculum};
use crate::rng::Rng;
use crate::train::{Schedule, TrainError};
use serde_json::{json, Value};

/// Sorted rows revealed by a pacing schedule, then uniform.
pub struct Pacing {
    stage: String,
    order: Vec<usize>,
    pace: Schedule,
    until: f64,
    seed: u64,
    /// Batches drawn so far.
    draws: u64,
    /// Rows available to the last batch drawn.
    available: usize,
}

impl Pacing {
    /// Paces `order` (row indices, easiest first as the stage's `order` says) of stage
    /// `stage` by `pace`, a fraction of the rows at `(step, total)`, up to the fraction
    /// `until` of the steps.
    ///
    /// Errors: `TrainError::Config` when `order` is empty or `until` is outside (0, 1].
    pub fn new(stage: &str, order: Vec<usize>, pace: Schedule, until: f64, seed: u64) -> Result<Pacing, TrainError> {
        let config = |message: String| TrainError::Config { stage: stage.to_string(), message };
        if order.is_empty() {
            return Err(config("it has no rows to pace".into()));
        }
        if !(until > 0.0 && until <= 1.0) {
            return Err(config(format!("the pacing's `until` must be in (0, 1], found {until}")));
        }
        let available = order.len();
        Ok(Pacing { stage: stage.to_string(), order, pace, until, seed, draws: 0, available })
    }

    /// The rows available at 0-based `step` of `total` to a batch of `size`.
    fn available(&self, step: u64, total: u64, size: usize) -> Result<usize, TrainError> {
        let n = self.order.len();
        if step as f64 >= self.until * total as f64 {
            return Ok(n);
        }
        let fraction = self.pace.at(step, total);
        if fraction.is_nan() {
            return Err(TrainError::Schedule {
                stage: self.stage.clone(),
                step: step + 1,
                schedule: self.pace.name().map_or("`pace`".to_string(), |p| format!("schedule `{p}`")),
                quantity: "the pacing fraction",
                value: fraction,
            });
        }
        let rows = (fraction.min(1.0) * n as f64).ceil();
        // At least one batch (and one row); a fraction at or below 0 leaves just that.
        let least = size.clamp(1, n);
        Ok(if rows.is_finite() && rows > least as f64 { (rows as usize).min(n) } else { least })
    }
}

impl Curriculum for Pacing {
    fn next_rows(&mut self, step: u64, total: u64, size: usize) -> Result<Vec<usize>, TrainError> {
        let available = self.available(step, total, size)?;
        let mut rng = Rng::derive(self.seed, &format!("stage/{}/pacing/{}", self.stage, self.draws));
        self.draws += 1;
        self.available = available;
        Ok(draw(&mut rng, available, size).into_iter().map(|p| self.order[p]).collect())
    }

    /// `curriculum/available`: the fraction of the rows the last batch was drawn from.
    fn metrics(&self) -> Vec<(String, f64)> {
        vec![("curriculum/available".into(), self.available as f64 / self.order.len() as f64)]
    }

    fn state(&self) -> Value {
        json!({ "draws": self.draws, "available": self.available })
    }

    fn restore(&mut self, state: &Value) -> Result<(), String> {
        let (draws, available) = (count_field(state, "draws")?, count_field(state, "available")? as usize);
        if available == 0 || available > self.order.len() {
            return Err(format!("{available} available rows do not fit the {} rows paced", self.order.len()));
        }
        (self.draws, self.available) = (draws, available);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linear() -> Schedule {
        Schedule::named("linear", |s, t| 0.2 + 0.8 * s as f64 / t as f64)
    }

    #[test]
    fn reveals_a_growing_prefix_then_everything() {
        let order: Vec<usize> = (0..64).rev().collect();
        let pace = Schedule::named("p", |s, t| 0.25 + 0.5 * s as f64 / t as f64);
        let mut p = Pacing::new("s", order, pace, 0.75, 3).unwrap();
        // Step 0 of 8: a quarter, the first 16 rows of the order (rows 63..48).
        let rows = p.next_rows(0, 8, 8).unwrap();
        assert!(rows.iter().all(|&r| r >= 48), "{rows:?}");
        assert_eq!(p.metrics(), [("curriculum/available".to_string(), 0.25)]);
        p.next_rows(4, 8, 8).unwrap();
        assert_eq!(p.available, 32);
        // From step 6 (until = 0.75 of 8) everything.
        p.next_rows(5, 8, 8).unwrap();
        assert_eq!(p.available, 36);
        p.next_rows(6, 8, 8).unwrap();
        assert_eq!(p.available, 64);
    }

    #[test]
    fn at_least_one_batch_and_nan_is_an_error() {
        let tiny = Schedule::constant(-1.0);
        let mut p = Pacing::new("s", (0..50).collect(), tiny, 1.0, 3).unwrap();
        let rows = p.next_rows(0, 10, 16).unwrap();
        assert_eq!(p.available, 16);
        let mut distinct = rows.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 16);
        let mut nan = Pacing::new("s", (0..50).collect(), Schedule::named("p", |_, _| f64::NAN), 1.0, 3).unwrap();
        let err = nan.next_rows(2, 10, 4).unwrap_err();
        assert_eq!(err.to_string(), "stage `s`, step 3 (schedule `p` at step = 2): the pacing fraction is NaN");
        assert!(Pacing::new("s", (0..5).collect(), linear(), 0.0, 3).is_err());
    }

    #[test]
    fn restore_continues_the_same_draws() {
        let mut a = Pacing::new("s", (0..40).collect(), linear(), 1.0, 9).unwrap();
        let all: Vec<Vec<usize>> = (0..6).map(|s| a.next_rows(s, 6, 4).unwrap()).collect();
        let mut b = Pacing::new("s", (0..40).collect(), linear(), 1.0, 9).unwrap();
        (0..3).for_each(|s| drop(b.next_rows(s, 6, 4).unwrap()));
        let mut c = Pacing::new("s", (0..40).collect(), linear(), 1.0, 9).unwrap();
        c.restore(&b.state()).unwrap();
        let rest: Vec<Vec<usize>> = (3..6).map(|s| c.next_rows(s, 6, 4).unwrap()).collect();
        assert_eq!(rest, all[3..]);
        assert!(c.restore(&json!({"draws": 1})).is_err());
    }
}
