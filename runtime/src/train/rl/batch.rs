//! The batch a policy-gradient loss reads (`RolloutBatch`), built from one forward pass of the
//! policy over a micro-batch's rollouts.
//!
//! Layout: sequence `i` is the i-th trained completion, `prompt ‖ completion` right-padded;
//! Token tensors are `[B, T]` over those positions with the completion mask (padding and
//! prompt positions hold 0, inside every op's domain); Seq tensors are `[B]`; each completion's
//! group is its prompt's. Every tensor is f32 on the policy's device; only `token_logps`
//! carries a gradient.

use super::rollouts::{Completion, Group, Rollouts};
use crate::model::{self, CausalLm, Device, Tensor, TokenBatch};
use crate::train::loss::LossInputs;
pub use crate::train::loss::Reads;
use crate::train::TrainError;
use recipe_compiler::lower::ROLLOUT_BATCH;
use recipe_compiler::program::LossTerm;
use recipe_compiler::tensor::{Groups, Totals};
use std::collections::HashMap;

/// The Float fields of a rollout batch, besides `step` and `total`.
pub const SCALAR_FIELDS: &[&str] = &["tokens", "max_tokens", "accumulate"];

/// The fields the policy loss `terms` read, checked against a rollout batch's.
///
/// Errors: the first field no rollout batch has, with the term that reads it.
pub fn reads(terms: &[LossTerm]) -> Result<Reads, String> {
    let fields: Vec<&str> = ROLLOUT_BATCH.iter().chain(SCALAR_FIELDS).copied().collect();
    Reads::of(terms, "a rollout batch", &fields)
}

/// Which completions of `rollouts` the loss trains on: all, or without the truncated ones
/// (TRL's `mask_truncated_completions`), with their group indices renumbered densely.
pub fn trained(rollouts: &Rollouts, mask_truncated: bool) -> Vec<(u32, &Group, &Completion)> {
    let mut out = Vec::new();
    let mut last: Option<usize> = None;
    let mut next = 0u32;
    for (g, group, c) in rollouts.completions() {
        if mask_truncated && c.truncated {
            continue;
        }
        if last != Some(g) {
            if last.is_some() {
                next += 1;
            }
            last = Some(g);
        }
        out.push((next, group, c));
    }
    out
}

/// One optimiser step's counts, what a mean to one value divides by.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepTotals {
    /// Completion tokens (TRL's `num_items_in_batch`).
    pub tokens: f64,
    pub sequences: f64,
    pub groups: f64,
}

impl StepTotals {
    /// The totals of the micro-batches `rollouts`.
    pub fn of<'r>(rollouts: impl IntoIterator<Item = &'r Rollouts>, mask_truncated: bool) -> StepTotals {
        let mut t = StepTotals::default();
        for r in rollouts {
            let rows = trained(r, mask_truncated);
            t.tokens += rows.iter().map(|(_, _, c)| c.ids.len() as f64).sum::<f64>();
            // TRL masks a truncated completion's tokens but keeps its row: a mean over
            // sequences (`grpo`, `dr_grpo`, `luspo`) still counts it.
            t.sequences += r.completions().count() as f64;
            t.groups += rows.last().map_or(0.0, |(g, _, _)| f64::from(*g + 1));
        }
        t
    }
}

/// A built batch: the loss inputs' tensors, plus what the objective's metrics read.
pub struct Batch {
    pub b: usize,
    pub device: Device,
    pub seq: HashMap<String, Tensor>,
    pub token: HashMap<String, Tensor>,
    pub scalar: HashMap<String, f64>,
    pub mask: Tensor,
    pub groups: Groups,
    /// Prompt and completion tokens (for tokens/s).
    pub tokens: usize,
    /// Detached per-token values for metrics, `[B][T]`: the policy's, the old policy's and the
    /// reference's (when read), and the completion mask; each rollout's advantage.
    pub policy: Vec<Vec<f32>>,
    pub old: Vec<Vec<f32>>,
    pub reference: Option<Vec<Vec<f32>>>,
    pub valid: Vec<Vec<f32>>,
    pub advantage: Vec<f32>,
    /// TRL's `entropy`: the mean sampling entropy per trained token, when every trained
    /// completion was sampled here.
    pub entropy: Option<f64>,
}

impl Batch {
    /// The loss IR's view; with `totals`, a mean to one value divides by the step's counts.
    pub fn inputs<'a>(&'a self, scalars: &'a dyn Fn(u32, &[String]) -> Option<f64>, totals: Totals) -> LossInputs<'a> {
        LossInputs {
            batch: self.b,
            device: self.device.clone(),
            dtype: crate::model::DType::F32,
            scalar: self.scalar.clone(),
            seq: self.seq.clone(),
            group: HashMap::new(),
            token: self.token.clone(),
            mask: Some(self.mask.clone()),
            groups: Some(self.groups.clone()),
            totals: Some(totals),
            scalars,
        }
    }
}

/// What [`build`] needs besides the rollouts.
pub struct BuildContext<'m> {
    pub policy: &'m CausalLm,
    /// The frozen reference, when the loss reads `ref_token_logps`.
    pub reference: Option<&'m CausalLm>,
    pub reads: &'m Reads,
    /// Score the reference even when the loss does not read it (for the `kl` metric).
    pub kl_metric: bool,
    pub mask_truncated: bool,
    pub totals: StepTotals,
    /// The completion token limit and the step's micro-batches.
    pub max_tokens: usize,
    pub accumulate: usize,
}

/// The batch of `rollouts`' trained completions; `None` when there is none.
///
/// Errors: `TrainError::Config` when the loss reads the reference's log-probabilities and the
/// stage has no reference; model errors as they come.
pub fn build(cx: &BuildContext<'_>, rollouts: &Rollouts, stage: &str) -> Result<Option<Batch>, TrainError> {
    let rows = trained(rollouts, cx.mask_truncated);
    if rows.is_empty() {
        return Ok(None);
    }
    let device = cx.policy.device().clone();
    let ids: Vec<(Vec<u32>, Vec<u32>)> = rows.iter().map(|(_, g, c)| (g.prompt.clone(), c.ids.clone())).collect();
    let tb = TokenBatch::from_ids(&ids, cx.policy.tokenizer().pad_id(), &device)?;
    let (b, t) = tb.dims()?;
    let token_logps = model::completion_token_logprobs(cx.policy, &tb)?;
    let policy: Vec<Vec<f32>> = token_logps.detach().to_vec2()?;
    let old = match rows.iter().all(|(_, _, c)| c.old_logps.is_some()) {
        true => scatter(&rows, &ids, t, |c| c.old_logps.clone().unwrap_or_default()),
        false => policy.clone(),
    };
    let reference = match (cx.reads.has("ref_token_logps") || cx.kl_metric, cx.reference) {
        (false, _) => None,
        (true, Some(reference)) => Some(model::completion_token_logprobs(reference, &tb)?.detach().to_vec2::<f32>()?),
        (true, None) => {
            let message =
                "the loss reads `ref_token_logps` (its `beta` is not 0), but the stage has no reference".to_string();
            return Err(TrainError::Config { stage: stage.to_string(), message });
        }
    };
    let grid = |v: &[Vec<f32>]| Tensor::from_vec(v.concat(), (b, t), &device);
    let mut token = HashMap::from([("token_logps".to_string(), token_logps)]);
    if cx.reads.has("old_token_logps") {
        // The sampling policy's values; the policy's own, detached, when it is the policy.
        token.insert("old_token_logps".into(), grid(&old)?);
    }
    if let Some(r) = reference.as_ref().filter(|_| cx.reads.has("ref_token_logps")) {
        token.insert("ref_token_logps".into(), grid(r)?);
    }
    let column =
        |f: &dyn Fn(&Completion) -> f32| Tensor::from_vec(rows.iter().map(|(_, _, c)| f(c)).collect(), b, &device);
    let seq = HashMap::from([
        ("advantage".to_string(), column(&|c| c.advantage as f32)?),
        ("reward".to_string(), column(&|c| c.reward as f32)?),
        ("len".to_string(), column(&|c| c.ids.len() as f32)?),
        ("truncated".to_string(), column(&|c| f32::from(u8::from(c.truncated)))?),
    ]);
    let scalar = HashMap::from([
        ("tokens".to_string(), cx.totals.tokens),
        ("max_tokens".to_string(), cx.max_tokens as f64),
        ("accumulate".to_string(), cx.accumulate as f64),
    ]);
    let groups =
        Groups { index: rows.iter().map(|(g, _, _)| *g).collect(), count: rows.last().map_or(0, |r| r.0 as usize + 1) };
    let valid: Vec<Vec<f32>> = tb.completion_mask.to_vec2()?;
    let advantage = rows.iter().map(|(_, _, c)| c.advantage as f32).collect();
    let entropy: Option<f64> = rows.iter().map(|(_, _, c)| c.entropy).sum();
    let trained_tokens: usize = rows.iter().map(|(_, _, c)| c.ids.len()).sum();
    let entropy = entropy.map(|e| e / trained_tokens.max(1) as f64);
    Ok(Some(Batch {
        b,
        device,
        seq,
        token,
        scalar,
        mask: tb.completion_mask.clone(),
        groups,
        tokens: tb.tokens(),
        policy,
        old,
        reference,
        valid,
        advantage,
        entropy,
    }))
}

/// Per-completion values laid out as the batch's `[B][T]` grid: completion token `j` of row `i`
/// at position `prompt_len + j`, 0 elsewhere.
fn scatter(
    rows: &[(u32, &Group, &Completion)],
    ids: &[(Vec<u32>, Vec<u32>)],
    t: usize,
    values: impl Fn(&Completion) -> Vec<f32>,
) -> Vec<Vec<f32>> {
    rows.iter()
        .zip(ids)
        .map(|((_, _, c), (prompt, _))| {
            let mut row = vec![0f32; t];
            for (j, v) in values(c).into_iter().enumerate() {
                row[prompt.len() + j] = v;
            }
            row
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(row: usize, truncated: &[bool]) -> Group {
        let completion = |t: &bool| Completion {
            ids: vec![1, 2, 3],
            text: String::new(),
            reward: 1.0,
            truncated: *t,
            advantage: 0.0,
            old_logps: None,
            entropy: None,
        };
        Group { row, example_id: row as u64, prompt: vec![7], completions: truncated.iter().map(completion).collect() }
    }

    /// TRL's `mask_truncated_completions`: truncated completions leave the loss, and a group
    /// left with none leaves the batch's group numbering.
    #[test]
    fn masking_truncated_completions_renumbers_the_groups_left() {
        let rollouts = Rollouts {
            groups: vec![group(0, &[true, false]), group(1, &[true, true]), group(2, &[false, false])],
            metrics: Vec::new(),
            reused: false,
        };
        let all: Vec<(u32, usize)> = trained(&rollouts, false).iter().map(|(g, grp, _)| (*g, grp.row)).collect();
        assert_eq!(all, [(0, 0), (0, 0), (1, 1), (1, 1), (2, 2), (2, 2)]);
        let kept: Vec<(u32, usize)> = trained(&rollouts, true).iter().map(|(g, grp, _)| (*g, grp.row)).collect();
        assert_eq!(kept, [(0, 0), (1, 2), (1, 2)]);
        let totals = StepTotals::of([&rollouts, &rollouts], true);
        assert_eq!(totals, StepTotals { tokens: 18.0, sequences: 12.0, groups: 4.0 }, "sequences count the masked");
    }
}
