//! Completion log-probabilities, the quantity every post-training loss is written over.
//!
//! Definition (TRL's, and the fixture's): a row is `prompt ‖ completion (‖ EOS)`, right-padded
//! with PAD; its log-probability is `Σ_t log_softmax(logits[t−1])[x_t]` over the completion
//! positions t. No BOS is added. The LM head runs only on the positions that predict a
//! completion token (for large vocabularies the prompt positions would dominate the cost).

use std::sync::Arc;

use candle_core::{Device, Result, Tensor};

use super::cpu::Tokens;
use super::llama::{CausalLm, Positions};
use super::ops;
use super::tokenizer::Tokenizer;
use super::ModelError;

/// Positions a training row takes: `prompt ‖ completion ‖ EOS`, in tokens (what the collator
/// builds, and what must fit the model's context).
///
/// Errors: `ModelError::Encode` for text the tokenizer cannot encode.
pub fn training_positions(tok: &Tokenizer, prompt: &str, completion: &str) -> std::result::Result<usize, ModelError> {
    Ok(tok.encode(prompt)?.len() + tok.encode(completion)?.len() + 1)
}

/// A right-padded batch of prompt+completion rows with a mask of the completion positions.
#[derive(Clone, Debug)]
pub struct TokenBatch {
    /// `[B, T]` u32, right-padded with the tokenizer's PAD id.
    pub input_ids: Tensor,
    /// `[B, T]` f32, 1 at completion positions (EOS included when appended).
    pub completion_mask: Tensor,
    /// Number of completion tokens per row.
    pub completion_lens: Vec<usize>,
    /// Number of prompt tokens per row.
    pub prompt_lens: Vec<usize>,
}

impl TokenBatch {
    /// Tokenises `(prompt, completion)` rows (prompt and completion separately, then joined, as
    /// TRL does), appending EOS to each completion when `append_eos`. Errors: `Encode` when a
    /// text cannot be tokenised, `Candle` when the tensors cannot be made on `device`.
    pub fn collate(
        tok: &Tokenizer,
        rows: &[(&str, &str)],
        append_eos: bool,
        device: &Device,
    ) -> std::result::Result<TokenBatch, ModelError> {
        let ids = rows
            .iter()
            .map(|(p, c)| {
                let mut comp = tok.encode(c)?;
                if append_eos {
                    comp.push(tok.eos_id());
                }
                Ok((tok.encode(p)?, comp))
            })
            .collect::<std::result::Result<Vec<_>, ModelError>>()?;
        Ok(TokenBatch::from_ids(&ids, tok.pad_id(), device)?)
    }

    /// Collates already-tokenised `(prompt_ids, completion_ids)` rows.
    pub fn from_ids(rows: &[(Vec<u32>, Vec<u32>)], pad: u32, device: &Device) -> Result<TokenBatch> {
        if rows.is_empty() {
            candle_core::bail!("TokenBatch: no rows")
        }
        let t = rows.iter().map(|(p, c)| p.len() + c.len()).max().unwrap_or(0).max(1);
        let mut ids = Vec::with_capacity(rows.len() * t);
        let mut mask = Vec::with_capacity(rows.len() * t);
        for (p, c) in rows {
            ids.extend(p.iter().chain(c).copied().chain(std::iter::repeat_n(pad, t - p.len() - c.len())));
            mask.extend(std::iter::repeat_n(0f32, p.len()));
            mask.extend(std::iter::repeat_n(1f32, c.len()));
            mask.extend(std::iter::repeat_n(0f32, t - p.len() - c.len()));
        }
        Ok(TokenBatch {
            input_ids: Tensor::from_vec(ids, (rows.len(), t), device)?,
            completion_mask: Tensor::from_vec(mask, (rows.len(), t), device)?,
            completion_lens: rows.iter().map(|(_, c)| c.len()).collect(),
            prompt_lens: rows.iter().map(|(p, _)| p.len()).collect(),
        })
    }

    /// Real (unpadded) tokens in the batch: prompts and completions.
    pub fn tokens(&self) -> usize {
        self.prompt_lens.iter().chain(&self.completion_lens).sum()
    }

    /// `(B, T)`.
    pub fn dims(&self) -> Result<(usize, usize)> {
        self.input_ids.dims2()
    }
}

/// Per-token log-probabilities `[B, T]`: entry `(b, t)` is `log p(x_t | x_<t)` at completion
/// positions and 0 elsewhere (position 0 is never a completion target). Differentiable: on the
/// CPU through the hand-written pass of `model::cpu` (gradients via `CausalLm::take_grads`),
/// elsewhere through candle's autograd.
pub fn completion_token_logprobs(model: &CausalLm, batch: &TokenBatch) -> Result<Tensor> {
    let tokens = scored_tokens(batch)?;
    if tokens.rows.is_empty() {
        return Tensor::zeros((tokens.batch, tokens.time), candle_core::DType::F32, model.device());
    }
    if model.device().is_cpu() {
        return model.cpu_token_logprobs(tokens);
    }
    candle_token_logprobs(model, batch, &tokens)
}

/// The batch's ids and the positions that predict a completion token: position
/// `n = b·T + s` predicts token `s + 1` of its row.
pub(super) fn scored_tokens(batch: &TokenBatch) -> Result<Tokens> {
    let (b, t) = batch.dims()?;
    let ids: Vec<u32> = batch.input_ids.flatten_all()?.to_vec1()?;
    let mask: Vec<f32> = batch.completion_mask.flatten_all()?.to_vec1()?;
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    for r in 0..b {
        for s in 0..t.saturating_sub(1) {
            let next = r * t + s + 1;
            if mask[next] != 0.0 {
                rows.push(r * t + s);
                targets.push(ids[next]);
            }
        }
    }
    Ok(Tokens { ids, batch: b, time: t, rows, targets })
}

/// [`completion_token_logprobs`] through candle's ops and autograd (any device).
pub(super) fn candle_token_logprobs(model: &CausalLm, batch: &TokenBatch, tokens: &Tokens) -> Result<Tensor> {
    let (b, t) = (tokens.batch, tokens.time);
    let device = model.device();
    let w = model.weights(true)?;
    let hidden = model.hidden(&w, &batch.input_ids, &Positions::causal(b, t), None)?;
    let rows: Vec<u32> = tokens.rows.iter().map(|&r| r as u32).collect();
    let picked = Tensor::from_vec(rows.clone(), rows.len(), device)?;
    let logits = model.logits(&w, &hidden.index_select(&picked, 0)?)?;
    let lp = ops::token_logprobs(&logits, &Arc::new(tokens.targets.clone()))?;
    // Scatter back to the target positions (row + 1 in the flattened layout).
    let dest: Vec<u32> = rows.iter().map(|r| r + 1).collect();
    let dest = Tensor::from_vec(dest, rows.len(), device)?;
    Tensor::zeros(b * t, candle_core::DType::F32, device)?.index_add(&dest, &lp, 0)?.reshape((b, t))
}

/// `log Σ_v p(v | x_<t)²` at every completion position, `[B, T]` (0 elsewhere), with no
/// gradient: the quantity WPO subtracts from each token's log-probability (TRL's
/// `log_sum_sq_probs`). Computed as `logsumexp(2·logits) − 2·logsumexp(logits)` per position,
/// from one detached forward pass of the candle path (any device), so it never enters a
/// backward graph.
pub fn completion_log_sum_sq_probs(model: &CausalLm, batch: &TokenBatch) -> Result<Tensor> {
    let tokens = scored_tokens(batch)?;
    let (b, t) = (tokens.batch, tokens.time);
    let device = model.device();
    if tokens.rows.is_empty() {
        return Tensor::zeros((b, t), candle_core::DType::F32, device);
    }
    let w = model.weights(false)?;
    let hidden = model.hidden(&w, &batch.input_ids, &Positions::causal(b, t), None)?;
    let rows: Vec<u32> = tokens.rows.iter().map(|&r| r as u32).collect();
    let picked = Tensor::from_vec(rows.clone(), rows.len(), device)?;
    let logits = model.logits(&w, &hidden.index_select(&picked, 0)?)?;
    let lse = |x: &Tensor| -> Result<Tensor> {
        let max = x.max_keepdim(1)?;
        x.broadcast_sub(&max)?.exp()?.sum_keepdim(1)?.log()?.add(&max)?.squeeze(1)
    };
    let doubled = logits.affine(2.0, 0.0)?;
    let value = (lse(&doubled)? - lse(&logits)?.affine(2.0, 0.0)?)?;
    let dest: Vec<u32> = rows.iter().map(|r| r + 1).collect();
    let dest = Tensor::from_vec(dest, rows.len(), device)?;
    Tensor::zeros(b * t, candle_core::DType::F32, device)?.index_add(&dest, &value, 0)?.reshape((b, t))
}

/// Summed completion log-probabilities `[B]` and completion token counts `[B]` (f32).
/// Differentiable in the first.
pub fn completion_logprobs(model: &CausalLm, batch: &TokenBatch) -> Result<(Tensor, Tensor)> {
    let per_token = completion_token_logprobs(model, batch)?;
    Ok((per_token.sum(1)?, batch.completion_mask.sum(1)?))
}

/// Mean negative log-likelihood over all completion tokens of the batch (TRL's SFT loss).
pub fn sft_loss(model: &CausalLm, batch: &TokenBatch) -> Result<Tensor> {
    let total: usize = batch.completion_lens.iter().sum();
    if total == 0 {
        candle_core::bail!("sft_loss: the batch has no completion tokens")
    }
    completion_token_logprobs(model, batch)?.sum_all()?.affine(-1.0 / total as f64, 0.0)
}
