//! Supervised fine-tuning: completion-only NLL (TRL's `SFTTrainer` with `completion_only_loss`)
//! over a `{prompt, completion}` dataset. Which rows, in which order, is the curriculum's.
//!
//! Invariant: EOS is appended by the collator, never stored in the data.

use super::{Experience, Feedback, LossOutput, Models, Objective, TrainError};
use crate::data::Dataset;
use crate::model::{self, TokenBatch};
use std::sync::Arc;

/// The SFT objective over one dataset's `prompt` and `completion` fields.
pub struct SftObjective {
    prompts: Vec<Arc<str>>,
    completions: Vec<Arc<str>>,
}

impl SftObjective {
    /// An objective over `data`'s `prompt` and `completion` fields.
    ///
    /// Errors: `TrainError::Data` when either field is missing or not a String.
    pub fn new(data: &Dataset) -> Result<SftObjective, TrainError> {
        Ok(SftObjective {
            prompts: data.strings("prompt")?.to_vec(),
            completions: data.strings("completion")?.to_vec(),
        })
    }
}

impl Objective for SftObjective {
    fn loss(&mut self, models: &Models<'_>, experience: &Experience) -> Result<LossOutput, TrainError> {
        let model = models.policy;
        let pairs: Vec<(&str, &str)> =
            experience.rows.iter().map(|&r| (&*self.prompts[r], &*self.completions[r])).collect();
        let batch = TokenBatch::collate(model.tokenizer(), &pairs, true, model.device())?;
        let loss = model::sft_loss(model, &batch)?;
        Ok(LossOutput { loss, tokens: batch.tokens(), metrics: Vec::new(), feedback: Feedback::default() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synth;

    #[test]
    fn needs_prompt_and_completion() {
        let data = synth::addition(1..=1, 3, 0).unwrap();
        assert!(SftObjective::new(&data).is_ok());
        let without = Dataset::new("t", data.ids.clone(), vec![data.columns[0].clone()]).unwrap();
        assert!(matches!(SftObjective::new(&without), Err(TrainError::Data(_))));
    }
}
