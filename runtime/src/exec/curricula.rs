//! Binding `curriculum = ...` arguments: the table of curriculum builtins this runtime
//! executes, each decoded once into a spec that builds a fresh [`Curriculum`] (at a stage's
//! start, at each round's, or to restore a checkpoint into). The schedulers themselves are in
//! `train/curriculum/`.
//!
//! A curriculum sees a stage's rows only through their indices and, for the difficulty-ordered
//! ones, one score per row from the recipe's `by` function (compiled by the JIT and evaluated
//! over the dataset's columns once, here), so every stage kind over any row type gets every
//! curriculum. A curriculum that trains in rounds (exclusive `buckets`) says so in its spec;
//! `exec` then runs the stage as one `run_stage` call per round. The online curricula of RL
//! stages (`online`) say so in their spec too: they see groups of rollouts, which only an
//! online experience source samples.

use super::args::{self, Call, Constant, Functions};
use super::settings::CHECKED_SCHEDULE_STEPS;
use super::ExecError;
use crate::data::Dataset;
use crate::train::curriculum::{sorted_rows, Order};
use crate::train::{Buckets, Curriculum, Ordered, Pacing, Uniform};
use recipe_compiler::batch;
use recipe_compiler::column::Column;
use recipe_compiler::program::Value;
use std::sync::Arc;

mod online;

pub(super) use online::BANDIT_POLICIES;

/// A curriculum builtin this runtime executes.
pub(super) struct CurriculumKind {
    pub name: &'static str,
    pub bind: fn(&Call<'_>, &CurriculumTarget<'_>) -> Result<CurriculumSpec, ExecError>,
}

/// Every curriculum builtin the runtime executes.
pub(super) const CURRICULA: &[CurriculumKind] = &[
    CurriculumKind { name: "uniform", bind: uniform },
    CurriculumKind { name: "ordered", bind: ordered },
    CurriculumKind { name: "pacing", bind: pacing },
    CurriculumKind { name: "buckets", bind: buckets },
    CurriculumKind { name: "band_pass", bind: online::band_pass },
    CurriculumKind { name: "variance_filter", bind: online::variance_filter },
    CurriculumKind { name: "replay", bind: online::replay },
    CurriculumKind { name: "bandit", bind: online::bandit },
    CurriculumKind { name: "target_tracking", bind: online::target_tracking },
];

/// What a curriculum schedules: a stage's rows, for a stage of `steps` optimiser steps.
pub(super) struct CurriculumTarget<'d> {
    stage: String,
    data: &'d Dataset,
    seed: u64,
    steps: u64,
    functions: &'d Arc<Functions>,
}

/// How a stage whose curriculum trains in rounds runs: `count` rounds (`run_stage` calls), the
/// reference re-bound to the previous round's model between them when `rebind_reference`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Rounds {
    pub count: u32,
    pub rebind_reference: bool,
}

/// A decoded curriculum: builds a fresh scheduler on demand, for round `r` of a stage in
/// rounds (0 otherwise).
pub(super) struct CurriculumSpec {
    build: Box<dyn Fn(u32) -> Result<Box<dyn Curriculum>, ExecError>>,
    rounds: Option<Rounds>,
    online: bool,
}

impl CurriculumSpec {
    fn one(build: impl Fn() -> Result<Box<dyn Curriculum>, ExecError> + 'static) -> CurriculumSpec {
        CurriculumSpec { build: Box::new(move |_| build()), rounds: None, online: false }
    }

    /// An online curriculum: one that needs each group's statistics.
    fn one_online(build: impl Fn() -> Result<Box<dyn Curriculum>, ExecError> + 'static) -> CurriculumSpec {
        CurriculumSpec { online: true, ..CurriculumSpec::one(build) }
    }

    /// A fresh scheduler for round `round` (0 for a curriculum without rounds).
    pub fn build(&self, round: u32) -> Result<Box<dyn Curriculum>, ExecError> {
        (self.build)(round)
    }

    /// Whether the stage trains in rounds, and how.
    pub fn rounds(&self) -> Option<Rounds> {
        self.rounds
    }

    /// Refuses an online curriculum (one that filters, banks or learns from groups of
    /// rollouts) for stage `stage`, whose call `call` trains offline on its rows as they are.
    ///
    /// Errors: `ExecError::Config` at `curriculum` naming it.
    pub fn check_offline(&self, call: &Call<'_>, stage: &str) -> Result<(), ExecError> {
        if !self.online {
            return Ok(());
        }
        let name = call.nested("curriculum")?.name;
        let message = format!(
            "is `{name}`, an online curriculum: it chooses among groups of rollouts, which stage `{stage}` does not \
             sample; use `uniform`, `ordered`, `pacing` or `buckets`, or an RL stage"
        );
        Err(call.invalid("curriculum", message))
    }
}

impl Constant for Order {
    const TYPE: &'static str = "Order";

    fn from_name(name: &str) -> Option<Order> {
        match name {
            "easy_first" => Some(Order::EasyFirst),
            "hard_first" => Some(Order::HardFirst),
            "shuffled" => Some(Order::Shuffled),
            _ => None,
        }
    }
}

/// The stdlib's `BucketMode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BucketMode {
    Exclusive,
    Cumulative,
}

impl Constant for BucketMode {
    const TYPE: &'static str = "BucketMode";

    fn from_name(name: &str) -> Option<BucketMode> {
        match name {
            "exclusive" => Some(BucketMode::Exclusive),
            "cumulative" => Some(BucketMode::Cumulative),
            _ => None,
        }
    }
}

/// Decodes the curriculum `call` of stage `stage` (of `steps` steps) over `data`.
///
/// Errors: `ExecError::Unsupported` at the argument for a curriculum this runtime does not
/// execute yet; `ExecError::Config` at the offending argument for values the curriculum cannot
/// use (a NaN difficulty, more buckets than rows, a pacing that is NaN at some step).
pub(super) fn bind(
    call: &Call<'_>,
    stage: &str,
    data: &Dataset,
    seed: u64,
    steps: u64,
    functions: &Arc<Functions>,
) -> Result<CurriculumSpec, ExecError> {
    let Some(kind) = CURRICULA.iter().find(|k| k.name == call.name) else {
        let e = ExecError::Unsupported(format!("the `{}` curriculum of stage `{stage}`", call.name));
        return Err(call.locate(e, None));
    };
    let target = CurriculumTarget { stage: stage.to_string(), data, seed, steps, functions };
    (kind.bind)(call, &target)
}

fn uniform(_call: &Call<'_>, target: &CurriculumTarget<'_>) -> Result<CurriculumSpec, ExecError> {
    let (stage, rows, seed) = (target.stage.clone(), target.data.len(), target.seed);
    Ok(CurriculumSpec::one(move || Ok(Box::new(Uniform::new(&stage, rows, seed)?) as Box<dyn Curriculum>)))
}

/// The call's `by` evaluated over every row of `target` (an Int or a Float per row).
///
/// Errors: `ExecError::Config` at `by` when it cannot be evaluated over the rows.
fn scores(call: &Call<'_>, target: &CurriculumTarget<'_>) -> Result<Column, ExecError> {
    let Value::Scalar(index) = call.get("by")? else {
        return Err(ExecError::Internal(format!("`{}`: `by` is not a scalar function", call.name)));
    };
    let func = target.functions.func(*index)?;
    let columns: Vec<(&str, &Column)> = target.data.columns.iter().map(|(n, c)| (n.as_str(), c)).collect();
    batch::eval_batch(func, &columns).map_err(|e| call.invalid("by", e))
}

/// The rows of `target` in the call's `order` by its `by` scores.
///
/// Errors: `ExecError::Config` at `by` naming the first row whose score is NaN.
fn sorted(call: &Call<'_>, target: &CurriculumTarget<'_>) -> Result<Vec<usize>, ExecError> {
    let data = target.data;
    let scores = match scores(call, target)? {
        Column::Float(v) => v,
        Column::Int(v) => v.into_iter().map(|x| x as f64).collect(),
        _ => return Err(ExecError::Internal(format!("`{}`: `by` did not return a number", call.name))),
    };
    if let Some(row) = scores.iter().position(|s| s.is_nan()) {
        return Err(call.invalid("by", format!("is NaN for {}: a difficulty must be a number", data.row_name(row))));
    }
    Ok(sorted_rows(&target.stage, &scores, call.constant("order")?, target.seed)?)
}

fn ordered(call: &Call<'_>, target: &CurriculumTarget<'_>) -> Result<CurriculumSpec, ExecError> {
    let order = sorted(call, target)?;
    let stage = target.stage.clone();
    Ok(CurriculumSpec::one(move || Ok(Box::new(Ordered::new(&stage, order.clone())?) as Box<dyn Curriculum>)))
}

fn pacing(call: &Call<'_>, target: &CurriculumTarget<'_>) -> Result<CurriculumSpec, ExecError> {
    let order = sorted(call, target)?;
    let until = call.float("until")?;
    if !(until > 0.0 && until <= 1.0) {
        return Err(call.invalid("until", format!("must be in (0, 1], found {until}")));
    }
    let pace = args::schedule(call, "pace", target.functions)?;
    // A NaN fraction has no meaning; checked at every step where that is cheap.
    if target.steps <= CHECKED_SCHEDULE_STEPS {
        if let Some(step) = (0..target.steps).find(|&s| pace.at(s, target.steps).is_nan()) {
            let name = pace.name().unwrap_or("pace").to_string();
            let message = format!("(schedule `{name}`) is NaN at step = {step} of total = {}", target.steps);
            return Err(call.invalid("pace", message));
        }
    }
    let (stage, seed) = (target.stage.clone(), target.seed);
    Ok(CurriculumSpec::one(move || {
        Ok(Box::new(Pacing::new(&stage, order.clone(), pace.clone(), until, seed)?) as Box<dyn Curriculum>)
    }))
}

fn buckets(call: &Call<'_>, target: &CurriculumTarget<'_>) -> Result<CurriculumSpec, ExecError> {
    let rows = target.data.len();
    let count = call.int("count")?;
    if count < 1 || count as u64 > rows as u64 {
        return Err(call.invalid("count", format!("must be in 1..={rows} (the dataset's rows), found {count}")));
    }
    let count = count as usize;
    let order = sorted(call, target)?;
    let (stage, seed) = (target.stage.clone(), target.seed);
    match call.constant::<BucketMode>("mode")? {
        BucketMode::Cumulative => Ok(CurriculumSpec::one(move || {
            Ok(Box::new(Buckets::cumulative(&stage, order.clone(), count, seed)?) as Box<dyn Curriculum>)
        })),
        BucketMode::Exclusive => Ok(CurriculumSpec {
            build: Box::new(move |round| {
                Ok(Box::new(Buckets::exclusive(&stage, &order, count, round, seed)?) as Box<dyn Curriculum>)
            }),
            rounds: Some(Rounds { count: count as u32, rebind_reference: call.bool("rebind_reference")? }),
            online: false,
        }),
    }
}
