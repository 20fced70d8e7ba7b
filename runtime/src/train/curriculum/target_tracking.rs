//! `target_tracking(by, target, eta, alpha, d_min, d_max, start, update)`: adaptive target
//! difficulty (AdaRFT: "Efficient Reinforcement Finetuning via Adaptive Curriculum Learning",
//! Shi et al., 2025). A target difficulty T starts at `start`; each batch takes the `size` rows
//! whose difficulty (the recipe's `by`, one score per row) is nearest T, and after the batch
//! T <- update(T, mean reward of its scored groups), by default AdaRFT's
//! clip(T + eta tanh(alpha (reward - target)), d_min, d_max): T rises while the policy does
//! better than the target reward and falls while it does worse.
//!
//! Rows at the same distance from T are equally near: the batch takes every row strictly
//! nearer than the `size`-th nearest distance and draws the rest uniformly among the rows at
//! exactly that distance, so with discrete difficulties (a number of steps) successive batches
//! at the same T see different rows of that difficulty. A batch larger than the rows takes
//! every row, and repeats, as [`draw`] does. With several micro-batches per step, T moves after
//! each.
//!
//! Invariants: batch `d`'s tie draw comes from the stream `stage/<stage>/target/<d>`; the
//! resumable state is T, the draw count and the last batch's logged difficulty and reward.

use super::{count_field, draw, float_bits, float_field, Curriculum, Feedback, GroupStats};
use crate::rng::Rng;
use crate::train::TrainError;
use serde_json::{json, Value};

/// The recipe's `update`: the new target from the target and the batch's mean reward.
pub type TargetUpdate = Box<dyn Fn(f64, f64) -> Result<f64, String>>;

/// Batches of the rows nearest a target difficulty that follows the reward.
pub struct TargetTracking {
    stage: String,
    seed: u64,
    difficulty: Vec<f64>,
    update: TargetUpdate,
    target: f64,
    /// Batches drawn so far.
    draws: u64,
    /// The last batch's mean difficulty and its groups' mean reward (NaN before one).
    batch_difficulty: f64,
    batch_reward: f64,
    /// Why `update` could not be evaluated on the last feedback, reported by the next draw.
    error: Option<String>,
}

impl TargetTracking {
    /// Tracks a target from `start` over stage `stage`'s rows of difficulty `difficulty`.
    ///
    /// Errors: `TrainError::Config` when there are no rows, or a difficulty or `start` is not
    /// a finite number.
    pub fn new(
        stage: &str,
        difficulty: Vec<f64>,
        seed: u64,
        start: f64,
        update: TargetUpdate,
    ) -> Result<TargetTracking, TrainError> {
        let config = |message: String| TrainError::Config { stage: stage.to_string(), message };
        if difficulty.is_empty() {
            return Err(config("it has no rows to draw from".into()));
        }
        if let Some(row) = difficulty.iter().position(|d| !d.is_finite()) {
            return Err(config(format!("the difficulty of row {row} is {}, not a finite number", difficulty[row])));
        }
        if !start.is_finite() {
            return Err(config(format!("the starting target difficulty is {start}, not a finite number")));
        }
        Ok(TargetTracking {
            stage: stage.to_string(),
            seed,
            difficulty,
            update,
            target: start,
            draws: 0,
            batch_difficulty: f64::NAN,
            batch_reward: f64::NAN,
            error: None,
        })
    }

    /// The `size` rows nearest `self.target`, ties drawn from `rng`.
    fn nearest(&self, rng: &mut Rng, size: usize) -> Vec<usize> {
        let n = self.difficulty.len();
        if size >= n {
            return draw(rng, n, size);
        }
        let distance = |r: usize| (self.difficulty[r] - self.target).abs();
        let mut distances: Vec<f64> = (0..n).map(distance).collect();
        let (_, &mut cut, _) = distances.select_nth_unstable_by(size - 1, f64::total_cmp);
        let mut rows: Vec<usize> = (0..n).filter(|&r| distance(r) < cut).collect();
        let ties: Vec<usize> = (0..n).filter(|&r| distance(r) == cut).collect();
        rows.extend(draw(rng, ties.len(), size - rows.len()).into_iter().map(|p| ties[p]));
        rows
    }
}

impl Curriculum for TargetTracking {
    /// Errors: `TrainError::Config` when `update` failed on the last feedback or made the
    /// target a value that is not a finite number.
    fn next_rows(&mut self, _step: u64, _total: u64, size: usize) -> Result<Vec<usize>, TrainError> {
        let config = |message: String| TrainError::Config { stage: self.stage.clone(), message };
        if let Some(message) = self.error.take() {
            return Err(config(format!("`update` of `target_tracking`: {message}")));
        }
        if !self.target.is_finite() {
            let message = format!("`update` of `target_tracking` made the target difficulty {}", self.target);
            return Err(config(format!("{message}; it must be a finite number")));
        }
        let mut rng = Rng::derive(self.seed, &format!("stage/{}/target/{}", self.stage, self.draws));
        self.draws += 1;
        let rows = self.nearest(&mut rng, size);
        self.batch_difficulty = rows.iter().map(|&r| self.difficulty[r]).sum::<f64>() / rows.len().max(1) as f64;
        Ok(rows)
    }

    fn observe(&mut self, _rows: &[usize], feedback: &Feedback) {
        let scored: Vec<GroupStats> = GroupStats::from_feedback(feedback).into_iter().filter(|g| g.size > 0).collect();
        if scored.is_empty() {
            return;
        }
        self.batch_reward = scored.iter().map(|g| g.reward).sum::<f64>() / scored.len() as f64;
        match (self.update)(self.target, self.batch_reward) {
            Ok(target) => self.target = target,
            Err(e) => self.error = Some(e),
        }
    }

    /// `curriculum/target` (T for the next batch), `curriculum/difficulty` (the last batch's
    /// mean difficulty) and `curriculum/reward` (its groups' mean reward), each once known.
    fn metrics(&self) -> Vec<(String, f64)> {
        [
            ("curriculum/target", self.target),
            ("curriculum/difficulty", self.batch_difficulty),
            ("curriculum/reward", self.batch_reward),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_nan())
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    fn state(&self) -> Value {
        json!({
            "target": float_bits(self.target),
            "draws": self.draws,
            "difficulty": float_bits(self.batch_difficulty),
            "reward": float_bits(self.batch_reward),
        })
    }

    fn restore(&mut self, state: &Value) -> Result<(), String> {
        self.target = float_field(state, "target")?;
        self.draws = count_field(state, "draws")?;
        self.batch_difficulty = float_field(state, "difficulty")?;
        self.batch_reward = float_field(state, "reward")?;
        self.error = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AdaRFT's default update with the `adaptive_target_difficulty` recipe's arguments.
    fn adarft() -> TargetUpdate {
        let (target, eta, alpha, d_min, d_max) = (0.5, 0.5, 2.0, 1.0, 5.0);
        Box::new(move |t, reward| Ok((t + eta * f64::tanh(alpha * (reward - target))).clamp(d_min, d_max)))
    }

    /// 100 rows of difficulty 1..=5, 20 each.
    fn steps() -> Vec<f64> {
        (0..100).map(|i| (i % 5 + 1) as f64).collect()
    }

    fn feedback(reward: f64) -> Feedback {
        GroupStats::feedback(&[GroupStats { reward, size: 8, ..GroupStats::default() }; 4])
    }

    #[test]
    fn the_target_rises_while_the_reward_beats_the_target_and_falls_otherwise() {
        let mut t = TargetTracking::new("s", steps(), 2, 1.0, adarft()).unwrap();
        let mut targets = Vec::new();
        for step in 0..6 {
            let rows = t.next_rows(step, 12, 4).unwrap();
            t.observe(&rows, &feedback(0.9));
            targets.push(t.target);
        }
        assert!(targets.windows(2).all(|w| w[1] > w[0]), "{targets:?}");
        let want = 1.0 + 0.5 * f64::tanh(2.0 * 0.4);
        assert!((targets[0] - want).abs() < 1e-12, "{targets:?}");
        let high = t.target;
        let rows = t.next_rows(6, 12, 4).unwrap();
        t.observe(&rows, &feedback(0.0));
        assert!(t.target < high);
        for _ in 0..20 {
            t.observe(&rows, &feedback(0.0));
        }
        assert_eq!(t.target, 1.0, "clipped at d_min");
        let metrics = t.metrics();
        assert_eq!(metrics[0], ("curriculum/target".to_string(), 1.0));
        assert_eq!(metrics[2], ("curriculum/reward".to_string(), 0.0));
    }

    #[test]
    fn batches_take_the_nearest_rows_and_draw_among_ties() {
        let mut t = TargetTracking::new("s", steps(), 2, 2.2, adarft()).unwrap();
        let a = t.next_rows(0, 4, 8).unwrap();
        assert!(a.iter().all(|&r| (r % 5 + 1) == 2), "difficulty 2 is nearest 2.2: {a:?}");
        assert_eq!(t.metrics()[1], ("curriculum/difficulty".to_string(), 2.0));
        let b = t.next_rows(1, 4, 8).unwrap();
        assert_ne!(a, b, "ties are drawn afresh for each batch");
        // 30 rows: all 20 of difficulty 2, then 10 of the 40 at distance 1 (difficulties 1 and 3).
        t.target = 2.0;
        let c = t.next_rows(2, 4, 30).unwrap();
        assert_eq!(c.iter().filter(|&&r| r % 5 + 1 == 2).count(), 20);
        assert!(c.iter().all(|&r| [1, 2, 3].contains(&(r % 5 + 1))), "{c:?}");
        let mut distinct = c.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 30);
        assert_eq!(t.next_rows(3, 4, 120).unwrap().len(), 120, "more than the rows: every row, then repeats");
    }

    #[test]
    fn restore_continues_identically_and_bad_values_are_errors() {
        let mut a = TargetTracking::new("s", steps(), 2, 1.0, adarft()).unwrap();
        for step in 0..3 {
            let rows = a.next_rows(step, 9, 4).unwrap();
            a.observe(&rows, &feedback(0.8));
        }
        let mut b = TargetTracking::new("s", steps(), 2, 1.0, adarft()).unwrap();
        b.restore(&serde_json::from_str(&serde_json::to_string(&a.state()).unwrap()).unwrap()).unwrap();
        assert_eq!(b.metrics(), a.metrics());
        for step in 3..9 {
            let rows = a.next_rows(step, 9, 4).unwrap();
            assert_eq!(b.next_rows(step, 9, 4).unwrap(), rows);
            a.observe(&rows, &feedback(0.7));
            b.observe(&rows, &feedback(0.7));
        }
        assert_eq!(b.state(), a.state());

        let nan: TargetUpdate = Box::new(|_, _| Ok(f64::NAN));
        let mut t = TargetTracking::new("s", steps(), 2, 1.0, nan).unwrap();
        let rows = t.next_rows(0, 2, 4).unwrap();
        t.observe(&rows, &Feedback::default());
        assert!(t.next_rows(1, 2, 4).is_ok(), "no group statistics: the target stays");
        t.observe(&rows, &feedback(1.0));
        let err = t.next_rows(1, 2, 4).unwrap_err().to_string();
        assert!(err.contains("made the target difficulty NaN"), "{err}");
        assert!(TargetTracking::new("s", vec![1.0, f64::NAN], 2, 1.0, adarft()).is_err());
        assert!(TargetTracking::new("s", vec![], 2, 1.0, adarft()).is_err());
    }
}
