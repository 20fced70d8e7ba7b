//! `bandit(by, policy, alpha, update)`: Self-Evolving Curriculum (SEC: "Self-Evolving
//! Curriculum for LLM Reasoning", Chen et al., 2025). The rows are split into arms by the value
//! of the recipe's `by` (an Int per row: a category, the number of digits); each batch draws
//! one arm by `policy` and its rows uniformly from that arm's rows. After a batch, each arm it
//! drew from gets the reward signal `signal` = the mean of its groups' mean |advantage|
//! ([`GroupStats::mean_abs_advantage`]: how much the policy still learns there) and its value
//! becomes `update(ArmState)`, SEC's `Q <- alpha signal + (1 - alpha) Q` by default. Values
//! start at 0.
//!
//! Policies: `boltzmann(tau)` draws arm c with P(c) = exp(Q_c / tau) / Σ exp(Q / tau);
//! `ucb(c)` takes each untried arm first (lowest `by` first), then the arm maximising
//! Q_a + c sqrt(ln N / n_a) (UCB1, Auer et al., 2002; N draws in all, n_a of arm a; ties to the
//! lower arm).
//!
//! Invariants: batch `d`'s arm and rows come from the stream `stage/<stage>/bandit/<d>`; the
//! resumable state is the arms' values and draw counts, the draw count and the last arm drawn.

use super::{count_field, count_list, draw, float_bits, float_list, Curriculum, Feedback, GroupFn, GroupStats};
use crate::rng::Rng;
use crate::train::TrainError;
use serde_json::{json, Value};

/// How a bandit chooses an arm (the stdlib's `BanditPolicy`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BanditPolicy {
    /// Softmax of the values at temperature `tau` > 0.
    Boltzmann { tau: f64 },
    /// Upper confidence bound with exploration weight `c` >= 0.
    Ucb { c: f64 },
}

/// An arm's statistics after a batch (the stdlib's `ArmState`): what `update` maps to the arm's
/// new value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ArmState {
    /// The arm's value before the update.
    pub q: f64,
    /// The batch's mean |advantage| over the arm's scored groups.
    pub signal: f64,
    /// Batches drawn from the arm so far, this one included.
    pub count: u64,
    /// The 0-based step the batch was drawn for.
    pub step: u64,
}

/// A bandit over the rows' categories.
pub struct Bandit {
    stage: String,
    seed: u64,
    policy: BanditPolicy,
    /// The arms' `by` values, ascending.
    values: Vec<i64>,
    /// Each arm's dataset rows.
    arm_rows: Vec<Vec<usize>>,
    /// Each dataset row's arm.
    row_arm: Vec<usize>,
    update: GroupFn<ArmState, f64>,
    q: Vec<f64>,
    counts: Vec<u64>,
    /// Batches drawn so far, the last one's arm and step.
    draws: u64,
    arm: Option<usize>,
    step: u64,
    /// Why `update` could not be evaluated on the last feedback, reported by the next draw.
    error: Option<String>,
}

impl Bandit {
    /// A bandit over stage `stage`'s rows, row `i` in the arm `by[i]`.
    ///
    /// Errors: `TrainError::Config` when there are no rows, or the policy's `tau` is not
    /// positive or `c` is negative or NaN.
    pub fn new(
        stage: &str,
        by: &[i64],
        seed: u64,
        policy: BanditPolicy,
        update: GroupFn<ArmState, f64>,
    ) -> Result<Bandit, TrainError> {
        let config = |message: String| TrainError::Config { stage: stage.to_string(), message };
        if by.is_empty() {
            return Err(config("it has no rows to draw from".into()));
        }
        match policy {
            BanditPolicy::Boltzmann { tau } if tau.is_nan() || tau <= 0.0 => {
                return Err(config(format!("the Boltzmann temperature `tau` must be positive, found {tau}")))
            }
            BanditPolicy::Ucb { c } if c.is_nan() || c < 0.0 => {
                return Err(config(format!("the UCB weight `c` must be at least 0, found {c}")))
            }
            _ => {}
        }
        let mut values = by.to_vec();
        values.sort_unstable();
        values.dedup();
        let row_arm: Vec<usize> = by.iter().map(|v| values.binary_search(v).expect("every value is an arm")).collect();
        let mut arm_rows = vec![Vec::new(); values.len()];
        for (row, &arm) in row_arm.iter().enumerate() {
            arm_rows[arm].push(row);
        }
        let arms = values.len();
        Ok(Bandit {
            stage: stage.to_string(),
            seed,
            policy,
            values,
            arm_rows,
            row_arm,
            update,
            q: vec![0.0; arms],
            counts: vec![0; arms],
            draws: 0,
            arm: None,
            step: 0,
            error: None,
        })
    }

    /// The probability of each arm at the next draw (UCB: 1 for the arm it takes).
    pub fn probabilities(&self) -> Vec<f64> {
        match self.policy {
            BanditPolicy::Boltzmann { tau } => {
                // exp((Q - max Q) / tau): the same ratios without overflow.
                let max = self.q.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = self.q.iter().map(|q| ((q - max) / tau).exp()).collect();
                let sum: f64 = weights.iter().sum();
                weights.iter().map(|w| w / sum).collect()
            }
            BanditPolicy::Ucb { c } => {
                let chosen = self.ucb_arm(c);
                (0..self.q.len()).map(|a| if a == chosen { 1.0 } else { 0.0 }).collect()
            }
        }
    }

    /// UCB1's arm: the first untried one, else the highest bound (the lower arm on ties).
    fn ucb_arm(&self, c: f64) -> usize {
        if let Some(untried) = self.counts.iter().position(|&n| n == 0) {
            return untried;
        }
        let ln_n = (self.counts.iter().sum::<u64>() as f64).ln();
        let bound = |a: usize| self.q[a] + c * (ln_n / self.counts[a] as f64).sqrt();
        (1..self.q.len()).fold(0, |best, a| if bound(a) > bound(best) { a } else { best })
    }

    fn choose(&self, rng: &mut Rng) -> usize {
        match self.policy {
            BanditPolicy::Ucb { c } => self.ucb_arm(c),
            BanditPolicy::Boltzmann { .. } => {
                let u = rng.uniform();
                let mut cumulative = 0.0;
                let p = self.probabilities();
                // Rounding may leave the sum a hair below 1: the last arm takes the rest.
                p.iter()
                    .position(|&p| {
                        cumulative += p;
                        u < cumulative
                    })
                    .unwrap_or(p.len() - 1)
            }
        }
    }
}

impl Curriculum for Bandit {
    /// Errors: `TrainError::Config` when `update` failed on the last feedback or gave an arm a
    /// value that is not a finite number.
    fn next_rows(&mut self, step: u64, _total: u64, size: usize) -> Result<Vec<usize>, TrainError> {
        let config = |message: String| TrainError::Config { stage: self.stage.clone(), message };
        if let Some(message) = self.error.take() {
            return Err(config(format!("`update` of `bandit`: {message}")));
        }
        if let Some(a) = self.q.iter().position(|q| !q.is_finite()) {
            let message = format!("`update` of `bandit` gave arm {} the value {}", self.values[a], self.q[a]);
            return Err(config(format!("{message}; an arm's value must be a finite number")));
        }
        let mut rng = Rng::derive(self.seed, &format!("stage/{}/bandit/{}", self.stage, self.draws));
        let arm = self.choose(&mut rng);
        self.draws += 1;
        self.counts[arm] += 1;
        (self.arm, self.step) = (Some(arm), step);
        let rows = &self.arm_rows[arm];
        Ok(draw(&mut rng, rows.len(), size).into_iter().map(|p| rows[p]).collect())
    }

    fn observe(&mut self, rows: &[usize], feedback: &Feedback) {
        let groups = GroupStats::from_feedback(feedback);
        // Per arm: the sum of its scored groups' mean |advantage|, and their number.
        let mut signals = vec![(0.0, 0usize); self.q.len()];
        for (&row, g) in rows.iter().zip(&groups) {
            if g.size > 0 {
                let s = &mut signals[self.row_arm[row]];
                (s.0, s.1) = (s.0 + g.mean_abs_advantage, s.1 + 1);
            }
        }
        let arms: Vec<usize> = (0..signals.len()).filter(|&a| signals[a].1 > 0).collect();
        if arms.is_empty() {
            return;
        }
        let states: Vec<ArmState> = arms
            .iter()
            .map(|&a| ArmState {
                q: self.q[a],
                signal: signals[a].0 / signals[a].1 as f64,
                count: self.counts[a],
                step: self.step,
            })
            .collect();
        match (self.update)(&states) {
            Ok(values) => arms.iter().zip(values).for_each(|(&a, q)| self.q[a] = q),
            Err(e) => self.error = Some(e),
        }
    }

    /// `curriculum/q/<arm>` and `curriculum/p/<arm>` (its value and its probability at the
    /// next draw) for each arm by its `by` value, and `curriculum/arm`, the last arm drawn.
    fn metrics(&self) -> Vec<(String, f64)> {
        let p = self.probabilities();
        let mut metrics: Vec<(String, f64)> = Vec::with_capacity(2 * self.q.len() + 1);
        for (a, value) in self.values.iter().enumerate() {
            metrics.push((format!("curriculum/q/{value}"), self.q[a]));
            metrics.push((format!("curriculum/p/{value}"), p[a]));
        }
        if let Some(arm) = self.arm {
            metrics.push(("curriculum/arm".into(), self.values[arm] as f64));
        }
        metrics
    }

    fn state(&self) -> Value {
        json!({
            "arms": self.values,
            "q": self.q.iter().map(|&q| float_bits(q)).collect::<Vec<_>>(),
            "counts": self.counts,
            "draws": self.draws,
            "arm": self.arm,
            "step": self.step,
        })
    }

    fn restore(&mut self, state: &Value) -> Result<(), String> {
        let arms: Option<Vec<i64>> =
            state.get("arms").and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_i64).collect());
        if arms.as_ref() != Some(&self.values) {
            return Err(format!("the saved arms {:?} are not this bandit's {:?}", state.get("arms"), self.values));
        }
        let (q, counts) = (float_list(state, "q")?, count_list(state, "counts")?);
        if q.len() != self.values.len() || counts.len() != self.values.len() {
            return Err(format!("expected {} values and counts, found {state}", self.values.len()));
        }
        let arm = match state.get("arm") {
            Some(Value::Null) => None,
            _ => match count_field(state, "arm")? as usize {
                a if a < self.values.len() => Some(a),
                a => return Err(format!("the last arm drawn, {a}, is not one of {}", self.values.len())),
            },
        };
        (self.q, self.counts, self.arm) = (q, counts, arm);
        (self.draws, self.step) = (count_field(state, "draws")?, count_field(state, "step")?);
        self.error = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SEC's update with alpha = 0.5.
    fn sec() -> GroupFn<ArmState, f64> {
        Box::new(|arms: &[ArmState]| Ok(arms.iter().map(|s| 0.5 * s.signal + 0.5 * s.q).collect()))
    }

    /// Row `i` is in arm `i % 3 + 1`.
    fn by(rows: usize) -> Vec<i64> {
        (0..rows as i64).map(|i| i % 3 + 1).collect()
    }

    /// Trains `steps` batches on which arm 3 has mean |advantage| 1 and the others 0.1.
    fn train(b: &mut Bandit, steps: u64) {
        for step in 0..steps {
            let rows = b.next_rows(step, steps, 4).unwrap();
            let arm = b.row_arm[rows[0]];
            assert!(rows.iter().all(|&r| b.row_arm[r] == arm), "one arm per batch: {rows:?}");
            let signal = if b.values[arm] == 3 { 1.0 } else { 0.1 };
            let groups = vec![GroupStats { mean_abs_advantage: signal, size: 8, ..GroupStats::default() }; 4];
            b.observe(&rows, &GroupStats::feedback(&groups));
        }
    }

    #[test]
    fn boltzmann_probabilities_move_toward_the_arm_with_the_higher_signal() {
        let mut b = Bandit::new("s", &by(30), 5, BanditPolicy::Boltzmann { tau: 0.4 }, sec()).unwrap();
        assert_eq!(b.probabilities(), [1.0 / 3.0; 3]);
        train(&mut b, 40);
        let p = b.probabilities();
        assert!(p[2] > 0.8, "arm 3 dominates: {p:?}");
        let m = b.metrics();
        assert_eq!(m[4].0, "curriculum/q/3");
        assert!(m[4].1 > 0.9, "{m:?}");
        assert_eq!(m[5], ("curriculum/p/3".to_string(), p[2]));
        assert_eq!(m.last().unwrap().0, "curriculum/arm");
    }

    #[test]
    fn ucb_tries_every_arm_then_follows_the_bound() {
        let mut b = Bandit::new("s", &by(30), 5, BanditPolicy::Ucb { c: 0.1 }, sec()).unwrap();
        let first: Vec<usize> = (0..3)
            .map(|s| {
                let row = b.next_rows(s, 3, 2).unwrap()[0];
                b.row_arm[row]
            })
            .collect();
        assert_eq!(first, [0, 1, 2], "untried arms first, lowest first");
        let mut b = Bandit::new("s", &by(30), 5, BanditPolicy::Ucb { c: 0.1 }, sec()).unwrap();
        train(&mut b, 30);
        assert!(b.counts[2] > 20, "{:?}", b.counts);
        assert_eq!(b.probabilities().iter().sum::<f64>(), 1.0);
    }

    #[test]
    fn restore_continues_identically_and_refuses_other_arms() {
        let mut a = Bandit::new("s", &by(30), 5, BanditPolicy::Boltzmann { tau: 0.4 }, sec()).unwrap();
        train(&mut a, 7);
        let mut b = Bandit::new("s", &by(30), 5, BanditPolicy::Boltzmann { tau: 0.4 }, sec()).unwrap();
        let saved = serde_json::to_string(&a.state()).unwrap();
        b.restore(&serde_json::from_str(&saved).unwrap()).unwrap();
        assert_eq!(b.state(), a.state());
        assert_eq!(b.metrics(), a.metrics());
        train(&mut a, 5);
        train(&mut b, 5);
        assert_eq!(b.state(), a.state());
        let mut other = Bandit::new("s", &[1, 2], 5, BanditPolicy::Ucb { c: 1.0 }, sec()).unwrap();
        assert!(other.restore(&a.state()).is_err());
    }

    #[test]
    fn an_update_that_is_not_a_number_stops_the_next_draw() {
        let nan: GroupFn<ArmState, f64> = Box::new(|arms: &[ArmState]| Ok(vec![f64::NAN; arms.len()]));
        let mut b = Bandit::new("s", &[7, 7, 9], 5, BanditPolicy::Ucb { c: 1.0 }, nan).unwrap();
        let rows = b.next_rows(0, 2, 2).unwrap();
        b.observe(&rows, &GroupStats::feedback(&[GroupStats { size: 2, ..GroupStats::default() }; 2]));
        let err = b.next_rows(1, 2, 2).unwrap_err().to_string();
        assert!(err.contains("gave arm 7 the value NaN"), "{err}");
        assert!(Bandit::new("s", &[1], 5, BanditPolicy::Boltzmann { tau: 0.0 }, sec()).is_err());
        assert!(Bandit::new("s", &[], 5, BanditPolicy::Ucb { c: 1.0 }, sec()).is_err());
    }
}
