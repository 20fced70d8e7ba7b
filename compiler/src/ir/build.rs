//! Builders from surface operators and builtin names to typed IR, for the lowering.
//!
//! They apply the language's one numeric promotion (an Int operand meets a Float one → the Int
//! becomes Float via an explicit `float` call) and pick the typed operator or builtin variant.
//! `/` and `**` always compute in Float; `div(a, b)` is Int floor division (`BinOp::IDiv`);
//! `+` on two Strings is concatenation (`Builtin::Concat`).

use super::{BinOp, Builtin, Cmp, Const, Expr, ExprKind, IrError, Module, Ty, UnOp};
use crate::ast;

/// Lowers a surface binary operator applied to already-lowered operands.
pub fn binary(op: ast::BinOp, lhs: Expr, rhs: Expr) -> Result<Expr, IrError> {
    use ast::BinOp as A;
    let no = |lhs: &Expr, rhs: &Expr| IrError::NoOverload { name: op.symbol().to_owned(), args: vec![lhs.ty, rhs.ty] };
    let numeric = |t: Ty| matches!(t, Ty::Int | Ty::Float);
    let both_int = lhs.ty == Ty::Int && rhs.ty == Ty::Int;
    let cmp = match op {
        A::Eq => Some(Cmp::Eq),
        A::Ne => Some(Cmp::Ne),
        A::Lt => Some(Cmp::Lt),
        A::Le => Some(Cmp::Le),
        A::Gt => Some(Cmp::Gt),
        A::Ge => Some(Cmp::Ge),
        _ => None,
    };
    match op {
        A::And | A::Or => {
            if lhs.ty != Ty::Bool || rhs.ty != Ty::Bool {
                return Err(no(&lhs, &rhs));
            }
            let op = if op == A::And { BinOp::And } else { BinOp::Or };
            Ok(Expr::binary(op, lhs, rhs))
        }
        A::Add if lhs.ty == Ty::Str && rhs.ty == Ty::Str => Ok(Expr::call(Builtin::Concat, vec![lhs, rhs])),
        A::Add | A::Sub | A::Mul | A::Rem | A::Div | A::Pow => {
            if !numeric(lhs.ty) || !numeric(rhs.ty) {
                return Err(no(&lhs, &rhs));
            }
            let int_op = match op {
                A::Add => Some(BinOp::IAdd),
                A::Sub => Some(BinOp::ISub),
                A::Mul => Some(BinOp::IMul),
                A::Rem => Some(BinOp::IRem),
                _ => None,
            };
            if let (true, Some(int_op)) = (both_int, int_op) {
                return Ok(Expr::binary(int_op, lhs, rhs));
            }
            let (lhs, rhs) = (lhs.to_float(), rhs.to_float());
            Ok(match op {
                A::Add => Expr::binary(BinOp::FAdd, lhs, rhs),
                A::Sub => Expr::binary(BinOp::FSub, lhs, rhs),
                A::Mul => Expr::binary(BinOp::FMul, lhs, rhs),
                A::Rem => Expr::binary(BinOp::FRem, lhs, rhs),
                A::Div => Expr::binary(BinOp::FDiv, lhs, rhs),
                _ => Expr::call(Builtin::Pow, vec![lhs, rhs]),
            })
        }
        A::Eq | A::Ne | A::Lt | A::Le | A::Gt | A::Ge => {
            let cmp = cmp.unwrap_or(Cmp::Eq);
            match (lhs.ty, rhs.ty) {
                (Ty::Int, Ty::Int) => Ok(Expr::binary(BinOp::ICmp(cmp), lhs, rhs)),
                (a, b) if numeric(a) && numeric(b) => {
                    Ok(Expr::binary(BinOp::FCmp(cmp), lhs.to_float(), rhs.to_float()))
                }
                (Ty::Bool, Ty::Bool) if cmp == Cmp::Eq => Ok(Expr::binary(BinOp::BEq, lhs, rhs)),
                (Ty::Bool, Ty::Bool) if cmp == Cmp::Ne => Ok(Expr::binary(BinOp::BNe, lhs, rhs)),
                (Ty::Str, Ty::Str) if matches!(cmp, Cmp::Eq | Cmp::Ne) => {
                    let eq = Expr::call(Builtin::StrEq, vec![lhs, rhs]);
                    Ok(if cmp == Cmp::Eq { eq } else { Expr::unary(UnOp::Not, eq) })
                }
                _ => Err(no(&lhs, &rhs)),
            }
        }
    }
}

/// Lowers a surface unary operator.
pub fn unary(op: ast::UnOp, operand: Expr) -> Result<Expr, IrError> {
    let op = match (op, operand.ty) {
        (ast::UnOp::Neg, Ty::Int) => UnOp::INeg,
        (ast::UnOp::Neg, Ty::Float) => UnOp::FNeg,
        (ast::UnOp::Not, Ty::Bool) => UnOp::Not,
        (op, ty) => {
            let name = if op == ast::UnOp::Neg { "-" } else { "!" };
            return Err(IrError::NoOverload { name: name.to_owned(), args: vec![ty] });
        }
    };
    Ok(Expr::unary(op, operand))
}

/// The names [`Module::call`] understands.
pub const BUILTIN_NAMES: &[&str] = &[
    "abs",
    "min",
    "max",
    "clamp",
    "floor",
    "ceil",
    "round",
    "sqrt",
    "exp",
    "log",
    "log1p",
    "tanh",
    "cos",
    "sin",
    "sigmoid",
    "pow",
    "is_nan",
    "float",
    "int",
    "div",
    "len",
    "bytes",
    "str_eq",
    "contains",
    "starts_with",
    "ends_with",
    "trim",
    "lower",
    "upper",
    "parse_int",
    "parse_float",
    "matches",
    "capture",
    "replace",
    "split_part",
    "before",
    "after",
    "after_last",
    "first_number",
    "last_number",
    "str",
    "str_int",
    "format",
    "relu",
    "softplus",
    "log_sigmoid",
    "system",
    "user",
    "assistant",
    "turns",
];

impl Module {
    /// Lowers a call of the builtin `name` to IR, choosing the typed variant and promoting Int
    /// arguments where a Float is needed. `matches(s, "pattern")` and `capture(s, "pattern", g)`
    /// intern the (constant) pattern into the regex table. Errors: unknown name or argument types ([`IrError::NoOverload`]),
    /// wrong arity, a non-constant or invalid pattern.
    pub fn call(&mut self, name: &str, args: Vec<Expr>) -> Result<Expr, IrError> {
        use Builtin as B;
        let tys: Vec<Ty> = args.iter().map(|a| a.ty).collect();
        let no = || IrError::NoOverload { name: name.to_owned(), args: tys.clone() };
        let all_int = tys.iter().all(|t| *t == Ty::Int);
        let all_num = tys.iter().all(|t| matches!(t, Ty::Int | Ty::Float));
        let (builtin, args) = match name {
            "abs" | "min" | "max" | "clamp" => {
                let (i, f, n) = match name {
                    "abs" => (B::AbsInt, B::AbsFloat, 1),
                    "min" => (B::MinInt, B::MinFloat, 2),
                    "max" => (B::MaxInt, B::MaxFloat, 2),
                    _ => (B::ClampInt, B::ClampFloat, 3),
                };
                arity(name, n, &args)?;
                match (all_int, all_num) {
                    (true, _) => (i, args),
                    (false, true) => (f, floats(args)),
                    _ => return Err(no()),
                }
            }
            "floor" | "ceil" | "round" | "sqrt" | "exp" | "log" | "log1p" | "tanh" | "cos" | "sin" | "sigmoid"
            | "pow" | "is_nan" => {
                let b = match name {
                    "floor" => B::Floor,
                    "ceil" => B::Ceil,
                    "round" => B::Round,
                    "sqrt" => B::Sqrt,
                    "exp" => B::Exp,
                    "log" => B::Log,
                    "log1p" => B::Log1p,
                    "tanh" => B::Tanh,
                    "cos" => B::Cos,
                    "sin" => B::Sin,
                    "sigmoid" => B::Sigmoid,
                    "pow" => B::Pow,
                    _ => B::IsNan,
                };
                arity(name, b.signature().0.len(), &args)?;
                if !all_num {
                    return Err(no());
                }
                (b, floats(args))
            }
            "float" => {
                arity(name, 1, &args)?;
                return match tys[0] {
                    Ty::Int | Ty::Float => Ok(args.into_iter().next().map(Expr::to_float).ok_or_else(no)?),
                    _ => Err(no()),
                };
            }
            "int" => {
                arity(name, 1, &args)?;
                match tys[0] {
                    Ty::Int => return args.into_iter().next().ok_or_else(no),
                    Ty::Float => (B::Int, args),
                    _ => return Err(no()),
                }
            }
            "div" => {
                arity(name, 2, &args)?;
                if !all_int {
                    return Err(no());
                }
                let mut it = args.into_iter();
                let (a, b) = (it.next().ok_or_else(no)?, it.next().ok_or_else(no)?);
                return Ok(Expr::binary(BinOp::IDiv, a, b));
            }
            "matches" | "capture" => {
                let capture = name == "capture";
                arity(name, if capture { 3 } else { 2 }, &args)?;
                if capture && tys[2] != Ty::Int {
                    return Err(no());
                }
                let id = match (&tys[0], &args[1].kind) {
                    (Ty::Str, ExprKind::Const(Const::Str(s))) => {
                        let pattern = self.strings[s.0 as usize].clone();
                        self.regex(&pattern)?
                    }
                    (Ty::Str, _) if tys[1] == Ty::Str => {
                        return Err(IrError::PatternNotConstant { name: name.to_owned() })
                    }
                    _ => return Err(no()),
                };
                let mut args = args;
                args.remove(1);
                (if capture { B::Capture(id) } else { B::Matches(id) }, args)
            }
            "len" | "bytes" | "str_eq" | "contains" | "starts_with" | "ends_with" | "trim" | "lower" | "upper"
            | "parse_int" | "parse_float" | "replace" | "split_part" | "before" | "after" | "after_last"
            | "first_number" | "last_number" | "str" | "str_int" | "format" | "system" | "user" | "assistant"
            | "turns" => {
                let b = match name {
                    "system" => B::System,
                    "user" => B::User,
                    "assistant" => B::Assistant,
                    "turns" => B::Turns,
                    "len" => B::Len,
                    "bytes" => B::Bytes,
                    "str_eq" => B::StrEq,
                    "contains" => B::Contains,
                    "starts_with" => B::StartsWith,
                    "ends_with" => B::EndsWith,
                    "trim" => B::Trim,
                    "lower" => B::Lower,
                    "upper" => B::Upper,
                    "parse_int" => B::ParseInt,
                    "parse_float" => B::ParseFloat,
                    "replace" => B::Replace,
                    "split_part" => B::SplitPart,
                    "before" => B::Before,
                    "after" => B::After,
                    "after_last" => B::AfterLast,
                    "first_number" => B::FirstNumber,
                    "last_number" => B::LastNumber,
                    "str" => B::Str,
                    "str_int" => B::StrInt,
                    _ => B::Format,
                };
                let params = b.signature().0;
                arity(name, params.len(), &args)?;
                let mut out = Vec::with_capacity(args.len());
                for (arg, &want) in args.into_iter().zip(params) {
                    out.push(match (arg.ty, want) {
                        (Ty::Int, Ty::Float) => arg.to_float(),
                        (got, want) if got == want => arg,
                        _ => return Err(no()),
                    });
                }
                (b, out)
            }
            "relu" | "softplus" | "log_sigmoid" => {
                arity(name, 1, &args)?;
                if !all_num {
                    return Err(no());
                }
                return self.derived(name, floats(args).remove(0));
            }
            _ => return Err(no()),
        };
        Ok(Expr::call(builtin, args))
    }

    /// The builtins the IR has no node for, by their definitions in other builtins:
    /// `relu(x) = max(x, 0)`, `softplus(x) = max(x, 0) + log1p(exp(-|x|))` (stable for large
    /// `|x|`) and `log_sigmoid(x) = -softplus(-x)`. `x` is a Float.
    fn derived(&mut self, name: &str, x: Expr) -> Result<Expr, IrError> {
        let softplus = |m: &mut Module, x: Expr| {
            let pos = m.call("max", vec![x.clone(), Expr::float(0.0)])?;
            let abs = m.call("abs", vec![x])?;
            let e = m.call("exp", vec![Expr::unary(UnOp::FNeg, abs)])?;
            let l = m.call("log1p", vec![e])?;
            Ok(Expr::binary(BinOp::FAdd, pos, l))
        };
        match name {
            "relu" => self.call("max", vec![x, Expr::float(0.0)]),
            "softplus" => softplus(self, x),
            _ => Ok(Expr::unary(UnOp::FNeg, softplus(self, Expr::unary(UnOp::FNeg, x))?)),
        }
    }
}

fn floats(args: Vec<Expr>) -> Vec<Expr> {
    args.into_iter().map(Expr::to_float).collect()
}

fn arity(name: &str, expected: usize, args: &[Expr]) -> Result<(), IrError> {
    if args.len() != expected {
        return Err(IrError::Arity { name: name.to_owned(), expected, found: args.len() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promotes_mixed_arithmetic_and_division() {
        let e = binary(ast::BinOp::Mul, Expr::int(2), Expr::float(1.5)).unwrap();
        assert_eq!(e.ty, Ty::Float);
        assert!(matches!(e.kind, ExprKind::Binary(BinOp::FMul, ..)));
        let e = binary(ast::BinOp::Div, Expr::int(1), Expr::int(2)).unwrap();
        assert!(matches!(e.kind, ExprKind::Binary(BinOp::FDiv, ..)));
        let e = binary(ast::BinOp::Rem, Expr::int(1), Expr::int(2)).unwrap();
        assert!(matches!(e.kind, ExprKind::Binary(BinOp::IRem, ..)));
        assert!(binary(ast::BinOp::Add, Expr::bool(true), Expr::int(1)).is_err());
    }

    #[test]
    fn picks_builtin_variants() {
        let mut m = Module::new();
        let e = m.call("min", vec![Expr::int(1), Expr::int(2)]).unwrap();
        assert!(matches!(e.kind, ExprKind::Call(Builtin::MinInt, _)));
        let e = m.call("min", vec![Expr::int(1), Expr::float(2.0)]).unwrap();
        assert!(matches!(e.kind, ExprKind::Call(Builtin::MinFloat, _)));
        let e = m.call("div", vec![Expr::int(7), Expr::int(2)]).unwrap();
        assert!(matches!(e.kind, ExprKind::Binary(BinOp::IDiv, ..)));
        let s = m.string("^[0-9]+$");
        let subject = m.string("42");
        let e = m.call("matches", vec![Expr::str(subject), Expr::str(s)]).unwrap();
        assert!(matches!(e.kind, ExprKind::Call(Builtin::Matches(_), ref a) if a.len() == 1));
        assert_eq!(m.regexes, vec!["^[0-9]+$".to_owned()]);
        let e = m.call("turns", vec![Expr::param(0, Ty::Str), Expr::str(subject)]).unwrap();
        assert!(matches!(e.kind, ExprKind::Call(Builtin::Turns, ref a) if a.len() == 2));
        assert!(matches!(m.call("sqrt", vec![]), Err(IrError::Arity { .. })));
        assert!(matches!(m.call("nope", vec![]), Err(IrError::NoOverload { .. })));
        assert!(matches!(
            m.call("matches", vec![Expr::str(subject), Expr::param(0, Ty::Str)]),
            Err(IrError::PatternNotConstant { .. })
        ));
    }

    #[test]
    fn string_builtins_take_their_pattern_and_promote() {
        let mut m = Module::new();
        let s = Expr::param(0, Ty::Str);
        let p = Expr::str(m.string(r"#### (\d+)"));
        let e = m.call("capture", vec![s.clone(), p.clone(), Expr::int(1)]).unwrap();
        assert!(matches!(e.kind, ExprKind::Call(Builtin::Capture(crate::ir::RegexId(0)), ref a) if a.len() == 2));
        assert_eq!(e.ty, Ty::Str);
        assert!(matches!(m.call("capture", vec![s.clone(), p, Expr::float(1.0)]), Err(IrError::NoOverload { .. })));
        let bad = Expr::str(m.string("(unclosed"));
        assert!(matches!(m.call("capture", vec![s.clone(), bad, Expr::int(0)]), Err(IrError::InvalidRegex { .. })));
        let err = m.call("capture", vec![s.clone(), s.clone(), Expr::int(0)]).unwrap_err();
        assert_eq!(err.to_string(), "the pattern of `capture` must be a string constant");
        // `str` of an Int is `str` of that Int as a Float; `+` on Strings is `concat`.
        let e = m.call("str", vec![Expr::int(3)]).unwrap();
        assert!(matches!(e.kind, ExprKind::Call(Builtin::Str, ref a) if a[0].ty == Ty::Float));
        let e = binary(ast::BinOp::Add, s.clone(), s.clone()).unwrap();
        assert!(matches!(e.kind, ExprKind::Call(Builtin::Concat, _)));
        assert!(binary(ast::BinOp::Sub, s.clone(), s).is_err());
    }
}
