//! Binding `curriculum = ...` arguments: the table of curriculum builtins this runtime
//! executes, each decoded once into a spec that builds a fresh [`Curriculum`] (at a stage's
//! start, or to restore a checkpoint into). The schedulers themselves are in
//! `train/curriculum/`.

use super::args::Call;
use super::ExecError;
use crate::data::Dataset;
use crate::train::{Curriculum, Uniform};

/// A curriculum builtin this runtime executes.
pub(super) struct CurriculumKind {
    pub name: &'static str,
    pub bind: fn(&Call<'_>, &CurriculumTarget) -> Result<CurriculumSpec, ExecError>,
}

/// Every curriculum builtin the runtime executes.
pub(super) const CURRICULA: &[CurriculumKind] = &[CurriculumKind { name: "uniform", bind: uniform }];

/// What a curriculum schedules: a stage's rows.
pub(super) struct CurriculumTarget {
    stage: String,
    rows: usize,
    seed: u64,
}

/// A decoded curriculum: builds a fresh scheduler on demand.
pub(super) struct CurriculumSpec(Box<dyn Fn() -> Result<Box<dyn Curriculum>, ExecError>>);

impl CurriculumSpec {
    pub fn build(&self) -> Result<Box<dyn Curriculum>, ExecError> {
        (self.0)()
    }
}

/// Decodes the curriculum `call` of stage `stage` over `data`.
///
/// Errors: `ExecError::Unsupported` at the argument for a curriculum this runtime does not
/// execute yet.
pub(super) fn bind(call: &Call<'_>, stage: &str, data: &Dataset, seed: u64) -> Result<CurriculumSpec, ExecError> {
    let Some(kind) = CURRICULA.iter().find(|k| k.name == call.name) else {
        let e = ExecError::Unsupported(format!("the `{}` curriculum of stage `{stage}`", call.name));
        return Err(call.locate(e, None));
    };
    let target = CurriculumTarget { stage: stage.to_string(), rows: data.len(), seed };
    (kind.bind)(call, &target)
}

fn uniform(_call: &Call<'_>, target: &CurriculumTarget) -> Result<CurriculumSpec, ExecError> {
    let (stage, rows, seed) = (target.stage.clone(), target.rows, target.seed);
    Ok(CurriculumSpec(Box::new(move || Ok(Box::new(Uniform::new(&stage, rows, seed)?) as Box<dyn Curriculum>))))
}
