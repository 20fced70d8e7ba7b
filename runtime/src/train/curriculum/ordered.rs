//! `ordered(by, order)`: the whole dataset in one fixed order by difficulty — easy first, hard
//! first, or a seeded shuffle (the control) — walked batch after batch; past the end it starts
//! again from the beginning, in the same order.
//!
//! Invariants: the order is fixed at construction, so the resumable state is the position in
//! it (`epoch`, `position`); a batch that runs past the end continues at the start, so every
//! batch is full.

use super::{count_field, Curriculum};
use crate::train::TrainError;
use serde_json::{json, Value};

/// Rows in a fixed order, from the first.
pub struct Ordered {
    order: Vec<usize>,
    epoch: u64,
    pos: usize,
}

impl Ordered {
    /// Walks `order` (row indices, e.g. from [`super::sorted_rows`]) of stage `stage`.
    ///
    /// Errors: `TrainError::Config` when `order` is empty.
    pub fn new(stage: &str, order: Vec<usize>) -> Result<Ordered, TrainError> {
        if order.is_empty() {
            return Err(TrainError::Config { stage: stage.to_string(), message: "it has no rows to order".into() });
        }
        Ok(Ordered { order, epoch: 0, pos: 0 })
    }
}

impl Curriculum for Ordered {
    fn next_rows(&mut self, _step: u64, _total: u64, size: usize) -> Result<Vec<usize>, TrainError> {
        let mut rows = Vec::with_capacity(size);
        while rows.len() < size {
            if self.pos == self.order.len() {
                self.epoch += 1;
                self.pos = 0;
            }
            rows.push(self.order[self.pos]);
            self.pos += 1;
        }
        Ok(rows)
    }

    /// `curriculum/epoch` (completed passes) and `curriculum/position` (rows of the order
    /// drawn in this pass).
    fn metrics(&self) -> Vec<(String, f64)> {
        vec![("curriculum/epoch".into(), self.epoch as f64), ("curriculum/position".into(), self.pos as f64)]
    }

    fn state(&self) -> Value {
        json!({ "epoch": self.epoch, "position": self.pos })
    }

    fn restore(&mut self, state: &Value) -> Result<(), String> {
        let (epoch, pos) = (count_field(state, "epoch")?, count_field(state, "position")? as usize);
        if pos > self.order.len() {
            return Err(format!("position {pos} is past the {} rows of the order", self.order.len()));
        }
        (self.epoch, self.pos) = (epoch, pos);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 7 rows at 3 a step: [0 1 2], [3 4 5], then the partial pass is filled from the next
    /// one, [6 0 1], and the metrics say so (a new epoch at position 2): nothing is dropped.
    #[test]
    fn a_partial_last_batch_runs_into_the_next_pass() {
        let mut o = Ordered::new("s", (0..7).collect()).unwrap();
        let batches: Vec<Vec<usize>> = (0..3).map(|s| o.next_rows(s, 3, 3).unwrap()).collect();
        assert_eq!(batches, [vec![0, 1, 2], vec![3, 4, 5], vec![6, 0, 1]]);
        assert_eq!(o.metrics(), [("curriculum/epoch".to_string(), 1.0), ("curriculum/position".to_string(), 2.0)]);
    }

    #[test]
    fn walks_the_order_and_wraps_and_restores() {
        let mut a = Ordered::new("s", vec![2, 0, 1]).unwrap();
        assert_eq!(a.next_rows(0, 3, 2).unwrap(), [2, 0]);
        assert_eq!(a.next_rows(1, 3, 2).unwrap(), [1, 2], "the second pass starts again");
        assert_eq!(a.metrics(), [("curriculum/epoch".to_string(), 1.0), ("curriculum/position".to_string(), 1.0)]);
        let mut b = Ordered::new("s", vec![2, 0, 1]).unwrap();
        b.restore(&a.state()).unwrap();
        assert_eq!(b.next_rows(2, 3, 2).unwrap(), a.next_rows(2, 3, 2).unwrap());
        assert!(b.restore(&json!({"epoch": 0, "position": 4})).is_err());
        assert!(Ordered::new("s", vec![]).is_err());
    }
}
