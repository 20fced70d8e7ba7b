//! Argument domains, checked on the evaluated program: a numeric builtin argument whose type
//! admits values the builtin cannot use (`keep` of `score` outside (0, 1]) is a `recipe check`
//! error at the argument the recipe wrote (or, for a value computed from a `let` or `--set`,
//! at the argument that uses it), before anything runs.
//!
//! Invariants: the check sees every value after evaluation, so a literal, a `let`, an `if` and
//! a `--set` override are refused alike; each entry of [`DOMAINS`] names a builtin parameter
//! that exists (tested against `stdlib/builtins.recipe`); values that are not numbers (a
//! schedule function) are left to the runtime, which checks them over the steps.

use crate::diag::Diagnostic;
use crate::program::{Decl, Program, Value};

/// A set of numbers a parameter accepts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Domain {
    /// (0, 1]: a fraction of something that must keep at least a part of it.
    UnitFraction,
}

impl Domain {
    pub fn contains(self, x: f64) -> bool {
        match self {
            Domain::UnitFraction => x > 0.0 && x <= 1.0,
        }
    }

    /// The domain as a message writes it.
    pub fn describe(self) -> &'static str {
        match self {
            Domain::UnitFraction => "in (0, 1]",
        }
    }
}

/// `(builtin, parameter, domain, what the parameter is)`, builtins as programs spell them.
pub const DOMAINS: &[(&str, &str, Domain, &str)] =
    &[("score", "keep", Domain::UnitFraction, "the fraction of the rows the stage keeps")];

/// Every argument of every declaration (top level and inside `rounds`) outside its domain.
pub fn check(program: &Program) -> Vec<Diagnostic> {
    let mut found = Vec::new();
    let decls = program.decls.iter().chain(program.rounds.iter().flat_map(|r| &r.stages));
    for decl in decls {
        walk(program, decl, &decl.value, None, &mut found);
    }
    found
}

fn walk(program: &Program, decl: &Decl, value: &Value, path: Option<&str>, found: &mut Vec<Diagnostic>) {
    match value {
        Value::Call { name, args } => {
            for (arg, v) in args {
                let at = path.map_or_else(|| arg.clone(), |p| format!("{p}.{arg}"));
                let entry = DOMAINS.iter().find(|(b, p, _, _)| b == name && p == arg);
                if let (Some(&(_, _, domain, what)), Some(x)) = (entry, v.as_f64()) {
                    if !domain.contains(x) {
                        let d = Diagnostic::error(
                            "recipe::call::out_of_domain",
                            format!("`{arg}` of `{name}` must be {}, got {x}", domain.describe()),
                        )
                        .with_help(format!("`{arg}` is {what}"));
                        found.push(program.locate(d, &decl.name, Some(&at), &format!("this is {x}")));
                    }
                }
                walk(program, decl, v, Some(&at), found);
            }
        }
        Value::List(items) => items.iter().for_each(|v| walk(program, decl, v, path, found)),
        Value::Record(fields) => fields.iter().for_each(|(_, v)| walk(program, decl, v, path, found)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::Source;

    fn compile(keep: &str, overrides: &[(String, String)]) -> Result<Program, Vec<Diagnostic>> {
        let text = format!(
            "recipe \"t\" {{ seed = 1 }}\nmodel m = tiny_lm()\ndata d = synth.addition()\nlet keep = {keep}\n\
             stage s = score(m, d, measure = length(), keep = keep)\nrun s\n"
        );
        crate::compile(&Source::new("t.recipe", text), overrides)
    }

    #[test]
    fn keep_outside_its_domain_is_an_error_at_the_argument() {
        assert!(compile("0.5", &[]).is_ok());
        assert!(compile("1.0", &[]).is_ok());
        for bad in ["0.0", "-0.5", "1.5"] {
            let errors = compile(bad, &[]).expect_err(bad);
            assert_eq!(errors.len(), 1, "{bad}");
            let e = &errors[0];
            assert_eq!(e.code, "recipe::call::out_of_domain");
            assert!(e.message.contains("must be in (0, 1]"), "{}", e.message);
            let (line, _) = e.source.as_ref().unwrap().line_col(e.span().unwrap().start);
            assert_eq!(line, 5, "at the `keep` argument of the stage");
        }
        let errors = compile("0.5", &[("keep".into(), "2.0".into())]).expect_err("--set keep=2.0");
        assert!(errors[0].message.contains("got 2"), "{}", errors[0].message);
    }

    /// Each entry names a parameter its builtin declares.
    #[test]
    fn every_domain_names_a_builtin_parameter() {
        let source = Source::new("<builtins>", recipe_stdlib::BUILTINS);
        let module = crate::parse(&source).unwrap();
        for (builtin, param, _, _) in DOMAINS {
            let declared = module.items.iter().any(|item| match item {
                crate::ast::Item::Extern(f) => {
                    crate::check::display_name(&f.name.name) == *builtin
                        && f.params.iter().any(|p| p.name.name == *param)
                }
                _ => false,
            });
            assert!(declared, "`{builtin}` has no parameter `{param}`");
        }
    }
}
