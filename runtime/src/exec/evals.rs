//! Evaluations (`eval name = accuracy(...)`): the table of evaluation builtins this runtime
//! executes, each decoded once into an [`Eval`] that every training stage runs on its policy,
//! and checked against each stage's model before any compute (the rows fit its context).
//!
//! A kind is a row of [`EVALS`]: the builtin's name and its binding. `accuracy` generates
//! (greedy exact match), `judged_accuracy` generates and asks the recipe's `judge`; `pair_accuracy` and `loss_on` read log-probabilities of the rows as
//! training does (`prompt ‖ response ‖ EOS`).

use super::args::Call;
use super::args::Functions;
use super::build::Builder;
use super::conversations;
use super::judge;
use super::ExecError;
use crate::data::Dataset;
use crate::model::{self, CausalLm, Tokenizer};
use crate::train::{accuracy_metrics, Evaluator, ExactMatch, Greedy, LossOn, PairAccuracy, TrainError};
use recipe_compiler::program::{DeclKind, Program, Value};
use std::sync::Arc;

/// Rows an evaluation scores per forward pass.
const EVAL_BATCH: usize = 64;

/// An evaluation builtin this runtime executes.
pub(super) struct EvalKind {
    pub name: &'static str,
    /// Decodes a call of it (named `name` in the recipe) over its built dataset.
    pub bind: fn(&str, &Call<'_>, &Dataset, &Arc<Functions>) -> Result<Scorer, ExecError>,
}

/// Every evaluation builtin the runtime executes.
pub(super) const EVALS: &[EvalKind] = &[
    EvalKind { name: "accuracy", bind: accuracy },
    EvalKind { name: "judged_accuracy", bind: judged_accuracy },
    EvalKind { name: "pair_accuracy", bind: pair_accuracy },
    EvalKind { name: "loss_on", bind: loss_on },
];

/// A decoded evaluation's scorer.
#[derive(Clone)]
pub(super) enum Scorer {
    Accuracy(ExactMatch),
    Judged(JudgedAccuracy),
    PairAccuracy(PairAccuracy),
    LossOn(LossOn),
}

/// An evaluation declared with `eval name = ...`, run during every stage.
pub(super) struct Eval {
    /// The declaration's name (what metrics lines file its results under).
    pub name: String,
    kind: &'static EvalKind,
    functions: Arc<Functions>,
    /// Its rows as declared.
    declared: Dataset,
    /// Its scorers and the rows each scores, per chat template: one, with no template, for text
    /// rows; for conversational rows (`Messages` fields) one per template of the stages it runs
    /// in, bound by [`Eval::check`] against the rows that template renders.
    bound: Vec<(Option<String>, Scorer, Dataset)>,
    /// Evaluate every this many steps (0: only at the end of each stage).
    pub every: u64,
}

impl Eval {
    /// A fresh evaluator for one stage (or round) whose policy speaks through `tok`.
    ///
    /// Errors: `ExecError::Internal` when [`Eval::check`] did not see that stage's tokenizer.
    pub fn evaluator(&self, tok: &Tokenizer) -> Result<Box<dyn Evaluator>, ExecError> {
        let (_, scorer, _) = self.scorer(tok).ok_or_else(|| {
            ExecError::Internal(format!("eval `{}`: not checked against this stage's chat template", self.name))
        })?;
        Ok(match scorer {
            Scorer::Accuracy(e) => Box::new(e.clone()),
            Scorer::Judged(e) => Box::new(e.clone()),
            Scorer::PairAccuracy(e) => Box::new(e.clone()),
            Scorer::LossOn(e) => Box::new(e.clone()),
        })
    }

    /// The scorer for a policy speaking through `tok`, if bound.
    fn scorer(&self, tok: &Tokenizer) -> Option<&(Option<String>, Scorer, Dataset)> {
        match conversations::is_conversational(&self.declared) {
            false => self.bound.first(),
            true => self.bound.iter().find(|(t, _, _)| *t == tok.spec().chat_template),
        }
    }

    /// Refuses rows this evaluation cannot score on stage `stage`'s model (tokenizer `tok`,
    /// `context` positions), naming the first: generation needs a prompt token and room for its
    /// budget; log-probabilities need each response with its prompt and EOS to fit.
    /// Conversational rows are rendered with `tok`'s chat template first (and their scorer
    /// bound).
    pub fn check(&mut self, program: &Program, stage: &str, tok: &Tokenizer, context: usize) -> Result<(), ExecError> {
        let what = format!("eval `{}` of stage `{stage}`", self.name);
        if self.scorer(tok).is_none() {
            let call = Call::of_decl(program, &self.name)?;
            let rendered = conversations::render(&self.declared, tok)
                .map_err(|e| call.locate(ExecError::Config(format!("{what}: {e}")), Some("dataset")))?;
            let scorer = (self.kind.bind)(&self.name, &call, &rendered, &self.functions)?;
            self.bound.push((tok.spec().chat_template.clone(), scorer, rendered));
        }
        let (_, scorer, data) = self.scorer(tok).expect("bound above");
        let checked = match scorer {
            Scorer::Accuracy(e) => {
                let budget = e.budget(tok)?;
                super::check_context(&what, data, context, |p, _| Ok(tok.encode(p)?.len() + budget))
                    .and_then(|()| super::check_prompts_not_empty(&what, data, tok))
            }
            Scorer::Judged(e) => {
                super::check_context(&what, data, context, |p, _| Ok(tok.encode(p)?.len() + e.max_tokens))
                    .and_then(|()| super::check_prompts_not_empty(&what, data, tok))
            }
            Scorer::LossOn(_) => {
                super::check_context(&what, data, context, |p, c| model::training_positions(tok, p, c))
            }
            Scorer::PairAccuracy(_) => check_pairs(&what, data, tok, context),
        };
        checked.map_err(|e| e.in_recipe(program, &self.name, Some("dataset")))
    }
}

/// Refuses a pair whose prompt and either response, with EOS, need more than `context`
/// positions.
fn check_pairs(what: &str, data: &Dataset, tok: &Tokenizer, context: usize) -> Result<(), ExecError> {
    let (prompts, chosen, rejected) = (data.strings("prompt")?, data.strings("chosen")?, data.strings("rejected")?);
    for row in 0..data.len() {
        for (side, response) in [("chosen", &chosen[row]), ("rejected", &rejected[row])] {
            let len = model::training_positions(tok, &prompts[row], response)?;
            if len > context {
                return Err(ExecError::Config(format!(
                    "{what}: {} needs {len} positions (prompt, {side} response and EOS) but the model has \
                     {context} (its `context` / max_position_embeddings); leave out such rows, or use a longer context",
                    data.row_name(row)
                )));
            }
        }
    }
    Ok(())
}

/// Decodes every `eval` declaration of `program`, building its dataset.
///
/// Errors: `ExecError::Unsupported` at the declaration for an evaluation this runtime does not
/// execute; the builds' errors and the kinds' own, at their arguments.
pub(super) fn prepare(program: &Program, builder: &mut Builder<'_>) -> Result<Vec<Eval>, ExecError> {
    let mut evals = Vec::new();
    for decl in program.decls_of(DeclKind::Eval) {
        let call = Call::of_decl(program, &decl.name)?;
        let Some(kind) = EVALS.iter().find(|k| k.name == call.name) else {
            let e = ExecError::Unsupported(format!("eval `{}` of kind `{}`", decl.name, call.name));
            return Err(call.locate(e, None));
        };
        let data = builder.dataset(call.get("dataset")?).map_err(|e| call.locate(e, Some("dataset")))?;
        // Text rows are bound now; conversations once a stage's chat template is known.
        let bound = match conversations::is_conversational(&data) {
            false => vec![(None, (kind.bind)(&decl.name, &call, &data, &builder.functions)?, data.clone())],
            true => Vec::new(),
        };
        let (functions, every) = (Arc::clone(&builder.functions), call.count("every")?);
        evals.push(Eval { name: decl.name.clone(), kind, functions, declared: data, bound, every });
    }
    Ok(evals)
}

/// `` `prompt`, `level` `` for a message.
fn fields(data: &Dataset) -> String {
    data.columns.iter().map(|(name, _)| format!("`{name}`")).collect::<Vec<_>>().join(", ")
}

/// Refuses `data` without one of the String `fields` (alternatives: any one of a group).
fn needs(call: &Call<'_>, data: &Dataset, groups: &[&[&str]]) -> Result<(), ExecError> {
    for group in groups {
        if !group.iter().any(|f| data.column(f).is_some()) {
            let wanted = group.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(" or ");
            let message = format!("`{}` needs a {wanted} field; the rows have {}", call.name, fields(data));
            return Err(call.locate(ExecError::Config(message), Some("dataset")));
        }
    }
    Ok(())
}

/// The call's `max_tokens`, at least 1.
fn max_tokens(call: &Call<'_>) -> Result<usize, ExecError> {
    match call.count("max_tokens")? as usize {
        0 => Err(call.invalid("max_tokens", "must be at least 1")),
        n => Ok(n),
    }
}

fn accuracy(name: &str, call: &Call<'_>, data: &Dataset, _: &Arc<Functions>) -> Result<Scorer, ExecError> {
    let max_tokens = max_tokens(call)?;
    needs(call, data, &[&["prompt"], &["completion", "answer"]])?;
    Ok(Scorer::Accuracy(ExactMatch::new(name, data, EVAL_BATCH)?.max_tokens(max_tokens)))
}

fn judged_accuracy(
    name: &str,
    call: &Call<'_>,
    data: &Dataset,
    functions: &Arc<Functions>,
) -> Result<Scorer, ExecError> {
    let max_tokens = max_tokens(call)?;
    needs(call, data, &[&["prompt"]])?;
    let Value::Scalar(judge) = call.get("judge")? else {
        return Err(ExecError::Internal("`judged_accuracy`: `judge` is not a scalar function".into()));
    };
    let scorer = JudgedAccuracy {
        name: name.to_owned(),
        greedy: Greedy::new(data, EVAL_BATCH)?,
        max_tokens,
        judge: *judge,
        functions: Arc::clone(functions),
        data: data.clone(),
    };
    // A judge that cannot run over these rows (a field they lack) is refused before compute.
    judge::judgements(functions, scorer.judge, data, &[0], vec![Arc::from("")])
        .map_err(|e| call.invalid("judge", e))?;
    Ok(Scorer::Judged(scorer))
}

fn pair_accuracy(name: &str, call: &Call<'_>, data: &Dataset, _: &Arc<Functions>) -> Result<Scorer, ExecError> {
    needs(call, data, &[&["prompt"], &["chosen"], &["rejected"]])?;
    Ok(Scorer::PairAccuracy(PairAccuracy::new(name, data, EVAL_BATCH)?))
}

fn loss_on(name: &str, call: &Call<'_>, data: &Dataset, _: &Arc<Functions>) -> Result<Scorer, ExecError> {
    needs(call, data, &[&["prompt"], &["completion"]])?;
    Ok(Scorer::LossOn(LossOn::new(name, data, EVAL_BATCH)?))
}

/// `judged_accuracy`: greedy completions (at most `max_tokens` new tokens, cut at a stop id),
/// each judged by the recipe's `judge` over its row with `completion` set to it.
#[derive(Clone)]
pub(super) struct JudgedAccuracy {
    name: String,
    greedy: Greedy,
    max_tokens: usize,
    judge: u32,
    functions: Arc<Functions>,
    data: Dataset,
}

impl Evaluator for JudgedAccuracy {
    fn name(&self) -> &str {
        &self.name
    }

    fn evaluate(&mut self, model: &CausalLm) -> Result<Vec<(String, f64)>, TrainError> {
        let got: Vec<Arc<str>> = self.greedy.completions(model, self.max_tokens)?.into_iter().map(Arc::from).collect();
        let rows: Vec<usize> = (0..self.data.len()).collect();
        let passed = judge::judgements(&self.functions, self.judge, &self.data, &rows, got).map_err(|e| {
            TrainError::Config { stage: format!("eval {}", self.name), message: format!("`judge`: {e}") }
        })?;
        Ok(accuracy_metrics(passed.iter().filter(|&&p| p).count(), passed.len()))
    }
}
