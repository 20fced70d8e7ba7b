//! Rollouts: the experience source of the `rl` stage. For each micro-batch it draws prompts
//! through the curriculum, samples a group of completions of each with the current policy
//! (KV-cached, batched), scores them with the recipe's reward, computes advantages with the
//! recipe's estimator, lets the curriculum filter the groups ([`Curriculum::admit`]) and
//! refills from new prompts up to [`Curriculum::refill_rounds`] more times.
//!
//! A reward of NaN means "cannot be scored": that completion is left out of advantages,
//! curriculum statistics and the loss, and counted (`rewards/unscored`); a group left with no
//! scored completion is dropped (`groups/unscored`). An infinite reward stops the stage naming
//! the example.
//!
//! Invariants: every sampled token draws from a stream named after the seed, the stage (and
//! round), the step, the micro-batch, the refill round, the row and the sample's index within
//! its group, so rollouts do not depend on batching, on the other rows or on resumption. With
//! `iterations` μ > 1 (TRL's `num_iterations`), a step whose index is not a multiple of μ trains
//! again on the micro-batches sampled at the last such step, against the log-probabilities they
//! were sampled with; those micro-batches are the source's state, saved in checkpoints.

use super::advantages::AdvantageFn;
use crate::model::{self, CausalLm, GenerateOptions, TokenBatch};
use crate::rng::Rng;
use crate::train::{Curriculum, Experience, ExperienceSource, GroupStats, TrainError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;

/// One sampled completion, scored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    /// The sampled token ids, the stop token included when one was emitted.
    pub ids: Vec<u32>,
    /// The text the reward saw: the ids decoded, without the stop token.
    pub text: String,
    /// The reward (finite: unscored completions are not kept).
    pub reward: f64,
    /// Whether it reached the token limit without a stop token.
    pub truncated: bool,
    /// Its advantage from the stage's estimator, over the micro-batch's final groups.
    pub advantage: f64,
    /// Log-probabilities of `ids` under the policy that sampled them, `[len]`: kept only when
    /// the batch is trained on for several iterations (otherwise the policy's own values are).
    pub old_logps: Option<Vec<f32>>,
    /// The summed entropy (nats) of the distributions its tokens were drawn from, when it was
    /// sampled here (not read from a file): TRL's `entropy` is its mean per token.
    pub entropy: Option<f64>,
}

/// One prompt's group of scored completions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Group {
    /// The dataset row, and its stable id.
    pub row: usize,
    pub example_id: u64,
    /// The prompt's token ids.
    pub prompt: Vec<u32>,
    pub completions: Vec<Completion>,
}

impl Group {
    /// The group's statistics for curricula (rewards are all scored here).
    pub fn stats(&self) -> GroupStats {
        let rewards: Vec<f64> = self.completions.iter().map(|c| c.reward).collect();
        let advantages: Vec<f64> = self.completions.iter().map(|c| c.advantage).collect();
        GroupStats::of(&rewards, &advantages)
    }
}

/// A micro-batch of rollouts: the groups the objective trains on, in order, and what sampling
/// measured (TRL's names: `reward`, `reward_std`, `frac_reward_zero_std`, `completions/*`;
/// and `rewards/unscored`, `groups/*`; a refilling curriculum logs its own refill rounds).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Rollouts {
    pub groups: Vec<Group>,
    pub metrics: Vec<(String, f64)>,
    /// Whether these are rollouts of an earlier step trained on again (`iterations` > 1): the
    /// curriculum has observed them and their sampling metrics were logged already.
    #[serde(default)]
    pub reused: bool,
}

impl Rollouts {
    /// Every completion with its group index, in order.
    pub fn completions(&self) -> impl Iterator<Item = (usize, &Group, &Completion)> {
        self.groups.iter().enumerate().flat_map(|(g, group)| group.completions.iter().map(move |c| (g, group, c)))
    }
}

/// What the reward function sees of each completion to score: the dataset row it completes,
/// its text and token count, and the step.
pub struct RewardQuery<'a> {
    pub rows: &'a [usize],
    pub completions: &'a [String],
    /// Completion tokens, the stop token included.
    pub tokens: &'a [i64],
    pub step: u64,
    pub total: u64,
}

/// The recipe's reward over a batch of completions: one value each, NaN for "cannot be scored";
/// an error message when the function cannot be evaluated.
pub type RewardFn = Arc<dyn Fn(&RewardQuery<'_>) -> Result<Vec<f64>, String> + Send + Sync>;

/// How rollouts are sampled.
#[derive(Clone, Debug, PartialEq)]
pub struct RolloutSettings {
    /// Completions per prompt (TRL's `num_generations`).
    pub group: usize,
    /// Optimiser steps per sampled batch (TRL's `num_iterations`).
    pub iterations: u64,
    /// Sampling: `max_new_tokens` is TRL's `max_completion_length`; always stops at EOS.
    pub sampling: GenerateOptions,
}

/// The `rl` stage's experience source.
pub struct RolloutSource {
    stage: String,
    /// The stream-name prefix: the stage, and its round when it runs in rounds.
    streams: String,
    seed: u64,
    /// Each dataset row's prompt ids, and its stable id.
    prompts: Arc<Vec<Vec<u32>>>,
    ids: Vec<u64>,
    settings: RolloutSettings,
    reward: RewardFn,
    advantages: AdvantageFn,
    /// The micro-batches sampled at the last sampling step, replayed by the steps that reuse
    /// them, and how many of them the current step has taken.
    cache: Cache,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Cache {
    step: Option<u64>,
    micro_batches: Vec<Rollouts>,
    taken: usize,
}

impl RolloutSource {
    /// A source for stage `stage` (`streams` names its random streams: `stage/<name>` or with
    /// the round) over rows whose prompts tokenise to `prompts`, with stable ids `ids`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        stage: &str,
        streams: String,
        seed: u64,
        prompts: Arc<Vec<Vec<u32>>>,
        ids: Vec<u64>,
        settings: RolloutSettings,
        reward: RewardFn,
        advantages: AdvantageFn,
    ) -> RolloutSource {
        let stage = stage.to_string();
        RolloutSource { stage, streams, seed, prompts, ids, settings, reward, advantages, cache: Cache::default() }
    }

    fn config_error(&self, message: String) -> TrainError {
        TrainError::Config { stage: self.stage.clone(), message }
    }

    /// Samples and scores a group for each of `rows` (draw `draw` of micro-batch `micro` of
    /// `step`), leaving unscored completions and groups out; the counts of those go to `tally`.
    fn sample(
        &self,
        policy: &CausalLm,
        rows: &[usize],
        (step, total, micro, draw): (u64, u64, usize, u32),
        tally: &mut Tally,
    ) -> Result<Vec<Group>, TrainError> {
        let g = self.settings.group;
        let mut prompts = Vec::with_capacity(rows.len() * g);
        let mut streams = Vec::with_capacity(rows.len() * g);
        // A row drawn twice in one draw (a replayed row, a small bandit arm) samples apart: its
        // n-th occurrence's streams carry `.n`.
        let mut seen: std::collections::HashMap<usize, usize> = std::collections::HashMap::new();
        for &row in rows {
            let n = seen.entry(row).or_insert(0);
            let occurrence = if *n == 0 { String::new() } else { format!(".{n}") };
            *n += 1;
            for k in 0..g {
                prompts.push(self.prompts[row].clone());
                let name =
                    format!("{}/rollouts/step{step}/micro{micro}/draw{draw}/row{row}{occurrence}/{k}", self.streams);
                streams.push(Rng::derive(self.seed, &name));
            }
        }
        let sampled = model::sample_streams(policy, &prompts, &self.settings.sampling, &mut streams)?;
        let tok = policy.tokenizer();
        let entropies: Vec<f64> = sampled.iter().map(|s| s.entropies.iter().map(|&e| f64::from(e)).sum()).collect();
        let completions: Vec<(Vec<u32>, String, bool)> = sampled
            .into_iter()
            .map(|s| {
                let stopped = s.ids.last().is_some_and(|&t| tok.is_stop(t));
                let text = tok.decode(&s.ids[..s.ids.len() - usize::from(stopped)]);
                (s.ids, text, !stopped)
            })
            .collect();
        let query_rows: Vec<usize> = rows.iter().flat_map(|&r| std::iter::repeat_n(r, g)).collect();
        let texts: Vec<String> = completions.iter().map(|c| c.1.clone()).collect();
        let tokens: Vec<i64> = completions.iter().map(|c| c.0.len() as i64).collect();
        let query = RewardQuery { rows: &query_rows, completions: &texts, tokens: &tokens, step, total };
        let rewards = (self.reward)(&query).map_err(|e| self.config_error(format!("the reward: {e}")))?;
        if rewards.len() != completions.len() {
            return Err(self.config_error(format!(
                "the reward gave {} values for {} completions",
                rewards.len(),
                completions.len()
            )));
        }
        if let Some(i) = rewards.iter().position(|r| r.is_infinite()) {
            return Err(TrainError::NonFinite {
                stage: self.stage.clone(),
                step: step + 1,
                quantity: "a reward",
                value: rewards[i],
                example_ids: vec![self.ids[query_rows[i]]],
            });
        }
        for (r, chunk) in completions.chunks(g).enumerate() {
            let shape: Vec<(usize, bool)> = chunk.iter().map(|c| (c.0.len(), c.2)).collect();
            tally.record_group(&shape, &rewards[r * g..(r + 1) * g]);
        }
        let mut groups = Vec::with_capacity(rows.len());
        let mut scored = completions.into_iter().zip(rewards).zip(entropies);
        for &row in rows {
            let completions: Vec<Completion> = scored
                .by_ref()
                .take(g)
                .filter(|((_, reward), _)| !reward.is_nan())
                .map(|(((ids, text, truncated), reward), entropy)| Completion {
                    ids,
                    text,
                    reward,
                    truncated,
                    advantage: 0.0,
                    old_logps: None,
                    entropy: Some(entropy),
                })
                .collect();
            if completions.is_empty() {
                tally.unscored_groups += 1;
                continue;
            }
            groups.push(Group { row, example_id: self.ids[row], prompt: self.prompts[row].clone(), completions });
        }
        Ok(groups)
    }

    /// Sets each completion's advantage from the estimator over `groups` together.
    fn set_advantages(&self, groups: &mut [Group], step: u64, total: u64) -> Result<(), TrainError> {
        let advantages = self.advantages.over(groups, step, total).map_err(|e| self.config_error(e))?;
        let mut values = advantages.into_iter();
        for c in groups.iter_mut().flat_map(|g| g.completions.iter_mut()) {
            c.advantage = values.next().unwrap_or(0.0);
        }
        Ok(())
    }

    /// Each completion's log-probabilities under `policy` (no gradient), kept as the old
    /// policy's for the iterations that reuse the batch.
    fn keep_old_logps(&self, policy: &CausalLm, groups: &mut [Group]) -> Result<(), TrainError> {
        let rows: Vec<(Vec<u32>, Vec<u32>)> =
            groups.iter().flat_map(|g| g.completions.iter().map(|c| (g.prompt.clone(), c.ids.clone()))).collect();
        if rows.is_empty() {
            return Ok(());
        }
        let batch = TokenBatch::from_ids(&rows, policy.tokenizer().pad_id(), policy.device())?;
        let logps: Vec<Vec<f32>> = model::completion_token_logprobs(policy, &batch)?.detach().to_vec2()?;
        let completions = groups.iter_mut().flat_map(|g| g.completions.iter_mut());
        for ((c, row), (p, _)) in completions.zip(logps).zip(&rows) {
            c.old_logps = Some(row[p.len()..p.len() + c.ids.len()].to_vec());
        }
        Ok(())
    }

    /// A fresh micro-batch: sample, filter and refill, then the final advantages.
    fn fresh(
        &self,
        policy: &CausalLm,
        curriculum: &mut dyn Curriculum,
        size: usize,
        (step, total, micro): (u64, u64, usize),
    ) -> Result<Rollouts, TrainError> {
        let mut tally = Tally::default();
        let mut kept: Vec<Group> = Vec::new();
        let mut draw = 0u32;
        while kept.len() < size && draw <= curriculum.refill_rounds() {
            let rows = curriculum.next_rows(step, total, size - kept.len())?;
            if rows.is_empty() {
                break;
            }
            let mut groups = self.sample(policy, &rows, (step, total, micro, draw), &mut tally)?;
            self.set_advantages(&mut groups, step, total)?;
            let stats: Vec<GroupStats> = groups.iter().map(Group::stats).collect();
            let sampled_rows: Vec<usize> = groups.iter().map(|g| g.row).collect();
            let admitted = curriculum.admit(&sampled_rows, &stats);
            for (group, admit) in groups.into_iter().zip(admitted) {
                match admit {
                    true => kept.push(group),
                    false => tally.filtered_groups += 1,
                }
            }
            draw += 1;
        }
        self.set_advantages(&mut kept, step, total)?;
        if self.settings.iterations > 1 {
            self.keep_old_logps(policy, &mut kept)?;
        }
        let mut metrics = tally.metrics(self.advantages.batch_scaled());
        metrics.push(("groups/kept".into(), kept.len() as f64));
        Ok(Rollouts { groups: kept, metrics, reused: false })
    }
}

impl ExperienceSource for RolloutSource {
    fn collect(
        &mut self,
        policy: &CausalLm,
        curriculum: &mut dyn Curriculum,
        size: usize,
        step: u64,
        total: u64,
    ) -> Result<Experience, TrainError> {
        let sampling_step = step - step % self.settings.iterations;
        if self.cache.step != Some(step) {
            if sampling_step == step {
                self.cache.micro_batches.clear();
            }
            self.cache.step = Some(step);
            self.cache.taken = 0;
        }
        let micro = self.cache.taken;
        let rollouts = if sampling_step == step {
            let fresh = self.fresh(policy, curriculum, size, (step, total, micro))?;
            if self.settings.iterations > 1 {
                self.cache.micro_batches.push(fresh.clone());
            }
            fresh
        } else {
            let cached = self.cache.micro_batches.get(micro).cloned().ok_or_else(|| {
                let message = format!(
                    "step {} reuses the rollouts of step {}, which has no micro-batch {micro}",
                    step + 1,
                    sampling_step + 1
                );
                TrainError::Restore { stage: self.stage.clone(), message }
            })?;
            Rollouts { reused: true, ..cached }
        };
        self.cache.taken += 1;
        Ok(Experience {
            rows: rollouts.groups.iter().map(|g| g.row).collect(),
            example_ids: rollouts.groups.iter().map(|g| g.example_id).collect(),
            step,
            total,
            rollouts: Some(Arc::new(rollouts)),
        })
    }

    /// The micro-batches kept for the iterations still to reuse them (none with μ = 1).
    fn state(&self) -> Value {
        match self.settings.iterations {
            1 => Value::Null,
            _ => serde_json::to_value(&self.cache).unwrap_or(Value::Null),
        }
    }

    fn restore(&mut self, state: &Value) -> Result<(), String> {
        self.cache = match state {
            Value::Null => Cache::default(),
            v => serde_json::from_value(v.clone()).map_err(|e| format!("rollouts: {e}"))?,
        };
        Ok(())
    }
}

/// What sampling a micro-batch measured, over every sampled completion (filtered groups too).
#[derive(Default)]
pub struct Tally {
    lengths: Vec<f64>,
    terminated: Vec<f64>,
    /// Scored rewards of each sampled group.
    group_rewards: Vec<Vec<f64>>,
    unscored: usize,
    /// Groups left with no scored completion, and groups a curriculum did not admit.
    pub unscored_groups: usize,
    pub filtered_groups: usize,
}

impl Tally {
    /// Records one sampled group: each completion's token count and whether it was truncated,
    /// and its reward (NaN: unscored).
    pub fn record_group(&mut self, completions: &[(usize, bool)], rewards: &[f64]) {
        for &(len, truncated) in completions {
            self.lengths.push(len as f64);
            if !truncated {
                self.terminated.push(len as f64);
            }
        }
        self.unscored += rewards.iter().filter(|r| r.is_nan()).count();
        self.group_rewards.push(rewards.iter().copied().filter(|v| !v.is_nan()).collect());
    }

    /// TRL's sampling metrics: `reward` and `reward_std` (mean and unbiased standard deviation
    /// of every scored reward), `frac_reward_zero_std` (the share of groups whose rewards are all
    /// equal; with `batch_scaled` advantages TRL's 0 or 1 for the batch's),
    /// `completions/{mean,min,max}_length`, `completions/mean_terminated_length` and
    /// `completions/clipped_ratio` (the share that hit the token limit).
    pub fn metrics(&self, batch_scaled: bool) -> Vec<(String, f64)> {
        let mean = |v: &[f64]| if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 };
        let scored: Vec<f64> = self.group_rewards.iter().flatten().copied().collect();
        let zero_std = match batch_scaled {
            true => f64::from(u8::from(unbiased_std(&scored) <= 1e-8)),
            false => {
                let groups: Vec<&Vec<f64>> = self.group_rewards.iter().filter(|r| !r.is_empty()).collect();
                let zero = groups.iter().filter(|r| unbiased_std(r) <= 1e-8).count();
                zero as f64 / groups.len().max(1) as f64
            }
        };
        let n = self.lengths.len().max(1) as f64;
        vec![
            ("reward".into(), mean(&scored)),
            ("reward_std".into(), unbiased_std(&scored)),
            ("frac_reward_zero_std".into(), zero_std),
            ("completions/mean_length".into(), mean(&self.lengths)),
            ("completions/min_length".into(), self.lengths.iter().copied().reduce(f64::min).unwrap_or(0.0)),
            ("completions/max_length".into(), self.lengths.iter().copied().fold(0.0, f64::max)),
            ("completions/mean_terminated_length".into(), mean(&self.terminated)),
            ("completions/clipped_ratio".into(), (self.lengths.len() - self.terminated.len()) as f64 / n),
            ("rewards/unscored".into(), self.unscored as f64),
            ("groups/unscored".into(), self.unscored_groups as f64),
            ("groups/filtered".into(), self.filtered_groups as f64),
        ]
    }
}

/// The unbiased (n − 1) standard deviation, 0 for fewer than two values (TRL's `nanstd`).
pub(super) fn unbiased_std(values: &[f64]) -> f64 {
    if values.len() < 2 {
        return 0.0;
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
}
