//! `self_pairs(policy, dataset, judge, samples, max_tokens, temperature)`: a stage that trains
//! nothing and builds preference pairs from the policy's own answers, as in Iterative Reasoning
//! Preference Optimization (Pang et al., 2024, arXiv:2404.19733, §2.1). For each row it samples
//! `samples` completions of the row's `prompt` (temperature sampling, batched, KV-cached; at most
//! `max_tokens` tokens, ending at a stop id, decoded without it), judges each with the recipe's
//! `judge` (a function of the row's fields with `completion` set to the sample, compiled by the
//! JIT), and pairs the first sample judged correct (chosen) with the first judged incorrect
//! (rejected), in sampling order: one pair per prompt, as the paper's experiments draw one pair
//! per prompt, and "first" because the samples are exchangeable draws, so any fixed choice is
//! an unbiased one and the first needs no further randomness. A sample that would not fit the
//! policy's context as a training response (prompt, sample and EOS, the sample's text encoded
//! again: bytes a byte-level policy samples may not be UTF-8, and decode to longer text) takes
//! no part in pairing and is counted. A row with no correct or no incorrect sample left makes no
//! pair and is dropped and counted. Its output is `{model,
//! data}`: the policy unchanged and the kept rows, in their input order with their ids (one pair
//! per row, so a pair is named by its prompt's row, as `contrast_pairs` and `perturb` name
//! theirs), plus `chosen` and `rejected`; a row's own `completion` field is kept unchanged.
//!
//! Checked at binding, before any compute: every prompt encodes to at least one token and fits
//! the policy's context with `max_tokens` new tokens (a row that does not is refused, by name),
//! and the judge evaluates on the rows (with their reference answer standing in for the
//! sample). Before compute, stages reading the data see every row with that stand-in (its
//! `completion`, else its `answer`, else the empty string) as both `chosen` and `rejected`; they
//! are bound again against the pairs produced before they run.
//!
//! Invariants: sample k of a row draws from its own stream, `Rng::derive(seed,
//! "stage/<stage>/sample/<row id>/<k>")` (`stage/<stage>/round/<r>/sample/…` in round r of a
//! `rounds` block), so the pairs are a pure function of the seed, the round, the rows' ids and
//! fields and the policy's weights — not of batching, row order or a filter before the stage.

use super::{generation, Binding, Produced, Transform};
use crate::data::Dataset;
use crate::exec::args::{Call, Functions};
use crate::exec::ExecError;
use crate::model::{self, CausalLm, GenerateOptions};
use crate::rng::Rng;
use recipe_compiler::batch;
use recipe_compiler::column::Column;
use recipe_compiler::program::Value;
use serde_json::json;
use std::sync::Arc;

/// Decodes a `self_pairs` call and checks, without compute, everything it needs: the prompts'
/// fit in the policy's context with `max_tokens` new tokens, and the judge over the rows.
pub(super) fn bind(b: &mut Binding<'_, '_>) -> Result<Transform, ExecError> {
    let data = b.dataset()?;
    let samples = b.call.count("samples")? as usize;
    if samples < 2 {
        return Err(b.call.invalid("samples", format!("must be at least 2 to make a pair, got {samples}")));
    }
    let max_tokens = b.call.count("max_tokens")? as usize;
    if max_tokens == 0 {
        return Err(b.call.invalid("max_tokens", "must be at least 1"));
    }
    let temperature = b.call.float("temperature")?;
    if !(temperature > 0.0 && temperature.is_finite()) {
        return Err(b.call.invalid("temperature", format!("must be finite and > 0 to sample, got {temperature}")));
    }
    let stage = b.stage.to_string();
    let prompts = data.strings("prompt").map_err(|e| b.call.locate(e.into(), Some("dataset")))?.to_vec();
    let limits = b.limits("policy")?;
    let (tok, context) = (limits.tokenizer, limits.context);
    let prompts = generation::encode_fitting(&stage, "prompt", &data, &prompts, &tok, context, max_tokens)
        .map_err(|e| b.call.locate(e, Some("dataset")))?;
    let n = data.len();
    let stand_in: Vec<Arc<str>> = match data.strings("completion").or_else(|_| data.strings("answer")) {
        Ok(answers) => answers.to_vec(),
        Err(_) => vec![Arc::from(""); n],
    };
    let judge = Judge::of(&b.call, &b.builder.functions)?;
    judge.verdicts(&data, 1, &stand_in).map_err(|e| b.call.locate(e, Some("judge")))?;
    let mut data = data;
    data.origin = format!("self_pairs({})", data.origin);
    let preview = data
        .clone()
        .with_column("chosen", Column::Str(stand_in.clone()))?
        .with_column("rejected", Column::Str(stand_in))?;
    let streams = match b.round() {
        Some(r) => format!("stage/{stage}/round/{}", r.index),
        None => format!("stage/{stage}"),
    };
    let seed = b.builder.seed;
    let opts = GenerateOptions { max_new_tokens: max_tokens, temperature, top_p: 1.0, stop_at_eos: true };
    Ok(Transform {
        policy: b.model("policy")?,
        preview,
        run: Box::new(move |policy: &CausalLm| {
            let repeated: Vec<Vec<u32>> =
                prompts.iter().flat_map(|p| std::iter::repeat_n(p, samples)).cloned().collect();
            let mut rngs: Vec<Rng> = (0..n * samples)
                .map(|i| Rng::derive(seed, &format!("{streams}/sample/{}/{}", data.ids[i / samples], i % samples)))
                .collect();
            let completions = generation::completions(policy, &repeated, &opts, &mut rngs)?;
            let correct = judge.verdicts(&data, samples, &completions)?;
            let texts = data.strings("prompt")?;
            let fits = (0..n * samples)
                .map(|i| Ok(model::training_positions(&tok, &texts[i / samples], &completions[i])? <= context))
                .collect::<Result<Vec<bool>, ExecError>>()?;
            let (out, counts) = pair(&data, samples, &completions, &correct, &fits)?;
            let judged = correct.iter().filter(|&&c| c).count();
            let too_long = fits.iter().filter(|&&f| !f).count();
            let metrics = json!({
                "event": "self_pairs",
                "stage": stage,
                "rows": n,
                "samples": samples,
                "pairs": out.len(),
                "dropped": n - out.len(),
                "dropped_no_correct": counts.no_correct,
                "dropped_no_incorrect": counts.no_incorrect,
                "samples_too_long": too_long,
                "correct_share": judged as f64 / correct.len().max(1) as f64,
                "max_tokens": max_tokens,
                "temperature": temperature,
            });
            let note = format!(
                "stage `{stage}`: {} pairs from {n} rows × {samples} samples ({judged} judged correct, {too_long} \
                 too long to train on; rows dropped: {} with no correct sample, {} with no incorrect one)",
                out.len(),
                counts.no_correct,
                counts.no_incorrect
            );
            Ok(Produced { data: out, metrics, note })
        }),
    })
}

/// The recipe's `judge`, compiled.
struct Judge {
    index: u32,
    functions: Arc<Functions>,
}

impl Judge {
    fn of(call: &Call<'_>, functions: &Arc<Functions>) -> Result<Judge, ExecError> {
        let Value::Scalar(index) = call.get("judge")? else {
            return Err(ExecError::Internal("`self_pairs`: `judge` is not a scalar function".into()));
        };
        Ok(Judge { index: *index, functions: functions.clone() })
    }

    /// The judge's verdict on each of `samples` completions of every row of `data`
    /// (`completions[r * samples + k]` is row r's sample k), in that order.
    ///
    /// Errors: `ExecError::Config` when the judge cannot be evaluated on the rows.
    fn verdicts(&self, data: &Dataset, samples: usize, completions: &[Arc<str>]) -> Result<Vec<bool>, ExecError> {
        let rows: Vec<usize> = (0..data.len()).flat_map(|r| std::iter::repeat_n(r, samples)).collect();
        let judged = data.select(&rows).with_column("completion", Column::Str(completions.to_vec()))?;
        let columns: Vec<(&str, &Column)> = judged.columns.iter().map(|(n, c)| (n.as_str(), c)).collect();
        match batch::eval_batch(self.functions.func(self.index)?, &columns) {
            Ok(Column::Bool(verdicts)) => Ok(verdicts),
            Ok(_) => Err(ExecError::Internal("`self_pairs`: `judge` did not return Bool".into())),
            Err(e) => Err(ExecError::Config(format!("`self_pairs`: `judge`: {e}"))),
        }
    }
}

/// Rows dropped for want of a pair.
#[derive(Debug, Default, PartialEq, Eq)]
struct Dropped {
    no_correct: usize,
    no_incorrect: usize,
}

/// The rows of `data` with a sample judged correct and one judged incorrect among those that
/// `fit`, with `chosen` the first correct and `rejected` the first incorrect (`completions`,
/// `correct` and `fit` hold `samples` entries per row, row by row), and the rows dropped.
fn pair(
    data: &Dataset,
    samples: usize,
    completions: &[Arc<str>],
    correct: &[bool],
    fit: &[bool],
) -> Result<(Dataset, Dropped), ExecError> {
    let n = data.len() * samples;
    if completions.len() != n || correct.len() != n || fit.len() != n {
        return Err(ExecError::Internal(format!(
            "`self_pairs`: {} rows × {samples} samples, {} completions and {} verdicts",
            data.len(),
            completions.len(),
            correct.len()
        )));
    }
    let (mut kept, mut chosen, mut rejected, mut dropped) = (Vec::new(), Vec::new(), Vec::new(), Dropped::default());
    for row in 0..data.len() {
        let of_row = row * samples..(row + 1) * samples;
        let first = |verdict: bool| of_row.clone().find(|&i| fit[i] && correct[i] == verdict);
        match (first(true), first(false)) {
            (Some(c), Some(r)) => {
                kept.push(row);
                chosen.push(completions[c].clone());
                rejected.push(completions[r].clone());
            }
            (None, _) => dropped.no_correct += 1,
            (Some(_), None) => dropped.no_incorrect += 1,
        }
    }
    let out = data
        .select(&kept)
        .with_column("chosen", Column::Str(chosen))?
        .with_column("rejected", Column::Str(rejected))?;
    Ok((out, dropped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::stages::generation::tests::texts;

    fn column(data: &Dataset, name: &str) -> Vec<String> {
        data.strings(name).unwrap().iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn pairs_the_first_correct_with_the_first_incorrect_sample_and_drops_the_rest() {
        let data = Dataset::new(
            "t",
            vec![10, 11, 12, 13],
            vec![
                ("prompt".into(), Column::Str(texts(&["1+1=", "2+2=", "3+3=", "4+4="]))),
                ("completion".into(), Column::Str(texts(&["2", "4", "6", "8"]))),
            ],
        )
        .unwrap();
        let completions = texts(&["3", "2", "5", "2", "4", "4", "4", "4", "1", "0", "9", "7", "8", "", "8", "x"]);
        let correct =
            [false, true, false, true, true, true, true, true, false, false, false, false, true, false, true, false];
        let all = [true; 16];
        let (out, dropped) = pair(&data, 4, &completions, &correct, &all).unwrap();
        assert_eq!(dropped, Dropped { no_correct: 1, no_incorrect: 1 });
        assert_eq!(out.ids, [10, 13], "the kept rows keep their ids and order");
        assert_eq!(column(&out, "chosen"), ["2", "8"], "the first correct sample");
        assert_eq!(column(&out, "rejected"), ["3", ""], "the first incorrect sample, an empty one too");
        assert_eq!(column(&out, "completion"), ["2", "8"], "the row's own fields are kept");
        let names: Vec<&str> = out.columns.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["prompt", "completion", "chosen", "rejected"]);
        assert!(pair(&data, 4, &completions[1..], &correct[1..], &all[1..]).is_err());

        // Samples that do not fit take no part: row 10 pairs its second incorrect sample, and
        // row 13, whose only correct samples do not fit, makes no pair.
        let mut fit = all;
        (fit[0], fit[12], fit[14]) = (false, false, false);
        let (out, dropped) = pair(&data, 4, &completions, &correct, &fit).unwrap();
        assert_eq!(dropped, Dropped { no_correct: 2, no_incorrect: 1 });
        assert_eq!((out.ids.as_slice(), column(&out, "rejected")), (&[10][..], vec!["5".to_string()]));
    }
}
