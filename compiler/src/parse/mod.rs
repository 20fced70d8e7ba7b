//! Parsing: source text → `ast::Module`, or diagnostics. pest does the recognising (grammar in
//! the `recipe-grammar` crate); `build` and `expr` turn pairs into the tree, `literal` computes
//! literal values, `lex` collects comments and finds unclosed delimiters, `error` turns a pest
//! failure into words a user knows.
//!
//! Invariants: a returned `Module` has every comment of the source in `comments`, in order; on
//! failure at least one diagnostic is returned, each with the source attached, and pest's own
//! text never reaches the user.

mod build;
mod error;
mod expr;
pub mod lex;
pub(crate) mod literal;

use crate::ast::{Expr, Module, Span};
use crate::diag::{Diagnostic, Source};
use pest::Parser;
use recipe_grammar::{RecipeParser, Rule};
use std::sync::Mutex;

/// Parses a whole `.recipe` file.
pub fn parse(source: &Source) -> Result<Module, Vec<Diagnostic>> {
    let text: &str = &source.text;
    let scan = lex::scan(text);
    let mut module = run(source, Rule::module, &scan, |b, pair| b.module(pair))?;
    module.comments = scan.comments;
    Ok(module)
}

/// Parses one expression, e.g. the value of a `--set key=value` override. Comments are allowed
/// and dropped.
pub fn parse_expr(source: &Source) -> Result<Expr, Vec<Diagnostic>> {
    let scan = lex::scan(&source.text);
    run(source, Rule::expr_input, &scan, |b, pair| {
        let span = build::raw_span(&pair);
        let expr = build::child(&mut pair.into_inner(), span)?;
        b.expr(expr, 0)
    })
}

/// Stack for parsing: pest and the tree builder recurse once per nesting level of the source,
/// and a deeply nested input must end in `recipe::syntax::nesting`, not a stack overflow, on
/// whatever thread the caller runs (test threads have 2 MiB). Pages are only touched as used.
const PARSE_STACK: usize = 256 << 20;

/// Inputs that cannot nest deeper than this parse on the caller's thread: a few hundred KiB of
/// stack at most, even unoptimised.
const SHALLOW: usize = 64;

/// Runs pest from `rule`, then `build` over the single top pair, collecting every diagnostic;
/// on a thread with a large stack when the input may nest deeply (starting a thread costs more
/// than parsing a small input, which matters to the fuzzer and to `--set` values).
fn run<T: Send>(
    source: &Source,
    rule: Rule,
    scan: &lex::Scan,
    build: impl FnOnce(&mut build::Builder, pest::iterators::Pair<Rule>) -> Result<T, Diagnostic> + Send,
) -> Result<T, Vec<Diagnostic>> {
    if scan.nesting_bound <= SHALLOW {
        return run_here(source, rule, scan, build);
    }
    let mut build = Some(build);
    let spawned = std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .stack_size(PARSE_STACK)
            .spawn_scoped(scope, || build.take().map(|build| run_here(source, rule, scan, build)));
        // A panic in the parser is a bug: let it surface on the caller's thread.
        worker.ok().and_then(|handle| handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
    });
    match (spawned, build) {
        (Some(result), _) => result,
        (None, Some(build)) => run_here(source, rule, scan, build),
        (None, None) => Err(vec![build::internal(Span::default()).with_source(source)]),
    }
}

/// Parses again, with pest recording the literal tokens it expected at the failure (which the
/// error message names). That recording doubles the cost of a parse, so it is only switched on
/// to explain a failure. The switch is process-wide: the lock keeps concurrent explanations
/// from switching it off under each other; ordinary parses meanwhile only run slower.
fn parse_with_detail(rule: Rule, text: &str) -> Option<pest::error::Error<Rule>> {
    static DETAIL: Mutex<()> = Mutex::new(());
    let _guard = DETAIL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    pest::set_error_detail(true);
    let result = RecipeParser::parse(rule, text).map(drop);
    pest::set_error_detail(false);
    result.err()
}

fn run_here<T>(
    source: &Source,
    rule: Rule,
    scan: &lex::Scan,
    build: impl FnOnce(&mut build::Builder, pest::iterators::Pair<Rule>) -> Result<T, Diagnostic>,
) -> Result<T, Vec<Diagnostic>> {
    let text: &str = &source.text;
    let unclosed = scan.unclosed;
    let attach = |ds: Vec<Diagnostic>| ds.into_iter().map(|d| d.with_source(source)).collect::<Vec<_>>();
    let mut pairs = match RecipeParser::parse(rule, text) {
        Ok(pairs) => pairs,
        Err(first) => {
            let e = parse_with_detail(rule, text).unwrap_or(first);
            return Err(attach(vec![error::from_pest(&e, text, unclosed)]));
        }
    };
    let Some(top) = pairs.next() else {
        return Err(attach(vec![build::internal(Span::new(0, text.len()))]));
    };
    let mut builder = build::Builder::new(text, &scan.comments);
    let built = build(&mut builder, top);
    let mut errors = builder.errors;
    match built {
        Ok(value) if errors.is_empty() => Ok(value),
        Ok(_) => Err(attach(errors)),
        Err(e) => {
            errors.push(e);
            Err(attach(errors))
        }
    }
}

#[cfg(test)]
mod tests;
