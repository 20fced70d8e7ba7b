//! Binding the online curricula of RL stages (`band_pass`, `variance_filter`, `replay`,
//! `bandit`, `target_tracking`). Their recipe functions of group statistics (`replay`'s
//! `keep`, `bandit`'s `update`) take a record; the compiler flattens a record parameter into
//! one parameter per field it reads, named like the field, so they are evaluated by
//! `batch::eval_batch` over one column per field of `GroupStats` or `ArmState`, one row per
//! group or arm — the way `by` is evaluated over a dataset's columns. Each function is called
//! once at binding on a probe row, so a function that cannot be evaluated fails before compute.

use super::{scores, CurriculumSpec, CurriculumTarget};
use crate::exec::args::{Call, Functions};
use crate::exec::ExecError;
use crate::train::curriculum::{
    ArmState, BandPass, Bandit, BanditPolicy, Curriculum, GroupFn, GroupStats, Replay, TargetTracking, TargetUpdate,
    VarianceFilter,
};
use recipe_compiler::batch;
use recipe_compiler::column::Column;
use recipe_compiler::program::Value;

/// The bandit policies (`BanditPolicy` builtins) `bandit` executes.
pub(in crate::exec) const BANDIT_POLICIES: &[&str] = &["boltzmann", "ucb"];

pub(super) fn band_pass(call: &Call<'_>, target: &CurriculumTarget<'_>) -> Result<CurriculumSpec, ExecError> {
    let (low, high) = (call.float("low")?, call.float("high")?);
    if low.is_nan() || high.is_nan() || low > high {
        return Err(call.invalid("high", format!("is {high}, below `low` = {low}: no pass rate is in the band")));
    }
    let max_rounds =
        u32::try_from(call.count("max_rounds")?).map_err(|_| call.invalid("max_rounds", "is too large"))?;
    let rounds = if call.bool("refill")? { max_rounds } else { 0 };
    let (stage, rows, seed) = (target.stage.clone(), target.data.len(), target.seed);
    Ok(CurriculumSpec::one_online(move || {
        Ok(Box::new(BandPass::new(&stage, rows, seed, low, high, rounds)?) as Box<dyn Curriculum>)
    }))
}

pub(super) fn variance_filter(call: &Call<'_>, target: &CurriculumTarget<'_>) -> Result<CurriculumSpec, ExecError> {
    let (kappa, replay) = (call.float("kappa")?, call.float("replay")?);
    let (stage, rows, seed) = (target.stage.clone(), target.data.len(), target.seed);
    Ok(CurriculumSpec::one_online(move || {
        Ok(Box::new(VarianceFilter::new(&stage, rows, seed, kappa, replay)?) as Box<dyn Curriculum>)
    }))
}

pub(super) fn replay(call: &Call<'_>, target: &CurriculumTarget<'_>) -> Result<CurriculumSpec, ExecError> {
    let fraction = call.float("fraction")?;
    let capacity = call.count("capacity")? as usize;
    let keep = function(call, "keep", target.functions)?;
    probe(call, "keep", target.functions, keep, &group_columns(&[GroupStats::default()]), ColumnKind::Bool)?;
    let (stage, rows, seed, functions) =
        (target.stage.clone(), target.data.len(), target.seed, target.functions.clone());
    Ok(CurriculumSpec::one_online(move || {
        let functions = functions.clone();
        let keep: GroupFn<GroupStats, bool> =
            Box::new(move |groups: &[GroupStats]| match evaluate(&functions, keep, &group_columns(groups))? {
                Column::Bool(kept) => Ok(kept),
                other => Err(format!("returned {other:?}, not a Bool per group")),
            });
        Ok(Box::new(Replay::new(&stage, rows, seed, fraction, capacity, keep)?) as Box<dyn Curriculum>)
    }))
}

pub(super) fn bandit(call: &Call<'_>, target: &CurriculumTarget<'_>) -> Result<CurriculumSpec, ExecError> {
    let by = match scores(call, target)? {
        Column::Int(v) => v,
        _ => return Err(ExecError::Internal("`bandit`: `by` did not return an Int".into())),
    };
    let policy_call = call.nested("policy")?;
    let policy = match policy_call.name {
        "boltzmann" => BanditPolicy::Boltzmann { tau: policy_call.float("tau")? },
        "ucb" => BanditPolicy::Ucb { c: policy_call.float("c")? },
        other => return Err(ExecError::Internal(format!("`bandit`: unknown policy `{other}`"))),
    };
    let update = function(call, "update", target.functions)?;
    let probe_arm = ArmState { q: 0.0, signal: 0.0, count: 1, step: 0 };
    probe(call, "update", target.functions, update, &arm_columns(&[probe_arm]), ColumnKind::Float)?;
    let (stage, seed, functions) = (target.stage.clone(), target.seed, target.functions.clone());
    Ok(CurriculumSpec::one_online(move || {
        let functions = functions.clone();
        let update: GroupFn<ArmState, f64> =
            Box::new(move |arms: &[ArmState]| match evaluate(&functions, update, &arm_columns(arms))? {
                Column::Float(q) => Ok(q),
                other => Err(format!("returned {other:?}, not a Float per arm")),
            });
        Ok(Box::new(Bandit::new(&stage, &by, seed, policy, update)?) as Box<dyn Curriculum>)
    }))
}

pub(super) fn target_tracking(call: &Call<'_>, target: &CurriculumTarget<'_>) -> Result<CurriculumSpec, ExecError> {
    let difficulty = match scores(call, target)? {
        Column::Float(v) => v,
        Column::Int(v) => v.into_iter().map(|x| x as f64).collect(),
        _ => return Err(ExecError::Internal("`target_tracking`: `by` did not return a number".into())),
    };
    if let Some(row) = difficulty.iter().position(|d| !d.is_finite()) {
        let message =
            format!("is {} for {}: a difficulty must be a finite number", difficulty[row], target.data.row_name(row));
        return Err(call.invalid("by", message));
    }
    let start = call.float("start")?;
    if !start.is_finite() {
        return Err(call.invalid("start", format!("must be a finite number, found {start}")));
    }
    let update = function(call, "update", target.functions)?;
    let probed = target.functions.call_numeric(update, &[start, 0.0]).map_err(|e| call.invalid("update", e))?;
    if !probed.is_finite() {
        return Err(call.invalid("update", format!("is {probed} at the start (t = {start}, reward = 0)")));
    }
    let (stage, seed, functions) = (target.stage.clone(), target.seed, target.functions.clone());
    Ok(CurriculumSpec::one_online(move || {
        let functions = functions.clone();
        let update: TargetUpdate =
            Box::new(move |t, reward| functions.call_numeric(update, &[t, reward]).map_err(|e| e.to_string()));
        Ok(Box::new(TargetTracking::new(&stage, difficulty.clone(), seed, start, update)?) as Box<dyn Curriculum>)
    }))
}

/// The scalar function passed as `arg`.
fn function(call: &Call<'_>, arg: &str, functions: &Functions) -> Result<u32, ExecError> {
    match call.get(arg)? {
        Value::Scalar(index) => {
            functions.func(*index)?;
            Ok(*index)
        }
        _ => Err(ExecError::Internal(format!("`{}`: `{arg}` is not a scalar function", call.name))),
    }
}

/// Scalar function `index` over `columns`, one result per row.
fn evaluate(functions: &Functions, index: u32, columns: &[(String, Column)]) -> Result<Column, String> {
    let func = functions.func(index).map_err(|e| e.to_string())?;
    let columns: Vec<(&str, &Column)> = columns.iter().map(|(n, c)| (n.as_str(), c)).collect();
    batch::eval_batch(func, &columns).map_err(|e| e.to_string())
}

#[derive(Clone, Copy, PartialEq)]
enum ColumnKind {
    Bool,
    Float,
}

/// Evaluates function `index`, passed as `arg`, on a probe row: an error at the argument
/// when it cannot be evaluated or returns another type than `kind`.
fn probe(
    call: &Call<'_>,
    arg: &str,
    functions: &Functions,
    index: u32,
    columns: &[(String, Column)],
    kind: ColumnKind,
) -> Result<(), ExecError> {
    match (evaluate(functions, index, columns), kind) {
        (Ok(Column::Bool(_)), ColumnKind::Bool) | (Ok(Column::Float(_)), ColumnKind::Float) => Ok(()),
        (Ok(other), _) => Err(ExecError::Internal(format!("`{}`: `{arg}` returned {other:?}", call.name))),
        (Err(e), _) => Err(call.invalid(arg, e)),
    }
}

/// `GroupStats` as columns named after its fields (its feedback columns, `size` an Int as the
/// stdlib's record has it), one row per group.
fn group_columns(groups: &[GroupStats]) -> Vec<(String, Column)> {
    let columns = GroupStats::feedback(groups).columns.into_iter();
    columns
        .map(|(name, values)| match name.as_str() {
            "size" => (name, Column::Int(values.iter().map(|&v| v as i64).collect())),
            _ => (name, Column::Float(values)),
        })
        .collect()
}

/// `ArmState` as columns named after its fields, one row per arm.
fn arm_columns(arms: &[ArmState]) -> Vec<(String, Column)> {
    vec![
        ("q".into(), Column::Float(arms.iter().map(|a| a.q).collect())),
        ("signal".into(), Column::Float(arms.iter().map(|a| a.signal).collect())),
        ("count".into(), Column::Int(arms.iter().map(|a| a.count as i64).collect())),
        ("step".into(), Column::Int(arms.iter().map(|a| a.step as i64).collect())),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::bind;
    use super::*;
    use crate::exec::build::Builder;
    use crate::model::Device;
    use crate::train::curriculum::Feedback;
    use recipe_compiler::diag::Source;
    use recipe_compiler::program::Program;
    use std::sync::Arc;

    /// The program of a recipe whose stage `s` (an RL stage) has the curriculum `curriculum`.
    fn program(curriculum: &str) -> Program {
        let recipe = format!(
            "recipe \"t\" {{ seed = 3 }}\nmodel m = tiny_lm()\ndata d = synth.addition(digits = 1..=3, count = 60)\n\
             stage s = rl(m, d, reward = |r| 1.0, curriculum = {curriculum})\nrun s\n"
        );
        recipe_compiler::compile(&Source::new("t.recipe", recipe.as_str()), &[])
            .unwrap_or_else(|e| panic!("{:?}", e.iter().map(|d| &d.message).collect::<Vec<_>>()))
    }

    /// Binds stage `s`'s curriculum of `program` over its data, for a stage of 10 steps.
    fn spec(program: &Program) -> Result<CurriculumSpec, ExecError> {
        let functions = Arc::new(Functions::new(&program.scalar).unwrap());
        let mut builder = Builder::new(program, Device::Cpu, vec![], functions.clone());
        let data = builder.dataset(&Value::Data("d".into())).unwrap();
        let call = Call::of_decl(program, "s").unwrap().nested("curriculum").unwrap();
        bind(&call, "s", &data, 3, 10, &functions)
    }

    fn built(curriculum: &str) -> Box<dyn Curriculum> {
        spec(&program(curriculum)).unwrap().build(0).unwrap()
    }

    fn metric(c: &dyn Curriculum, name: &str) -> f64 {
        c.metrics().into_iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no {name}")).1
    }

    fn groups(g: GroupStats, n: usize) -> Feedback {
        GroupStats::feedback(&vec![g; n])
    }

    /// The default `update` reads `alpha` of the `bandit` call: the compiler substitutes it.
    #[test]
    fn the_default_bandit_update_closes_over_alpha() {
        let mut c = built("bandit(by = |r| r.digits, policy = ucb(c = 0.0), alpha = 0.25)");
        let rows = c.next_rows(0, 10, 4).unwrap();
        assert_eq!(metric(&*c, "curriculum/arm"), 1.0, "UCB tries the lowest arm first");
        let signal = GroupStats { mean_abs_advantage: 1.0, size: 8, ..GroupStats::default() };
        c.observe(&rows, &groups(signal, 4));
        assert_eq!(metric(&*c, "curriculum/q/1"), 0.25, "0.25 * 1 + 0.75 * 0");
        c.observe(&rows, &groups(signal, 4));
        assert_eq!(metric(&*c, "curriculum/q/1"), 0.25 + 0.75 * 0.25);
        assert_eq!(metric(&*c, "curriculum/q/2"), 0.0);
        // A written update reads the count and step too.
        let mut c = built("bandit(by = |r| r.digits, update = |s| s.q + float(s.count) + float(s.step))");
        let rows = c.next_rows(4, 10, 2).unwrap();
        c.observe(&rows, &groups(signal, 2));
        let arm = metric(&*c, "curriculum/arm");
        assert_eq!(metric(&*c, &format!("curriculum/q/{arm}")), 1.0 + 4.0);
    }

    #[test]
    fn replay_banks_the_groups_its_keep_function_chooses() {
        let mut c = built("replay(fraction = 0.5, capacity = 8)");
        let rows = c.next_rows(0, 10, 4).unwrap();
        let mut stats = vec![GroupStats { variance: 0.5, size: 4, ..GroupStats::default() }; 4];
        stats[1].variance = 0.0;
        c.observe(&rows, &GroupStats::feedback(&stats));
        assert_eq!(metric(&*c, "curriculum/bank"), 3.0, "the default keeps `g.variance > 0.0`");
        let mut c = built("replay(keep = |g| g.size >= 4 && g.pass_rate < 1.0)");
        let rows = c.next_rows(0, 10, 3).unwrap();
        let g = |pass_rate, size| GroupStats { pass_rate, size, ..GroupStats::default() };
        c.observe(&rows, &GroupStats::feedback(&[g(0.5, 4), g(1.0, 4), g(0.5, 3)]));
        assert_eq!(metric(&*c, "curriculum/bank"), 1.0);
    }

    #[test]
    fn target_tracking_evaluates_adarft_by_default() {
        let mut c = built(
            "target_tracking(by = |r| float(r.digits), target = 0.5, eta = 0.5, alpha = 2.0, d_min = 1.0, \
             d_max = 5.0, start = 1.0)",
        );
        let rows = c.next_rows(0, 10, 4).unwrap();
        assert_eq!(metric(&*c, "curriculum/difficulty"), 1.0, "the rows of 1 digit are nearest 1");
        c.observe(&rows, &groups(GroupStats { reward: 0.9, size: 8, ..GroupStats::default() }, 4));
        assert_eq!(metric(&*c, "curriculum/target"), 1.0 + 0.5 * f64::tanh(2.0 * 0.4));
    }

    #[test]
    fn arguments_the_curricula_cannot_use_are_refused_at_them() {
        let err = spec(&program("band_pass(low = 0.8, high = 0.2)")).err().unwrap().to_string();
        assert!(err.contains("`high` is 0.2, below `low` = 0.8"), "{err}");
        let c = built("band_pass(refill = false)");
        assert_eq!(c.refill_rounds(), 0);
        assert_eq!(built("band_pass(max_rounds = 2)").refill_rounds(), 2);
        let err = spec(&program("target_tracking(by = |r| float(r.digits), update = |t, r| t / 0.0 * 0.0)")).err();
        assert!(err.unwrap().to_string().contains("`update` is NaN at the start"));
    }

    /// An offline stage trains on its rows as they are: it refuses a curriculum of groups.
    #[test]
    fn offline_stages_refuse_online_curricula() {
        let program = program("variance_filter()");
        let stage = Call::of_decl(&program, "s").unwrap();
        let err = spec(&program).unwrap().check_offline(&stage, "s").unwrap_err().to_string();
        assert!(err.contains("`variance_filter`, an online curriculum"), "{err}");
        assert!(spec(&self::program("uniform()")).unwrap().check_offline(&stage, "s").is_ok());
    }
}
