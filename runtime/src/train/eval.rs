//! Evaluation during and after stages. `ExactMatch` is greedy exact-match accuracy: generate
//! from each prompt until EOS (batched, KV-cached), decode the new tokens before EOS, and compare
//! with the row's target text (`completion`, else `answer`) exactly. `PairAccuracy` scores
//! preference pairs by the policy's log-probabilities and `LossOn` is the held-out completion
//! loss; both read log-probabilities as training defines them (`prompt ‖ response ‖ EOS`,
//! summed over the response and EOS), batched, without a gradient.
//!
//! Invariants: an evaluation never changes the model or any training stream (greedy decoding
//! draws nothing; its RNG is a fixed private stream), so evaluating more or less often does not
//! perturb training; the token budget is the longest target plus EOS, so a correct answer that
//! the model fails to terminate counts as wrong — unless the recipe's `max_tokens` is smaller,
//! in which case generation stops there and the text so far is compared (as harnesses that cut
//! at a generation budget do).

use super::TrainError;
use crate::data::Dataset;
use crate::model::{self, CausalLm, GenerateOptions, ModelError, TokenBatch, Tokenizer};
use crate::rng::Rng;
use std::sync::Arc;

/// Something that scores a model: returns named metrics (`accuracy`, `correct`, `total`).
pub trait Evaluator {
    /// The name metrics lines file the results under (`held`).
    fn name(&self) -> &str;
    fn evaluate(&mut self, model: &CausalLm) -> Result<Vec<(String, f64)>, TrainError>;
}

/// Greedy completions of a dataset's prompts, `batch` at a time: the generation every
/// generating evaluation shares (exact match here, a recipe-judged one in `exec::evals`).
#[derive(Clone, Debug)]
pub struct Greedy {
    prompts: Vec<String>,
    batch: usize,
}

impl Greedy {
    /// Errors: `TrainError::Data` when `data` has no `prompt` field.
    pub fn new(data: &Dataset, batch: usize) -> Result<Greedy, TrainError> {
        let prompts = data.strings("prompt")?.iter().map(|s| s.to_string()).collect();
        Ok(Greedy { prompts, batch: batch.max(1) })
    }

    /// The decoded completion of every prompt (greedy, at most `budget` new tokens, cut at the
    /// first stop id, which is not decoded), in order.
    ///
    /// Errors: an encoding or generation failure.
    pub fn completions(&self, model: &CausalLm, budget: usize) -> Result<Vec<String>, TrainError> {
        let tok = model.tokenizer();
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

/// Greedy exact-match accuracy on a dataset.
#[derive(Clone, Debug)]
pub struct ExactMatch {
    name: String,
    greedy: Greedy,
    targets: Vec<String>,
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
        let targets = (0..data.len()).map(|r| data.text_at(target, r)).collect::<Result<_, _>>()?;
        Ok(ExactMatch { name: name.to_string(), greedy: Greedy::new(data, batch)?, targets, max_tokens: usize::MAX })
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
        self.greedy.completions(model, self.budget(model.tokenizer())?)
    }
}

impl Evaluator for ExactMatch {
    fn name(&self) -> &str {
        &self.name
    }

    fn evaluate(&mut self, model: &CausalLm) -> Result<Vec<(String, f64)>, TrainError> {
        let got = self.completions(model)?;
        let correct = got.iter().zip(&self.targets).filter(|(g, t)| g == t).count();
        Ok(accuracy_metrics(correct, self.targets.len()))
    }
}

/// `accuracy`, `correct` and `total` of `correct` right answers out of `total`.
pub fn accuracy_metrics(correct: usize, total: usize) -> Vec<(String, f64)> {
    vec![
        ("accuracy".into(), if total == 0 { 0.0 } else { correct as f64 / total as f64 }),
        ("correct".into(), correct as f64),
        ("total".into(), total as f64),
    ]
}

/// Summed log-probabilities `[B]` of each `(prompt, response)` row's response and EOS, and the
/// response's token counts (EOS included), under `model`, `batch` rows at a time, with no
/// gradient kept.
fn response_logprobs(model: &CausalLm, rows: &[(&str, &str)], batch: usize) -> Result<Vec<(f64, usize)>, TrainError> {
    let mut out = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(batch.max(1)) {
        let tokens = TokenBatch::collate(model.tokenizer(), chunk, true, model.device())?;
        let (sums, _) = model::completion_logprobs(model, &tokens)?;
        let sums = sums.detach().to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()?;
        out.extend(sums.into_iter().zip(tokens.completion_lens.iter().copied()));
    }
    Ok(out)
}

/// Share of preference pairs whose chosen response the policy gives the higher log-probability
/// (`log π(chosen | prompt) > log π(rejected | prompt)`, each summed over the response and
/// EOS; a tie counts as wrong).
#[derive(Clone, Debug)]
pub struct PairAccuracy {
    name: String,
    prompts: Vec<Arc<str>>,
    chosen: Vec<Arc<str>>,
    rejected: Vec<Arc<str>>,
    batch: usize,
}

impl PairAccuracy {
    /// Scores `data`'s `prompt`/`chosen`/`rejected` rows, `batch` sequences at a time.
    ///
    /// Errors: `TrainError::Data` when a field is missing or not a String.
    pub fn new(name: &str, data: &Dataset, batch: usize) -> Result<PairAccuracy, TrainError> {
        Ok(PairAccuracy {
            name: name.to_string(),
            prompts: data.strings("prompt")?.to_vec(),
            chosen: data.strings("chosen")?.to_vec(),
            rejected: data.strings("rejected")?.to_vec(),
            batch: batch.max(1),
        })
    }
}

impl Evaluator for PairAccuracy {
    fn name(&self) -> &str {
        &self.name
    }

    /// `accuracy` (0 for no pairs), `correct`, `total`, and `margin`: the mean of
    /// `log π(chosen) − log π(rejected)` in nats.
    fn evaluate(&mut self, model: &CausalLm) -> Result<Vec<(String, f64)>, TrainError> {
        fn rows<'a>(prompts: &'a [Arc<str>], side: &'a [Arc<str>]) -> Vec<(&'a str, &'a str)> {
            prompts.iter().zip(side).map(|(p, r)| (&**p, &**r)).collect()
        }
        let chosen = response_logprobs(model, &rows(&self.prompts, &self.chosen), self.batch)?;
        let rejected = response_logprobs(model, &rows(&self.prompts, &self.rejected), self.batch)?;
        let margins: Vec<f64> = chosen.iter().zip(&rejected).map(|((c, _), (r, _))| c - r).collect();
        let correct = margins.iter().filter(|&&m| m > 0.0).count();
        let total = margins.len();
        let mean = |x: f64| if total == 0 { 0.0 } else { x / total as f64 };
        Ok(vec![
            ("accuracy".into(), mean(correct as f64)),
            ("correct".into(), correct as f64),
            ("total".into(), total as f64),
            ("margin".into(), mean(margins.iter().sum())),
        ])
    }
}

/// The mean completion NLL on a dataset, token-weighted: the completion and EOS tokens of every
/// row, summed, over their count (what SFT's loss is on a batch of all the rows).
#[derive(Clone, Debug)]
pub struct LossOn {
    name: String,
    prompts: Vec<Arc<str>>,
    completions: Vec<Arc<str>>,
    batch: usize,
}

impl LossOn {
    /// Scores `data`'s `prompt` and `completion` rows, `batch` at a time.
    ///
    /// Errors: `TrainError::Data` when a field is missing or not a String.
    pub fn new(name: &str, data: &Dataset, batch: usize) -> Result<LossOn, TrainError> {
        Ok(LossOn {
            name: name.to_string(),
            prompts: data.strings("prompt")?.to_vec(),
            completions: data.strings("completion")?.to_vec(),
            batch: batch.max(1),
        })
    }
}

impl Evaluator for LossOn {
    fn name(&self) -> &str {
        &self.name
    }

    /// `loss` (nats per token; 0 for no rows) and `tokens`, the completion tokens it averages.
    fn evaluate(&mut self, model: &CausalLm) -> Result<Vec<(String, f64)>, TrainError> {
        let rows: Vec<(&str, &str)> = self.prompts.iter().zip(&self.completions).map(|(p, c)| (&**p, &**c)).collect();
        let scored = response_logprobs(model, &rows, self.batch)?;
        let tokens: usize = scored.iter().map(|(_, n)| n).sum();
        let nll: f64 = -scored.iter().map(|(lp, _)| lp).sum::<f64>();
        Ok(vec![("loss".into(), if tokens == 0 { 0.0 } else { nll / tokens as f64 }), ("tokens".into(), tokens as f64)])
    }
}
