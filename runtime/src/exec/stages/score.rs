//! `score(policy, dataset, measure, keep, select)`: a stage that trains nothing. It scores every
//! row with a difficulty measure, adds the Float field `score`, and keeps the fraction `keep` of
//! the rows: the highest scores (`top`), the lowest (`bottom`), or a seeded random subset of the
//! same size (`random`, the control). Its output is `{model, data}`: the policy unchanged and the
//! kept rows, in their input order, with their ids.
//!
//! Measures (`Difficulty` builtins): `field_score(by)` (a recipe function of the row, compiled by
//! the JIT), `length()` (prompt bytes), `gzip_ratio()` (gzip bytes / prompt bytes), all computed
//! at binding, before any compute; and `ref_margin()`, log π(chosen) − log π(rejected) under the
//! policy (summed completion log-probabilities, EOS appended, no gradient), computed when the
//! stage runs; so are `pass_rate(samples, judge, max_tokens)` and `group_variance(...)`, which
//! sample each prompt `samples` times with the policy and judge the completions (`judged`).
//!
//! Invariants: the kept rows are a pure function of the rows, the scores, `keep`, `select` and
//! the recipe seed (`random` draws from `Rng::derive(seed, "stage/<name>/select")`); ties keep
//! the earlier row; a score that is not finite is an error naming its row, never a silent order.

mod judged;

use super::{Binding, Produced, Transform};
use crate::data::Dataset;
use crate::exec::args::{Call, Constant, Functions};
use crate::exec::ExecError;
use crate::model::{self, CausalLm, TokenBatch};
use crate::rng::Rng;
use judged::{Judged, Statistic};
use recipe_compiler::batch;
use recipe_compiler::column::Column;
use recipe_compiler::program::Value;
use serde_json::json;
use std::sync::Arc;

/// The difficulty measures `score` executes.
pub(in crate::exec) const MEASURES: &[&str] =
    &["field_score", "ref_margin", "length", "gzip_ratio", "pass_rate", "group_variance"];

/// Pairs scored per forward pass of `ref_margin` (each pair is two sequences).
const PAIRS_PER_BATCH: usize = 32;

/// Which rows `score` keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Select {
    Top,
    Bottom,
    Random,
}

impl Constant for Select {
    const TYPE: &'static str = "Select";

    fn from_name(name: &str) -> Option<Select> {
        match name {
            "top" => Some(Select::Top),
            "bottom" => Some(Select::Bottom),
            "random" => Some(Select::Random),
            _ => None,
        }
    }
}

impl Select {
    fn name(self) -> &'static str {
        match self {
            Select::Top => "top",
            Select::Bottom => "bottom",
            Select::Random => "random",
        }
    }
}

/// A decoded measure: scores already computed from the rows, or one that needs the policy.
enum Measure {
    Computed(Vec<f64>),
    RefMargin,
    Judged(Judged),
}

/// Decodes a `score` call and checks, without compute, everything its measure needs: the fields
/// it reads, every row's fit in the policy's context (`ref_margin`), and the scores of the
/// measures that need no model.
pub(super) fn bind(b: &mut Binding<'_, '_>) -> Result<Transform, ExecError> {
    let data = b.dataset()?;
    let keep = b.call.float("keep")?;
    if keep.is_nan() || keep <= 0.0 || keep > 1.0 {
        return Err(b.call.invalid("keep", format!("must be in (0, 1], got {keep}")));
    }
    let select: Select = b.call.constant("select")?;
    let call = b.call.nested("measure")?;
    let stage = b.stage.to_string();
    let measure = match call.name {
        "field_score" => Measure::Computed(field_scores(&call, &data, &b.builder.functions)?),
        "length" => Measure::Computed(prompts(&call, &data)?.iter().map(|p| p.len() as f64).collect()),
        "gzip_ratio" => Measure::Computed(gzip_ratios(&call, &data)?),
        "ref_margin" => {
            for field in ["prompt", "chosen", "rejected"] {
                strings(&call, &data, field)?;
            }
            let limits = b.limits("policy")?;
            check_pairs_fit(&stage, &data, &limits.tokenizer, limits.context).map_err(|e| call.locate(e, None))?;
            Measure::RefMargin
        }
        "pass_rate" | "group_variance" => {
            let statistic = if call.name == "pass_rate" { Statistic::PassRate } else { Statistic::Variance };
            let limits = b.limits("policy")?;
            let prompts = prompts(&call, &data)?;
            let functions = &b.builder.functions;
            Measure::Judged(Judged::bind(
                &stage,
                &call,
                statistic,
                &data,
                prompts,
                &limits.tokenizer,
                limits.context,
                functions,
            )?)
        }
        other => {
            let e = ExecError::Unsupported(format!("the difficulty measure `{other}` of stage `{stage}`"));
            return Err(call.locate(e, None));
        }
    };
    if let Measure::Computed(scores) = &measure {
        finite(call.name, &data, scores).map_err(|e| call.locate(e, None))?;
    }
    let n = data.len();
    let preview = data.clone().with_column("score", Column::Float(vec![0.0; n]))?;
    let kept = kept_count(keep, n);
    let seed = b.builder.seed;
    let measure_name = call.name.to_string();
    Ok(Transform {
        policy: b.model("policy")?,
        preview,
        run: Box::new(move |policy: &CausalLm| {
            let scores = match &measure {
                Measure::Computed(scores) => scores.clone(),
                Measure::RefMargin => {
                    let margins = ref_margins(policy, &data)?;
                    finite("ref_margin", &data, &margins)?;
                    margins
                }
                Measure::Judged(judged) => judged.scores(policy, &data, seed, &stage)?,
            };
            let mut rng = Rng::derive(seed, &format!("stage/{stage}/select"));
            let rows = choose(&scores, kept, select, &mut rng);
            let out = data.clone().with_column("score", Column::Float(scores.clone()))?.select(&rows);
            let kept_scores: Vec<f64> = rows.iter().map(|&r| scores[r]).collect();
            let metrics = json!({
                "event": "score",
                "stage": stage,
                "measure": measure_name,
                "select": select.name(),
                "keep": keep,
                "rows": n,
                "kept": rows.len(),
                "score_mean": mean(&scores),
                "kept_score_mean": mean(&kept_scores),
                "kept_score_min": kept_scores.iter().copied().fold(f64::INFINITY, f64::min),
                "kept_score_max": kept_scores.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            });
            let note =
                format!("stage `{stage}`: kept {} of {n} rows ({} by `{measure_name}`)", rows.len(), select.name());
            Ok(Produced { data: out, metrics, note })
        }),
    })
}

/// How many of `rows` rows a fraction `keep` in (0, 1] keeps: `keep * rows` rounded half away
/// from zero, at least 1 (a non-empty dataset never becomes empty).
fn kept_count(keep: f64, rows: usize) -> usize {
    ((keep * rows as f64).round() as usize).clamp(1.min(rows), rows)
}

/// The rows `select` keeps, `kept` of them, in row order. Ties keep the earlier row.
fn choose(scores: &[f64], kept: usize, select: Select, rng: &mut Rng) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    match select {
        // Stable sorts: equal scores stay in row order.
        Select::Top => order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a])),
        Select::Bottom => order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b])),
        Select::Random => rng.shuffle(&mut order),
    }
    let mut rows = order[..kept.min(order.len())].to_vec();
    rows.sort_unstable();
    rows
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

/// The String field `field` of the rows, or an error at the measure naming what the rows have.
fn strings<'d>(call: &Call<'_>, data: &'d Dataset, field: &str) -> Result<&'d [Arc<str>], ExecError> {
    data.strings(field).map_err(|_| {
        let fields: Vec<String> = data.columns.iter().map(|(n, _)| format!("`{n}`")).collect();
        let message = format!(
            "`{}` reads the String field `{field}` of each row; the rows of {} have {}",
            call.name,
            data.origin,
            fields.join(", ")
        );
        call.locate(ExecError::Config(message), None)
    })
}

fn prompts<'d>(call: &Call<'_>, data: &'d Dataset) -> Result<&'d [Arc<str>], ExecError> {
    strings(call, data, "prompt")
}

/// `field_score(by)`: `by` evaluated over the rows by the JIT.
fn field_scores(call: &Call<'_>, data: &Dataset, functions: &Functions) -> Result<Vec<f64>, ExecError> {
    let Value::Scalar(index) = call.get("by")? else {
        return Err(ExecError::Internal("`field_score`: `by` is not a scalar function".into()));
    };
    let func = functions.func(*index)?;
    let columns: Vec<(&str, &Column)> = data.columns.iter().map(|(n, c)| (n.as_str(), c)).collect();
    match batch::eval_batch(func, &columns) {
        Ok(Column::Float(scores)) => Ok(scores),
        Ok(_) => Err(ExecError::Internal("`field_score`: `by` did not return Float".into())),
        Err(e) => Err(call.locate(ExecError::Config(format!("`field_score`: {e}")), Some("by"))),
    }
}

/// gzip's size of each prompt over its size in bytes: DEFLATE at level 6 (gzip's and flate2's
/// default; `miniz_oxide`, flate2's default backend) plus gzip's 18 bytes of header and trailer.
fn gzip_ratios(call: &Call<'_>, data: &Dataset) -> Result<Vec<f64>, ExecError> {
    const GZIP_FRAMING: usize = 18;
    let prompts = prompts(call, data)?;
    let mut ratios = Vec::with_capacity(prompts.len());
    for (row, prompt) in prompts.iter().enumerate() {
        if prompt.is_empty() {
            let message = format!("`gzip_ratio`: {} has an empty prompt, whose ratio is undefined", data.row_name(row));
            return Err(call.locate(ExecError::Config(message), None));
        }
        let compressed = miniz_oxide::deflate::compress_to_vec(prompt.as_bytes(), 6).len() + GZIP_FRAMING;
        ratios.push(compressed as f64 / prompt.len() as f64);
    }
    Ok(ratios)
}

/// Refuses a row whose prompt plus either response and EOS needs more positions than `context`.
fn check_pairs_fit(stage: &str, data: &Dataset, tok: &model::Tokenizer, context: usize) -> Result<(), ExecError> {
    let (prompts, chosen, rejected) = (data.strings("prompt")?, data.strings("chosen")?, data.strings("rejected")?);
    for row in 0..data.len() {
        for response in [&chosen[row], &rejected[row]] {
            let len = model::training_positions(tok, &prompts[row], response)?;
            if len > context {
                return Err(ExecError::Config(format!(
                    "stage `{stage}`: {} needs {len} positions (prompt, response and EOS) but the model has \
                     {context} (its `context` / max_position_embeddings); shorten or leave out such rows",
                    data.row_name(row)
                )));
            }
        }
    }
    Ok(())
}

/// log π(chosen | prompt) − log π(rejected | prompt) of each row under `policy`, summed over the
/// response tokens with EOS appended, in batches of [`PAIRS_PER_BATCH`] pairs, no gradient.
fn ref_margins(policy: &CausalLm, data: &Dataset) -> Result<Vec<f64>, ExecError> {
    let frozen;
    let policy = if policy.is_frozen() {
        policy
    } else {
        frozen = policy.frozen()?;
        &frozen
    };
    let (prompts, chosen, rejected) = (data.strings("prompt")?, data.strings("chosen")?, data.strings("rejected")?);
    let mut margins = Vec::with_capacity(data.len());
    for start in (0..data.len()).step_by(PAIRS_PER_BATCH) {
        let rows = start..(start + PAIRS_PER_BATCH).min(data.len());
        let pairs: Vec<(&str, &str)> = rows
            .clone()
            .map(|r| (&*prompts[r], &*chosen[r]))
            .chain(rows.clone().map(|r| (&*prompts[r], &*rejected[r])))
            .collect();
        let batch = TokenBatch::collate(policy.tokenizer(), &pairs, true, policy.device())?;
        let (sums, _) = model::completion_logprobs(policy, &batch)?;
        let sums: Vec<f32> = sums.to_dtype(candle_core::DType::F32)?.to_vec1()?;
        let n = rows.len();
        margins.extend((0..n).map(|i| f64::from(sums[i]) - f64::from(sums[n + i])));
    }
    Ok(margins)
}

/// Refuses the first score that is not finite, naming its row.
fn finite(measure: &str, data: &Dataset, scores: &[f64]) -> Result<(), ExecError> {
    match scores.iter().position(|s| !s.is_finite()) {
        None => Ok(()),
        Some(row) => Err(ExecError::Config(format!(
            "`{measure}` gave {} for {}; scores must be finite numbers",
            scores[row],
            data.row_name(row)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Device, LlamaConfig};

    #[test]
    fn keeps_the_requested_share_with_ties_in_row_order() {
        let scores = [0.5, 2.0, -1.0, 2.0, 0.0, 3.0];
        let mut rng = Rng::derive(1, "t");
        assert_eq!(choose(&scores, 3, Select::Top, &mut rng), [1, 3, 5]);
        assert_eq!(choose(&scores, 2, Select::Top, &mut rng), [1, 5], "of two equal scores the earlier row");
        assert_eq!(choose(&scores, 2, Select::Bottom, &mut rng), [2, 4]);
        let random = choose(&scores, 3, Select::Random, &mut Rng::derive(1, "t"));
        assert_eq!(random, choose(&scores, 3, Select::Random, &mut Rng::derive(1, "t")), "seeded");
        assert_eq!(random.len(), 3);
        assert!(random.windows(2).all(|w| w[0] < w[1]), "in row order: {random:?}");
        assert_eq!(kept_count(0.5, 10), 5);
        assert_eq!(kept_count(0.45, 10), 5, "rounded half away from zero");
        assert_eq!(kept_count(0.01, 10), 1, "never empty");
        assert_eq!(kept_count(1.0, 7), 7);
    }

    #[test]
    fn gzip_ratio_is_lower_for_redundant_text() {
        let text = |s: &str| Arc::from(s);
        let data = Dataset::new(
            "t",
            vec![1, 2],
            vec![("prompt".into(), Column::Str(vec![text(&"ab".repeat(100)), text("q7#kZ!x2m@")]))],
        )
        .unwrap();
        let call_value = Value::Call { name: "gzip_ratio".into(), args: vec![] };
        let call = Call::of(&call_value).unwrap();
        let ratios = gzip_ratios(&call, &data).unwrap();
        assert!(ratios[0] < 0.3 && ratios[1] > 1.0, "{ratios:?}");
        let empty = Dataset::new("t", vec![9], vec![("prompt".into(), Column::Str(vec![text("")]))]).unwrap();
        let err = gzip_ratios(&call, &empty).unwrap_err().to_string();
        assert!(err.contains("row 9 of t"), "{err}");
    }

    /// The margin is the difference of the two summed log-probabilities `recipe score` computes.
    #[test]
    fn ref_margin_is_the_difference_of_summed_logprobs() {
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
        let model = CausalLm::tiny(cfg, &mut Rng::derive(3, "init"), &Device::Cpu).unwrap().into_frozen();
        let rows = 40; // more than one batch
        let s = |f: &dyn Fn(usize) -> String| Column::Str((0..rows).map(|i| Arc::from(f(i))).collect());
        let data = Dataset::new(
            "t",
            (0..rows as u64).collect(),
            vec![
                ("prompt".into(), s(&|i| format!("{i}+1="))),
                ("chosen".into(), s(&|i| (i + 1).to_string())),
                ("rejected".into(), s(&|i| format!("{i}{i}"))),
            ],
        )
        .unwrap();
        let margins = ref_margins(&model, &data).unwrap();
        assert_eq!(margins.len(), rows);
        for row in [0, 33] {
            let logprob = |response: &str| {
                let prompt = format!("{row}+1=");
                let batch =
                    TokenBatch::collate(model.tokenizer(), &[(&prompt, response)], true, model.device()).unwrap();
                model::completion_logprobs(&model, &batch).unwrap().0.to_vec1::<f32>().unwrap()[0] as f64
            };
            let want = logprob(&(row + 1).to_string()) - logprob(&format!("{row}{row}"));
            assert!((margins[row] - want).abs() < 1e-4, "row {row}: {} vs {want}", margins[row]);
        }
    }
}
