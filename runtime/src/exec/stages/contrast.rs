//! `contrast_pairs(policy, dataset, perturbed, max_tokens)`: a stage that trains nothing and
//! builds TEMPLE-style preference pairs. For each row the chosen response is the row's reference
//! answer to its clean prompt (`completion`, else `answer`: the rule `accuracy` uses), and the
//! rejected response is the policy's greedy answer to the perturbed prompt `perturbed(row)` (a
//! recipe function of the row, compiled by the JIT): batched, KV-cached generation that stops at
//! a stop id (EOS) or after `max_tokens` tokens, EOS included, and is decoded without the stop
//! id. A row whose greedy answer equals its reference answer (both trimmed) makes no pair and is
//! dropped and counted. Its output is `{model, data}`: the policy unchanged and the kept rows, in
//! their input order with their ids, plus `chosen` and `rejected`.
//!
//! Checked at binding, before any compute: the rows have a String `completion` or `answer`, and
//! every perturbed prompt encodes to at least one token and fits the policy's context with
//! `max_tokens` new tokens (a row that does not is refused, by name).
//!
//! Invariants: the pairs are a pure function of the rows and the policy's weights (greedy
//! decoding draws nothing, and a row generates the same tokens alone or in a batch); a kept row
//! keeps its input row's id. A row whose greedy answer is empty is dropped too (a response
//! needs a token before EOS) and counted. Before compute, stages reading the data see every row
//! with its `chosen` answer standing in for `rejected`; they are bound again against the pairs
//! produced before they run.

use super::{generation, Binding, Produced, Transform};
use crate::data::Dataset;
use crate::exec::args::{Call, Functions};
use crate::exec::ExecError;
use crate::model::{CausalLm, GenerateOptions};
use crate::rng::Rng;
use recipe_compiler::batch;
use recipe_compiler::column::Column;
use recipe_compiler::program::Value;
use serde_json::json;
use std::sync::Arc;

/// Decodes a `contrast_pairs` call and checks, without compute, everything it needs: the
/// reference answers, the perturbed prompts (evaluated now), and their fit in the policy's
/// context with `max_tokens` new tokens.
pub(super) fn bind(b: &mut Binding<'_, '_>) -> Result<Transform, ExecError> {
    let data = b.dataset()?;
    let max_tokens = b.call.count("max_tokens")? as usize;
    if max_tokens == 0 {
        return Err(b.call.invalid("max_tokens", "must be at least 1"));
    }
    let stage = b.stage.to_string();
    let chosen = reference_answers(&data).map_err(|e| b.call.locate(e, Some("dataset")))?;
    let perturbed = perturbed_prompts(&b.call, &data, &b.builder.functions)?;
    let limits = b.limits("policy")?;
    let (tok, context) = (&limits.tokenizer, limits.context);
    let prompts = generation::encode_fitting(&stage, "perturbed prompt", &data, &perturbed, tok, context, max_tokens)
        .map_err(|e| b.call.locate(e, Some("perturbed")))?;
    let n = data.len();
    let mut data = data;
    data.origin = format!("contrast_pairs({})", data.origin);
    let preview = data
        .clone()
        .with_column("chosen", Column::Str(chosen.clone()))?
        .with_column("rejected", Column::Str(chosen.clone()))?;
    Ok(Transform {
        policy: b.model("policy")?,
        preview,
        run: Box::new(move |policy: &CausalLm| {
            let rejected = greedy_answers(policy, &prompts, max_tokens)?;
            let (out, agreeing, empty) = pair(&data, &chosen, rejected)?;
            let metrics = json!({
                "event": "contrast_pairs",
                "stage": stage,
                "rows": n,
                "pairs": out.len(),
                "dropped_agreeing": agreeing,
                "dropped_empty": empty,
                "max_tokens": max_tokens,
            });
            let note = format!(
                "stage `{stage}`: {} pairs from {n} rows ({agreeing} dropped: the greedy answer to the perturbed \
                 prompt was the reference answer; {empty} dropped: it was empty)",
                out.len()
            );
            Ok(Produced { data: out, metrics, note })
        }),
    })
}

/// Each row's reference answer: its `completion` if the rows have one, else its `answer`.
fn reference_answers(data: &Dataset) -> Result<Vec<Arc<str>>, ExecError> {
    let field = if data.column("completion").is_some() { "completion" } else { "answer" };
    match data.strings(field) {
        Ok(answers) => Ok(answers.to_vec()),
        Err(_) => {
            let fields: Vec<String> = data.columns.iter().map(|(n, _)| format!("`{n}`")).collect();
            Err(ExecError::Config(format!(
                "`contrast_pairs` takes the String field `completion` (else `answer`) of each row as the chosen \
                 response; the rows of {} have {}",
                data.origin,
                fields.join(", ")
            )))
        }
    }
}

/// `perturbed` evaluated over the rows by the JIT.
fn perturbed_prompts(call: &Call<'_>, data: &Dataset, functions: &Functions) -> Result<Vec<Arc<str>>, ExecError> {
    let Value::Scalar(index) = call.get("perturbed")? else {
        return Err(ExecError::Internal("`contrast_pairs`: `perturbed` is not a scalar function".into()));
    };
    let func = functions.func(*index)?;
    let columns: Vec<(&str, &Column)> = data.columns.iter().map(|(n, c)| (n.as_str(), c)).collect();
    match batch::eval_batch(func, &columns) {
        Ok(Column::Str(prompts)) => Ok(prompts),
        Ok(_) => Err(ExecError::Internal("`contrast_pairs`: `perturbed` did not return String".into())),
        Err(e) => Err(call.locate(ExecError::Config(format!("`contrast_pairs`: {e}")), Some("perturbed"))),
    }
}

/// The policy's greedy answer to each prompt: at most `max_tokens` new tokens, ending at the
/// first stop id, decoded without it.
fn greedy_answers(policy: &CausalLm, prompts: &[Vec<u32>], max_tokens: usize) -> Result<Vec<Arc<str>>, ExecError> {
    let opts = GenerateOptions { max_new_tokens: max_tokens, temperature: 0.0, top_p: 1.0, stop_at_eos: true };
    // Greedy decoding draws nothing from them.
    let mut streams = vec![Rng::derive(0, "contrast_pairs/greedy"); prompts.len()];
    generation::completions(policy, prompts, &opts, &mut streams)
}

/// The rows of `data` whose `rejected` answer is not empty and differs from their `chosen` one
/// (both trimmed), with the two fields added, and how many rows were dropped as agreeing and as
/// empty.
fn pair(data: &Dataset, chosen: &[Arc<str>], rejected: Vec<Arc<str>>) -> Result<(Dataset, usize, usize), ExecError> {
    if chosen.len() != data.len() || rejected.len() != data.len() {
        return Err(ExecError::Internal(format!(
            "`contrast_pairs`: {} rows, {} chosen and {} rejected responses",
            data.len(),
            chosen.len(),
            rejected.len()
        )));
    }
    let empty = (0..data.len()).filter(|&r| rejected[r].trim().is_empty()).count();
    let kept: Vec<usize> =
        (0..data.len()).filter(|&r| !rejected[r].trim().is_empty() && chosen[r].trim() != rejected[r].trim()).collect();
    let out = data
        .select(&kept)
        .with_column("chosen", Column::Str(kept.iter().map(|&r| chosen[r].clone()).collect()))?
        .with_column("rejected", Column::Str(kept.iter().map(|&r| rejected[r].clone()).collect()))?;
    Ok((out, data.len() - kept.len() - empty, empty))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::stages::generation::tests::{texts, tiny_model};
    use crate::model::generate::greedy_uncached;

    fn column(data: &Dataset, name: &str) -> Vec<String> {
        data.strings(name).unwrap().iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn pairs_the_reference_answer_with_the_greedy_one_and_drops_agreeing_rows() {
        let data = Dataset::new(
            "t",
            vec![10, 11, 12, 13],
            vec![
                ("prompt".into(), Column::Str(texts(&["1+1=", "2+2=", "3+3=", "4+4="]))),
                ("completion".into(), Column::Str(texts(&["2", "4", "6", "8"]))),
                ("strength".into(), Column::Int(vec![1, 2, 3, 1])),
            ],
        )
        .unwrap();
        let chosen = reference_answers(&data).unwrap();
        let (out, agreeing, empty) = pair(&data, &chosen, texts(&["3", " 4\n", " ", "8"])).unwrap();
        assert_eq!((agreeing, empty), (2, 1), "`4` and `8` agree after trimming; an empty answer is no response");
        assert_eq!(out.ids, [10], "the kept rows keep their ids and order");
        assert_eq!(column(&out, "prompt"), ["1+1="]);
        assert_eq!(column(&out, "chosen"), ["2"]);
        assert_eq!(column(&out, "rejected"), ["3"]);
        assert_eq!(out.ints("strength").unwrap(), [1], "every input field is kept");
        let names: Vec<&str> = out.columns.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["prompt", "completion", "strength", "chosen", "rejected"]);

        let (none, all, _) = pair(&data, &chosen, chosen.clone()).unwrap();
        assert_eq!((none.len(), all), (0, 4));
    }

    #[test]
    fn the_reference_answer_is_the_completion_else_the_answer() {
        let answer_only = Dataset::new(
            "t",
            vec![0],
            vec![("prompt".into(), Column::Str(texts(&["q"]))), ("answer".into(), Column::Str(texts(&["a"])))],
        )
        .unwrap();
        assert_eq!(&*reference_answers(&answer_only).unwrap()[0], "a");
        let both = answer_only.clone().with_column("completion", Column::Str(texts(&["c"]))).unwrap();
        assert_eq!(&*reference_answers(&both).unwrap()[0], "c");
        let neither = Dataset::new("t", vec![0], vec![("prompt".into(), Column::Str(texts(&["q"])))]).unwrap();
        let err = reference_answers(&neither).unwrap_err().to_string();
        assert!(err.contains("`completion` (else `answer`)") && err.contains("`prompt`"), "{err}");
    }

    /// Batched, cached generation gives each prompt the uncached greedy answer, cut at EOS.
    #[test]
    fn greedy_answers_are_the_uncached_greedy_text_up_to_eos() {
        let model = tiny_model(5, 32);
        let tok = model.tokenizer().clone();
        let prompts: Vec<Vec<u32>> = (0..40).map(|i| tok.encode(&format!("{i}+{}=", i % 7)).unwrap()).collect();
        let answers = greedy_answers(&model, &prompts, 6).unwrap();
        assert_eq!(answers.len(), 40);
        for row in [0, 31, 32, 39] {
            let mut want = greedy_uncached(&model, &prompts[row], 6).unwrap();
            if let Some(end) = want.iter().position(|&t| tok.is_stop(t)) {
                want.truncate(end);
            }
            assert_eq!(&*answers[row], tok.decode(&want), "row {row}");
        }
    }
}
