//! `pretrain(policy, dataset, ...)`: next-token training on every token of `prompt` +
//! `completion` (the objective is `train::pretrain`). It binds exactly as `sft` does — the
//! same settings, data checks and curricula — with its own objective.

use super::{Binding, Bound};
use crate::exec::ExecError;
use crate::train::PretrainObjective;

/// Decodes a `pretrain` call and checks that its data has `prompt` and `completion` and that
/// every row fits the policy's context.
pub(super) fn bind(b: &mut Binding<'_, '_>) -> Result<Bound, ExecError> {
    super::sft::bind_prompt_completion(b, |data| Ok(Box::new(PretrainObjective::new(data)?)))
}
