//! A loss expression on its own (`recipe loss --loss 'EXPR'`): compiled inside a small
//! synthetic recipe that trains a `preference` stage with it (a `Loss` over pairs) or an `rl`
//! stage (a `PolicyLoss` over rollouts, with the advantage estimator), so it is checked and
//! lowered exactly as in a recipe. With a recipe file, that recipe's `fn`, `type` and `let`
//! declarations are visible to the expression (its models, data, stages and run line are not
//! part of it).

use super::args::Functions;
use super::ExecError;
use recipe_compiler::ast::{BindingKind, Item};
use recipe_compiler::diag::{Diagnostic, Source};
use recipe_compiler::program::{LossTerm, Value};
use std::sync::Arc;

/// A compiled loss expression: its terms, and the scalar functions they call (schedules).
pub struct CompiledLoss {
    pub terms: Vec<LossTerm>,
    /// For a policy loss, the advantage estimator's one term.
    pub advantages: Option<LossTerm>,
    pub functions: Arc<Functions>,
}

/// What a loss expression is written over.
#[derive(Clone, Debug, PartialEq)]
pub enum LossKind {
    /// A preference loss (`Loss`) over `prompt`/`chosen`/`rejected` pairs.
    Pairs,
    /// A policy-gradient loss (`PolicyLoss`) over rollouts, with the advantage estimator
    /// `advantages` (an expression of type `Advantages`, e.g. `group_relative(scale = batch)`).
    Rollouts { advantages: String },
}

/// Why a loss expression does not compile: diagnostics about `source`, the synthetic recipe
/// around it (which names the expression's line), or about the recipe file.
#[derive(Debug)]
pub enum LossCompileError {
    Diagnostics(Vec<Diagnostic>, Source),
    Exec(ExecError),
}

/// The stage the synthetic recipe trains.
const STAGE: &str = "recipe_loss_stage";

/// Compiles `expr`, an expression of type `Loss` (or `PolicyLoss`, by `kind`), with the `fn`,
/// `type` and `let` declarations of `recipe` in scope.
///
/// Errors: the recipe's own syntax errors (against `recipe`), and type or evaluation errors of
/// the expression (against the synthetic recipe, which shows the expression on its own line).
pub fn compile_loss(expr: &str, kind: &LossKind, recipe: Option<&Source>) -> Result<CompiledLoss, LossCompileError> {
    let mut text = String::from("recipe \"loss\" { seed = 0 }\n");
    if let Some(source) = recipe {
        let module = recipe_compiler::parse(source).map_err(|d| LossCompileError::Diagnostics(d, source.clone()))?;
        for item in &module.items {
            let span = match item {
                Item::Fn(f) => f.span,
                Item::TypeAlias(t) => t.span,
                Item::Binding(b) if b.kind == BindingKind::Let => b.span,
                _ => continue,
            };
            text.push_str(&source.text[span.start as usize..span.end as usize]);
            text.push('\n');
        }
    }
    text.push_str("model recipe_loss_policy = tiny_lm()\n");
    text.push_str(&match kind {
        LossKind::Pairs => format!(
            "data recipe_loss_data: Dataset[{{prompt: String, chosen: String, rejected: String}}] = jsonl(\"pairs.jsonl\")\n\
             stage {STAGE} = preference(recipe_loss_policy, recipe_loss_data, loss =\n{expr}\n)\n"
        ),
        LossKind::Rollouts { advantages } => format!(
            "data recipe_loss_data: Dataset[{{prompt: String}}] = jsonl(\"rollouts.jsonl\")\n\
             stage {STAGE} = rl(recipe_loss_policy, recipe_loss_data, reward = |r| 0.0, advantages = {advantages}, loss =\n{expr}\n)\n"
        ),
    });
    text.push_str(&format!("run {STAGE}\n"));
    let source = Source::new("--loss", text);
    let program =
        recipe_compiler::compile(&source, &[]).map_err(|d| LossCompileError::Diagnostics(d, source.clone()))?;
    let terms_of = |arg: &str| match program.decl(STAGE).and_then(|d| d.value.arg(arg)) {
        Some(Value::Loss(terms)) => Ok(terms.clone()),
        other => Err(LossCompileError::Exec(ExecError::Internal(format!("the compiled `{arg}` is {other:?}")))),
    };
    let terms = terms_of("loss")?;
    let advantages = match kind {
        LossKind::Pairs => None,
        LossKind::Rollouts { .. } => terms_of("advantages")?.into_iter().next(),
    };
    let functions = Functions::new(&program.scalar).map_err(LossCompileError::Exec)?;
    Ok(CompiledLoss { terms, advantages, functions: Arc::new(functions) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loss_is_its_terms_and_sees_the_recipes_functions() {
        let loss = compile_loss("0.5 * nll() + 2.0 * nll()", &LossKind::Pairs, None).expect("compiles");
        let names: Vec<(&str, f64)> = loss.terms.iter().map(|t| (t.name.as_str(), t.weight)).collect();
        assert_eq!(names, [("nll", 0.5), ("nll", 2.0)]);

        let recipe = Source::new(
            "mine.recipe",
            "recipe \"mine\" { seed = 1 }\nmodel m = tiny_lm()\ndata d = synth.addition()\nlet w = 3.0\n\
             fn mine(beta: Float = 0.1) -> Loss = |b| w * mean(b.policy_chosen)\nstage s = sft(m, d)\nrun s\n",
        );
        let loss = compile_loss("mine()", &LossKind::Pairs, Some(&recipe)).expect("sees `mine` and `w`");
        assert_eq!(loss.terms.len(), 1);
        assert_eq!(loss.terms[0].name, "mine");
        assert_eq!(loss.terms[0].beta(), Some(&Value::Float(0.1)));

        match compile_loss("mine()", &LossKind::Pairs, None) {
            Err(LossCompileError::Diagnostics(d, source)) => {
                assert!(!d.is_empty());
                assert!(source.text.contains("\nmine()\n"), "the expression is on a line of its own");
            }
            _ => panic!("`mine` is unknown without the recipe"),
        }
        assert!(matches!(compile_loss("3 +", &LossKind::Pairs, None), Err(LossCompileError::Diagnostics(..))));

        let rollouts = LossKind::Rollouts { advantages: "group_relative(scale = batch)".into() };
        let grpo = compile_loss("grpo(beta = 0.04)", &rollouts, None).expect("a policy loss");
        assert_eq!(grpo.terms[0].name, "grpo");
        assert_eq!(grpo.advantages.as_ref().map(|t| t.name.as_str()), Some("group_relative"));
        assert!(matches!(compile_loss("dpo()", &rollouts, None), Err(LossCompileError::Diagnostics(..))));
    }
}
