//! Which builtins this runtime executes, in one place, so `recipe check` promises what
//! `recipe run` does: a builtin the checker types but the runtime cannot execute is reported
//! by `check` (a warning, an error under `--strict`) and refused by `run` before any compute,
//! both through [`not_executable`].
//!
//! The builtins that stay calls in a compiled program — models, data, stages, evaluations,
//! curricula and their helpers — are the runtime's; scalar builtins are compiled by the JIT
//! and tensor builtins lowered by `train::loss`, so they need no entry here.

use super::build::{DATA_BUILTINS, MODEL_BUILTINS};
use super::curricula::{BANDIT_POLICIES, CURRICULA};
use super::evals::EVALS;
use super::stages::{MEASURES, STAGE_KINDS};
use recipe_compiler::program::{Decl, Program, Step, Value};

/// Whether this runtime executes the builtin `name` (as programs spell it: `synth.addition`).
pub fn executable(name: &str) -> bool {
    MODEL_BUILTINS.contains(&name)
        || DATA_BUILTINS.contains(&name)
        || EVALS.iter().any(|k| k.name == name)
        || STAGE_KINDS.iter().any(|k| k.name == name)
        || CURRICULA.iter().any(|k| k.name == name)
        || BANDIT_POLICIES.contains(&name)
        || MEASURES.contains(&name)
}

/// A use of something this runtime cannot execute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotExecutable {
    /// What, in words (`` the builtin `loss_on` ``).
    pub what: String,
    /// The declaration it is in, and the argument path within it (`curriculum`), if any.
    pub decl: String,
    pub arg: Option<String>,
}

/// Everything a run of `program` would need that this runtime cannot execute: the builtin
/// calls reachable from the run order (the stages of `rounds` blocks included) and the
/// evaluations (outermost call of a subtree only; a call inside an unexecutable one is not
/// reported again).
pub fn not_executable(program: &Program) -> Vec<NotExecutable> {
    let mut found = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut pending: Vec<&Decl> = program.decls_of(recipe_compiler::program::DeclKind::Eval).collect();
    for step in program.stage_order() {
        match step {
            Step::Stage(decl) => pending.push(decl),
            Step::Rounds(r) => pending.extend(&r.stages),
        }
    }
    // Evaluations run during every stage, so they cannot read data a stage produces.
    for decl in program.decls_of(recipe_compiler::program::DeclKind::Eval) {
        if let Some(stage) = super::build::stage_data_read_by(program, &decl.value).first() {
            found.push(NotExecutable {
                what: format!("an evaluation of `{stage}.data` (data produced by a stage)"),
                decl: decl.name.clone(),
                arg: Some("dataset".into()),
            });
        }
    }
    while let Some(decl) = pending.pop() {
        if seen.insert(decl.name.as_str()) {
            walk(program, decl, &decl.value, None, &mut found, &mut pending);
        }
    }
    found.sort_by(|a, b| (&a.decl, &a.arg).cmp(&(&b.decl, &b.arg)));
    found
}

fn walk<'p>(
    program: &'p Program,
    decl: &'p Decl,
    value: &'p Value,
    path: Option<String>,
    found: &mut Vec<NotExecutable>,
    pending: &mut Vec<&'p Decl>,
) {
    match value {
        Value::Call { name, args } => {
            if !executable(name) {
                found.push(NotExecutable { what: format!("the builtin `{name}`"), decl: decl.name.clone(), arg: path });
                return;
            }
            for (arg, v) in args {
                let inner = Some(path.as_ref().map_or_else(|| arg.clone(), |p| format!("{p}.{arg}")));
                walk(program, decl, v, inner, found, pending);
            }
        }
        Value::Model(name) | Value::Data(name) => pending.extend(program.decl(name)),
        Value::List(items) => items.iter().for_each(|v| walk(program, decl, v, path.clone(), found, pending)),
        Value::Record(fields) => fields.iter().for_each(|(_, v)| walk(program, decl, v, path.clone(), found, pending)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use recipe_compiler::ast::{Item, TypeExprKind};
    use recipe_compiler::diag::Source;

    /// The return types of builtins that remain calls in a compiled program.
    const RUNTIME_TYPES: &[&str] = &["Model", "Dataset", "Stage", "Eval", "Curriculum", "BanditPolicy", "Difficulty"];

    /// Every builtin of `stdlib/builtins.recipe` that the runtime must execute, as programs spell
    /// it, and every name the runtime claims: the two must agree.
    #[test]
    fn every_runtime_builtin_of_the_stdlib_is_executable_or_reported() {
        let source = Source::new("<builtins>", recipe_stdlib::BUILTINS);
        let module = recipe_compiler::parse(&source).expect("the stdlib parses");
        let mut runtime_builtins = Vec::new();
        for item in &module.items {
            let Item::Extern(f) = item else { continue };
            let ret = match &f.ret.kind {
                TypeExprKind::Named(t) | TypeExprKind::Applied(t, _) => t.name.as_str(),
                _ => continue,
            };
            if RUNTIME_TYPES.contains(&ret) {
                runtime_builtins.push(recipe_compiler::check::display_name(&f.name.name));
            }
        }
        assert!(runtime_builtins.len() > 30, "found {runtime_builtins:?}");
        let claimed = MODEL_BUILTINS
            .iter()
            .chain(DATA_BUILTINS)
            .copied()
            .chain(EVALS.iter().map(|k| k.name))
            .chain(STAGE_KINDS.iter().map(|k| k.name))
            .chain(CURRICULA.iter().map(|k| k.name))
            .chain(BANDIT_POLICIES.iter().copied())
            .chain(MEASURES.iter().copied());
        for name in claimed {
            assert!(
                runtime_builtins.iter().any(|b| b == name),
                "the runtime executes `{name}`, which the stdlib lacks"
            );
        }
        // Each one not executable is reported, at its declaration, by the one function `check`
        // and `run` both use.
        for name in runtime_builtins.iter().filter(|b| !executable(b)) {
            let decl = Decl {
                kind: recipe_compiler::program::DeclKind::Eval,
                name: "e".into(),
                ty: "Eval".into(),
                row: None,
                value: Value::Call { name: name.clone(), args: vec![] },
                origin: Default::default(),
                arg_origins: vec![],
            };
            let program = Program { decls: vec![decl], run: vec![], ..minimal_program() };
            let found = not_executable(&program);
            assert_eq!(found.len(), 1, "`{name}` is neither executable nor reported");
            assert_eq!(found[0].decl, "e");
        }
    }

    fn minimal_program() -> Program {
        let recipe = "recipe \"t\" {}\nmodel m = tiny_lm()\ndata d = synth.addition()\nstage s = sft(m, d)\nrun s\n";
        recipe_compiler::compile(&Source::new("t.recipe", recipe), &[]).expect("a minimal recipe compiles")
    }

    #[test]
    fn reports_what_a_run_reaches_at_its_argument() {
        let recipe = "recipe \"t\" { seed = 1 }\n\
                      model m = tiny_lm()\n\
                      data d = synth.addition()\n\
                      data unused = synth_rated_responses()\n\
                      stage s = sft(m, d, curriculum = uniform())\n\
                      stage g = self_pairs(s.model, d, judge = |r| true)\n\
                      eval l = loss_on(d)\n\
                      run s -> g\n";
        let mut program = recipe_compiler::compile(&Source::new("t.recipe", recipe), &[]).unwrap();
        assert!(not_executable(&program).is_empty(), "every stdlib builtin is executable");
        // A stage kind and a curriculum this runtime lacks (every stdlib one is executable) are
        // reported: the stage at its declaration, the curriculum at its argument.
        let g = program.decls.iter_mut().find(|d| d.name == "g").unwrap();
        let Value::Call { name, .. } = &mut g.value else { panic!("a stage is a call") };
        *name = "elsewhere_stage".into();
        let s = program.decls.iter_mut().find(|d| d.name == "s").unwrap();
        let Value::Call { args, .. } = &mut s.value else { panic!("a stage is a call") };
        let (_, curriculum) = args.iter_mut().find(|(n, _)| n == "curriculum").unwrap();
        let Value::Call { name, .. } = curriculum else { panic!("a curriculum is a call") };
        *name = "elsewhere".into();
        let found = not_executable(&program);
        let at: Vec<(&str, Option<&str>)> = found.iter().map(|n| (n.decl.as_str(), n.arg.as_deref())).collect();
        assert_eq!(at, [("g", None), ("s", Some("curriculum"))], "{found:?}");
        assert!(found[1].what.contains("`elsewhere`"));
    }
}
