//! Expressions from pest pairs: one function per precedence level of the grammar, folding
//! operator chains left to right (`**` nests to the right through the grammar itself).
//!
//! Invariants: comparisons and ranges are non-associative (a chain is reported as
//! `recipe::syntax::non_associative`); positional arguments precede named ones
//! (`recipe::syntax::argument_order`); an `if` branch without `let`s is its bare expression, a
//! `{ ... }` block in expression position is always `ExprKind::Block`.

use super::build::{child, ident, placeholder, Builder, Built, MAX_DEPTH};
use super::literal;
use crate::ast::*;
use crate::diag::Diagnostic;
use pest::iterators::Pair;
use recipe_grammar::Rule;

impl Builder<'_> {
    /// Any expression-level pair. `depth` bounds the tree's depth (see `MAX_DEPTH`).
    pub fn expr(&mut self, pair: Pair<Rule>, depth: usize) -> Built<Expr> {
        let pair = single_descendant(pair);
        let span = self.span_of(&pair);
        if depth > MAX_DEPTH {
            self.note_too_deep(span);
            return Ok(placeholder(span));
        }
        match pair.as_rule() {
            Rule::lambda => self.lambda(pair, depth),
            Rule::range => self.range(pair, depth),
            Rule::or_expr | Rule::and_expr | Rule::add_expr | Rule::mul_expr => self.fold(pair, depth),
            Rule::cmp_expr => self.comparison(pair, depth),
            Rule::unary => self.unary(pair, depth),
            Rule::power => self.power(pair, depth),
            Rule::postfix => self.postfix(pair, depth),
            _ => self.primary(pair, depth),
        }
    }

    fn lambda(&mut self, pair: Pair<Rule>, depth: usize) -> Built<Expr> {
        let span = self.span_of(&pair);
        let mut inner = pair.into_inner();
        let mut params = Vec::new();
        for param in child(&mut inner, span)?.into_inner() {
            let pspan = self.span_of(&param);
            let mut parts = param.into_inner();
            let name = self.binder(&child(&mut parts, pspan)?);
            let ty = match parts.next() {
                Some(ty) => Some(self.ty(ty)?),
                None => None,
            };
            params.push(Param { name, ty, default: None, span: pspan });
        }
        let body = self.expr(child(&mut inner, span)?, depth + 1)?;
        Ok(Expr { kind: ExprKind::Lambda(params, Box::new(body)), span })
    }

    /// Operands and operators of one level, alternating; the operand depth accounts for the
    /// chain length because a left fold nests one level per operator.
    fn operands(&mut self, pair: Pair<Rule>, depth: usize) -> Built<(Vec<Expr>, Vec<(String, Span)>)> {
        let children: Vec<Pair<Rule>> = pair.into_inner().collect();
        let chain = children.len() / 2;
        let mut operands = Vec::new();
        let mut operators = Vec::new();
        for child in children {
            if is_operator(child.as_rule()) {
                operators.push((child.as_str().to_string(), self.span_of(&child)));
            } else {
                operands.push(self.expr(child, depth + chain + usize::from(chain > 0))?);
            }
        }
        Ok((operands, operators))
    }

    fn fold(&mut self, pair: Pair<Rule>, depth: usize) -> Built<Expr> {
        let (operands, operators) = self.operands(pair, depth)?;
        let mut operands = operands.into_iter();
        let Some(mut acc) = operands.next() else {
            return Err(super::build::internal(Span::default()));
        };
        for ((op, _), rhs) in operators.into_iter().zip(operands) {
            acc = binary(binop(&op), acc, rhs);
        }
        Ok(acc)
    }

    fn comparison(&mut self, pair: Pair<Rule>, depth: usize) -> Built<Expr> {
        let (operands, operators) = self.operands(pair, depth)?;
        self.non_associative(&operators, "comparisons", "a < b && b < c");
        let mut operands = operands.into_iter();
        let Some(first) = operands.next() else {
            return Err(super::build::internal(Span::default()));
        };
        match (operators.first(), operands.next()) {
            (Some((op, _)), Some(rhs)) => Ok(binary(binop(op), first, rhs)),
            _ => Ok(first),
        }
    }

    fn range(&mut self, pair: Pair<Rule>, depth: usize) -> Built<Expr> {
        let (operands, operators) = self.operands(pair, depth)?;
        self.non_associative(&operators, "ranges", "(a..b)");
        let mut operands = operands.into_iter();
        let Some(start) = operands.next() else {
            return Err(super::build::internal(Span::default()));
        };
        match (operators.first(), operands.next()) {
            (Some((op, _)), Some(end)) => {
                let span = start.span.to(end.span);
                let inclusive = op == "..=";
                Ok(Expr { kind: ExprKind::Range { start: Box::new(start), end: Box::new(end), inclusive }, span })
            }
            _ => Ok(start),
        }
    }

    fn non_associative(&mut self, operators: &[(String, Span)], what: &str, example: &str) {
        if let [(first, first_span), (second, second_span), ..] = operators {
            self.errors.push(
                Diagnostic::error(
                    "recipe::syntax::non_associative",
                    format!("{what} cannot be chained: `{first}` followed by `{second}`"),
                )
                .with_primary(*second_span, "second operator in the chain")
                .with_secondary(*first_span, "first operator")
                .with_help(format!("{what} do not associate; write the intent explicitly, as in `{example}`")),
            );
        }
    }

    fn unary(&mut self, pair: Pair<Rule>, depth: usize) -> Built<Expr> {
        let children: Vec<Pair<Rule>> = pair.into_inner().collect();
        let prefixes = children.len().saturating_sub(1);
        let mut ops = Vec::new();
        let mut operand = None;
        for child in children {
            if child.as_rule() == Rule::prefix_op {
                let op = if child.as_str() == "-" { UnOp::Neg } else { UnOp::Not };
                ops.push((op, self.span_of(&child)));
            } else {
                operand = Some(self.expr(child, depth + prefixes)?);
            }
        }
        let Some(mut expr) = operand else {
            return Err(super::build::internal(Span::default()));
        };
        for (op, op_span) in ops.into_iter().rev() {
            let span = op_span.to(expr.span);
            expr = Expr { kind: ExprKind::Unary(op, Box::new(expr)), span };
        }
        Ok(expr)
    }

    fn power(&mut self, pair: Pair<Rule>, depth: usize) -> Built<Expr> {
        let span = self.span_of(&pair);
        let mut inner = pair.into_inner();
        let base = self.expr(child(&mut inner, span)?, depth + 1)?;
        if inner.next().is_none() {
            return Ok(base);
        }
        let exponent = self.expr(child(&mut inner, span)?, depth + 1)?;
        Ok(binary(BinOp::Pow, base, exponent))
    }

    fn postfix(&mut self, pair: Pair<Rule>, depth: usize) -> Built<Expr> {
        let span = self.span_of(&pair);
        let children: Vec<Pair<Rule>> = pair.into_inner().collect();
        let chain = children.len().saturating_sub(1);
        let mut children = children.into_iter();
        let Some(first) = children.next() else {
            return Err(super::build::internal(span));
        };
        let mut expr = self.expr(first, depth + chain)?;
        for suffix in children {
            let end = self.span_of(&suffix);
            let whole = expr.span.to(end);
            expr = match suffix.as_rule() {
                Rule::field_access => {
                    let label = ident(&child(&mut suffix.into_inner(), end)?);
                    Expr { kind: ExprKind::Field(Box::new(expr), label), span: whole }
                }
                _ => {
                    let args = self.call_args(suffix, depth + chain)?;
                    Expr { kind: ExprKind::Call(Box::new(expr), args), span: whole }
                }
            };
        }
        Ok(expr)
    }

    fn call_args(&mut self, pair: Pair<Rule>, depth: usize) -> Built<Vec<Arg>> {
        let mut args: Vec<Arg> = Vec::new();
        let mut first_named: Option<Span> = None;
        for arg in pair.into_inner() {
            let span = self.span_of(&arg);
            let inner = child(&mut arg.into_inner(), span)?;
            let arg = if inner.as_rule() == Rule::named_arg {
                let mut parts = inner.into_inner();
                let name = ident(&child(&mut parts, span)?);
                let value = self.expr(child(&mut parts, span)?, depth + 1)?;
                first_named.get_or_insert(span);
                Arg { name: Some(name), value, span }
            } else {
                let value = self.expr(inner, depth + 1)?;
                if let Some(named) = first_named {
                    self.errors.push(
                        Diagnostic::error(
                            "recipe::syntax::argument_order",
                            "positional argument after a named argument",
                        )
                        .with_primary(span, "positional argument")
                        .with_secondary(named, "named arguments start here")
                        .with_help("put positional arguments first, or name this one (`name = value`)"),
                    );
                }
                Arg { name: None, value, span }
            };
            args.push(arg);
        }
        Ok(args)
    }

    fn primary(&mut self, pair: Pair<Rule>, depth: usize) -> Built<Expr> {
        let span = self.span_of(&pair);
        let kind = match pair.as_rule() {
            Rule::int => match literal::int(pair.as_str(), span) {
                Ok(v) => ExprKind::Int(v),
                Err(e) => {
                    self.errors.push(e);
                    ExprKind::Int(0)
                }
            },
            Rule::float => match literal::float(pair.as_str(), span) {
                Ok(v) => ExprKind::Float(v),
                Err(e) => {
                    self.errors.push(e);
                    ExprKind::Float(0.0)
                }
            },
            Rule::bool => ExprKind::Bool(pair.as_str() == "true"),
            Rule::string => ExprKind::Str(self.string(pair, span)?),
            Rule::name => ExprKind::Name(ident(&pair)),
            Rule::paren => {
                let inner = self.expr(child(&mut pair.into_inner(), span)?, depth + 1)?;
                return Ok(Expr { span, ..inner });
            }
            Rule::list => {
                let mut items = Vec::new();
                for item in pair.into_inner() {
                    items.push(self.expr(item, depth + 1)?);
                }
                ExprKind::List(items)
            }
            Rule::record => {
                let mut fields = Vec::new();
                for field in pair.into_inner() {
                    fields.push(self.field_at(field, depth + 1)?);
                }
                ExprKind::Record(fields)
            }
            Rule::block => {
                let (lets, value) = self.block(pair, depth + 1)?;
                ExprKind::Block(lets, Box::new(value))
            }
            Rule::if_expr => return self.if_expr(pair, depth),
            _ => return Err(super::build::internal(span)),
        };
        Ok(Expr { kind, span })
    }

    pub(super) fn field_at(&mut self, pair: Pair<Rule>, depth: usize) -> Built<Field> {
        let span = self.span_of(&pair);
        let mut inner = pair.into_inner();
        let name = ident(&child(&mut inner, span)?);
        let value = self.expr(child(&mut inner, span)?, depth)?;
        Ok(Field { name, value, span })
    }

    /// The `let` statements and final expression of a `{ ... }` block.
    fn block(&mut self, pair: Pair<Rule>, depth: usize) -> Built<(Vec<LetStmt>, Expr)> {
        let span = self.span_of(&pair);
        let mut lets = Vec::new();
        let mut value = None;
        for part in pair.into_inner() {
            if part.as_rule() == Rule::let_stmt {
                let lspan = self.span_of(&part);
                let mut inner = part.into_inner();
                child(&mut inner, lspan)?; // `let`
                let name = self.binder(&child(&mut inner, lspan)?);
                let next = child(&mut inner, lspan)?;
                let (ty, value) = if next.as_rule() == Rule::type_expr {
                    (Some(self.ty(next)?), self.expr(child(&mut inner, lspan)?, depth + 1)?)
                } else {
                    (None, self.expr(next, depth + 1)?)
                };
                lets.push(LetStmt { name, ty, value, span: lspan });
            } else {
                value = Some(self.expr(part, depth + 1)?);
            }
        }
        match value {
            Some(value) => Ok((lets, value)),
            None => Err(super::build::internal(span)),
        }
    }

    fn if_expr(&mut self, pair: Pair<Rule>, depth: usize) -> Built<Expr> {
        let span = self.span_of(&pair);
        let mut inner = pair.into_inner();
        child(&mut inner, span)?; // `if`
        let cond = self.expr(child(&mut inner, span)?, depth + 1)?;
        let then = self.branch(child(&mut inner, span)?, depth + 1)?;
        child(&mut inner, span)?; // `else`
        let otherwise_pair = child(&mut inner, span)?;
        let otherwise = if otherwise_pair.as_rule() == Rule::if_expr {
            self.if_expr(otherwise_pair, depth + 1)?
        } else {
            self.branch(otherwise_pair, depth + 1)?
        };
        let kind = ExprKind::If { cond: Box::new(cond), then: Box::new(then), otherwise: Box::new(otherwise) };
        Ok(Expr { kind, span })
    }

    /// An `if` branch: its expression, or a block when it has `let`s.
    fn branch(&mut self, pair: Pair<Rule>, depth: usize) -> Built<Expr> {
        let span = self.span_of(&pair);
        let (lets, value) = self.block(pair, depth)?;
        if lets.is_empty() {
            Ok(value)
        } else {
            Ok(Expr { kind: ExprKind::Block(lets, Box::new(value)), span })
        }
    }
}

/// Skips, without recursion, the chain of precedence levels a simple operand is wrapped in
/// (`expr` > `range` > `or_expr` > ... > `postfix` > `name`): deep nesting in the source must not
/// become deep recursion here.
fn single_descendant(mut pair: Pair<Rule>) -> Pair<Rule> {
    loop {
        let wrapper = matches!(
            pair.as_rule(),
            Rule::expr
                | Rule::arg
                | Rule::range
                | Rule::or_expr
                | Rule::and_expr
                | Rule::cmp_expr
                | Rule::add_expr
                | Rule::mul_expr
                | Rule::unary
                | Rule::power
                | Rule::postfix
        );
        if !wrapper {
            return pair;
        }
        let mut inner = pair.clone().into_inner();
        match (inner.next(), inner.next()) {
            // `arg` wraps a `named_arg`, which is not an expression.
            (Some(only), None) if only.as_rule() != Rule::named_arg => pair = only,
            _ => return pair,
        }
    }
}

fn binary(op: BinOp, lhs: Expr, rhs: Expr) -> Expr {
    let span = lhs.span.to(rhs.span);
    Expr { kind: ExprKind::Binary(op, Box::new(lhs), Box::new(rhs)), span }
}

fn is_operator(rule: Rule) -> bool {
    matches!(rule, Rule::range_op | Rule::or_op | Rule::and_op | Rule::cmp_op | Rule::add_op | Rule::mul_op)
}

fn binop(text: &str) -> BinOp {
    match text {
        "+" => BinOp::Add,
        "-" => BinOp::Sub,
        "*" => BinOp::Mul,
        "/" => BinOp::Div,
        "%" => BinOp::Rem,
        "**" => BinOp::Pow,
        "==" => BinOp::Eq,
        "!=" => BinOp::Ne,
        "<" => BinOp::Lt,
        "<=" => BinOp::Le,
        ">" => BinOp::Gt,
        ">=" => BinOp::Ge,
        "&&" => BinOp::And,
        _ => BinOp::Or,
    }
}
