//! What builtins need of dataset rows: the fields each stage, evaluation and data builtin reads
//! from the rows of its `dataset` argument (one table, [`ROW_NEEDS`]), and the row type `map`
//! produces. A row type without a needed field is `recipe::call::missing_field` at the dataset
//! argument, so `check` refuses what `run` would stop at.

use super::Checker;
use crate::ast::{self, Arg, Span};
use crate::diag::Diagnostic;
use crate::types::Ty;

/// The types a needed field may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `String`.
    Text,
    /// `String` or `Messages` (TRL's standard and conversational rows).
    Chat,
    /// `Messages`.
    Conversation,
    /// Any scalar (the field is compared as text: `split`'s key).
    Scalar,
}

impl Kind {
    fn accepts(self, ty: &Ty) -> bool {
        match self {
            Kind::Text => *ty == Ty::String,
            Kind::Chat => matches!(ty, Ty::String | Ty::Messages),
            Kind::Conversation => *ty == Ty::Messages,
            Kind::Scalar => is_row_scalar(ty),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Kind::Text => "String",
            Kind::Chat => "String or Messages",
            Kind::Conversation => "Messages",
            Kind::Scalar => "String, Int, Float, Bool or Messages",
        }
    }
}

/// One field a builtin reads: any one of the names (`completion`, else `answer`), of a kind.
type Need = (&'static [&'static str], Kind);

/// Per builtin, the row layouts it reads; rows must have every field of one layout. Derived from
/// what the runtime's bindings read (`runtime/src/exec/stages/*.rs`, `exec/evals.rs`,
/// `exec/build.rs`, `data/perturb.rs`): TRL's prompt/completion (or conversational `messages`)
/// for supervised stages, prompt/chosen/rejected for preference data, `prompt` for the stages
/// that generate from prompts. `score`'s needs depend on its measure and are the runtime's.
const ROW_NEEDS: &[(&str, &[&[Need]])] = &[
    ("sft", &[&[(&["prompt"], Kind::Chat), (&["completion"], Kind::Chat)], &[(&["messages"], Kind::Conversation)]]),
    (
        "pretrain",
        &[&[(&["prompt"], Kind::Chat), (&["completion"], Kind::Chat)], &[(&["messages"], Kind::Conversation)]],
    ),
    ("preference", &[&[(&["prompt"], Kind::Chat), (&["chosen"], Kind::Chat), (&["rejected"], Kind::Chat)]]),
    ("rl", &[&[(&["prompt"], Kind::Chat)]]),
    ("self_pairs", &[&[(&["prompt"], Kind::Chat)]]),
    ("contrast_pairs", &[&[(&["completion", "answer"], Kind::Text)]]),
    ("accuracy", &[&[(&["prompt"], Kind::Chat), (&["completion", "answer"], Kind::Chat)]]),
    ("judged_accuracy", &[&[(&["prompt"], Kind::Chat)]]),
    ("pair_accuracy", &[&[(&["prompt"], Kind::Chat), (&["chosen"], Kind::Chat), (&["rejected"], Kind::Chat)]]),
    ("loss_on", &[&[(&["prompt"], Kind::Chat), (&["completion"], Kind::Chat)]]),
    ("perturb", &[&[(&["prompt"], Kind::Text)]]),
    ("split", &[&[(&["prompt"], Kind::Scalar)]]),
];

/// The types a row field may have: what a JSONL file holds and a column stores.
pub fn is_row_scalar(ty: &Ty) -> bool {
    matches!(ty, Ty::String | Ty::Int | Ty::Float | Ty::Bool | Ty::Messages)
}

impl<'a> Checker<'a> {
    /// Reports the fields `name` reads from its `dataset` argument's rows (see [`ROW_NEEDS`])
    /// that the row type lacks or has with another type: at the argument, or at the callee when
    /// the dataset is not written.
    pub(super) fn check_row_needs(
        &mut self,
        name: &str,
        ext: &ast::ExternFn,
        args: &[Arg],
        slots: &[Option<usize>],
        ptys: &[Ty],
        callee_span: Span,
    ) {
        let Some((_, layouts)) = ROW_NEEDS.iter().find(|(n, _)| *n == name) else { return };
        let Some(p) = ext.params.iter().position(|p| p.name.name == "dataset") else { return };
        let Ty::Opaque(_, row) = self.subst.resolve(&ptys[p]) else { return };
        let Some(row @ Ty::Record(_)) = row.first() else { return };
        let missing = |layout: &[Need]| -> Vec<Need> {
            layout
                .iter()
                .filter(|(names, kind)| !names.iter().any(|f| row.field(f).is_some_and(|t| kind.accepts(t))))
                .copied()
                .collect()
        };
        if layouts.iter().any(|l| missing(l).is_empty()) {
            return;
        }
        // Report against the layout whose field names the rows have most of; the first on a tie.
        let named = |l: &[Need]| l.iter().filter(|(names, _)| names.iter().any(|f| row.field(f).is_some())).count();
        let Some(best) = layouts.iter().rev().max_by_key(|l| named(l)) else { return };
        let closest = missing(best);
        let display = super::display_name(name);
        let plural = if closest.len() > 1 { "s" } else { "" };
        let span = slots[p].map_or(callee_span, |i| args[i].value.span);
        let layouts: Vec<String> = layouts.iter().map(|l| describe(l)).collect();
        self.report(
            Diagnostic::error(
                "recipe::call::missing_field",
                format!("`{display}` reads the field{plural} {}, which its dataset's rows lack", describe(&closest)),
            )
            .with_primary(span, format!("rows of type `{row}`"))
            .with_help(format!(
                "`{display}` reads {} of each row; compute them from the fields the rows have with `map`, \
                 e.g. `map(data, |r| {{prompt: r.question, completion: r.answer}})`",
                layouts.join(", or ")
            )),
        );
    }

    /// `map`'s function must give a record of row scalars (the new row type); reports otherwise
    /// at the function argument.
    pub(super) fn check_map_rows(&mut self, args: &[Arg], slots: &[Option<usize>], ptys: &[Ty], callee_span: Span) {
        // `map(dataset, f)`: `f` is the second parameter.
        let Ty::Fn(_, ret) = self.subst.resolve(&ptys[1]) else { return };
        let span = slots[1].map_or(callee_span, |i| args[i].value.span);
        let problem = match &*ret {
            Ty::Error | Ty::Var(_) => return,
            Ty::Record(fields) => match fields.iter().find(|(_, t)| !is_row_scalar(t) && !t.is_error()) {
                Some((name, t)) => format!("its field `{name}` is `{t}`"),
                None => return,
            },
            other => format!("it returns `{other}`, not a record"),
        };
        self.report(
            Diagnostic::error("recipe::type::mismatch", format!("`map`'s function must return a row: {problem}"))
                .with_primary(span, format!("this returns `{ret}`"))
                .with_help(
                    "return a record of String, Int, Float, Bool and Messages fields, e.g. \
                     `|r| {prompt: r.question, completion: r.answer}`",
                ),
        );
    }
}

/// Fields as a phrase, a kind said once per run of fields of that kind:
/// `` `prompt` and `completion` (or `answer`) (String) ``.
fn describe(needs: &[Need]) -> String {
    let mut groups: Vec<(Kind, Vec<String>)> = Vec::new();
    for (names, kind) in needs {
        let name = match names {
            [first, rest @ ..] if !rest.is_empty() => {
                let rest: Vec<String> = rest.iter().map(|f| format!("`{f}`")).collect();
                format!("`{first}` (or {})", rest.join(" or "))
            }
            _ => names.iter().map(|f| format!("`{f}`")).collect(),
        };
        match groups.last_mut() {
            Some((k, fields)) if k == kind => fields.push(name),
            _ => groups.push((*kind, vec![name])),
        }
    }
    let phrases: Vec<String> =
        groups.iter().map(|(kind, fields)| format!("{} ({})", and_list(fields), kind.describe())).collect();
    and_list(&phrases)
}

/// `a`, `a and b`, `a, b and c`.
fn and_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_read_as_phrases() {
        let needs = |name: &str| ROW_NEEDS.iter().find(|(n, _)| *n == name).expect("in the table").1;
        assert_eq!(describe(needs("sft")[0]), "`prompt` and `completion` (String or Messages)");
        assert_eq!(describe(needs("accuracy")[0]), "`prompt` and `completion` (or `answer`) (String or Messages)");
        assert_eq!(describe(needs("rl")[0]), "`prompt` (String or Messages)");
        assert_eq!(describe(needs("preference")[0]), "`prompt`, `chosen` and `rejected` (String or Messages)");
    }
}
