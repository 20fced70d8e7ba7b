//! Supervised fine-tuning: completion-only NLL (TRL's `SFTTrainer` with `completion_only_loss`)
//! over a `{prompt, completion}` dataset, normalised by the completion tokens (EOS included) of
//! the whole optimiser step. Which rows, in which order, is the curriculum's.
//!
//! Invariant: EOS is appended by the collator, never stored in the data.

use super::nll::{Scored, TokenNll};
use super::{Experience, LossOutput, Models, Objective, TrainError};
use crate::data::Dataset;

/// The SFT objective over one dataset's `prompt` and `completion` fields.
pub struct SftObjective(TokenNll);

impl SftObjective {
    /// An objective over `data`'s `prompt` and `completion` fields.
    ///
    /// Errors: `TrainError::Data` when either field is missing or not a String.
    pub fn new(data: &Dataset) -> Result<SftObjective, TrainError> {
        Ok(SftObjective(TokenNll::new(data, Scored::Completion)?))
    }
}

impl Objective for SftObjective {
    /// Counts the completion tokens (EOS included) of every row of the step.
    fn begin_step(&mut self, models: &Models<'_>, micro_batches: &[Experience]) -> Result<(), TrainError> {
        self.0.begin_step("sft", models, micro_batches)
    }

    /// The micro-batch's completion NLL summed, divided by the step's completion tokens.
    fn loss(&mut self, models: &Models<'_>, experience: &Experience) -> Result<LossOutput, TrainError> {
        self.0.loss("sft", models, experience)
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
