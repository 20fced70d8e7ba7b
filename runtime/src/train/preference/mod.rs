//! Preference optimisation (TRL's `DPOTrainer` family): the objective of the `preference` stage
//! and of `recipe loss`, over `prompt`/`chosen`/`rejected` rows.
//!
//! A micro-batch of `P` pairs is `2P` sequences in TRL's layout (chosen responses first); one
//! forward pass of the policy gives the log-probabilities every loss is written over, and the
//! reference's are computed once per row, cached and reused every epoch (`batch.rs`). The loss
//! is the recipe's: a list of named, weighted terms ([`LossTerm`]), each a compiled tensor
//! function evaluated by [`crate::train::loss::evaluate`] with autograd; the micro-batch's loss
//! is `Σ weight × term`.
//!
//! Metrics (TRL's names and meanings, means over the micro-batch's pairs): `rewards/chosen` and
//! `rewards/rejected` (β·(log π − log π_ref) of each response), `rewards/margins` (their
//! difference), `rewards/accuracies` (the fraction of pairs whose chosen reward is higher),
//! `logps/chosen` and `logps/rejected` (summed log-probs under the policy), `loss/<term>`
//! (weight × value of each term, summed over terms of the same name) and `wpo/weight` (the mean
//! WPO pair weight `exp(l_c + l_r)`, `l` = mean of log π(y_t) − log Σ_v π(v)², when a term reads
//! the WPO fields). β is the `beta` of the first term that has one (a schedule is evaluated at the
//! step); a loss with no `beta` (`nll()`) reports rewards with β = 1.
//!
//! Feedback for curricula: `margin`, β·((log π − log π_ref)(chosen) − (…)(rejected)) per pair.

pub mod batch;
pub mod pairs;

use super::loss::{scalar_nodes, weighted_terms, LossInputs};
use super::{Experience, Feedback, LossOutput, Models, Objective, TrainError};
use crate::model::CausalLm;
use batch::{Batch, Reads, RefCache, StepTotals};
pub use pairs::{Pairs, PairsError};
use recipe_compiler::program::{LossTerm, Value};
use recipe_compiler::tensor::Totals;
use std::sync::Arc;

pub use super::loss::ScalarFns;

/// The preference objective over one dataset's pairs.
pub struct PreferenceObjective {
    /// The stage's name, for errors.
    stage: String,
    pairs: Arc<Pairs>,
    terms: Vec<LossTerm>,
    reads: Reads,
    scalars: ScalarFns,
    cache: RefCache,
    /// The current step's totals and the micro-batches still to come, from `begin_step`.
    plan: Option<StepPlan>,
}

struct StepPlan {
    totals: StepTotals,
    /// The step's micro-batches.
    count: usize,
    pending: Vec<Vec<usize>>,
}

/// How a micro-batch's loss relates to its step.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Share {
    /// The counts a mean to one value divides by.
    totals: StepTotals,
    /// Whether they are the whole step's (a micro-batch's loss is then its share of the step's).
    step_wide: bool,
    /// Micro-batches in the step (1 when the totals are the micro-batch's own).
    micro_batches: usize,
}

/// Why a loss is not a preference loss.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LossMismatch(pub String);

impl PreferenceObjective {
    /// The objective of stage `stage`, training on `pairs` with the loss `terms`.
    ///
    /// Errors: `LossMismatch` when a term reads a field no preference batch has.
    pub fn new(stage: &str, pairs: Arc<Pairs>, terms: Vec<LossTerm>, scalars: ScalarFns) -> Result<Self, LossMismatch> {
        let reads = batch::reads(&terms).map_err(LossMismatch)?;
        let cache = RefCache::new(pairs.len(), reads.has("ref_token_logps"));
        Ok(PreferenceObjective { stage: stage.to_string(), pairs, terms, reads, scalars, cache, plan: None })
    }

    /// Forward passes of the reference so far, and the rows they scored (each row once).
    pub fn reference_passes(&self) -> (usize, usize) {
        (self.cache.passes, self.cache.rows)
    }

    /// β for rewards at `step` of `total`: the first term's `beta` that has one, else 1.
    fn beta(&self, step: u64, total: u64) -> f64 {
        let beta = self.terms.iter().find_map(LossTerm::beta);
        match beta {
            Some(Value::Float(b)) => *b,
            Some(Value::Int(b)) => *b as f64,
            Some(Value::Scalar(f)) => (self.scalars)(*f, &[step as f64, total as f64]).unwrap_or(f64::NAN),
            _ => 1.0,
        }
    }

    /// Scores the rows not yet cached under the reference, `chunk` pairs per pass.
    fn fill_reference(&mut self, models: &Models<'_>, rows: &[usize], chunk: usize) -> Result<(), TrainError> {
        let reference = models.reference.ok_or_else(|| TrainError::Config {
            stage: self.stage.clone(),
            message: "a preference objective needs a reference model".into(),
        })?;
        self.cache.fill(reference, &self.pairs, rows, chunk)
    }

    /// The step totals for the micro-batch `rows`: those `begin_step` planned when it is one of
    /// that step's micro-batches, else its own.
    fn share_of(&mut self, rows: &[usize]) -> Share {
        if let Some(plan) = &mut self.plan {
            if let Some(i) = plan.pending.iter().position(|r| r == rows) {
                plan.pending.remove(i);
                let share = Share { totals: plan.totals, step_wide: true, micro_batches: plan.count };
                if plan.pending.is_empty() {
                    self.plan = None;
                }
                return share;
            }
        }
        Share { totals: StepTotals::of(&self.pairs, [rows]), step_wide: false, micro_batches: 1 }
    }

    /// The loss of the pairs `rows` and its metrics; step-wide totals make a mean to one value
    /// divide by the whole step's counts. The loop averages metrics over a step's micro-batches,
    /// so each `loss/<term>` is reported as the micro-batch's share times their number: the
    /// average is then the step's term, whose sum over terms is the step's loss.
    fn compute(
        &mut self,
        policy: &CausalLm,
        rows: &[usize],
        step: u64,
        total: u64,
        share: Share,
    ) -> Result<LossOutput, TrainError> {
        let Share { totals, step_wide, micro_batches } = share;
        let batch = batch::build(policy, &self.pairs, rows, &self.cache, &self.reads, &totals)?;
        let scalar_node = scalar_nodes(&self.scalars, (step, total), &batch.scalar);
        let inputs = loss_inputs(&batch, &scalar_node, step_wide.then_some(totals));
        let (loss, metrics) = weighted_terms(&self.stage, &self.terms, &inputs, micro_batches)?;
        let beta = self.beta(step, total);
        let (mut rewards, feedback) = rewards(&batch, beta);
        rewards.extend(metrics);
        Ok(LossOutput { loss, tokens: batch.tokens.tokens(), metrics: rewards, feedback })
    }
}

/// The loss IR's view of `batch`; with `totals`, a mean to one value divides by the whole
/// step's counts.
fn loss_inputs<'a>(
    batch: &'a Batch,
    scalars: &'a dyn Fn(u32, &[String]) -> Option<f64>,
    totals: Option<StepTotals>,
) -> LossInputs<'a> {
    LossInputs {
        batch: 2 * batch.pairs,
        device: batch.device.clone(),
        dtype: batch.dtype(),
        scalar: batch.scalar.clone(),
        seq: batch.seq.clone(),
        group: batch.group.clone(),
        token: batch.token.clone(),
        mask: Some(batch.mask().clone()),
        groups: Some(batch.groups.clone()),
        totals: totals.map(|t| Totals { tokens: t.tokens, sequences: t.sequences, groups: t.groups }),
        scalars,
    }
}

/// TRL's reward metrics of `batch` at `beta`, and each pair's margin as feedback.
fn rewards(batch: &Batch, beta: f64) -> (Vec<(String, f64)>, Feedback) {
    let p = batch.pairs;
    let n = p.max(1) as f64;
    let (pol, refr) = (&batch.policy, &batch.reference);
    let reward = |i: usize| beta * (f64::from(pol[i]) - f64::from(refr[i]));
    let margins: Vec<f64> = (0..p).map(|i| reward(i) - reward(p + i)).collect();
    let mean = |f: &dyn Fn(usize) -> f64| (0..p).map(f).sum::<f64>() / n;
    let mut metrics = vec![
        ("rewards/chosen".to_string(), mean(&|i| reward(i))),
        ("rewards/rejected".to_string(), mean(&|i| reward(p + i))),
        ("rewards/margins".to_string(), margins.iter().sum::<f64>() / n),
        ("rewards/accuracies".to_string(), mean(&|i| f64::from(u8::from(reward(i) > reward(p + i))))),
        ("logps/chosen".to_string(), mean(&|i| f64::from(pol[i]))),
        ("logps/rejected".to_string(), mean(&|i| f64::from(pol[p + i]))),
    ];
    if let Some(w) = &batch.wpo {
        let l = |i: usize| f64::from(pol[i]) / f64::from(batch.lens[i]) - f64::from(w[i]);
        metrics.push(("wpo/weight".to_string(), mean(&|i| (l(i) + l(p + i)).exp())));
    }
    (metrics, Feedback { columns: vec![("margin".to_string(), margins)] })
}

impl Objective for PreferenceObjective {
    /// Scores every row of the step not yet cached under the reference (one batched pass per
    /// micro-batch's worth of rows), and records the step's totals.
    fn begin_step(&mut self, models: &Models<'_>, micro_batches: &[Experience]) -> Result<(), TrainError> {
        let all: Vec<usize> = micro_batches.iter().flat_map(|e| e.rows.iter().copied()).collect();
        let chunk = micro_batches.iter().map(|e| e.rows.len()).max().unwrap_or(1);
        self.fill_reference(models, &all, chunk)?;
        let totals = StepTotals::of(&self.pairs, micro_batches.iter().map(|e| e.rows.as_slice()));
        let pending = micro_batches.iter().map(|e| e.rows.clone()).collect();
        self.plan = Some(StepPlan { totals, count: micro_batches.len(), pending });
        Ok(())
    }

    fn loss(&mut self, models: &Models<'_>, experience: &Experience) -> Result<LossOutput, TrainError> {
        let rows = &experience.rows;
        self.fill_reference(models, rows, rows.len())?;
        let share = self.share_of(rows);
        self.compute(models.policy, rows, experience.step, experience.total, share)
    }
}

/// The stage name [`loss_on_all_rows`] reports in its errors.
pub const LOSS_STAGE: &str = "recipe loss";

/// What [`loss_on_all_rows`] measured.
#[derive(Clone, Debug, PartialEq)]
pub struct LossReport {
    /// The loss, `Σ weight × term`.
    pub loss: f64,
    /// The global L2 norm of the gradient over every policy parameter, before any clipping,
    /// accumulated in f64 from the f32 gradients.
    pub grad_norm: f64,
    /// The objective's metrics (see the module docs), in a stable order.
    pub metrics: Vec<(String, f64)>,
    /// Pairs in the batch.
    pub pairs: usize,
}

/// The loss `terms` on every pair of `pairs` as one batch (one optimiser step of one
/// micro-batch), one backward pass, and the gradient norm: what `recipe loss` prints and what the
/// TRL fixture tests compare. Schedules are evaluated at `step` of `total`. `reference` should be
/// frozen (it never receives a gradient either way).
///
/// Errors: `TrainError::Config` for a loss that reads a field no preference batch has or cannot
/// be evaluated; model errors as they come.
pub fn loss_on_all_rows(
    policy: &CausalLm,
    reference: &CausalLm,
    pairs: Arc<Pairs>,
    terms: Vec<LossTerm>,
    scalars: ScalarFns,
    step: u64,
    total: u64,
) -> Result<LossReport, TrainError> {
    let n = pairs.len();
    let mut objective = PreferenceObjective::new(LOSS_STAGE, pairs, terms, scalars)
        .map_err(|e| TrainError::Config { stage: LOSS_STAGE.into(), message: e.0 })?;
    let models = Models { policy, reference: Some(reference) };
    let experience =
        Experience { rows: (0..n).collect(), example_ids: (0..n as u64).collect(), step, total, rollouts: None };
    objective.begin_step(&models, std::slice::from_ref(&experience))?;
    let out = objective.loss(&models, &experience)?;
    let loss = super::scalar(&out.loss)?;
    let grads = out.loss.backward()?;
    let grads = policy.take_grads(&grads)?;
    let mut sum = 0.0f64;
    for g in &grads {
        sum += g.to_dtype(candle_core::DType::F64)?.sqr()?.sum_all()?.to_scalar::<f64>()?;
    }
    Ok(LossReport { loss, grad_norm: sum.sqrt(), metrics: out.metrics, pairs: n })
}

#[cfg(test)]
mod tests;
