//! `rl(policy, dataset, reward, reference, loss, advantages, group, ...)`: online RL with group
//! rollouts (the experience source and objective are `train::rl`).
//!
//! Everything that needs no compute is checked here, at the argument: the `prompt` field, every
//! prompt against the policy's context with `max_tokens` new tokens, that the loss reads only
//! rollout-batch fields, that the advantage estimator reads only rewards and lengths and gives
//! one value per rollout, and that the reward evaluates on the dataset's columns (one dry call
//! on the first row). The reference is read only when the loss reads its log-probabilities
//! (a `beta` that is not 0), so a KL-free loss never builds one.

use super::{generation, Binding, Bound};
use crate::data::Dataset;
use crate::exec::args::{Call, Functions};
use crate::exec::settings::TrainSettings;
use crate::exec::ExecError;
use crate::model::GenerateOptions;
use crate::train::rl::advantages::AdvantageFn;
use crate::train::rl::rollouts::{RewardFn, RewardQuery, RolloutSettings, RolloutSource};
use crate::train::{RlObjective, StageParts};
use recipe_compiler::batch;
use recipe_compiler::column::Column;
use recipe_compiler::program::{LossTerm, Value};
use std::sync::Arc;

/// Decodes an `rl` call.
///
/// Errors, at the argument: a dataset without `prompt`, or a prompt that is empty or does not
/// fit the policy's context with `max_tokens` new tokens (naming the row); a loss or advantage
/// estimator that reads a field a rollout batch does not give it; a reward that cannot be
/// evaluated on the rows.
pub(super) fn bind(b: &mut Binding<'_, '_>) -> Result<Bound, ExecError> {
    let settings = TrainSettings::decode(&b.call, &b.builder.functions, b.max_steps)?;
    let data = b.dataset()?;
    if data.column("prompt").is_none() {
        let e = ExecError::Config(format!("stage `{}`: its data ({}) has no `prompt` field", b.stage, data.origin));
        return Err(b.call.locate(e, Some("dataset")));
    }
    let max_tokens = b.call.count("max_tokens")? as usize;
    let limits = b.limits("policy")?;
    let texts = data.strings("prompt").map_err(|e| b.call.locate(e.into(), Some("dataset")))?;
    let prompts =
        generation::encode_fitting(b.stage, "prompt", &data, texts, &limits.tokenizer, limits.context, max_tokens)
            .map_err(|e| b.call.locate(e, Some("dataset")))?;
    let scalars = Functions::numeric(&b.builder.functions);
    let terms = loss_terms(&b.call, "loss")?;
    let mask_truncated = b.call.bool("mask_truncated")?;
    let objective = RlObjective::new(b.stage, terms.clone(), scalars.clone(), max_tokens, mask_truncated)
        .map_err(|e| b.call.invalid("loss", format!("cannot be evaluated on rollouts: {e}")))?;
    let advantages = match loss_terms(&b.call, "advantages")?.as_slice() {
        [term] if term.weight == 1.0 => {
            AdvantageFn::new(term.clone(), scalars.clone()).map_err(|e| b.call.invalid("advantages", e))?
        }
        [term] => {
            let message = format!("is `{}` scaled by {}: write the scale inside the estimator", term.name, term.weight);
            return Err(b.call.invalid("advantages", message));
        }
        _ => return Err(b.call.invalid("advantages", "must be one estimator, not a sum of several")),
    };
    let reward = reward_fn(&b.call, &data, &b.builder.functions)?;
    let rollouts = RolloutSettings {
        group: b.call.count("group")? as usize,
        iterations: b.call.count("iterations")?,
        sampling: GenerateOptions {
            max_new_tokens: max_tokens,
            temperature: b.call.float("temperature")?,
            top_p: b.call.float("top_p")?,
            stop_at_eos: true,
        },
    };
    let curriculum = b.curriculum(&data, &settings)?;
    let rounds = b.round_plan(&curriculum, &settings)?;
    let reference = match objective.reads_reference() {
        true => Some(b.model("reference")?),
        false => None,
    };
    let (stage, seed, prompts, ids) = (b.stage.to_string(), b.builder.seed, Arc::new(prompts), data.ids.clone());
    // Rollouts of each round of a `rounds` block, and of each curriculum round, draw apart.
    let block = b.round().map_or(String::new(), |r| format!("/round/{}", r.index));
    Ok(Bound {
        policy: b.model("policy")?,
        reference,
        settings,
        rounds,
        parts: Box::new(move |round| {
            let streams = match round {
                0 => format!("stage/{stage}{block}"),
                r => format!("stage/{stage}{block}/curriculum-round/{r}"),
            };
            let source = RolloutSource::new(
                &stage,
                streams,
                seed,
                prompts.clone(),
                ids.clone(),
                rollouts.clone(),
                reward.clone(),
                advantages.clone(),
            );
            let objective = RlObjective::new(&stage, terms.clone(), scalars.clone(), max_tokens, mask_truncated)
                .map_err(ExecError::Internal)?;
            Ok(StageParts {
                curriculum: curriculum.build(round)?,
                experience: Box::new(source),
                objective: Box::new(objective),
            })
        }),
    })
}

/// The terms of the tensor-function argument `arg` (a loss or an advantage estimator).
fn loss_terms(call: &Call<'_>, arg: &str) -> Result<Vec<LossTerm>, ExecError> {
    match call.get(arg)? {
        Value::Loss(terms) => Ok(terms.clone()),
        other => Err(ExecError::Internal(format!("`{arg}` of `{}` is {other:?}, not a tensor function", call.name))),
    }
}

/// The recipe's `reward` as a function of rollouts: the row's columns plus `completion`,
/// `tokens`, `step` and `total`, evaluated by the JIT over every completion in parallel.
///
/// Errors: `ExecError::Config` at `reward` when one dry call on the first row fails (a column
/// of the wrong type, a missing field).
fn reward_fn(call: &Call<'_>, data: &Dataset, functions: &Arc<Functions>) -> Result<RewardFn, ExecError> {
    let Value::Scalar(index) = call.get("reward")? else {
        return Err(ExecError::Internal("`reward` of `rl` is not a scalar function".into()));
    };
    let (index, data, functions) = (*index, Arc::new(data.clone()), Arc::clone(functions));
    let reward: RewardFn = Arc::new(move |q: &RewardQuery<'_>| {
        let func = functions.func(index).map_err(|e| e.to_string())?;
        let rows = data.select(q.rows);
        let n = q.rows.len() as i64;
        let own = [
            ("completion", Column::Str(q.completions.iter().map(|s| Arc::from(s.as_str())).collect())),
            ("tokens", Column::Int(q.tokens.to_vec())),
            ("step", Column::Int(vec![q.step as i64; n as usize])),
            ("total", Column::Int(vec![q.total as i64; n as usize])),
        ];
        // The rollout's own fields first: they shadow a row field of the same name.
        let columns: Vec<(&str, &Column)> =
            own.iter().map(|(k, c)| (*k, c)).chain(rows.columns.iter().map(|(k, c)| (k.as_str(), c))).collect();
        match batch::eval_batch(func, &columns).map_err(|e| e.to_string())? {
            Column::Float(v) => Ok(v),
            Column::Int(v) => Ok(v.into_iter().map(|x| x as f64).collect()),
            _ => Err("the reward did not return a number".to_string()),
        }
    });
    let dry = RewardQuery { rows: &[0], completions: &[String::new()], tokens: &[0], step: 0, total: 1 };
    reward(&dry).map_err(|e| call.invalid("reward", format!("cannot be evaluated on the rows: {e}")))?;
    Ok(reward)
}
