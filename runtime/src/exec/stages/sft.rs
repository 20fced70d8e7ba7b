//! `sft(policy, dataset, ...)`: completion-only supervised fine-tuning on `prompt` →
//! `completion` rows (the objective is `train::sft`). Also the binding `pretrain` shares: the
//! two differ only in their objective.

use super::{Binding, Bound};
use crate::data::Dataset;
use crate::exec::settings::TrainSettings;
use crate::exec::ExecError;
use crate::train::{Objective, SftObjective, StageParts, TrainError};

/// Decodes an `sft` call and checks that its data has the fields it trains on and that every
/// row fits the policy's context.
pub(super) fn bind(b: &mut Binding<'_, '_>) -> Result<Bound, ExecError> {
    bind_prompt_completion(b, |data| Ok(Box::new(SftObjective::new(data)?)))
}

/// Binds a stage that trains `objective` on `prompt` → `completion` rows: the shared settings,
/// the dataset (both fields present, every row within the policy's context), the curriculum
/// (an offline one, and its rounds) and no reference.
pub(super) fn bind_prompt_completion(
    b: &mut Binding<'_, '_>,
    objective: fn(&Dataset) -> Result<Box<dyn Objective>, TrainError>,
) -> Result<Bound, ExecError> {
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
    let curriculum = b.curriculum(&data, &settings)?;
    curriculum.check_offline(&b.call, b.stage)?;
    let rounds = b.round_plan(&curriculum, &settings)?;
    Ok(Bound {
        policy: b.model("policy")?,
        reference: None,
        settings,
        rounds,
        parts: Box::new(move |round| {
            let objective = objective(&data)?;
            Ok(StageParts::offline(curriculum.build(round)?, &data, objective))
        }),
    })
}
