//! The front end's one entry point: source text (+ `--set` overrides) → [`Program`].
//!
//! parse → resolve/check (against the embedded prelude and builtin signatures, parsed once per
//! process) → evaluate the top level (each call's constant arguments checked against their
//! domains, `domain`) → `Program`. All independent errors of a file are reported together; the
//! stdlib's own diagnostics (a bug in the stdlib) carry the stdlib's source.

use crate::ast::{self, Span};
use crate::check::{self, typed::FileId, Override};
use crate::diag::{Diagnostic, Source};
use crate::eval;
use crate::program::Program;
use std::sync::OnceLock;

/// The parsed stdlib: (prelude, builtins) with their sources.
struct Stdlib {
    prelude: ast::Module,
    builtins: ast::Module,
    prelude_source: Source,
    builtins_source: Source,
}

fn stdlib() -> Result<&'static Stdlib, Vec<Diagnostic>> {
    static STDLIB: OnceLock<Result<Stdlib, Vec<Diagnostic>>> = OnceLock::new();
    STDLIB
        .get_or_init(|| {
            let prelude_source = Source::new("<prelude>", recipe_stdlib::PRELUDE);
            let builtins_source = Source::new("<builtins>", recipe_stdlib::BUILTINS);
            let prelude = crate::parse(&prelude_source)?;
            let builtins = crate::parse(&builtins_source)?;
            Ok(Stdlib { prelude, builtins, prelude_source, builtins_source })
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Compile a recipe. `overrides` are `--set key=value` pairs: `key` names a top-level `let` or
/// a header field (`seed`); `value` is parsed as an expression and checked against that
/// binding's type.
pub fn compile(source: &Source, overrides: &[(String, String)]) -> Result<Program, Vec<Diagnostic>> {
    let std = stdlib()?;
    let module = crate::parse(source)?;
    let mut sources = vec![source.clone(), std.prelude_source.clone(), std.builtins_source.clone()];
    let mut parsed = Vec::new();
    let mut errors = Vec::new();
    for (i, (key, value)) in overrides.iter().enumerate() {
        // Shown in diagnostics as the flag the user wrote.
        let prefix = format!("--set {key}=");
        let text = format!("{prefix}{value}");
        let file = FileId(3 + i as u32);
        let src = Source::new(format!("--set {key}"), text.clone());
        sources.push(src.clone());
        let value_src = Source::new(format!("--set {key}"), format!("{}{value}", " ".repeat(prefix.len())));
        match crate::parse_expr(&value_src) {
            Ok(expr) => {
                parsed.push(Override { key: key.clone(), key_span: Span::new(6, 6 + key.len()), value: expr, file })
            }
            Err(diags) => errors.extend(diags.into_iter().map(|d| {
                let mut d = d;
                d.source = Some(src.clone());
                d
            })),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let checked = check::check(&module, &std.prelude, &std.builtins, &parsed, sources.clone())?;
    let canonical = crate::format(&module, source);
    let mut program = eval::evaluate(&checked, canonical, overrides).map_err(|diags| {
        diags.into_iter().map(|(file, d)| d.with_source(&sources[file.0 as usize])).collect::<Vec<_>>()
    })?;
    program.sources = sources;
    Ok(program)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdlib_parses_and_checks() {
        let src = Source::new(
            "t.recipe",
            "recipe \"t\" { seed = 1 }\nmodel m = tiny_lm()\ndata d = synth.addition()\nstage s = sft(m, d)\nrun s\n",
        );
        let program = compile(&src, &[])
            .unwrap_or_else(|e| panic!("{:#?}", e.iter().map(|d| (&d.code, &d.message, &d.help)).collect::<Vec<_>>()));
        assert_eq!(program.seed, 1);
        assert_eq!(program.run, vec!["s".to_string()]);
    }
}
