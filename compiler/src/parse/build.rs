//! From pest pairs to the syntax tree. The grammar fixes the shape of every pair, so each
//! function here reads a known sequence of children; checks the grammar leaves to the compiler
//! (keywords as binders, argument order, chained comparisons, literal values, nesting depth) are
//! reported as diagnostics and the build goes on, so one run reports all of them.
//!
//! Invariant: every node's span is its pair's span without trailing whitespace and comments
//! (parenthesised expressions include the parentheses), so spans order nodes as they appear in
//! the source and never cover a comment that follows a node.

use super::error::reserved;
use super::lex;
use super::literal;
use crate::ast::*;
use crate::diag::Diagnostic;
use pest::iterators::{Pair, Pairs};
use recipe_grammar::Rule;

/// Deeper expressions are rejected (`recipe::syntax::nesting`): later phases recurse over the
/// tree and must not run out of stack.
pub const MAX_DEPTH: usize = 200;

pub struct Builder<'t> {
    text: &'t str,
    /// The source's comments, sorted, for trimming spans.
    comments: &'t [Comment],
    pub errors: Vec<Diagnostic>,
    too_deep: bool,
}

pub(super) fn raw_span(pair: &Pair<Rule>) -> Span {
    let s = pair.as_span();
    Span::new(s.start(), s.end())
}

/// The next child; the grammar guarantees it exists, so a missing one is a bug in this file,
/// reported as an internal diagnostic rather than a panic.
pub(super) fn child<'i>(pairs: &mut Pairs<'i, Rule>, parent: Span) -> Result<Pair<'i, Rule>, Diagnostic> {
    pairs.next().ok_or_else(|| internal(parent))
}

pub(super) type Built<T> = Result<T, Diagnostic>;

impl<'t> Builder<'t> {
    pub fn new(text: &'t str, comments: &'t [Comment]) -> Builder<'t> {
        Builder { text, comments, errors: Vec::new(), too_deep: false }
    }

    /// A pair's span without the whitespace and comments pest includes after a rule's last
    /// token (it skips trivia before trying an optional or repeated part that then fails).
    pub(super) fn span_of(&self, pair: &Pair<Rule>) -> Span {
        let span = raw_span(pair);
        let start = span.start as usize;
        let mut end = span.end as usize;
        loop {
            let trimmed = self.text[start..end].trim_end_matches([' ', '\t', '\r', '\n']);
            end = start + trimmed.len();
            match self.comments.binary_search_by_key(&end, |c| c.span.end as usize) {
                Ok(i) if self.comments[i].span.start as usize >= start => end = self.comments[i].span.start as usize,
                _ => break,
            }
        }
        Span::new(start, end)
    }

    pub(super) fn note_too_deep(&mut self, span: Span) {
        if !self.too_deep {
            self.too_deep = true;
            self.errors.push(
                Diagnostic::error("recipe::syntax::nesting", "expression nested too deeply")
                    .with_primary(span, format!("more than {MAX_DEPTH} levels deep"))
                    .with_help("split the expression with `let` bindings or helper functions"),
            );
        }
    }

    pub fn module(&mut self, pair: Pair<Rule>) -> Built<Module> {
        let span = self.span_of(&pair);
        let mut items = Vec::new();
        for item in pair.into_inner() {
            if item.as_rule() != Rule::EOI {
                items.push(self.item(item)?);
            }
        }
        Ok(Module { items, comments: Vec::new(), span })
    }

    fn item(&mut self, pair: Pair<Rule>) -> Built<Item> {
        Ok(match pair.as_rule() {
            Rule::header => Item::Header(self.header(pair)?),
            Rule::binding => Item::Binding(self.binding(pair)?),
            Rule::fn_def => Item::Fn(self.fn_def(pair)?),
            Rule::extern_fn => Item::Extern(self.extern_fn(pair)?),
            Rule::type_alias => Item::TypeAlias(self.type_alias(pair)?),
            Rule::rounds => Item::Rounds(self.rounds(pair)?),
            _ => Item::Run(self.run(pair)?),
        })
    }

    fn header(&mut self, pair: Pair<Rule>) -> Built<Header> {
        let span = self.span_of(&pair);
        let mut inner = pair.into_inner();
        child(&mut inner, span)?; // `recipe`
        let name_pair = child(&mut inner, span)?;
        let name_span = self.span_of(&name_pair);
        let name = self.string(name_pair, span)?;
        let mut fields = Vec::new();
        for field in inner {
            fields.push(self.field_at(field, 0)?);
        }
        Ok(Header { name, name_span, fields, span })
    }

    pub fn binding(&mut self, pair: Pair<Rule>) -> Built<Binding> {
        let span = self.span_of(&pair);
        let mut inner = pair.into_inner();
        let kind = match child(&mut inner, span)?.as_str() {
            "model" => BindingKind::Model,
            "data" => BindingKind::Data,
            "stage" => BindingKind::Stage,
            "eval" => BindingKind::Eval,
            _ => BindingKind::Let,
        };
        let name = self.binder(&child(&mut inner, span)?);
        let (ty, value) = self.annotated_value(inner, span)?;
        Ok(Binding { kind, name, ty, value, span })
    }

    /// `(: type)? = expr`, the tail of bindings and `let` statements.
    fn annotated_value(&mut self, mut inner: Pairs<Rule>, span: Span) -> Built<(Option<TypeExpr>, Expr)> {
        let next = child(&mut inner, span)?;
        if next.as_rule() == Rule::type_expr {
            let ty = self.ty(next)?;
            let value = self.expr(child(&mut inner, span)?, 0)?;
            Ok((Some(ty), value))
        } else {
            Ok((None, self.expr(next, 0)?))
        }
    }

    fn fn_def(&mut self, pair: Pair<Rule>) -> Built<FnDef> {
        let span = self.span_of(&pair);
        let mut inner = pair.into_inner();
        child(&mut inner, span)?; // `fn`
        let name = self.binder(&child(&mut inner, span)?);
        let params = self.params(child(&mut inner, span)?, true)?;
        let next = child(&mut inner, span)?;
        let (ret, body) = if next.as_rule() == Rule::type_expr {
            (Some(self.ty(next)?), self.expr(child(&mut inner, span)?, 0)?)
        } else {
            (None, self.expr(next, 0)?)
        };
        Ok(FnDef { name, params, ret, body, span })
    }

    fn extern_fn(&mut self, pair: Pair<Rule>) -> Built<ExternFn> {
        let span = self.span_of(&pair);
        let mut inner = pair.into_inner();
        child(&mut inner, span)?; // `extern`
        child(&mut inner, span)?; // `fn`
        let name = self.binder(&child(&mut inner, span)?);
        let mut next = child(&mut inner, span)?;
        let mut type_params = Vec::new();
        if next.as_rule() == Rule::type_params {
            type_params = next.into_inner().map(|p| self.binder(&p)).collect();
            next = child(&mut inner, span)?;
        }
        // Extern parameters are only labels for named arguments, never referenced, so they
        // may be keywords (`data`, `model`).
        let params = self.params(next, false)?;
        let ret = self.ty(child(&mut inner, span)?)?;
        Ok(ExternFn { name, type_params, params, ret, span })
    }

    fn params(&mut self, pair: Pair<Rule>, binders: bool) -> Built<Vec<Param>> {
        let mut params = Vec::new();
        for param in pair.into_inner() {
            let span = self.span_of(&param);
            let mut inner = param.into_inner();
            let name_pair = child(&mut inner, span)?;
            let name = if binders { self.binder(&name_pair) } else { ident(&name_pair) };
            let ty = Some(self.ty(child(&mut inner, span)?)?);
            let default = match inner.next() {
                Some(value) => Some(self.expr(value, 0)?),
                None => None,
            };
            params.push(Param { name, ty, default, span });
        }
        Ok(params)
    }

    fn type_alias(&mut self, pair: Pair<Rule>) -> Built<TypeAlias> {
        let span = self.span_of(&pair);
        let mut inner = pair.into_inner();
        child(&mut inner, span)?; // `type`
        let name = self.binder(&child(&mut inner, span)?);
        let ty = self.ty(child(&mut inner, span)?)?;
        Ok(TypeAlias { name, ty, span })
    }

    fn rounds(&mut self, pair: Pair<Rule>) -> Built<Rounds> {
        let span = self.span_of(&pair);
        let mut inner = pair.into_inner();
        child(&mut inner, span)?; // `rounds`
        let name = self.binder(&child(&mut inner, span)?);
        let count = self.expr(child(&mut inner, span)?, 0)?;
        child(&mut inner, span)?; // `from`
        let from = self.expr(child(&mut inner, span)?, 0)?;
        let mut stages = Vec::new();
        for stage in inner {
            let stage = self.binding(stage)?;
            if stage.kind != BindingKind::Stage {
                let keyword_span =
                    Span::new(stage.span.start as usize, stage.span.start as usize + stage.kind.keyword().len());
                self.errors.push(
                    Diagnostic::error(
                        "recipe::syntax::rounds_body",
                        format!("a `rounds` body holds only `stage` bindings, not `{}`", stage.kind.keyword()),
                    )
                    .with_primary(keyword_span, "not allowed inside `rounds`")
                    .with_secondary(name.span, "in this rounds block")
                    .with_help(format!("move the `{}` binding above the `rounds` block", stage.kind.keyword())),
                );
            }
            stages.push(stage);
        }
        Ok(Rounds { name, count, from, stages, span })
    }

    fn run(&mut self, pair: Pair<Rule>) -> Built<Run> {
        let span = self.span_of(&pair);
        let steps = pair.into_inner().filter(|p| p.as_rule() == Rule::name).map(|p| ident(&p)).collect();
        Ok(Run { steps, span })
    }

    /// A name being introduced: keywords are reported as reserved.
    pub(super) fn binder(&mut self, pair: &Pair<Rule>) -> Ident {
        let id = ident(pair);
        if lex::is_keyword(&id.name) {
            self.errors.push(reserved(&id.name, id.span));
        }
        id
    }

    pub fn ty(&mut self, pair: Pair<Rule>) -> Built<TypeExpr> {
        // `type_expr` wraps exactly one alternative.
        let outer = self.span_of(&pair);
        let pair = child(&mut pair.into_inner(), outer)?;
        let span = self.span_of(&pair);
        let kind = match pair.as_rule() {
            Rule::fn_type => {
                let mut types = Vec::new();
                for p in pair.into_inner().filter(|p| p.as_rule() == Rule::type_expr) {
                    types.push(self.ty(p)?);
                }
                match types.pop() {
                    Some(ret) => TypeExprKind::Fn(types, Box::new(ret)),
                    None => return Err(internal(span)),
                }
            }
            Rule::record_type => {
                let mut fields = Vec::new();
                for field in pair.into_inner() {
                    let fspan = self.span_of(&field);
                    let mut inner = field.into_inner();
                    let name = ident(&child(&mut inner, fspan)?);
                    fields.push((name, self.ty(child(&mut inner, fspan)?)?));
                }
                TypeExprKind::Record(fields)
            }
            Rule::applied_type => {
                let mut inner = pair.into_inner();
                let name = ident(&child(&mut inner, span)?);
                let mut args = Vec::new();
                for arg in inner {
                    args.push(self.ty(arg)?);
                }
                TypeExprKind::Applied(name, args)
            }
            _ => TypeExprKind::Named(ident(&child(&mut pair.into_inner(), span)?)),
        };
        Ok(TypeExpr { kind, span })
    }

    pub(super) fn string(&mut self, pair: Pair<Rule>, parent: Span) -> Built<String> {
        let inner = child(&mut pair.into_inner(), parent)?;
        let start = inner.as_span().start();
        match literal::string(inner.as_str(), start) {
            Ok(s) => Ok(s),
            Err(errors) => {
                self.errors.extend(errors);
                Ok(String::new())
            }
        }
    }
}

pub fn ident(pair: &Pair<Rule>) -> Ident {
    Ident { name: pair.as_str().to_string(), span: raw_span(pair) }
}

pub fn internal(span: Span) -> Diagnostic {
    Diagnostic::error("recipe::syntax::internal", "the parser built an unexpected tree")
        .with_primary(span, "while reading this")
        .with_help("this is a bug in the recipe compiler; please report it with this input")
}

pub(super) fn placeholder(span: Span) -> Expr {
    Expr { kind: ExprKind::Int(0), span }
}
