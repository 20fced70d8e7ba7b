//! `sft(policy, dataset, ...)`: completion-only supervised fine-tuning on `prompt` →
//! `completion` rows (the objective is `train::sft`).

use super::{Binding, Bound};
use crate::exec::curricula;
use crate::exec::models::ModelRef;
use crate::exec::settings::TrainSettings;
use crate::exec::ExecError;
use crate::train::{SftObjective, StageParts};

/// Decodes an `sft` call and checks that its data has the fields it trains on and that every
/// row fits the policy's context.
pub(super) fn bind(b: &mut Binding<'_, '_>) -> Result<Bound, ExecError> {
    let settings = TrainSettings::decode(&b.call, &b.builder.functions, b.max_steps)?;
    let data = b.dataset()?;
    for field in ["prompt", "completion"] {
        if data.column(field).is_none() {
            let e =
                ExecError::Config(format!("stage `{}`: its data ({}) has no `{field}` field", b.stage, data.origin));
            return Err(b.call.locate(e, Some("dataset")));
        }
    }
    let limits = b.limits("policy")?;
    super::check_training_rows(&format!("stage `{}`", b.stage), &data, &limits.tokenizer, limits.context)
        .map_err(|e| b.call.locate(e, Some("dataset")))?;
    let curriculum = curricula::bind(&b.call.nested("curriculum")?, b.stage, &data, b.builder.seed)?;
    Ok(Bound {
        policy: ModelRef::of(b.call.get("policy")?)?,
        reference: None,
        settings,
        parts: Box::new(move || {
            let objective = SftObjective::new(&data)?;
            Ok(StageParts::offline(curriculum.build()?, &data, Box::new(objective)))
        }),
    })
}
