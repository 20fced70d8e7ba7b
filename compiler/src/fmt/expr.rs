//! Printing expressions, types and parameter lists. Parentheses are not in the tree: they are
//! written exactly where precedence needs them, so `parse(format(e))` rebuilds the same tree.
//!
//! Precedence, loosest to tightest: lambda 0, range 1, `||` 2, `&&` 3, comparisons 4, `+ -` 5,
//! `* / %` 6, unary 7, `**` 8, postfix 9, atoms 10. A lambda's body extends as far as possible,
//! so a lambda anywhere but the loosest position is parenthesised.

use super::Printer;
use crate::ast::*;
use crate::parse::literal;

const LAMBDA: u8 = 0;
const RANGE: u8 = 1;
const UNARY: u8 = 7;
const POW: u8 = 8;
const POSTFIX: u8 = 9;
const ATOM: u8 = 10;

fn binop_prec(op: BinOp) -> u8 {
    match op {
        BinOp::Or => 2,
        BinOp::And => 3,
        BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => 4,
        BinOp::Add | BinOp::Sub => 5,
        BinOp::Mul | BinOp::Div | BinOp::Rem => 6,
        BinOp::Pow => POW,
    }
}

fn is_comparison(op: BinOp) -> bool {
    binop_prec(op) == 4
}

/// The precedence each operand of `op` needs. Left-associative operators accept their own
/// level on the left; `**` is right-associative and its left operand must be tighter than
/// unary (`(-x) ** 2`); comparisons do not associate at all.
fn operand_precedence(op: BinOp) -> (u8, u8) {
    let p = binop_prec(op);
    if op == BinOp::Pow {
        (POSTFIX, UNARY)
    } else if is_comparison(op) {
        (p + 1, p + 1)
    } else {
        (p, p + 1)
    }
}

/// Whether `e` lays itself out over lines when too long (so it can start after ` = `).
fn breaks_itself(e: &Expr) -> bool {
    match &e.kind {
        ExprKind::Call(..) | ExprKind::List(_) | ExprKind::Record(_) | ExprKind::Block(..) | ExprKind::If { .. } => {
            true
        }
        ExprKind::Lambda(_, body) => breaks_itself(body),
        _ => false,
    }
}

fn prec(e: &Expr) -> u8 {
    match &e.kind {
        ExprKind::Lambda(..) => LAMBDA,
        ExprKind::Range { .. } => RANGE,
        ExprKind::Binary(op, ..) => binop_prec(*op),
        ExprKind::Unary(..) => UNARY,
        // A negative literal (only in generated trees) prints with a leading `-`.
        ExprKind::Int(v) if *v < 0 => UNARY,
        ExprKind::Float(v) if v.is_sign_negative() => UNARY,
        ExprKind::Field(..) | ExprKind::Call(..) => POSTFIX,
        _ => ATOM,
    }
}

impl Printer<'_> {
    pub(crate) fn expr(&mut self, e: &Expr) {
        self.expr_at(e, LAMBDA);
    }

    /// ` = value` after a binding, `fn` signature, `let` or named argument. A value that does
    /// not fit on the line moves to the next one, indented, when it fits there or cannot break
    /// itself; a call, list, record, block or `if` too long for either breaks in place.
    pub(crate) fn assigned(&mut self, value: &Expr) {
        self.write(" =");
        let moves = !self.flat && {
            let width = self.measure(|m| m.expr(value)).chars().count();
            let fits_here = self.fits(1 + width);
            let fits_below = self.indent + super::INDENT + width <= super::WIDTH;
            !fits_here && (fits_below || !breaks_itself(value))
        };
        if moves {
            self.newline();
            self.indent += super::INDENT;
            self.expr(value);
            self.indent -= super::INDENT;
        } else {
            self.write(" ");
            self.expr(value);
        }
    }

    /// `e` in a position that needs precedence at least `min`.
    fn expr_at(&mut self, e: &Expr, min: u8) {
        if prec(e) < min {
            self.write("(");
            self.expr_kind(e);
            self.write(")");
        } else {
            self.expr_kind(e);
        }
    }

    fn expr_kind(&mut self, e: &Expr) {
        match &e.kind {
            ExprKind::Int(v) => self.int_literal(*v, e.span),
            ExprKind::Float(v) => self.float_literal(*v, e.span),
            ExprKind::Bool(b) => self.write(if *b { "true" } else { "false" }),
            ExprKind::Str(s) => self.string_literal(s, e.span),
            ExprKind::Name(id) => self.write(&id.name),
            ExprKind::Field(base, name) => {
                self.expr_at(base, POSTFIX);
                self.write(".");
                self.write(&name.name);
            }
            ExprKind::Call(callee, args) => {
                self.expr_at(callee, POSTFIX);
                let close = e.span.end.saturating_sub(1) as usize;
                self.delimited(
                    "(",
                    ")",
                    false,
                    args,
                    e.span,
                    close,
                    |a| a.span,
                    |p, a| match &a.name {
                        Some(name) => {
                            p.write(&name.name);
                            p.assigned(&a.value);
                        }
                        None => p.expr(&a.value),
                    },
                );
            }
            ExprKind::Unary(op, operand) => {
                self.write(match op {
                    UnOp::Neg => "-",
                    UnOp::Not => "!",
                });
                self.expr_at(operand, UNARY);
            }
            ExprKind::Binary(op, lhs, rhs) => self.binary(*op, lhs, rhs),
            ExprKind::If { cond, then, otherwise } => self.if_expr(e, cond, then, otherwise),
            ExprKind::Lambda(params, body) => {
                if params.is_empty() {
                    self.write("||");
                } else {
                    self.write("|");
                    for (i, param) in params.iter().enumerate() {
                        if i > 0 {
                            self.write(", ");
                        }
                        self.param(param);
                    }
                    self.write("|");
                }
                self.write(" ");
                self.expr(body);
            }
            ExprKind::List(items) => {
                let close = e.span.end.saturating_sub(1) as usize;
                self.delimited("[", "]", false, items, e.span, close, |i| i.span, |p, i| p.expr(i));
            }
            ExprKind::Record(fields) => {
                let close = e.span.end.saturating_sub(1) as usize;
                self.braces_fields(fields, e.span, close, ": ", false);
            }
            ExprKind::Range { start, end, inclusive } => {
                self.expr_at(start, RANGE + 1);
                self.write(if *inclusive { "..=" } else { ".." });
                self.expr_at(end, RANGE + 1);
            }
            ExprKind::Block(lets, value) => self.block(e.span, lets, value),
        }
    }

    fn binary(&mut self, op: BinOp, lhs: &Expr, rhs: &Expr) {
        if !self.flat && op != BinOp::Pow {
            let width = self.measure(|m| m.binary(op, lhs, rhs)).chars().count();
            if !self.fits(width) {
                self.binary_broken(op, lhs, rhs);
                return;
            }
        }
        let (left_min, right_min) = operand_precedence(op);
        self.expr_at(lhs, left_min);
        self.write(" ");
        self.write(op.symbol());
        self.write(" ");
        self.expr_at(rhs, right_min);
    }

    /// A chain of operators of one precedence level, too long for its line: one operand per
    /// line, each continuation line starting with its operator, indented once.
    fn binary_broken(&mut self, op: BinOp, lhs: &Expr, rhs: &Expr) {
        let level = binop_prec(op);
        let (left_min, right_min) = operand_precedence(op);
        // Walk down the left spine while it continues the same level (left-associative).
        let mut rest = vec![(op, rhs)];
        let mut first = lhs;
        while let ExprKind::Binary(inner, l, r) = &first.kind {
            if binop_prec(*inner) != level || is_comparison(*inner) {
                break;
            }
            rest.push((*inner, r));
            first = l;
        }
        self.expr_at(first, left_min);
        self.indent += super::INDENT;
        for (op, operand) in rest.into_iter().rev() {
            self.newline();
            self.write(op.symbol());
            self.write(" ");
            self.expr_at(operand, right_min);
        }
        self.indent -= super::INDENT;
    }

    fn if_expr(&mut self, whole: &Expr, cond: &Expr, then: &Expr, otherwise: &Expr) {
        let close = whole.span.end.saturating_sub(1) as usize;
        let breaks = !self.flat && {
            let flat = self.measure(|m| m.if_chain(cond, then, otherwise, close));
            self.has_comment(whole.span) || !self.fits(flat.chars().count())
        };
        if breaks {
            self.if_chain(cond, then, otherwise, close);
        } else {
            let was = self.flat;
            self.flat = true;
            self.if_chain(cond, then, otherwise, close);
            self.flat = was;
        }
    }

    /// `if c { a } else if d { b } else { c }`, broken or not according to `self.flat`;
    /// `close` is the source offset of the last branch's `}`.
    fn if_chain(&mut self, cond: &Expr, then: &Expr, otherwise: &Expr, close: usize) {
        self.write("if ");
        self.expr(cond);
        self.write(" ");
        self.branch(then, otherwise.span.start as usize);
        self.write(" else ");
        match &otherwise.kind {
            ExprKind::If { cond, then, otherwise } => self.if_chain(cond, then, otherwise, close),
            _ => self.branch(otherwise, close),
        }
    }

    /// One `{ ... }` branch of an `if`; a block's `let`s are written inside the braces.
    fn branch(&mut self, e: &Expr, close: usize) {
        match &e.kind {
            ExprKind::Block(lets, value) => self.block_body(lets, value, close),
            _ => self.block_body(&[], e, close),
        }
    }

    fn block(&mut self, span: Span, lets: &[LetStmt], value: &Expr) {
        let close = span.end.saturating_sub(1) as usize;
        let breaks = !self.flat && {
            let flat = self.measure(|m| m.block_body(lets, value, close));
            self.has_comment(span) || !self.fits(flat.chars().count())
        };
        if breaks {
            self.block_body(lets, value, close);
        } else {
            let was = self.flat;
            self.flat = true;
            self.block_body(lets, value, close);
            self.flat = was;
        }
    }

    /// `{ let a = 1; value }` in flat mode, else one statement per line.
    fn block_body(&mut self, lets: &[LetStmt], value: &Expr, close: usize) {
        if self.flat {
            self.write("{ ");
            for stmt in lets {
                self.let_stmt(stmt);
                self.write("; ");
            }
            self.expr(value);
            self.write(" }");
            return;
        }
        self.write("{");
        self.newline();
        self.indent += super::INDENT;
        enum Stmt<'s> {
            Let(&'s LetStmt),
            Value(&'s Expr),
        }
        let mut stmts: Vec<Stmt> = lets.iter().map(Stmt::Let).collect();
        stmts.push(Stmt::Value(value));
        let span_of = |s: &Stmt| match s {
            Stmt::Let(l) => l.span,
            Stmt::Value(v) => v.span,
        };
        let last = stmts.len() - 1;
        let mut index = 0;
        self.lines(&stmts, span_of, close, "", false, |p, s| {
            match s {
                Stmt::Let(l) => p.let_stmt(l),
                Stmt::Value(v) => p.expr(v),
            }
            if index < last {
                p.write(";");
            }
            index += 1;
        });
        self.indent -= super::INDENT;
        self.write("}");
    }

    fn let_stmt(&mut self, stmt: &LetStmt) {
        self.write("let ");
        self.write(&stmt.name.name);
        if let Some(ty) = &stmt.ty {
            self.write(": ");
            self.ty(ty);
        }
        self.assigned(&stmt.value);
    }

    /// `name: Type = default`, `name` (lambda), `name: Type` (lambda with annotation).
    fn param(&mut self, param: &Param) {
        self.write(&param.name.name);
        if let Some(ty) = &param.ty {
            self.write(": ");
            self.ty(ty);
        }
        if let Some(default) = &param.default {
            self.write(" = ");
            self.expr(default);
        }
    }

    /// A `fn` or `extern fn` parameter list; `span` covers it, `close` is where it ends.
    pub(crate) fn params(&mut self, params: &[Param], span: Span, close: usize) {
        self.delimited("(", ")", false, params, span, close, |p| p.span, |p, param| p.param(param));
    }

    pub(crate) fn ty(&mut self, ty: &TypeExpr) {
        match &ty.kind {
            TypeExprKind::Named(name) => self.write(&name.name),
            TypeExprKind::Applied(name, args) => {
                self.write(&name.name);
                self.write("[");
                for (i, arg) in args.iter().enumerate() {
                    if i > 0 {
                        self.write(", ");
                    }
                    self.ty(arg);
                }
                self.write("]");
            }
            TypeExprKind::Record(fields) => {
                let close = ty.span.end.saturating_sub(1) as usize;
                let span_of = |f: &(Ident, TypeExpr)| f.0.span.to(f.1.span);
                self.delimited("{", "}", false, fields, ty.span, close, span_of, |p, (name, t)| {
                    p.write(&name.name);
                    p.write(": ");
                    p.ty(t);
                });
            }
            TypeExprKind::Fn(params, ret) => {
                self.write("fn(");
                for (i, param) in params.iter().enumerate() {
                    if i > 0 {
                        self.write(", ");
                    }
                    self.ty(param);
                }
                self.write(") -> ");
                self.ty(ret);
            }
        }
    }

    /// The source spelling of a literal at `span`, when it is still the literal's own text.
    fn source_text(&self, span: Span) -> Option<&str> {
        self.text.get(span.start as usize..span.end as usize)
    }

    fn int_literal(&mut self, v: i64, span: Span) {
        let spelled = self
            .source_text(span)
            .filter(|t| t.bytes().all(|b| b.is_ascii_digit() || b == b'_'))
            .filter(|t| literal::int(t, span).ok() == Some(v))
            .map(str::to_string);
        self.write(&spelled.unwrap_or_else(|| v.to_string()));
    }

    fn float_literal(&mut self, v: f64, span: Span) {
        let spelled = self
            .source_text(span)
            .filter(|t| t.starts_with(|c: char| c.is_ascii_digit()))
            .filter(|t| t.bytes().all(|b| b.is_ascii_digit() || b"_.eE+-".contains(&b)))
            .filter(|t| literal::float(t, span).ok().map(f64::to_bits) == Some(v.to_bits()))
            .map(str::to_string);
        // `{:?}` always has a `.` or an exponent, so it reads back as a float.
        self.write(&spelled.unwrap_or_else(|| format!("{v:?}")));
    }

    pub(crate) fn string_literal(&mut self, s: &str, span: Span) {
        let spelled = self
            .source_text(span)
            .filter(|t| t.len() >= 2 && t.starts_with('"') && t.ends_with('"'))
            .filter(|t| literal::string(&t[1..t.len() - 1], 0).ok().as_deref() == Some(s))
            .map(str::to_string);
        let text = spelled.unwrap_or_else(|| escape(s));
        self.write(&text);
    }
}

/// A string literal denoting `s`.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:X}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
