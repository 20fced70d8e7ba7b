//! Resolve and type-check a recipe against the stdlib (prelude + builtin signatures).
//!
//! Entry point: [`check`]. The checker walks the user's module once, checking top-level
//! bindings on demand (so declarations may be used before they are written; a cycle is an
//! error), and produces the checked tree of [`typed`] with every name resolved, every call's
//! arguments in parameter order with defaults filled, and implicit conversions explicit.
//! Independent errors are all collected; an expression that already failed has type `Error`,
//! which is accepted everywhere so a mistake is reported once.
//!
//! Name lookup: a name in value position is, in order, a local; an enum constant of the expected
//! enum type; a stage of the enclosing `rounds`; a top-level declaration; a `fn` or builtin; a
//! unique enum constant. In call position functions come before declarations, so
//! `stage sft = sft(...)` and `loss = dpo()` next to `stage dpo` both work.
//! Split by concept: [`types`](self::tyexpr) of type expressions, [`expr`] expressions,
//! [`call`] argument matching and calls, [`items`] top-level items, run order and overrides,
//! [`rows`] what builtins need of dataset rows, [`unify`] subtyping and conversions.

mod call;
mod expr;
mod items;
mod rows;
mod tyexpr;
pub mod typed;
pub mod unify;

use crate::ast::{self, Span};
use crate::diag::{Diagnostic, Source};
use crate::types::Ty;
use std::collections::HashMap;
use typed::{FileId, FnId, LocalId, TExpr};
use unify::Subst;

pub use call::display_name;
pub use items::{CheckedItem, CheckedProgram, CheckedRounds, Override};

/// A `fn` of the prelude or the recipe, with its resolved signature.
pub struct FnInfo<'a> {
    pub name: String,
    pub def: &'a ast::FnDef,
    pub file: FileId,
    pub params: Vec<(String, LocalId, Ty)>,
    /// Defaults, checked once in the scope of the earlier parameters.
    pub defaults: Vec<Option<TExpr>>,
    /// The declared result type, or the body's once it is checked.
    pub ret: Option<Ty>,
    pub body: Option<TExpr>,
    state: State,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Pending,
    InProgress,
    Done,
}

/// What a top-level name of the recipe denotes.
#[derive(Clone, Copy)]
enum GlobalKind<'a> {
    Binding(&'a ast::Binding),
    Rounds(&'a ast::Rounds),
    /// A stage inside a rounds block (visible only inside it).
    RoundStage(&'a ast::Binding, &'a ast::Rounds),
}

struct Global<'a> {
    kind: GlobalKind<'a>,
    state: State,
    ty: Ty,
    value: Option<TExpr>,
}

/// The checker's state. One per compile.
pub struct Checker<'a> {
    pub sources: Vec<Source>,
    diags: Vec<(FileId, Diagnostic)>,
    pub subst: Subst,
    next_local: LocalId,
    /// Lexical scope: innermost last.
    scopes: Vec<(String, LocalId, Ty)>,
    file: FileId,
    aliases: HashMap<String, (&'a ast::TypeExpr, FileId)>,
    pub fns: Vec<FnInfo<'a>>,
    fn_names: HashMap<String, FnId>,
    externs: HashMap<String, &'a ast::ExternFn>,
    globals: HashMap<String, Global<'a>>,
    /// Global names in source order.
    global_order: Vec<String>,
    /// The fns whose bodies are being checked (recursion is an error: fns are inlined).
    fn_stack: Vec<FnId>,
    /// The rounds block being checked, if any.
    rounds: Option<&'a ast::Rounds>,
    /// Overridden `let` values and header fields (`--set`), by key.
    overrides: HashMap<String, (&'a ast::Expr, FileId)>,
    /// The parameter an argument is being checked against, for mismatch help (the parameter
    /// may be declared in the stdlib, another file than the label could point into).
    param_hint: Option<String>,
}

/// Check a parsed recipe against the parsed stdlib. `sources` are indexed by `FileId`
/// (user, prelude, builtins, then one per override).
pub fn check<'a>(
    user: &'a ast::Module,
    prelude: &'a ast::Module,
    builtins: &'a ast::Module,
    overrides: &'a [Override],
    sources: Vec<Source>,
) -> Result<CheckedProgram<'a>, Vec<Diagnostic>> {
    let mut checker = Checker {
        sources,
        diags: Vec::new(),
        subst: Subst::default(),
        next_local: 0,
        scopes: Vec::new(),
        file: FileId::USER,
        aliases: HashMap::new(),
        fns: Vec::new(),
        fn_names: HashMap::new(),
        externs: HashMap::new(),
        globals: HashMap::new(),
        global_order: Vec::new(),
        fn_stack: Vec::new(),
        rounds: None,
        overrides: HashMap::new(),
        param_hint: None,
    };
    checker.collect_stdlib(builtins, FileId::BUILTINS);
    checker.collect_stdlib(prelude, FileId::PRELUDE);
    checker.collect_user(user);
    checker.resolve_signatures();
    let program = checker.check_items(user, overrides);
    let mut errors: Vec<Diagnostic> = Vec::new();
    for (file, diag) in std::mem::take(&mut checker.diags) {
        errors.push(diag.with_source(&checker.sources[file.0 as usize]));
    }
    if errors.iter().any(Diagnostic::is_error) {
        Err(errors)
    } else {
        Ok(program)
    }
}

impl<'a> Checker<'a> {
    /// Report a diagnostic located in the current file.
    fn report(&mut self, diag: Diagnostic) {
        self.diags.push((self.file, diag));
    }

    fn report_in(&mut self, file: FileId, diag: Diagnostic) {
        self.diags.push((file, diag));
    }

    pub fn error_count(&self) -> usize {
        self.diags.iter().filter(|(_, d)| d.is_error()).count()
    }

    fn fresh_local(&mut self) -> LocalId {
        self.next_local += 1;
        self.next_local - 1
    }

    /// Bind a local in the innermost scope; returns its id.
    fn push_local(&mut self, name: &str, ty: Ty) -> LocalId {
        let id = self.fresh_local();
        self.scopes.push((name.to_string(), id, ty));
        id
    }

    fn lookup_local(&self, name: &str) -> Option<(LocalId, Ty)> {
        self.scopes.iter().rev().find(|(n, _, _)| n == name).map(|(_, id, ty)| (*id, ty.clone()))
    }

    /// Run `f` in a fresh lexical scope (and file), restoring both afterwards.
    fn scoped<T>(&mut self, file: FileId, f: impl FnOnce(&mut Self) -> T) -> T {
        let depth = self.scopes.len();
        let outer = std::mem::replace(&mut self.file, file);
        let result = f(self);
        self.file = outer;
        self.scopes.truncate(depth);
        result
    }

    /// Run `f` with no locals visible (a fn body or a top-level binding).
    fn isolated<T>(&mut self, file: FileId, f: impl FnOnce(&mut Self) -> T) -> T {
        let saved = std::mem::take(&mut self.scopes);
        let result = self.scoped(file, f);
        self.scopes = saved;
        result
    }

    /// Every name visible in value position, for "did you mean".
    fn visible_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.scopes.iter().map(|(n, _, _)| n.as_str()).collect();
        names.extend(self.globals.keys().map(String::as_str));
        names.extend(self.fn_names.keys().map(String::as_str));
        names.extend(self.externs.keys().map(String::as_str));
        names
    }

    /// Check a fn's body (once), with recursion detection.
    fn ensure_fn(&mut self, id: FnId, use_span: Span) {
        match self.fns[id].state {
            State::Done => {}
            State::InProgress => {
                let name = self.fns[id].name.clone();
                self.report(
                    Diagnostic::error("recipe::resolve::cycle", format!("`{name}` calls itself"))
                        .with_primary(use_span, "recursive call")
                        .with_help("functions are inlined into the code that uses them, so they cannot be recursive"),
                );
                if self.fns[id].ret.is_none() {
                    self.fns[id].ret = Some(Ty::Error);
                }
            }
            State::Pending => {
                self.fns[id].state = State::InProgress;
                self.fn_stack.push(id);
                let def = self.fns[id].def;
                let file = self.fns[id].file;
                let params = self.fns[id].params.clone();
                let ret = self.fns[id].ret.clone();
                let body = self.isolated(file, |c| {
                    for (name, local, ty) in &params {
                        c.scopes.push((name.clone(), *local, ty.clone()));
                    }
                    match &ret {
                        Some(ret) => c.check_against(&def.body, ret, def.ret.as_ref().map(|t| t.span)),
                        None => c.expr(&def.body, None),
                    }
                });
                self.fn_stack.pop();
                let info = &mut self.fns[id];
                if info.ret.is_none() {
                    info.ret = Some(body.ty.clone());
                }
                info.body = Some(body);
                info.state = State::Done;
            }
        }
    }
}
