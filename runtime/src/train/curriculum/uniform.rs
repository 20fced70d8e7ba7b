//! `uniform()`: shuffled epochs over every row, the control of every curriculum; also shuffled
//! epochs over a subset of the rows (one bucket of an exclusive `buckets` round).
//!
//! Invariants: epoch `e`'s order is a pure function of (seed, stream, e) — the stream
//! `Rng::derive(seed, "<stream>/<e>")`, `stage/<stage>/shuffle` for all rows — so the whole
//! resumable state is `(epoch, position)`; a batch that runs past the end of an epoch continues
//! into the next, so every batch is full.

use super::Curriculum;
use crate::rng::Rng;
use crate::train::TrainError;
use serde_json::{json, Value};

/// Uniform random order: each epoch a fresh seeded permutation of the rows.
pub struct Uniform {
    /// The name of the shuffle streams, without the epoch.
    stream: String,
    seed: u64,
    /// The rows drawn from: row indices of the stage's dataset.
    rows: Vec<usize>,
    epoch: u64,
    pos: usize,
    order: Vec<usize>,
}

impl Uniform {
    /// Shuffled epochs over `rows` rows for stage `stage`.
    ///
    /// Errors: `TrainError::Config` when there are no rows to draw from.
    pub fn new(stage: &str, rows: usize, seed: u64) -> Result<Uniform, TrainError> {
        Uniform::over(stage, format!("stage/{stage}/shuffle"), (0..rows).collect(), seed)
    }

    /// Shuffled epochs over the dataset rows `rows` of stage `stage`, from the streams named
    /// `stream`.
    ///
    /// Errors: `TrainError::Config` when `rows` is empty.
    pub fn over(stage: &str, stream: String, rows: Vec<usize>, seed: u64) -> Result<Uniform, TrainError> {
        if rows.is_empty() {
            return Err(TrainError::Config { stage: stage.to_string(), message: "it has no rows to draw from".into() });
        }
        let mut uniform = Uniform { stream, seed, rows, epoch: 0, pos: 0, order: Vec::new() };
        uniform.order = uniform.epoch_order(0);
        Ok(uniform)
    }

    fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        let mut order = self.rows.clone();
        Rng::derive(self.seed, &format!("{}/{epoch}", self.stream)).shuffle(&mut order);
        order
    }

    /// How many rows it draws from.
    pub(super) fn rows(&self) -> usize {
        self.rows.len()
    }

    /// Completed epochs, and rows drawn from the current one.
    pub(super) fn position(&self) -> (u64, usize) {
        (self.epoch, self.pos)
    }
}

impl Curriculum for Uniform {
    fn next_rows(&mut self, _step: u64, _total: u64, size: usize) -> Result<Vec<usize>, TrainError> {
        let mut rows = Vec::with_capacity(size);
        while rows.len() < size {
            if self.pos == self.order.len() {
                self.epoch += 1;
                self.pos = 0;
                self.order = self.epoch_order(self.epoch);
            }
            rows.push(self.order[self.pos]);
            self.pos += 1;
        }
        Ok(rows)
    }

    fn state(&self) -> Value {
        json!({ "epoch": self.epoch, "position": self.pos })
    }

    fn restore(&mut self, state: &Value) -> Result<(), String> {
        let field = |name: &str| state.get(name).and_then(Value::as_u64);
        let (Some(epoch), Some(pos)) = (field("epoch"), field("position")) else {
            return Err(format!("expected {{epoch, position}}, found {state}"));
        };
        if pos as usize > self.rows.len() {
            return Err(format!("position {pos} is past the {} rows drawn from", self.rows.len()));
        }
        self.epoch = epoch;
        self.pos = pos as usize;
        self.order = self.epoch_order(epoch);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_cover_every_row_once_and_restore_continues() {
        let mut a = Uniform::new("s", 10, 9).unwrap();
        let drawn: Vec<usize> = (0..5).flat_map(|s| a.next_rows(s, 5, 4).unwrap()).collect();
        let mut first_epoch = drawn[..10].to_vec();
        first_epoch.sort_unstable();
        assert_eq!(first_epoch, (0..10).collect::<Vec<_>>());
        assert_ne!(drawn[..10], drawn[10..20], "each epoch has its own order");
        assert_eq!(a.state(), json!({"epoch": 1, "position": 10}));

        let mut b = Uniform::new("s", 10, 9).unwrap();
        (0..2).for_each(|s| drop(b.next_rows(s, 5, 4).unwrap()));
        let mut c = Uniform::new("s", 10, 9).unwrap();
        c.restore(&b.state()).unwrap();
        let rest: Vec<usize> = (2..5).flat_map(|s| c.next_rows(s, 5, 4).unwrap()).collect();
        assert_eq!(rest, drawn[8..]);
        assert!(c.restore(&json!({"epoch": 0})).is_err());
        assert!(c.restore(&json!({"epoch": 0, "position": 11})).is_err());
    }

    #[test]
    fn an_empty_dataset_is_a_config_error() {
        assert!(matches!(Uniform::new("s", 0, 0), Err(TrainError::Config { .. })));
    }
}
