//! Evaluation during and after stages. `ExactMatch` is greedy exact-match accuracy: generate
//! from each prompt until EOS (batched, KV-cached), decode the new tokens before EOS, and compare
//! with the row's target text (`completion`, else `answer`) exactly.
//!
//! Invariants: an evaluation never changes the model or any training stream (greedy decoding
//! draws nothing; its RNG is a fixed private stream), so evaluating more or less often does not
//! perturb training; the token budget is the longest target plus EOS, so a correct answer that
//! the model fails to terminate counts as wrong — unless the recipe's `max_tokens` is smaller,
//! in which case generation stops there and the text so far is compared (as harnesses that cut
//! at a generation budget do).

use super::TrainError;
use crate::data::Dataset;
use crate::model::{self, CausalLm, GenerateOptions, ModelError, Tokenizer};
use crate::rng::Rng;

/// Something that scores a model: returns named metrics (`accuracy`, `correct`, `total`).
pub trait Evaluator {
    /// The name metrics lines file the results under (`held`).
    fn name(&self) -> &str;
    fn evaluate(&mut self, model: &CausalLm) -> Result<Vec<(String, f64)>, TrainError>;
}

/// Greedy exact-match accuracy on a dataset.
#[derive(Clone, Debug)]
pub struct ExactMatch {
    name: String,
    prompts: Vec<String>,
    targets: Vec<String>,
    batch: usize,
    /// At most this many generated tokens per prompt, EOS included.
    max_tokens: usize,
}

impl ExactMatch {
    /// Scores `data`'s `prompt` field against its `completion` field if it has one, else its
    /// `answer`, generating `batch` prompts at a time.
    ///
    /// Errors: `TrainError::Data` when `prompt` or the target field is missing.
    pub fn new(name: &str, data: &Dataset, batch: usize) -> Result<ExactMatch, TrainError> {
        let target = if data.column("completion").is_some() { "completion" } else { "answer" };
        let prompts = data.strings("prompt")?.iter().map(|s| s.to_string()).collect();
        let targets = (0..data.len()).map(|r| data.text_at(target, r)).collect::<Result<_, _>>()?;
        Ok(ExactMatch { name: name.to_string(), prompts, targets, batch: batch.max(1), max_tokens: usize::MAX })
    }

    /// Caps the generated tokens per prompt (EOS included), as `accuracy(max_tokens = ...)` does.
    pub fn max_tokens(self, max_tokens: usize) -> ExactMatch {
        ExactMatch { max_tokens, ..self }
    }

    /// New tokens generated per prompt under `tok`: the longest target plus EOS, capped by
    /// `max_tokens`.
    ///
    /// Errors: `ModelError::Encode` for a target the tokenizer cannot encode.
    pub fn budget(&self, tok: &Tokenizer) -> Result<usize, ModelError> {
        let max_target = self.targets.iter().try_fold(0, |m, t| tok.encode(t).map(|ids| m.max(ids.len())))?;
        Ok((max_target + 1).min(self.max_tokens))
    }

    /// The decoded completions for every prompt (up to EOS), in order.
    pub fn completions(&self, model: &CausalLm) -> Result<Vec<String>, TrainError> {
        let tok = model.tokenizer();
        let budget = self.budget(tok)?;
        let opts = GenerateOptions { max_new_tokens: budget, temperature: 0.0, top_p: 1.0, stop_at_eos: true };
        let mut rng = Rng::derive(0, "eval/greedy");
        let mut out = Vec::with_capacity(self.prompts.len());
        for chunk in self.prompts.chunks(self.batch) {
            let ids = chunk.iter().map(|p| tok.encode(p)).collect::<Result<Vec<_>, _>>()?;
            for mut generated in model::generate(model, &ids, &opts, &mut rng)? {
                if let Some(end) = generated.iter().position(|&t| tok.is_stop(t)) {
                    generated.truncate(end);
                }
                out.push(tok.decode(&generated));
            }
        }
        Ok(out)
    }
}

impl Evaluator for ExactMatch {
    fn name(&self) -> &str {
        &self.name
    }

    fn evaluate(&mut self, model: &CausalLm) -> Result<Vec<(String, f64)>, TrainError> {
        let got = self.completions(model)?;
        let correct = got.iter().zip(&self.targets).filter(|(g, t)| g == t).count();
        let total = self.targets.len();
        Ok(vec![
            ("accuracy".into(), if total == 0 { 0.0 } else { correct as f64 / total as f64 }),
            ("correct".into(), correct as f64),
            ("total".into(), total as f64),
        ])
    }
}
