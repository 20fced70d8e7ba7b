//! Online RL with group rollouts (TRL's `GRPOTrainer`): the experience source that samples and
//! scores rollouts (`rollouts.rs`), the advantage estimator (`advantages.rs`), the batch a
//! policy-gradient loss reads (`batch.rs`), rollouts from a JSONL file (`file.rs`), and the objective that evaluates the recipe's loss
//! (`grpo`, `dapo`, ... from the prelude, or the user's) over it.
//!
//! Metrics (TRL's names and meanings): the sampling metrics of [`rollouts::Rollouts`]; `kl`,
//! the mean over completion tokens of the k3 estimate of KL(π ‖ π_ref) (times the importance
//! ratio with `bias_correction`, as TRL's `per_token_kl`), when the loss reads the reference;
//! `clip_ratio/low_mean`, `clip_ratio/high_mean` and `clip_ratio/region_mean`, the share of
//! tokens whose importance ratio is clipped below `1 − eps_low` with a negative advantage, above
//! `1 + eps_high` with a positive one, or either (0 on-policy, where the ratio is 1), for a loss
//! with `eps_low`; `entropy`, the mean per completion token of the entropy of the distribution
//! it was sampled from (with one iteration the policy's, as TRL's; from a file, none);
//! `loss/<term>` for each term.
//!
//! Feedback for curricula: each trained group's [`GroupStats`], one row per group, once: rollouts
//! trained on again (`iterations` > 1) give none, and log no sampling metrics again.

pub mod advantages;
pub mod batch;
pub mod file;
pub mod rollouts;

use super::loss::{scalar_nodes, weighted_terms, ScalarFns};
use super::{Experience, Feedback, LossOutput, Models, Objective, TrainError};
use crate::model::{CausalLm, Tensor};
use crate::train::GroupStats;
use batch::{BuildContext, Reads, StepTotals};
use recipe_compiler::program::{LossTerm, Value};
use recipe_compiler::tensor::Totals;
use rollouts::Rollouts;
use std::sync::Arc;

/// The `rl` stage's objective: the recipe's policy loss over each micro-batch of rollouts.
pub struct RlObjective {
    stage: String,
    terms: Vec<LossTerm>,
    reads: Reads,
    scalars: ScalarFns,
    mask_truncated: bool,
    max_tokens: usize,
    /// Report `kl` even when the loss does not read the reference.
    kl_metric: bool,
    /// The current step's totals and micro-batch count, from `begin_step`.
    plan: Option<(StepTotals, usize)>,
}

impl RlObjective {
    /// The objective of stage `stage` with the loss `terms`, completions of at most
    /// `max_tokens` tokens, leaving truncated ones out of the loss with `mask_truncated`.
    ///
    /// Errors: a message when a term reads a field no rollout batch has.
    pub fn new(
        stage: &str,
        terms: Vec<LossTerm>,
        scalars: ScalarFns,
        max_tokens: usize,
        mask_truncated: bool,
    ) -> Result<RlObjective, String> {
        let reads = batch::reads(&terms)?;
        Ok(RlObjective {
            stage: stage.into(),
            terms,
            reads,
            scalars,
            mask_truncated,
            max_tokens,
            kl_metric: false,
            plan: None,
        })
    }

    /// Whether the loss reads the reference's log-probabilities (a `beta` that is not 0).
    pub fn reads_reference(&self) -> bool {
        self.reads.has("ref_token_logps")
    }

    /// The loss of one micro-batch of `rollouts` at `step` of `total`.
    fn compute(
        &self,
        models: &Models<'_>,
        rollouts: &Rollouts,
        step: u64,
        total: u64,
    ) -> Result<LossOutput, TrainError> {
        let (totals, micro_batches) = self.plan.unwrap_or_else(|| (StepTotals::of([rollouts], self.mask_truncated), 1));
        let cx = BuildContext {
            policy: models.policy,
            reference: models.reference,
            reads: &self.reads,
            kl_metric: self.kl_metric,
            mask_truncated: self.mask_truncated,
            totals,
            max_tokens: self.max_tokens,
            accumulate: micro_batches,
        };
        // Rollouts trained on again were observed, and their sampling logged, when sampled.
        let (feedback, mut metrics) = match rollouts.reused {
            true => (Feedback::default(), Vec::new()),
            false => {
                let stats: Vec<GroupStats> = rollouts.groups.iter().map(|g| g.stats()).collect();
                (GroupStats::feedback(&stats), rollouts.metrics.clone())
            }
        };
        let Some(batch) = batch::build(&cx, rollouts, &self.stage)? else {
            // Nothing to train on (every group filtered, unscored or truncated): a zero loss.
            let loss = Tensor::new(0f32, models.policy.device())?;
            return Ok(LossOutput { loss, tokens: 0, metrics, feedback });
        };
        let scalar_node = scalar_nodes(&self.scalars, (step, total), &batch.scalar);
        let totals = Totals { tokens: totals.tokens, sequences: totals.sequences, groups: totals.groups };
        let (loss, terms) =
            weighted_terms(&self.stage, &self.terms, &batch.inputs(&scalar_node, totals), micro_batches)?;
        metrics.extend(self.token_metrics(&batch));
        metrics.extend(terms);
        Ok(LossOutput { loss, tokens: batch.tokens, metrics, feedback })
    }

    /// `kl` and `clip_ratio/*` over the batch's completion tokens.
    fn token_metrics(&self, batch: &batch::Batch) -> Vec<(String, f64)> {
        let float = |name: &str| {
            self.terms.iter().find_map(|t| match t.param(name) {
                Some(Value::Float(v)) => Some(*v),
                _ => None,
            })
        };
        let flag = |name: &str, default: bool| {
            self.terms
                .iter()
                .find_map(|t| match t.param(name) {
                    Some(Value::Bool(v)) => Some(*v),
                    _ => None,
                })
                .unwrap_or(default)
        };
        let sequence = self
            .terms
            .iter()
            .any(|t| matches!(t.param("importance"), Some(Value::Enum { name, .. }) if name == "sequence"));
        // The importance ratio per token: the token's, or its completion's mean (GSPO).
        let log_ratio: Vec<Vec<f64>> = (0..batch.b)
            .map(|i| {
                let per_token: Vec<f64> = (0..batch.valid[i].len())
                    .map(|t| f64::from(batch.policy[i][t]) - f64::from(batch.old[i][t]))
                    .collect();
                if !sequence {
                    return per_token;
                }
                let n = batch.valid[i].iter().filter(|v| **v != 0.0).count().max(1) as f64;
                let mean =
                    (0..per_token.len()).filter(|&t| batch.valid[i][t] != 0.0).map(|t| per_token[t]).sum::<f64>() / n;
                vec![mean; per_token.len()]
            })
            .collect();
        let tokens: Vec<(usize, usize)> = (0..batch.b)
            .flat_map(|i| (0..batch.valid[i].len()).map(move |t| (i, t)))
            .filter(|&(i, t)| batch.valid[i][t] != 0.0)
            .collect();
        let n = tokens.len().max(1) as f64;
        let mean = |f: &dyn Fn(usize, usize) -> f64| tokens.iter().map(|&(i, t)| f(i, t)).sum::<f64>() / n;
        let mut out: Vec<(String, f64)> = batch.entropy.map(|e| ("entropy".to_string(), e)).into_iter().collect();
        if let Some(reference) = &batch.reference {
            let bias = flag("bias_correction", true);
            out.push((
                "kl".to_string(),
                mean(&|i, t| {
                    let d = f64::from(reference[i][t]) - f64::from(batch.policy[i][t]);
                    let k3 = d.exp() - d - 1.0;
                    if bias {
                        k3 * log_ratio[i][t].exp()
                    } else {
                        k3
                    }
                }),
            ));
        }
        if let Some(low) = float("eps_low") {
            let high = float("eps_high").unwrap_or(low);
            let a = |i: usize| f64::from(batch.advantage[i]);
            let is_low = |i: usize, t: usize| log_ratio[i][t].exp() < 1.0 - low && a(i) < 0.0;
            let is_high = |i: usize, t: usize| log_ratio[i][t].exp() > 1.0 + high && a(i) > 0.0;
            let share = |f: &dyn Fn(usize, usize) -> bool| mean(&|i, t| f64::from(u8::from(f(i, t))));
            out.push(("clip_ratio/low_mean".to_string(), share(&is_low)));
            out.push(("clip_ratio/high_mean".to_string(), share(&is_high)));
            out.push(("clip_ratio/region_mean".to_string(), share(&|i, t| is_low(i, t) || is_high(i, t))));
        }
        out
    }
}

impl Objective for RlObjective {
    /// Records the step's completion tokens, rollouts and groups, which its means divide by.
    fn begin_step(&mut self, _models: &Models<'_>, micro_batches: &[Experience]) -> Result<(), TrainError> {
        let rollouts = micro_batches.iter().filter_map(|e| e.rollouts.as_deref());
        self.plan = Some((StepTotals::of(rollouts, self.mask_truncated), micro_batches.len()));
        Ok(())
    }

    fn loss(&mut self, models: &Models<'_>, experience: &Experience) -> Result<LossOutput, TrainError> {
        let rollouts = experience.rollouts.as_ref().ok_or_else(|| TrainError::Config {
            stage: self.stage.clone(),
            message: "an RL objective needs rollouts, and this experience has none".into(),
        })?;
        self.compute(models, rollouts, experience.step, experience.total)
    }
}

/// What [`loss_on_rollouts`] measured.
#[derive(Clone, Debug, PartialEq)]
pub struct RolloutLossReport {
    /// The loss, `Σ weight × term`.
    pub loss: f64,
    /// The global L2 norm of the gradient over every policy parameter, before clipping,
    /// accumulated in f64 from the f32 gradients.
    pub grad_norm: f64,
    /// Every completion's advantage, in order.
    pub advantages: Vec<f64>,
    /// The objective's metrics (see the module docs), `kl` among them.
    pub metrics: Vec<(String, f64)>,
}

/// The loss `terms` on every group of `rollouts` as one batch (one optimiser step of one
/// micro-batch), one backward pass and the gradient norm: what `recipe loss --rollouts` prints
/// and what the TRL fixture tests compare. The advantages are set by the caller.
///
/// Errors: `TrainError::Config` for a loss that reads a field no rollout batch has; model errors
/// as they come.
pub fn loss_on_rollouts(
    policy: &CausalLm,
    reference: &CausalLm,
    rollouts: Rollouts,
    terms: Vec<LossTerm>,
    scalars: ScalarFns,
    max_tokens: usize,
    (step, total): (u64, u64),
) -> Result<RolloutLossReport, TrainError> {
    const STAGE: &str = "recipe loss";
    let mut objective = RlObjective::new(STAGE, terms, scalars, max_tokens, false)
        .map_err(|message| TrainError::Config { stage: STAGE.into(), message })?;
    objective.kl_metric = true;
    let models = Models { policy, reference: Some(reference) };
    let advantages = rollouts.completions().map(|(_, _, c)| c.advantage).collect();
    let experience = Experience {
        rows: rollouts.groups.iter().map(|g| g.row).collect(),
        example_ids: rollouts.groups.iter().map(|g| g.example_id).collect(),
        step,
        total,
        rollouts: Some(Arc::new(rollouts)),
    };
    objective.begin_step(&models, std::slice::from_ref(&experience))?;
    let out = objective.loss(&models, &experience)?;
    let loss = super::scalar(&out.loss)?;
    let grads = policy.take_grads(&out.loss.backward()?)?;
    let mut sum = 0.0f64;
    for g in &grads {
        sum += g.to_dtype(candle_core::DType::F64)?.sqr()?.sum_all()?.to_scalar::<f64>()?;
    }
    Ok(RolloutLossReport { loss, grad_norm: sum.sqrt(), advantages, metrics: out.metrics })
}
