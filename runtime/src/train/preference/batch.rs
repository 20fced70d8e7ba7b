//! The batch a preference loss reads, built from one forward pass of the policy over the
//! micro-batch's `2P` sequences and the reference's cached log-probabilities.
//!
//! Layout (TRL's): sequences `0..P` are the chosen responses of the `P` pairs, `P..2P` the
//! rejected ones; each sequence's group is its pair (`i % P`). Shapes: Seq `[B = 2P]`, Token
//! `[B, T]` meaningful where the completion mask is 1 (padding holds 0, inside every op's
//! domain), Group `[P]`. Every tensor is f32 on the policy's device; only the policy's
//! log-probabilities carry a gradient.

use super::pairs::Pairs;
use super::TrainError;
use crate::model::{self, CausalLm, DType, Device, Tensor, TokenBatch};
pub use crate::train::loss::Reads;
use recipe_compiler::lower::{batch_field_shape, PREF_BATCH};
use recipe_compiler::program::LossTerm;
use recipe_compiler::tensor::{Groups, Shape};
use std::collections::HashMap;

/// The Float fields of a preference batch, besides `step` and `total` (its Tensor fields and
/// their shapes are the compiler's `lower::PREF_BATCH` and `lower::BATCH_FIELDS`, held to `PrefBatch`).
pub const SCALAR_FIELDS: &[&str] = &["chosen_tokens"];

/// The Tensor fields of a preference batch and their shapes (`lower::PREF_BATCH`).
pub fn tensor_fields() -> impl Iterator<Item = (&'static str, Shape)> {
    PREF_BATCH.iter().map(|n| (*n, batch_field_shape(n)))
}

/// Whether a preference batch has the field `name`, and its shape.
pub fn field_shape(name: &str) -> Option<Shape> {
    let tensor = PREF_BATCH.contains(&name).then(|| batch_field_shape(name));
    tensor.or_else(|| SCALAR_FIELDS.contains(&name).then_some(Shape::Scalar))
}

/// The fields the loss `terms` read, checked against a preference batch's.
///
/// Errors: the first field no preference batch has, with the term that reads it.
pub fn reads(terms: &[LossTerm]) -> Result<Reads, String> {
    let fields: Vec<&str> = PREF_BATCH.iter().chain(SCALAR_FIELDS).copied().collect();
    Reads::of(terms, "a preference batch", &fields)
}

/// Whether a loss reads WPO's statistic.
pub fn reads_wpo(reads: &Reads) -> bool {
    reads.has("wpo_chosen") || reads.has("wpo_rejected")
}

/// The reference's log-probabilities of each row, computed once (batched, no gradient) and
/// reused every epoch.
#[derive(Debug, Default)]
pub struct RefCache {
    /// Per row: the summed log-probs of (chosen, rejected).
    seq: Vec<Option<(f32, f32)>>,
    /// Per row, when kept: the per-token log-probs of (chosen, rejected), EOS included.
    tokens: Vec<Option<(Vec<f32>, Vec<f32>)>>,
    keep_tokens: bool,
    /// Forward passes of the reference so far.
    pub passes: usize,
    /// Rows scored so far (each once).
    pub rows: usize,
}

impl RefCache {
    /// An empty cache for `rows` rows; `keep_tokens` keeps per-token values too.
    pub fn new(rows: usize, keep_tokens: bool) -> RefCache {
        RefCache { seq: vec![None; rows], tokens: vec![None; rows], keep_tokens, passes: 0, rows: 0 }
    }

    /// Scores every row of `rows` not yet cached under `reference`, `chunk` pairs per pass.
    pub fn fill(
        &mut self,
        reference: &CausalLm,
        pairs: &Pairs,
        rows: &[usize],
        chunk: usize,
    ) -> Result<(), TrainError> {
        let mut missing: Vec<usize> = rows.iter().copied().filter(|&r| self.seq[r].is_none()).collect();
        missing.sort_unstable();
        missing.dedup();
        for part in missing.chunks(chunk.max(1)) {
            let batch =
                TokenBatch::from_ids(&pairs.sequences(part), reference.tokenizer().pad_id(), reference.device())?;
            let per_token = model::completion_token_logprobs(reference, &batch)?.detach();
            let sums: Vec<f32> = per_token.sum(1)?.to_vec1()?;
            let values: Vec<Vec<f32>> = if self.keep_tokens { per_token.to_vec2()? } else { Vec::new() };
            let n = part.len();
            for (i, &r) in part.iter().enumerate() {
                self.seq[r] = Some((sums[i], sums[n + i]));
                if self.keep_tokens {
                    let p = pairs.prompt(r).len();
                    let cut = |row: &Vec<f32>, len: usize| row[p..p + len].to_vec();
                    let chosen = cut(&values[i], pairs.chosen(r).len());
                    self.tokens[r] = Some((chosen, cut(&values[n + i], pairs.rejected(r).len())));
                }
            }
            self.passes += 1;
            self.rows += n;
        }
        Ok(())
    }

    /// The cached (chosen, rejected) sequence log-probs of row `r`.
    fn seq(&self, r: usize) -> Result<(f32, f32), TrainError> {
        self.seq[r].ok_or_else(|| not_cached(r))
    }

    fn tokens(&self, r: usize) -> Result<&(Vec<f32>, Vec<f32>), TrainError> {
        self.tokens[r].as_ref().ok_or_else(|| not_cached(r))
    }
}

fn not_cached(r: usize) -> TrainError {
    TrainError::Candle(candle_core::Error::Msg(format!("preference: the reference log-probs of row {r} are missing")))
}

/// Counts of a whole optimiser step that a mean to a scalar divides by.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepTotals {
    /// Completion tokens (EOS included) of every sequence of the step.
    pub tokens: f64,
    /// Sequences: twice the pairs.
    pub sequences: f64,
    /// Pairs.
    pub groups: f64,
    /// Completion tokens of the chosen responses.
    pub chosen_tokens: f64,
}

impl StepTotals {
    /// The totals of the pairs `rows` (over all micro-batches of a step).
    pub fn of<'r>(pairs: &Pairs, rows: impl IntoIterator<Item = &'r [usize]>) -> StepTotals {
        let (mut chosen, mut rejected, mut count) = (0, 0, 0);
        for part in rows {
            let (c, r) = pairs.completion_tokens(part);
            chosen += c;
            rejected += r;
            count += part.len();
        }
        StepTotals {
            tokens: (chosen + rejected) as f64,
            sequences: 2.0 * count as f64,
            groups: count as f64,
            chosen_tokens: chosen as f64,
        }
    }
}

/// A micro-batch's loss inputs and the host values its metrics read.
pub struct Batch {
    /// `P`.
    pub pairs: usize,
    pub tokens: TokenBatch,
    pub device: Device,
    /// By field, in the map of its kind.
    pub seq: HashMap<String, Tensor>,
    pub token: HashMap<String, Tensor>,
    pub group: HashMap<String, Tensor>,
    pub scalar: HashMap<String, f64>,
    pub groups: Groups,
    /// The policy's summed log-probs `[B]` (host copy).
    pub policy: Vec<f32>,
    /// The reference's `[B]`.
    pub reference: Vec<f32>,
    /// Completion tokens per sequence `[B]`.
    pub lens: Vec<f32>,
    /// WPO's per-sequence mean of `log Σ_v π(v)²`, `[B]`, when the loss reads it.
    pub wpo: Option<Vec<f32>>,
}

/// The batch of pairs `rows` under `policy`, with the reference's values from `cache` (which
/// must hold them); `totals` gives the scalar `chosen_tokens`. Only the fields `reads` names are
/// built, apart from the sequence log-probs the metrics need.
pub fn build(
    policy: &CausalLm,
    pairs: &Pairs,
    rows: &[usize],
    cache: &RefCache,
    reads: &Reads,
    totals: &StepTotals,
) -> Result<Batch, TrainError> {
    let p = rows.len();
    let b = 2 * p;
    let device = policy.device().clone();
    let tokens = TokenBatch::from_ids(&pairs.sequences(rows), policy.tokenizer().pad_id(), &device)?;
    let (_, t) = tokens.dims()?;
    let per_token = model::completion_token_logprobs(policy, &tokens)?;
    let logps = per_token.sum(1)?;
    let policy_values: Vec<f32> = logps.detach().to_vec1()?;
    let mut reference = vec![0f32; b];
    for (i, &r) in rows.iter().enumerate() {
        (reference[i], reference[p + i]) = cache.seq(r)?;
    }
    let lens: Vec<f32> = tokens.completion_lens.iter().map(|&n| n as f32).collect();
    let seq_tensor = |v: Vec<f32>| Tensor::from_vec(v, b, &device);

    let mut batch = Batch {
        pairs: p,
        device: device.clone(),
        seq: HashMap::new(),
        token: HashMap::new(),
        group: HashMap::new(),
        scalar: HashMap::from([("chosen_tokens".to_string(), totals.chosen_tokens)]),
        groups: Groups { index: (0..b).map(|i| (i % p) as u32).collect(), count: p },
        policy: policy_values,
        reference: reference.clone(),
        lens: lens.clone(),
        wpo: None,
        tokens,
    };
    let ref_logps = seq_tensor(reference)?;
    let len = seq_tensor(lens)?;
    let half = |x: &Tensor, side: usize| x.narrow(0, side * p, p);
    let wpo = if reads_wpo(reads) {
        let lss = model::completion_log_sum_sq_probs(policy, &batch.tokens)?;
        let mean = lss.sum(1)?.div(&len)?;
        batch.wpo = Some(mean.to_vec1()?);
        Some(mean)
    } else {
        None
    };
    // Each per-token field, only if read: values at completion positions, 0 elsewhere.
    let token_field = |values: &dyn Fn(usize, usize) -> Result<f32, TrainError>| -> Result<Tensor, TrainError> {
        let mut out = vec![0f32; b * t];
        for i in 0..b {
            let start = batch.tokens.prompt_lens[i];
            for k in 0..batch.tokens.completion_lens[i] {
                out[i * t + start + k] = values(i, k)?;
            }
        }
        Ok(Tensor::from_vec(out, (b, t), &device)?)
    };
    for (name, shape) in tensor_fields() {
        if !reads.has(name) {
            continue;
        }
        let value = match name {
            "logps" => logps.clone(),
            "ref_logps" => ref_logps.clone(),
            "len" => len.clone(),
            "chosen" => seq_tensor((0..b).map(|i| if i < p { 1.0 } else { 0.0 }).collect())?,
            "token_logps" => per_token.clone(),
            "position" => token_field(&|_, k| Ok((k + 1) as f32))?,
            "ref_token_logps" => token_field(&|i, k| {
                let (chosen, rejected) = cache.tokens(rows[i % p])?;
                Ok(if i < p { chosen[k] } else { rejected[k] })
            })?,
            "policy_chosen" => half(&logps, 0)?,
            "policy_rejected" => half(&logps, 1)?,
            "ref_chosen" => half(&ref_logps, 0)?,
            "ref_rejected" => half(&ref_logps, 1)?,
            "len_chosen" => half(&len, 0)?,
            "len_rejected" => half(&len, 1)?,
            "wpo_chosen" | "wpo_rejected" => match &wpo {
                Some(w) => half(w, usize::from(name == "wpo_rejected"))?,
                None => continue,
            },
            _ => continue,
        };
        let map = match shape {
            Shape::Token => &mut batch.token,
            Shape::Group => &mut batch.group,
            _ => &mut batch.seq,
        };
        map.insert(name.to_string(), value);
    }
    Ok(batch)
}

impl Batch {
    /// The completion mask `[B, T]`.
    pub fn mask(&self) -> &Tensor {
        &self.tokens.completion_mask
    }

    /// The dtype of every input.
    pub fn dtype(&self) -> DType {
        DType::F32
    }
}
