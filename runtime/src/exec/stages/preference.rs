//! `preference(policy, dataset, reference, loss, ...)`: preference optimisation on
//! `prompt`/`chosen`/`rejected` rows against a frozen reference, with the recipe's loss (the
//! objective is `train::preference`).
//!
//! Everything that needs no compute is checked here: the fields, every pair against the policy's
//! context, empty prompts, and that the loss reads only fields a preference batch
//! has. `reference = policy` (the default) is the policy as the stage starts: the model store
//! freezes a copy of what the policy argument names, never the live policy. In rounds
//! (exclusive `buckets`), round r scores against round r − 1's model when the curriculum says
//! `rebind_reference` (`rounds.rs`); each round's objective scores its reference afresh.

use super::{Binding, Bound};
use crate::exec::args::Functions;
use crate::exec::settings::TrainSettings;
use crate::exec::ExecError;
use crate::train::preference::{Pairs, PairsError, PreferenceObjective};
use crate::train::StageParts;
use recipe_compiler::program::Value;
use std::sync::Arc;

/// Decodes a `preference` call.
///
/// Errors, at the argument: a dataset without `prompt`, `chosen` or `rejected`, or with a row
/// that does not fit the policy's context or has an empty prompt (naming the row);
/// a loss that reads a field no preference batch has.
pub(super) fn bind(b: &mut Binding<'_, '_>) -> Result<Bound, ExecError> {
    let settings = TrainSettings::decode(&b.call, &b.builder.functions, b.max_steps)?;
    let data = b.dataset()?;
    for field in ["prompt", "chosen", "rejected"] {
        if data.column(field).is_none() {
            let e =
                ExecError::Config(format!("stage `{}`: its data ({}) has no `{field}` field", b.stage, data.origin));
            return Err(b.call.locate(e, Some("dataset")));
        }
    }
    let limits = b.limits("policy")?;
    let pairs = Pairs::tokenize(&data, &limits.tokenizer, limits.context).map_err(|e| {
        let e = match e {
            PairsError::Data(e) => ExecError::Data(e),
            PairsError::Model(e) => ExecError::Model(e),
            other => ExecError::Config(format!("stage `{}`: {other}", b.stage)),
        };
        b.call.locate(e, Some("dataset"))
    })?;
    let terms = match b.call.get("loss")? {
        Value::Loss(terms) => terms.clone(),
        other => return Err(ExecError::Internal(format!("`loss` of `preference` is {other:?}, not a loss"))),
    };
    let scalars = Functions::numeric(&b.builder.functions);
    let pairs = Arc::new(pairs);
    // Checks the loss's fields now, before any compute.
    PreferenceObjective::new(b.stage, pairs.clone(), terms.clone(), scalars.clone())
        .map_err(|e| b.call.invalid("loss", format!("cannot be evaluated on preference pairs: {}", e.0)))?;
    let curriculum = b.curriculum(&data, &settings)?;
    curriculum.check_offline(&b.call, b.stage)?;
    let rounds = b.round_plan(&curriculum, &settings)?;
    let stage = b.stage.to_string();
    Ok(Bound {
        policy: b.model("policy")?,
        reference: Some(b.model("reference")?),
        settings,
        rounds,
        parts: Box::new(move |round| {
            let objective = PreferenceObjective::new(&stage, pairs.clone(), terms.clone(), scalars.clone())
                .map_err(|e| ExecError::Internal(e.0))?;
            Ok(StageParts::offline(curriculum.build(round)?, &data, Box::new(objective)))
        }),
    })
}
