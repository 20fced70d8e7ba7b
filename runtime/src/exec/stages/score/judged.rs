//! The difficulty measures that sample the policy: `pass_rate(samples, judge, max_tokens)` and
//! `group_variance(samples, judge, max_tokens)`. Each row's `prompt` is completed `samples`
//! times at temperature 1 (full vocabulary, at most `max_tokens` new tokens, ending at a stop
//! id, decoded without it), each completion judged by the recipe's `judge` over the row's
//! fields with `completion` set to it, and the row scored from its 0/1 judgements through
//! [`GroupStats::of`] — what an RL stage computes of a group: `pass_rate` is k / G, and
//! `group_variance` the normalised variance k (G − k) / (G (G − 1)) / s_max (VCRL's p).
//!
//! Invariants: sample `k` of row `r` is drawn from its own stream
//! `Rng::derive(seed, "stage/<stage>/score/<r>/<k>")`, so the scores are a pure function of the
//! rows, the policy's weights and the seed, whatever the batching.

use crate::data::Dataset;
use crate::exec::args::{Call, Functions};
use crate::exec::stages::generation;
use crate::exec::ExecError;
use crate::model::{self, CausalLm, GenerateOptions, Tokenizer};
use crate::rng::Rng;
use crate::train::GroupStats;
use recipe_compiler::batch;
use recipe_compiler::column::Column;
use recipe_compiler::program::Value;
use std::sync::Arc;

/// Sequences (row, sample) generated per batch.
const SEQUENCES_PER_BATCH: usize = 64;

/// Which statistic of a row's judged samples is its score.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Statistic {
    PassRate,
    Variance,
}

/// A decoded `pass_rate` or `group_variance`: the encoded prompts and how to judge them.
pub(super) struct Judged {
    statistic: Statistic,
    samples: usize,
    max_tokens: usize,
    /// The recipe's `judge`, a scalar function of the row's fields and `completion`.
    judge: u32,
    functions: Arc<Functions>,
    prompts: Vec<Vec<u32>>,
}

impl Judged {
    /// Decodes the measure `call` over `data` and checks, without compute, that every prompt
    /// encodes to a token and fits `context` with `max_tokens` new tokens, and that `judge`
    /// evaluates over the rows' fields and a `completion`.
    ///
    /// Errors: `ExecError::Config` at the argument at fault (`max_tokens` 0, `samples` below
    /// what the statistic needs, a row that does not fit, a judge reading a missing field).
    pub fn bind(
        stage: &str,
        call: &Call<'_>,
        statistic: Statistic,
        data: &Dataset,
        prompts: &[Arc<str>],
        tok: &Tokenizer,
        context: usize,
        functions: &Arc<Functions>,
    ) -> Result<Judged, ExecError> {
        let samples = call.count("samples")? as usize;
        let least = match statistic {
            Statistic::PassRate => 1,
            Statistic::Variance => 2,
        };
        if samples < least {
            return Err(call.invalid("samples", format!("must be at least {least}, found {samples}")));
        }
        let max_tokens = call.count("max_tokens")? as usize;
        if max_tokens == 0 {
            return Err(call.invalid("max_tokens", "must be at least 1"));
        }
        let Value::Scalar(judge) = call.get("judge")? else {
            return Err(ExecError::Internal(format!("`{}`: `judge` is not a scalar function", call.name)));
        };
        let judged = Judged {
            statistic,
            samples,
            max_tokens,
            judge: *judge,
            functions: Arc::clone(functions),
            prompts: generation::encode_fitting(stage, "prompt", data, prompts, tok, context, max_tokens)
                .map_err(|e| call.locate(e, None))?,
        };
        if !data.is_empty() {
            judged.judgements(data, &[0], vec![Arc::from("")]).map_err(|e| call.invalid("judge", e))?;
        }
        Ok(judged)
    }

    /// Every row's score under `policy`, for stage `stage` of a run seeded `seed`.
    ///
    /// Errors: a generation or judge failure.
    pub fn scores(&self, policy: &CausalLm, data: &Dataset, seed: u64, stage: &str) -> Result<Vec<f64>, ExecError> {
        let tok = policy.tokenizer();
        let opts = GenerateOptions { max_new_tokens: self.max_tokens, temperature: 1.0, top_p: 1.0, stop_at_eos: true };
        let sequences: Vec<(usize, usize)> =
            (0..self.prompts.len()).flat_map(|r| (0..self.samples).map(move |k| (r, k))).collect();
        let mut completions: Vec<Arc<str>> = Vec::with_capacity(sequences.len());
        for chunk in sequences.chunks(SEQUENCES_PER_BATCH) {
            let prompts: Vec<Vec<u32>> = chunk.iter().map(|&(r, _)| self.prompts[r].clone()).collect();
            let mut streams: Vec<Rng> =
                chunk.iter().map(|(r, k)| Rng::derive(seed, &format!("stage/{stage}/score/{r}/{k}"))).collect();
            for mut generated in model::generate_streams(policy, &prompts, &opts, &mut streams)? {
                if let Some(end) = generated.iter().position(|&t| tok.is_stop(t)) {
                    generated.truncate(end);
                }
                completions.push(Arc::from(tok.decode(&generated)));
            }
        }
        let rows: Vec<usize> = sequences.iter().map(|&(r, _)| r).collect();
        let passed = self.judgements(data, &rows, completions).map_err(ExecError::Config)?;
        Ok(passed.chunks(self.samples).map(|judged| self.score(judged)).collect())
    }

    /// One row's score from its samples' judgements.
    fn score(&self, passed: &[bool]) -> f64 {
        let rewards: Vec<f64> = passed.iter().map(|&p| if p { 1.0 } else { 0.0 }).collect();
        let stats = GroupStats::of(&rewards, &vec![0.0; rewards.len()]);
        match self.statistic {
            Statistic::PassRate => stats.pass_rate,
            Statistic::Variance => stats.variance,
        }
    }

    /// `judge` of each `rows[i]` of `data` with `completion` = `completions[i]`.
    fn judgements(&self, data: &Dataset, rows: &[usize], completions: Vec<Arc<str>>) -> Result<Vec<bool>, String> {
        let func = self.functions.func(self.judge).map_err(|e| e.to_string())?;
        let completion = Column::Str(completions);
        // Only the fields the judge reads, each row repeated once per sample.
        let read: Vec<&str> = func.function().params.iter().map(|p| p.name.as_str()).collect();
        let fields = Dataset {
            origin: data.origin.clone(),
            ids: data.ids.clone(),
            columns: data
                .columns
                .iter()
                .filter(|(n, _)| n != "completion" && read.contains(&n.as_str()))
                .cloned()
                .collect(),
            sources: Vec::new(),
            messages: data.messages.clone(),
        };
        let selected = fields.select(rows);
        let mut named: Vec<(&str, &Column)> = selected.columns.iter().map(|(n, c)| (n.as_str(), c)).collect();
        named.push(("completion", &completion));
        match batch::eval_batch(func, &named).map_err(|e| e.to_string())? {
            Column::Bool(passed) => Ok(passed),
            other => Err(format!("returned {other:?}, not a Bool per completion")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::build::Builder;
    use crate::model::{Device, LlamaConfig};
    use recipe_compiler::diag::Source;
    use recipe_compiler::program::Program;

    fn program(measure: &str) -> Program {
        let recipe = format!(
            "recipe \"t\" {{ seed = 3 }}\nmodel m = tiny_lm()\ndata d = synth.addition(digits = 1..=3, count = 20)\n\
             stage sc = score(m, d, measure = {measure})\nrun sc\n"
        );
        recipe_compiler::compile(&Source::new("t.recipe", recipe.as_str()), &[])
            .unwrap_or_else(|e| panic!("{:?}", e.iter().map(|d| &d.message).collect::<Vec<_>>()))
    }

    /// The measure of `program`'s `score` stage, bound over its data for a model of `context`.
    fn bind(program: &Program, statistic: Statistic, context: usize) -> Result<(Judged, Dataset), ExecError> {
        let functions = Arc::new(Functions::new(&program.scalar).unwrap());
        let mut builder = Builder::new(program, Device::Cpu, vec![], functions.clone());
        let data = builder.dataset(&Value::Data("d".into())).unwrap();
        let call = Call::of_decl(program, "sc").unwrap().nested("measure").unwrap();
        let prompts = data.strings("prompt").unwrap().to_vec();
        Judged::bind("sc", &call, statistic, &data, &prompts, &Tokenizer::bytes(), context, &functions)
            .map(|j| (j, data))
    }

    fn model() -> CausalLm {
        let cfg = LlamaConfig {
            vocab_size: 257,
            hidden_size: 16,
            intermediate_size: 32,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            num_key_value_heads: 2,
            max_position_embeddings: 32,
            ..LlamaConfig::default()
        };
        CausalLm::tiny(cfg, &mut Rng::derive(4, "init"), &Device::Cpu).unwrap().into_frozen()
    }

    /// Each score is k / G of the row's samples, each drawn alone from its own stream and
    /// judged on the row's fields: batching changes nothing.
    #[test]
    fn scores_are_the_judged_share_of_each_rows_own_samples() {
        let judge = "judge = |r| len(r.completion) > r.digits, max_tokens = 4";
        let program = program(&format!("pass_rate(samples = 4, {judge})"));
        let (judged, data) = bind(&program, Statistic::PassRate, 32).unwrap();
        let policy = model();
        let scores = judged.scores(&policy, &data, 3, "sc").unwrap();
        assert_eq!(scores.len(), 20, "80 samples: more than one batch");
        let tok = policy.tokenizer();
        let opts = GenerateOptions { max_new_tokens: 4, temperature: 1.0, top_p: 1.0, stop_at_eos: true };
        let digits = data.ints("digits").unwrap();
        for row in 0..20 {
            let mut passed = 0;
            for k in 0..4 {
                let mut stream = [Rng::derive(3, &format!("stage/sc/score/{row}/{k}"))];
                let prompt = [judged.prompts[row].clone()];
                let mut ids = model::generate_streams(&policy, &prompt, &opts, &mut stream).unwrap().remove(0);
                if let Some(end) = ids.iter().position(|&t| tok.is_stop(t)) {
                    ids.truncate(end);
                }
                passed += usize::from(tok.decode(&ids).chars().count() as i64 > digits[row]);
            }
            assert_eq!(scores[row], passed as f64 / 4.0, "row {row}");
        }
        assert!(scores.iter().any(|&s| s > 0.0) && scores.iter().any(|&s| s < 1.0), "{scores:?}");

        let program = self::program(&format!("group_variance(samples = 4, {judge})"));
        let (variance, _) = bind(&program, Statistic::Variance, 32).unwrap();
        let variances = variance.scores(&policy, &data, 3, "sc").unwrap();
        for (p, v) in scores.iter().zip(&variances) {
            // k (G - k) / (G (G - 1)) over s_max = G / (4 (G - 1)): 4 p (1 - p).
            assert!((v - 4.0 * p * (1.0 - p)).abs() < 1e-12, "{p} {v}");
        }
    }

    #[test]
    fn rows_and_judges_that_cannot_be_scored_are_refused_before_compute() {
        let program = program("pass_rate(samples = 2, judge = |r| r.completion == r.answer, max_tokens = 30)");
        let err = bind(&program, Statistic::PassRate, 32).err().unwrap().to_string();
        assert!(err.contains("positions") && err.contains("`max_tokens` = 30"), "{err}");
        let (judged, _) = bind(&program, Statistic::PassRate, 64).unwrap();
        assert_eq!(judged.score(&[true, false]), 0.5);
    }
}
