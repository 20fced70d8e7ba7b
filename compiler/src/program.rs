//! The checked, resolved program: what the runtime executes and `recipe plan` prints.
//!
//! Every top-level declaration is evaluated at compile time into a [`Value`] tree. A `model`,
//! `data`, `stage` or `eval` is a call of a builtin ([`Value::Call`]) with *every* argument
//! present, by parameter name, in parameter order (defaults filled in). Values refer to other
//! declarations by name ([`Value::Model`], [`Value::Data`], [`Value::Stage`]), never by copy,
//! so the runtime builds each model and dataset once. Code becomes data: a scalar function
//! (schedule, reward, difficulty, filter, scheduler update) is a [`Value::Scalar`] index into
//! `scalar.functions` (typed scalar IR, closures specialised with their captured constants,
//! record parameters flattened to the fields used); a loss is a [`Value::Tensor`]
//! expression DAG. A constant where a schedule is expected stays a number: a schedule is either
//! `Value::Float` (constant) or `Value::Scalar` of type `fn(Int, Int) -> Float`.
//!
//! Invariants: there are no closures, no unresolved names and no type variables left; `run`
//! lists stage and rounds names in execution order and every stage a step reads runs earlier.
//! Hashing the canonical source is left to the runtime (the compiler has no hash dependency).

use crate::ast::Span;
use crate::diag::{Diagnostic, Source};
use crate::ir;
use crate::tensor::TensorFn;
use crate::types::Ty;
use serde::Serialize;

/// A compiled recipe.
#[derive(Clone, Debug, Serialize)]
pub struct Program {
    /// The header's name: `recipe "name" { ... }`.
    pub name: String,
    /// The header's `seed` (0 when absent).
    pub seed: i64,
    /// Every header field as given (after overrides), `seed` included when set.
    pub header: Vec<(String, Value)>,
    /// Top-level `model`, `data`, `stage`, `eval` and `let` declarations in source order.
    pub decls: Vec<Decl>,
    /// `rounds` blocks in source order.
    pub rounds: Vec<Rounds>,
    /// Stage and rounds names in execution order.
    pub run: Vec<String>,
    /// The recipe's canonical (formatted) text; hash it for the lock file.
    pub source: String,
    /// The overrides applied (`--set key=value`), in order, as written.
    pub overrides: Vec<(String, String)>,
    /// Every scalar function the values refer to (`Value::Scalar(i)` is `scalar.functions[i]`).
    #[serde(skip)]
    pub scalar: ir::Module,
    /// The scalar functions' signatures and text, for `plan --json` and the lock file.
    pub functions: Vec<FunctionInfo>,
    /// The texts [`Origin::file`] indexes: the recipe (0), the prelude (1), the builtins (2),
    /// then one per `--set` override. Runtime errors about a declaration render against them.
    #[serde(skip)]
    pub sources: Vec<Source>,
}

/// Where a declaration or an argument was written: a byte range of one of
/// [`Program::sources`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    pub file: u32,
    pub span: Span,
}

/// A named declaration and its value.
#[derive(Clone, Debug, Serialize)]
pub struct Decl {
    pub kind: DeclKind,
    pub name: String,
    /// The declaration's type as the language writes it.
    pub ty: String,
    /// For a `Dataset[{...}]` declaration, its row type field by field, so the runtime can read
    /// a declared JSONL layout without parsing `ty`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row: Option<RowSchema>,
    pub value: Value,
    /// Where the value is written (the whole expression after `=`).
    #[serde(skip)]
    pub origin: Origin,
    /// Where each argument the recipe wrote is, for a declaration that is a builtin call:
    /// by parameter name, nested calls as dotted paths (`curriculum.count`). Arguments left to
    /// their defaults are absent.
    #[serde(skip)]
    pub arg_origins: Vec<(String, Origin)>,
}

/// The fields of a dataset's record row type, sorted by name (as record types keep them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RowSchema {
    pub fields: Vec<(String, FieldKind)>,
}

/// A row field's type: the scalars a data file can hold, or any other type by its printed
/// name (kept for the error that rejects it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum FieldKind {
    Str,
    Int,
    Float,
    Bool,
    /// A conversation (`Messages`): a JSON list of `{role, content}` turns in a file, its
    /// canonical text in a column.
    Messages,
    Other(String),
}

impl RowSchema {
    /// The row schema of `Dataset[{...}]`; `None` for any other type.
    pub fn of_dataset(ty: &Ty) -> Option<RowSchema> {
        match ty {
            Ty::Opaque(name, args) if name == "Dataset" => match args.as_slice() {
                [Ty::Record(fields)] => {
                    Some(RowSchema { fields: fields.iter().map(|(n, t)| (n.clone(), FieldKind::of(t))).collect() })
                }
                _ => None,
            },
            _ => None,
        }
    }
}

impl FieldKind {
    fn of(ty: &Ty) -> FieldKind {
        match ty {
            Ty::String => FieldKind::Str,
            Ty::Int => FieldKind::Int,
            Ty::Float => FieldKind::Float,
            Ty::Bool => FieldKind::Bool,
            Ty::Messages => FieldKind::Messages,
            other => FieldKind::Other(other.to_string()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeclKind {
    Model,
    Data,
    Stage,
    Eval,
    Let,
}

/// `rounds name = count from model { stages }`: the stages run `count` times; round r starts
/// from round r-1's final model (round 1 from `from`), which the stages see as
/// `Value::RoundInput(name)`.
#[derive(Clone, Debug, Serialize)]
pub struct Rounds {
    pub name: String,
    pub count: i64,
    pub from: Value,
    pub stages: Vec<Decl>,
}

/// A scalar function's signature and IR text.
#[derive(Clone, Debug, Serialize)]
pub struct FunctionInfo {
    pub name: String,
    pub params: Vec<(String, String)>,
    /// The result type's name: the IR's (`String`), or the language's for a field of `map`'s
    /// rows (`Messages`, a conversation held as its text).
    pub ret: String,
    pub text: String,
}

/// A compile-time value.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Value {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    List(Vec<Value>),
    Record(Vec<(String, Value)>),
    Range {
        start: i64,
        end: i64,
        inclusive: bool,
    },
    /// An enum constant: `Enum { ty: "Order", name: "easy_first" }`.
    Enum {
        ty: String,
        name: String,
    },
    /// The model declared `model name = ...`.
    Model(String),
    /// The dataset declared `data name = ...`.
    Data(String),
    /// A stage's (or rounds block's) result, or one of its fields (`model`, `data`).
    Stage {
        stage: String,
        field: Option<String>,
    },
    /// Inside a rounds block: the model the current round starts from.
    RoundInput(String),
    /// A builtin call, every argument named and present (defaults resolved).
    Call {
        name: String,
        args: Vec<(String, Value)>,
    },
    /// A scalar function: an index into `Program::scalar.functions`.
    Scalar(u32),
    /// A loss: a weighted sum of terms, each a batch-tensor function.
    Loss(Vec<LossTerm>),
}

/// One term of a loss: `0.8 * dpo(beta = 0.1)` is the term `dpo` with weight 0.8. The runtime
/// evaluates each term on its own, so metrics can report every weighted term (`loss/dpo`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LossTerm {
    /// The function that made the term (`dpo`), or `loss` for a lambda written in place.
    pub name: String,
    pub weight: f64,
    /// The arguments of the function that made the term that are values (`eps_low`,
    /// `importance`), and its `beta` even when that is a schedule (`Value::Scalar` of
    /// `(step, total)`); empty for a lambda written in place. The runtime reports TRL's
    /// implicit rewards (`rewards/chosen` = β·(log π − log π_ref)) and clip ratios with them.
    pub params: Vec<(String, Value)>,
    /// The unweighted term: one value (`Scalar`) for the batch.
    pub f: TensorFn,
}

impl LossTerm {
    /// The argument `name` of the function that made the term, if it is recorded.
    pub fn param(&self, name: &str) -> Option<&Value> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The term's `beta` argument when its function has one: a `Value::Float`, or a schedule.
    pub fn beta(&self) -> Option<&Value> {
        self.param("beta")
    }
}

/// One step of the run order.
#[derive(Clone, Copy, Debug)]
pub enum Step<'p> {
    Stage(&'p Decl),
    Rounds(&'p Rounds),
}

impl Program {
    /// The steps of the `run` line, in order.
    pub fn stage_order(&self) -> Vec<Step<'_>> {
        self.run
            .iter()
            .filter_map(|name| {
                if let Some(r) = self.rounds.iter().find(|r| &r.name == name) {
                    return Some(Step::Rounds(r));
                }
                self.decl(name).map(Step::Stage)
            })
            .collect()
    }

    /// A top-level declaration by name.
    pub fn decl(&self, name: &str) -> Option<&Decl> {
        self.decls.iter().find(|d| d.name == name)
    }

    /// The declarations of one kind, in source order.
    pub fn decls_of(&self, kind: DeclKind) -> impl Iterator<Item = &Decl> {
        self.decls.iter().filter(move |d| d.kind == kind)
    }

    /// A header field's value.
    pub fn header_field(&self, name: &str) -> Option<&Value> {
        self.header.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// A declaration by name, inside `rounds` blocks too.
    pub fn any_decl(&self, name: &str) -> Option<&Decl> {
        self.decl(name).or_else(|| self.rounds.iter().flat_map(|r| &r.stages).find(|d| d.name == name))
    }

    /// `diagnostic` labelled `label` at what declaration `decl` wrote for argument `arg` (a
    /// dotted path for nested calls: `curriculum.count`), else at the nearest enclosing argument
    /// the recipe wrote (`curriculum`: the argument took its default, or is computed by a `fn`),
    /// else at the whole declaration; with the source attached, ready to render. Unchanged when
    /// the program has no such declaration or no sources.
    pub fn locate(&self, diagnostic: Diagnostic, decl: &str, arg: Option<&str>, label: &str) -> Diagnostic {
        let Some(d) = self.any_decl(decl) else { return diagnostic };
        let written = |path: &str| d.arg_origins.iter().find(|(n, _)| n == path).map(|(_, o)| *o);
        let prefixes = arg.into_iter().flat_map(|a| {
            std::iter::once(a).chain(a.char_indices().rev().filter(|(_, c)| *c == '.').map(move |(i, _)| &a[..i]))
        });
        let origin = prefixes.filter_map(written).next().unwrap_or(d.origin);
        match self.sources.get(origin.file as usize) {
            Some(source) => diagnostic.with_primary(origin.span, label).with_source(source),
            None => diagnostic,
        }
    }
}

impl Value {
    /// A call's argument by parameter name.
    pub fn arg(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Call { args, .. } => args.iter().find(|(n, _)| n == name).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The builtin a call value calls.
    pub fn call_name(&self) -> Option<&str> {
        match self {
            Value::Call { name, .. } => Some(name),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(v) => Some(*v),
            _ => None,
        }
    }

    /// A number as f64 (Int or Float).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(v) => Some(*v as f64),
            Value::Float(v) => Some(*v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::Source;

    #[test]
    fn dataset_row_schema_comes_from_the_checked_type() {
        let src = Source::new(
            "t.recipe",
            "recipe \"t\" { seed = 1 }\n\
             type Row = {prompt: String, completion: String, n: Int, w: Float, ok: Bool, \
             tags: List[String], meta: {source: String}}\n\
             model m = tiny_lm()\n\
             data rows: Dataset[Row] = jsonl(\"rows.jsonl\")\n\
             data sums = synth.addition()\n\
             stage s = sft(m, sums)\n\
             run s\n",
        );
        let program = crate::compile(&src, &[])
            .unwrap_or_else(|e| panic!("{:#?}", e.iter().map(|d| &d.message).collect::<Vec<_>>()));
        let field = |n: &str, k: FieldKind| (n.to_string(), k);
        assert_eq!(
            program.decl("rows").and_then(|d| d.row.clone()),
            Some(RowSchema {
                fields: vec![
                    field("completion", FieldKind::Str),
                    field("meta", FieldKind::Other("{source: String}".into())),
                    field("n", FieldKind::Int),
                    field("ok", FieldKind::Bool),
                    field("prompt", FieldKind::Str),
                    field("tags", FieldKind::Other("List[String]".into())),
                    field("w", FieldKind::Float),
                ],
            })
        );
        let sums = program.decl("sums").and_then(|d| d.row.clone()).expect("synth rows are records");
        let names: Vec<&str> = sums.fields.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["answer", "carries", "completion", "digits", "prompt"]);
        assert_eq!(program.decl("m").and_then(|d| d.row.clone()), None);
        assert_eq!(program.decl("s").and_then(|d| d.row.clone()), None);
    }

    /// An error is shown where the recipe wrote the argument, else at the nearest enclosing
    /// argument it wrote, else at the whole declaration.
    #[test]
    fn locate_points_at_the_written_argument_or_the_nearest_enclosing_one() {
        let text = "recipe \"t\" { seed = 1 }\nmodel m = tiny_lm()\ndata d = synth.addition()\n\
                    stage s = sft(m, d, steps = 5, curriculum = uniform())\nrun s\n";
        let program = crate::compile(&Source::new("t.recipe", text), &[]).expect("compiles");
        let at = |arg: Option<&str>| {
            let d = program.locate(Diagnostic::error("t::t", "m"), "s", arg, "here");
            let span = d.span().expect("labelled");
            text[span.start as usize..span.end as usize].to_string()
        };
        assert_eq!(at(Some("steps")), "5");
        assert_eq!(at(Some("curriculum")), "uniform()");
        assert_eq!(at(Some("curriculum.by.x")), "uniform()", "the nearest written prefix");
        assert_eq!(at(Some("batch")), "sft(m, d, steps = 5, curriculum = uniform())", "a default");
        assert_eq!(at(None), "sft(m, d, steps = 5, curriculum = uniform())");
        let unknown = program.locate(Diagnostic::error("t::t", "m"), "nope", None, "here");
        assert!(unknown.span().is_none() && unknown.source.is_none());
    }

    #[test]
    fn only_a_dataset_of_records_has_a_row_schema() {
        assert_eq!(RowSchema::of_dataset(&Ty::opaque("Dataset", vec![Ty::Int])), None);
        assert_eq!(RowSchema::of_dataset(&Ty::opaque("Curriculum", vec![Ty::record(vec![])])), None);
        assert_eq!(
            RowSchema::of_dataset(&Ty::opaque("Dataset", vec![Ty::record(vec![])])),
            Some(RowSchema { fields: vec![] })
        );
    }
}
