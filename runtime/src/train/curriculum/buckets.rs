//! `buckets(by, count, order, mode, rebind_reference)`: the rows, sorted by difficulty, cut
//! into `count` buckets of equal size (±1 row; bucket 0 first in the stage's `order`).
//!
//! - `cumulative`: the steps are split into `count` equal shares; during share `k` the first
//!   `k + 1` buckets are available and each batch is drawn uniformly from them.
//! - `exclusive`: one round per bucket. A round's curriculum is this scheduler on its one bucket,
//!   in shuffled epochs; `exec` runs the rounds as separate `run_stage` calls (steps split
//!   evenly, the model — and, with `rebind_reference`, the reference — re-bound between them),
//!   so the loop never learns about rounds.
//!
//! Invariants: the buckets are a pure function of the order and `count`; cumulative batch `d`
//! comes from the stream `stage/<stage>/buckets/<d>`, exclusive round `r`'s epoch `e` from
//! `stage/<stage>/bucket/<r>/shuffle/<e>`; the resumable state is the number of batches drawn
//! (cumulative) or the bucket's `(epoch, position)` (exclusive).

use super::{count_field, draw, Curriculum, Uniform};
use crate::rng::Rng;
use crate::train::TrainError;
use serde_json::{json, Value};

/// Difficulty buckets, revealed cumulatively or trained on one per round.
pub struct Buckets {
    stage: String,
    mode: Mode,
}

enum Mode {
    Cumulative {
        order: Vec<usize>,
        /// `bounds[k]..bounds[k + 1]` are bucket `k`'s positions in `order`.
        bounds: Vec<usize>,
        seed: u64,
        /// Batches drawn so far.
        draws: u64,
        /// Buckets available to the last batch drawn.
        buckets: usize,
    },
    Exclusive {
        bucket: u32,
        /// Share of all rows that the bucket holds.
        share: f64,
        rows: Uniform,
    },
}

/// `count + 1` bounds cutting `n` positions into `count` buckets whose sizes differ by at most 1.
fn bounds(n: usize, count: usize) -> Vec<usize> {
    (0..=count).map(|k| k * n / count).collect()
}

/// Refuses a `count` that leaves a bucket empty.
fn check_count(stage: &str, rows: usize, count: usize) -> Result<(), TrainError> {
    if count == 0 || count > rows {
        return Err(TrainError::Config {
            stage: stage.to_string(),
            message: format!("{count} buckets of {rows} rows: `count` must be in 1..={rows}"),
        });
    }
    Ok(())
}

impl Buckets {
    /// Cumulative buckets over `order` (row indices, bucket 0 first) of stage `stage`.
    ///
    /// Errors: `TrainError::Config` when `count` is 0 or more than the rows.
    pub fn cumulative(stage: &str, order: Vec<usize>, count: usize, seed: u64) -> Result<Buckets, TrainError> {
        check_count(stage, order.len(), count)?;
        let bounds = bounds(order.len(), count);
        let mode = Mode::Cumulative { order, bounds, seed, draws: 0, buckets: 1 };
        Ok(Buckets { stage: stage.to_string(), mode })
    }

    /// Round `round` of exclusive buckets over `order`: shuffled epochs over bucket `round`.
    ///
    /// Errors: `TrainError::Config` when `count` is 0 or more than the rows, or `round` is not
    /// below `count`.
    pub fn exclusive(stage: &str, order: &[usize], count: usize, round: u32, seed: u64) -> Result<Buckets, TrainError> {
        check_count(stage, order.len(), count)?;
        let r = round as usize;
        if r >= count {
            let message = format!("round {round} of {count} buckets does not exist");
            return Err(TrainError::Config { stage: stage.to_string(), message });
        }
        let bounds = bounds(order.len(), count);
        let rows = order[bounds[r]..bounds[r + 1]].to_vec();
        let share = rows.len() as f64 / order.len() as f64;
        let rows = Uniform::over(stage, format!("stage/{stage}/bucket/{round}/shuffle"), rows, seed)?;
        Ok(Buckets { stage: stage.to_string(), mode: Mode::Exclusive { bucket: round, share, rows } })
    }
}

impl Curriculum for Buckets {
    fn next_rows(&mut self, step: u64, total: u64, size: usize) -> Result<Vec<usize>, TrainError> {
        match &mut self.mode {
            Mode::Exclusive { rows, .. } => rows.next_rows(step, total, size),
            Mode::Cumulative { order, bounds, seed, draws, buckets } => {
                let count = bounds.len() - 1;
                // Share k of the steps is [k·T/count, (k+1)·T/count).
                let share = (u128::from(step) * count as u128 / u128::from(total.max(1))) as usize;
                *buckets = (share + 1).min(count);
                let available = bounds[*buckets];
                let mut rng = Rng::derive(*seed, &format!("stage/{}/buckets/{draws}", self.stage));
                *draws += 1;
                Ok(draw(&mut rng, available, size).into_iter().map(|p| order[p]).collect())
            }
        }
    }

    /// `curriculum/bucket` (0-based: the round's bucket, or the newest one available) and
    /// `curriculum/available` (the fraction of all rows drawn from); exclusive rounds add the
    /// bucket's `curriculum/epoch` and `curriculum/position`.
    fn metrics(&self) -> Vec<(String, f64)> {
        match &self.mode {
            Mode::Exclusive { bucket, share, rows } => {
                let (epoch, pos) = rows.position();
                vec![
                    ("curriculum/bucket".into(), f64::from(*bucket)),
                    ("curriculum/available".into(), *share),
                    ("curriculum/epoch".into(), epoch as f64),
                    ("curriculum/position".into(), pos as f64),
                ]
            }
            Mode::Cumulative { order, bounds, buckets, .. } => vec![
                ("curriculum/bucket".into(), (*buckets - 1) as f64),
                ("curriculum/available".into(), bounds[*buckets] as f64 / order.len() as f64),
            ],
        }
    }

    fn state(&self) -> Value {
        match &self.mode {
            Mode::Exclusive { bucket, rows, .. } => {
                let (epoch, pos) = rows.position();
                json!({ "bucket": bucket, "epoch": epoch, "position": pos })
            }
            Mode::Cumulative { draws, buckets, .. } => json!({ "draws": draws, "buckets": buckets }),
        }
    }

    fn restore(&mut self, state: &Value) -> Result<(), String> {
        match &mut self.mode {
            Mode::Exclusive { bucket, rows, .. } => {
                let saved = count_field(state, "bucket")?;
                if saved != u64::from(*bucket) {
                    return Err(format!("the state is bucket {saved}'s, this round trains bucket {bucket}"));
                }
                rows.restore(state)
            }
            Mode::Cumulative { bounds, draws, buckets, .. } => {
                let (d, b) = (count_field(state, "draws")?, count_field(state, "buckets")? as usize);
                if b == 0 || b >= bounds.len() {
                    return Err(format!("{b} buckets available of {}", bounds.len() - 1));
                }
                (*draws, *buckets) = (d, b);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cumulative_reveals_one_more_bucket_per_share_of_the_steps() {
        let order: Vec<usize> = (0..30).collect();
        let mut b = Buckets::cumulative("s", order, 3, 1).unwrap();
        let mut seen_max = Vec::new();
        for step in 0..9 {
            let rows = b.next_rows(step, 9, 4).unwrap();
            seen_max.push(*rows.iter().max().unwrap());
            let bucket = b.metrics()[0].1 as usize;
            assert_eq!(bucket, step as usize / 3, "step {step}");
            assert!(rows.iter().all(|&r| r < 10 * (bucket + 1)), "step {step}: {rows:?}");
        }
        assert_eq!(b.metrics()[1], ("curriculum/available".to_string(), 1.0));
        let mut c = Buckets::cumulative("s", (0..30).collect(), 3, 1).unwrap();
        c.restore(&json!({"draws": 9, "buckets": 3})).unwrap();
        assert_eq!(c.state(), b.state());
        assert_eq!(c.next_rows(9, 10, 4).unwrap(), b.next_rows(9, 10, 4).unwrap());
    }

    #[test]
    fn exclusive_rounds_draw_only_their_bucket() {
        let order: Vec<usize> = (0..10).rev().collect();
        // Buckets of 3, 3 and 4 rows: positions 0..3, 3..6, 6..10 of the order.
        for (round, expected) in [(0, vec![7, 8, 9]), (1, vec![4, 5, 6]), (2, vec![0, 1, 2, 3])] {
            let mut b = Buckets::exclusive("s", &order, 3, round, 5).unwrap();
            let mut rows = b.next_rows(0, 4, expected.len()).unwrap();
            rows.sort_unstable();
            assert_eq!(rows, expected, "round {round}");
            assert_eq!(b.metrics()[0], ("curriculum/bucket".to_string(), f64::from(round)));
            let state = b.state();
            let mut again = Buckets::exclusive("s", &order, 3, round, 5).unwrap();
            again.restore(&state).unwrap();
            assert_eq!(again.next_rows(1, 4, 2).unwrap(), b.next_rows(1, 4, 2).unwrap());
        }
        let mut other = Buckets::exclusive("s", &order, 3, 1, 5).unwrap();
        assert!(other.restore(&json!({"bucket": 0, "epoch": 0, "position": 0})).is_err());
        assert!(Buckets::exclusive("s", &order, 11, 0, 5).is_err(), "more buckets than rows");
        assert!(Buckets::exclusive("s", &order, 3, 3, 5).is_err(), "no round 3 of 3");
    }
}
