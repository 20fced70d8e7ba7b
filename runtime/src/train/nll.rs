//! Token-level negative log-likelihood over `{prompt, completion}` rows: what SFT
//! (completion tokens) and pretraining (every token) share. A stage kind chooses which tokens
//! are scored ([`Scored`]); everything else — tokenising each row (prompt and completion
//! separately, then joined, as TRL does), appending EOS, counting the step's scored tokens and
//! normalising by them — is here once.
//!
//! Invariants: a micro-batch's loss is `−Σ log p(scored tokens of its rows) / N`, where `N` is
//! the number of scored tokens of every row of the optimiser step (EOS included), so the step's
//! loss — the sum over its micro-batches — is the token mean over the whole effective batch
//! whatever `batch × accumulate` split it (TRL's `num_items_in_batch`). EOS is appended by the
//! collator, never stored in the data.

use super::{Experience, Feedback, LossOutput, Models, TrainError};
use crate::data::Dataset;
use crate::model::{self, CausalLm, TokenBatch};
use std::sync::Arc;

/// Which tokens of `prompt ‖ completion ‖ EOS` a row's loss is taken on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Scored {
    /// The completion and EOS (SFT's completion-only loss).
    Completion,
    /// Every token after the first (next-token pretraining; the first has nothing before it).
    All,
}

/// The NLL of a dataset's `prompt` and `completion` rows, normalised per optimiser step.
pub(super) struct TokenNll {
    prompts: Vec<Arc<str>>,
    completions: Vec<Arc<str>>,
    scored: Scored,
    /// The current step's micro-batches, collated by `begin_step`, and their scored tokens.
    step: Vec<(Vec<usize>, TokenBatch)>,
    step_tokens: usize,
}

impl TokenNll {
    /// The objective over `data`'s `prompt` and `completion` fields.
    ///
    /// Errors: `TrainError::Data` when either field is missing or not a String.
    pub fn new(data: &Dataset, scored: Scored) -> Result<TokenNll, TrainError> {
        Ok(TokenNll {
            prompts: data.strings("prompt")?.to_vec(),
            completions: data.strings("completion")?.to_vec(),
            scored,
            step: Vec::new(),
            step_tokens: 0,
        })
    }

    /// `rows` tokenised under `model`'s tokenizer, with the scored positions masked.
    fn collate(&self, model: &CausalLm, rows: &[usize]) -> Result<TokenBatch, TrainError> {
        let tok = model.tokenizer();
        let pairs: Vec<(&str, &str)> = rows.iter().map(|&r| (&*self.prompts[r], &*self.completions[r])).collect();
        match self.scored {
            Scored::Completion => Ok(TokenBatch::collate(tok, &pairs, true, model.device())?),
            Scored::All => {
                let ids = pairs
                    .iter()
                    .map(|(p, c)| {
                        let mut all = tok.encode(p)?;
                        all.extend(tok.encode(c)?);
                        all.push(tok.eos_id());
                        // The first token is context only; every later one is a target.
                        let rest = all.split_off(1);
                        Ok((all, rest))
                    })
                    .collect::<Result<Vec<_>, model::ModelError>>()?;
                Ok(TokenBatch::from_ids(&ids, tok.pad_id(), model.device())?)
            }
        }
    }

    /// Collates every micro-batch of the step and counts its scored tokens.
    ///
    /// Errors: `TrainError::Config` naming the rows when the step has no token to score.
    pub fn begin_step(
        &mut self,
        stage: &str,
        models: &Models<'_>,
        micro_batches: &[Experience],
    ) -> Result<(), TrainError> {
        self.step.clear();
        for experience in micro_batches {
            let batch = self.collate(models.policy, &experience.rows)?;
            self.step.push((experience.rows.clone(), batch));
        }
        self.step_tokens = self.step.iter().map(|(_, b)| b.completion_lens.iter().sum::<usize>()).sum();
        if self.step_tokens == 0 {
            let ids: Vec<String> = micro_batches.iter().flat_map(|e| &e.example_ids).map(u64::to_string).collect();
            return Err(TrainError::Config {
                stage: stage.to_string(),
                message: format!("the step's rows (examples {}) have no token to train on", ids.join(", ")),
            });
        }
        Ok(())
    }

    /// The loss of `experience`: its scored tokens' NLL summed and divided by the step's
    /// scored tokens. Experience that `begin_step` did not see is a step of its own (its own
    /// token mean), so a caller outside the loop scores one batch as TRL would.
    pub fn loss(
        &mut self,
        stage: &str,
        models: &Models<'_>,
        experience: &Experience,
    ) -> Result<LossOutput, TrainError> {
        let model = models.policy;
        let prepared = self.step.iter().position(|(rows, _)| *rows == experience.rows);
        let (batch, total) = match prepared {
            Some(i) => (self.step.swap_remove(i).1, self.step_tokens),
            None => {
                self.begin_step(stage, models, std::slice::from_ref(experience))?;
                let batch = self.step.pop().map(|(_, b)| b);
                (batch.ok_or_else(|| candle_core::Error::Msg("no micro-batch was collated".into()))?, self.step_tokens)
            }
        };
        let nll_sum = model::completion_token_logprobs(model, &batch)?.sum_all()?;
        let loss = nll_sum.affine(-1.0 / total as f64, 0.0)?;
        Ok(LossOutput { loss, tokens: batch.tokens(), metrics: Vec::new(), feedback: Feedback::default() })
    }
}
