//! A bounded bank of past rows mixed into uniform draws: what `replay` and `variance_filter`
//! share. Each batch takes `round(fraction · size)` rows (at most the bank's) drawn uniformly
//! from the bank, without repeats, and the rest from shuffled epochs over every row
//! ([`Uniform`]), so a banked row may also come up in the uniform part. The bank holds the
//! `capacity` rows most recently put in, oldest evicted first; putting in a row already there
//! refreshes it.
//!
//! Invariants: batch `d`'s bank draw comes from the stream `stage/<stage>/replay/<d>`; the
//! resumable state is the uniform position, the bank's rows in order and the draw count.

use super::{count_field, count_list, draw, Curriculum, Uniform};
use crate::rng::Rng;
use crate::train::TrainError;
use serde_json::{json, Value};

/// Uniform draws with a share of each batch replayed from a bank of past rows.
pub(super) struct Mixed {
    stage: String,
    seed: u64,
    fraction: f64,
    capacity: usize,
    uniform: Uniform,
    /// Dataset rows, oldest first.
    bank: Vec<usize>,
    /// Batches drawn so far.
    draws: u64,
    /// Rows of the last batch replayed from the bank, and its size.
    replayed: (usize, usize),
}

impl Mixed {
    /// Over the `rows` rows of stage `stage`, `fraction` of each batch from a bank of at most
    /// `capacity` rows.
    ///
    /// Errors: `TrainError::Config` when there are no rows, `fraction` is outside [0, 1] or
    /// `capacity` is 0.
    pub fn new(stage: &str, rows: usize, seed: u64, fraction: f64, capacity: usize) -> Result<Mixed, TrainError> {
        let config = |message: String| TrainError::Config { stage: stage.to_string(), message };
        if !(0.0..=1.0).contains(&fraction) {
            return Err(config(format!("the replayed fraction must be in [0, 1], found {fraction}")));
        }
        if capacity == 0 {
            return Err(config("the replay bank needs a capacity of at least one row".into()));
        }
        let uniform = Uniform::new(stage, rows, seed)?;
        Ok(Mixed {
            stage: stage.to_string(),
            seed,
            fraction,
            capacity,
            uniform,
            bank: Vec::new(),
            draws: 0,
            replayed: (0, 0),
        })
    }

    /// Puts `row` in the bank (newest), evicting the oldest row past the capacity.
    pub fn put(&mut self, row: usize) {
        self.remove(row);
        self.bank.push(row);
        if self.bank.len() > self.capacity {
            self.bank.remove(0);
        }
    }

    /// Takes `row` out of the bank, if it is there.
    pub fn remove(&mut self, row: usize) {
        self.bank.retain(|&r| r != row);
    }

    /// The bank's rows, oldest first.
    #[cfg(test)]
    pub fn bank(&self) -> &[usize] {
        &self.bank
    }

    /// The next batch of `size` rows: the bank's share first, then uniform rows.
    pub fn next_rows(&mut self, step: u64, total: u64, size: usize) -> Result<Vec<usize>, TrainError> {
        let from_bank = ((self.fraction * size as f64).round() as usize).min(self.bank.len()).min(size);
        let mut rng = Rng::derive(self.seed, &format!("stage/{}/replay/{}", self.stage, self.draws));
        self.draws += 1;
        let mut rows: Vec<usize> =
            draw(&mut rng, self.bank.len(), from_bank).into_iter().map(|p| self.bank[p]).collect();
        rows.extend(self.uniform.next_rows(step, total, size - from_bank)?);
        self.replayed = (from_bank, size);
        Ok(rows)
    }

    /// `curriculum/bank` (rows in the bank) and `curriculum/replayed` (the share of the last
    /// batch drawn from it).
    pub fn metrics(&self) -> Vec<(String, f64)> {
        let (replayed, size) = self.replayed;
        vec![
            ("curriculum/bank".into(), self.bank.len() as f64),
            ("curriculum/replayed".into(), if size == 0 { 0.0 } else { replayed as f64 / size as f64 }),
        ]
    }

    pub fn state(&self) -> Value {
        json!({
            "uniform": self.uniform.state(),
            "bank": self.bank,
            "draws": self.draws,
            "replayed": [self.replayed.0, self.replayed.1],
        })
    }

    /// Errors: a message when a field is missing or the bank does not fit the dataset or the
    /// capacity.
    pub fn restore(&mut self, state: &Value) -> Result<(), String> {
        self.uniform.restore(state.get("uniform").ok_or_else(|| format!("expected `uniform` in {state}"))?)?;
        let bank: Vec<usize> = count_list(state, "bank")?.into_iter().map(|r| r as usize).collect();
        let rows = self.uniform.rows();
        if bank.len() > self.capacity || bank.iter().any(|&r| r >= rows) {
            return Err(format!("a bank of {bank:?} does not fit {rows} rows and a capacity of {}", self.capacity));
        }
        let replayed = count_list(state, "replayed")?;
        let [replayed, size] = replayed[..] else { return Err(format!("expected two counts `replayed` in {state}")) };
        self.bank = bank;
        self.draws = count_field(state, "draws")?;
        self.replayed = (replayed as usize, size as usize);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bank_is_bounded_refreshed_and_mixed_in_by_its_fraction() {
        let mut m = Mixed::new("s", 100, 2, 0.25, 3).unwrap();
        let rows = m.next_rows(0, 9, 8).unwrap();
        assert_eq!((rows.len(), m.metrics()[1].1), (8, 0.0), "nothing to replay yet");
        for row in [1, 2, 3, 1, 4] {
            m.put(row);
        }
        assert_eq!(m.bank(), [3, 1, 4], "row 2 evicted; row 1 refreshed");
        let rows = m.next_rows(1, 9, 8).unwrap();
        let mut replayed = rows[..2].to_vec();
        replayed.sort_unstable();
        replayed.dedup();
        assert!(replayed.len() == 2 && replayed.iter().all(|r| [3, 1, 4].contains(r)), "{rows:?}");
        assert_eq!(m.metrics(), [("curriculum/bank".to_string(), 3.0), ("curriculum/replayed".to_string(), 0.25)]);
        m.remove(1);
        // Half of 8 is 4, but the bank holds 2.
        let mut half = Mixed::new("s", 100, 2, 0.5, 3).unwrap();
        half.restore(&m.state()).unwrap();
        let rows = half.next_rows(2, 9, 8).unwrap();
        let mut head = rows[..2].to_vec();
        head.sort_unstable();
        assert_eq!(head, [3, 4]);
        assert_eq!(half.metrics()[1].1, 0.25);
        assert!(Mixed::new("s", 5, 2, 1.5, 3).is_err());
        assert!(Mixed::new("s", 5, 2, 0.5, 0).is_err());
    }

    #[test]
    fn restore_continues_identically_and_refuses_a_foreign_bank() {
        let mut a = Mixed::new("s", 50, 7, 0.5, 10).unwrap();
        (0..6).for_each(|r| a.put(r * 7));
        a.next_rows(0, 4, 6).unwrap();
        let mut b = Mixed::new("s", 50, 7, 0.5, 10).unwrap();
        b.restore(&a.state()).unwrap();
        assert_eq!(b.state(), a.state());
        for step in 1..4 {
            assert_eq!(b.next_rows(step, 4, 6).unwrap(), a.next_rows(step, 4, 6).unwrap());
        }
        let mut small = Mixed::new("s", 20, 7, 0.5, 10).unwrap();
        assert!(small.restore(&a.state()).is_err(), "row 35 is not one of 20");
    }
}
