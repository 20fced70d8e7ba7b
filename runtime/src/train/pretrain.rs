//! Pretraining: next-token NLL on every token of `prompt ‖ completion ‖ EOS` (the first token
//! has nothing to predict it from; no BOS is added), over a `{prompt, completion}` dataset,
//! normalised by the scored tokens of the whole optimiser step. It shares everything but the
//! choice of scored tokens with SFT (`train/nll.rs`).
//!
//! Invariant: EOS is appended by the collator, never stored in the data; prompt and completion
//! are tokenised separately and joined, so a row takes the positions the context check counts.

use super::nll::{Scored, TokenNll};
use super::{Experience, LossOutput, Models, Objective, TrainError};
use crate::data::Dataset;

/// The next-token objective over one dataset's `prompt` and `completion` fields.
pub struct PretrainObjective(TokenNll);

impl PretrainObjective {
    /// An objective over `data`'s `prompt` and `completion` fields.
    ///
    /// Errors: `TrainError::Data` when either field is missing or not a String.
    pub fn new(data: &Dataset) -> Result<PretrainObjective, TrainError> {
        Ok(PretrainObjective(TokenNll::new(data, Scored::All)?))
    }
}

impl Objective for PretrainObjective {
    /// Counts the scored tokens (all but each row's first, EOS included) of the step.
    fn begin_step(&mut self, models: &Models<'_>, micro_batches: &[Experience]) -> Result<(), TrainError> {
        self.0.begin_step("pretrain", models, micro_batches)
    }

    /// The micro-batch's NLL summed over its scored tokens, divided by the step's.
    fn loss(&mut self, models: &Models<'_>, experience: &Experience) -> Result<LossOutput, TrainError> {
        self.0.loss("pretrain", models, experience)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{completion_logprobs, CausalLm, Device, LlamaConfig, TokenBatch};
    use crate::rng::Rng;
    use recipe_compiler::column::Column;

    fn tiny() -> CausalLm {
        let cfg = LlamaConfig {
            hidden_size: 16,
            intermediate_size: 32,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            num_key_value_heads: 2,
            max_position_embeddings: 32,
            ..LlamaConfig::default()
        };
        CausalLm::tiny(cfg, &mut Rng::derive(1, "init"), &Device::Cpu).unwrap()
    }

    fn rows(pairs: &[(&str, &str)]) -> Dataset {
        let prompts = Column::Str(pairs.iter().map(|p| p.0.into()).collect());
        let completions = Column::Str(pairs.iter().map(|p| p.1.into()).collect());
        let ids = (1..=pairs.len() as u64).collect();
        Dataset::new("rows", ids, vec![("prompt".into(), prompts), ("completion".into(), completions)]).unwrap()
    }

    /// Pretraining scores every token after the first, SFT only the completion and EOS: with
    /// the same model, pretraining's NLL sum is SFT's plus the prompt tokens' (after the first).
    #[test]
    fn scores_every_token_after_the_first() {
        let model = tiny();
        let models = Models { policy: &model, reference: None };
        let data = rows(&[("ab", "cd"), ("x", "yz")]);
        let whole = Experience { rows: vec![0, 1], example_ids: vec![1, 2], ..Experience::default() };
        let mut pretrain = PretrainObjective::new(&data).unwrap();
        let mut sft = crate::train::SftObjective::new(&data).unwrap();
        let value = |out: LossOutput| out.loss.to_scalar::<f32>().unwrap() as f64;
        // Scored tokens: pretrain (2 + 2 + 1) + (1 + 2 + 1) - 2 = 7; SFT (2 + 1) + (2 + 1) = 6.
        let pretrain_sum = value(pretrain.loss(&models, &whole).unwrap()) * 7.0;
        let sft_sum = value(sft.loss(&models, &whole).unwrap()) * 6.0;
        // The rows differ in one target: pretraining also scores "b" after "a".
        let b_after_a =
            TokenBatch::from_ids(&[(vec![u32::from(b'a')], vec![u32::from(b'b')])], 0, &Device::Cpu).unwrap();
        let lp = completion_logprobs(&model, &b_after_a).unwrap().0.to_vec1::<f32>().unwrap()[0] as f64;
        assert!((pretrain_sum - (sft_sum - lp)).abs() < 1e-4, "{pretrain_sum} vs {sft_sum} - {lp}");
    }
}
