//! Judging generated completions with a recipe function: `judge(r)` over a row's fields with
//! `completion` set to what the model wrote (`pass_rate`'s and `group_variance`'s `judge`,
//! `judged_accuracy`'s). The dataset's own `completion`, if it has one, is replaced.

use crate::data::Dataset;
use crate::exec::args::Functions;
use recipe_compiler::batch;
use recipe_compiler::column::Column;
use std::sync::Arc;

/// `judge` (a scalar function id of `functions`) of each `rows[i]` of `data` with `completion`
/// = `completions[i]`, evaluated over columns (JIT-compiled, in parallel).
///
/// Errors: the function is missing or not Bool, or reads a field `data` lacks (a message).
pub(super) fn judgements(
    functions: &Functions,
    judge: u32,
    data: &Dataset,
    rows: &[usize],
    completions: Vec<Arc<str>>,
) -> Result<Vec<bool>, String> {
    let func = functions.func(judge).map_err(|e| e.to_string())?;
    let completion = Column::Str(completions);
    // Only the fields the judge reads, each row repeated once per completion of it.
    let read: Vec<&str> = func.function().params.iter().map(|p| p.name.as_str()).collect();
    let fields = Dataset {
        origin: data.origin.clone(),
        ids: data.ids.clone(),
        columns: data
            .columns
            .iter()
            .filter(|(n, _)| n != "completion" && read.contains(&n.as_str()))
            .cloned()
            .collect(),
        sources: Vec::new(),
        messages: data.messages.clone(),
    };
    let selected = fields.select(rows);
    let mut named: Vec<(&str, &Column)> = selected.columns.iter().map(|(n, c)| (n.as_str(), c)).collect();
    named.push(("completion", &completion));
    match batch::eval_batch(func, &named).map_err(|e| e.to_string())? {
        Column::Bool(passed) => Ok(passed),
        other => Err(format!("returned {other:?}, not a Bool per completion")),
    }
}
