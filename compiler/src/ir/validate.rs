//! Type-checks IR. A failure here is a bug in the lowering (or in a hand-built module), never a
//! user error, except [`IrError::InvalidRegex`] and the builder's arity/type errors, which the
//! lowering may turn into diagnostics.

use super::{BinOp, Const, Expr, ExprKind, Function, Module, Ty, UnOp};
use std::collections::HashSet;

/// Why a module is not well-formed IR.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum IrError {
    /// Two functions share a name.
    #[error("duplicate function `{0}`")]
    DuplicateFunction(String),
    /// A node's type disagrees with what its position or its own operator requires.
    #[error("in `{func}`: {what}: expected {expected:?}, found {found:?}")]
    TypeMismatch { func: String, what: String, expected: Ty, found: Ty },
    /// `Param(i)` with `i` out of range.
    #[error("in `{func}`: parameter {index} does not exist")]
    UnknownParam { func: String, index: u32 },
    /// `Local(i)` not bound by an enclosing `Let`.
    #[error("in `{func}`: local {index} is not in scope")]
    UnboundLocal { func: String, index: u32 },
    /// A `Let` reuses a local id that is already bound in an enclosing scope.
    #[error("in `{func}`: local {index} is bound twice")]
    DuplicateLocal { func: String, index: u32 },
    /// A string constant id outside the module's table.
    #[error("in `{func}`: string constant {index} does not exist")]
    UnknownString { func: String, index: u32 },
    /// A regex id outside the module's table.
    #[error("in `{func}`: regex {index} does not exist")]
    UnknownRegex { func: String, index: u32 },
    /// A regex pattern that the `regex` crate rejects.
    #[error("invalid regular expression `{pattern}`: {message}")]
    InvalidRegex { pattern: String, message: String },
    /// A builtin called with the wrong number of arguments.
    #[error("`{name}` takes {expected} argument(s), found {found}")]
    Arity { name: String, expected: usize, found: usize },
    /// No builtin or operator of that name accepts these argument types.
    #[error("no `{name}` for argument types {args:?}")]
    NoOverload { name: String, args: Vec<Ty> },
    /// `matches` and `capture` need their pattern as a string constant.
    #[error("the pattern of `{name}` must be a string constant")]
    PatternNotConstant { name: String },
}

impl Module {
    /// Checks every function: types of every node, parameter and local scoping, constant and
    /// regex ids, unique function names, and that every regex compiles.
    pub fn validate(&self) -> Result<(), IrError> {
        let mut names = HashSet::new();
        for f in &self.functions {
            if !names.insert(f.name.as_str()) {
                return Err(IrError::DuplicateFunction(f.name.clone()));
            }
        }
        for pattern in &self.regexes {
            regex::Regex::new(pattern)
                .map_err(|e| IrError::InvalidRegex { pattern: pattern.clone(), message: e.to_string() })?;
        }
        for f in &self.functions {
            let mut cx = Checker { module: self, func: f, locals: Vec::new() };
            cx.expect(&f.body, f.ret, "function body")?;
        }
        Ok(())
    }
}

struct Checker<'a> {
    module: &'a Module,
    func: &'a Function,
    /// Locals in scope, innermost last: (id, type).
    locals: Vec<(u32, Ty)>,
}

impl Checker<'_> {
    fn mismatch(&self, what: impl Into<String>, expected: Ty, found: Ty) -> IrError {
        IrError::TypeMismatch { func: self.func.name.clone(), what: what.into(), expected, found }
    }

    /// Checks `e` and that its type is `ty`.
    fn expect(&mut self, e: &Expr, ty: Ty, what: &str) -> Result<(), IrError> {
        self.check(e)?;
        if e.ty != ty {
            return Err(self.mismatch(what, ty, e.ty));
        }
        Ok(())
    }

    /// Checks `e`, including that its recorded type is the type its operation produces.
    fn check(&mut self, e: &Expr) -> Result<(), IrError> {
        let func = || self.func.name.clone();
        let produced = match &e.kind {
            ExprKind::Const(c) => {
                match *c {
                    Const::Str(id) if id.0 as usize >= self.module.strings.len() => {
                        return Err(IrError::UnknownString { func: func(), index: id.0 });
                    }
                    _ => {}
                }
                c.ty()
            }
            ExprKind::Param(i) => match self.func.params.get(*i as usize) {
                Some(p) => p.ty,
                None => return Err(IrError::UnknownParam { func: func(), index: *i }),
            },
            ExprKind::Local(i) => match self.locals.iter().rev().find(|(id, _)| id == i) {
                Some(&(_, ty)) => ty,
                None => return Err(IrError::UnboundLocal { func: func(), index: *i }),
            },
            ExprKind::Let { local, value, body } => {
                if self.locals.iter().any(|(id, _)| id == local) {
                    return Err(IrError::DuplicateLocal { func: func(), index: *local });
                }
                self.check(value)?;
                self.locals.push((*local, value.ty));
                let result = self.check(body);
                self.locals.pop();
                result?;
                body.ty
            }
            ExprKind::Unary(op, a) => {
                let ty = match op {
                    UnOp::INeg => Ty::Int,
                    UnOp::FNeg => Ty::Float,
                    UnOp::Not => Ty::Bool,
                };
                self.expect(a, ty, "operand")?;
                ty
            }
            ExprKind::Binary(op, a, b) => {
                let (operand, result) = op.signature();
                let what = format!("operand of {op:?}");
                self.expect(a, operand, &what)?;
                self.expect(b, operand, &what)?;
                result
            }
            ExprKind::If { cond, then, otherwise } => {
                self.expect(cond, Ty::Bool, "if condition")?;
                self.check(then)?;
                self.expect(otherwise, then.ty, "else branch")?;
                then.ty
            }
            ExprKind::Call(builtin, args) => {
                if let Some(id) = builtin.regex() {
                    if id.0 as usize >= self.module.regexes.len() {
                        return Err(IrError::UnknownRegex { func: func(), index: id.0 });
                    }
                }
                let (params, result) = builtin.signature();
                if params.len() != args.len() {
                    return Err(IrError::Arity {
                        name: builtin.name().to_owned(),
                        expected: params.len(),
                        found: args.len(),
                    });
                }
                for (arg, &ty) in args.iter().zip(params) {
                    self.expect(arg, ty, &format!("argument of `{}`", builtin.name()))?;
                }
                result
            }
        };
        if produced != e.ty {
            return Err(self.mismatch(format!("node {}", kind_name(e)), produced, e.ty));
        }
        Ok(())
    }
}

fn kind_name(e: &Expr) -> &'static str {
    match &e.kind {
        ExprKind::Const(_) => "const",
        ExprKind::Param(_) => "param",
        ExprKind::Local(_) => "local",
        ExprKind::Let { .. } => "let",
        ExprKind::Unary(..) => "unary",
        ExprKind::Binary(op, ..) => match op {
            BinOp::And | BinOp::Or => "logical",
            _ => "binary",
        },
        ExprKind::If { .. } => "if",
        ExprKind::Call(..) => "call",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Builtin, Cmp, Param};

    fn module(params: Vec<Param>, ret: Ty, body: Expr) -> Module {
        let mut m = Module::new();
        m.push(Function { name: "f".into(), params, ret, body });
        m
    }

    fn p(name: &str, ty: Ty) -> Param {
        Param { name: name.into(), ty }
    }

    #[test]
    fn accepts_well_typed() {
        let body = Expr::let_(
            0,
            Expr::binary(BinOp::IAdd, Expr::param(0, Ty::Int), Expr::int(1)),
            Expr::if_(
                Expr::binary(BinOp::ICmp(Cmp::Gt), Expr::local(0, Ty::Int), Expr::int(3)),
                Expr::local(0, Ty::Int).to_float(),
                Expr::float(0.5),
            ),
        );
        assert_eq!(module(vec![p("x", Ty::Int)], Ty::Float, body).validate(), Ok(()));
    }

    #[test]
    fn rejects_mixed_operands() {
        let body = Expr::binary(BinOp::FAdd, Expr::param(0, Ty::Int), Expr::float(1.0));
        let err = module(vec![p("x", Ty::Int)], Ty::Float, body).validate().unwrap_err();
        assert!(matches!(err, IrError::TypeMismatch { expected: Ty::Float, found: Ty::Int, .. }));
    }

    #[test]
    fn rejects_wrong_recorded_type() {
        let mut body = Expr::int(1);
        body.ty = Ty::Float;
        let err = module(vec![], Ty::Float, body).validate().unwrap_err();
        assert!(matches!(err, IrError::TypeMismatch { expected: Ty::Int, found: Ty::Float, .. }));
    }

    #[test]
    fn rejects_wrong_return_type() {
        let err = module(vec![], Ty::Float, Expr::int(1)).validate().unwrap_err();
        assert!(matches!(err, IrError::TypeMismatch { expected: Ty::Float, found: Ty::Int, .. }));
    }

    #[test]
    fn rejects_scoping_errors() {
        let err = module(vec![], Ty::Int, Expr::param(0, Ty::Int)).validate().unwrap_err();
        assert!(matches!(err, IrError::UnknownParam { index: 0, .. }));
        let err = module(vec![], Ty::Int, Expr::local(2, Ty::Int)).validate().unwrap_err();
        assert!(matches!(err, IrError::UnboundLocal { index: 2, .. }));
        // A local is out of scope after its `let` body.
        let body =
            Expr::binary(BinOp::IAdd, Expr::let_(0, Expr::int(1), Expr::local(0, Ty::Int)), Expr::local(0, Ty::Int));
        let err = module(vec![], Ty::Int, body).validate().unwrap_err();
        assert!(matches!(err, IrError::UnboundLocal { index: 0, .. }));
        let body = Expr::let_(0, Expr::int(1), Expr::let_(0, Expr::int(2), Expr::int(3)));
        let err = module(vec![], Ty::Int, body).validate().unwrap_err();
        assert!(matches!(err, IrError::DuplicateLocal { index: 0, .. }));
    }

    #[test]
    fn rejects_bad_calls_and_tables() {
        let err = module(vec![], Ty::Float, Expr::call(Builtin::Sqrt, vec![])).validate().unwrap_err();
        assert!(matches!(err, IrError::Arity { expected: 1, found: 0, .. }));
        let body = Expr::call(Builtin::Len, vec![Expr::str(crate::ir::StrId(3))]);
        let err = module(vec![], Ty::Int, body).validate().unwrap_err();
        assert!(matches!(err, IrError::UnknownString { index: 3, .. }));
        let body = Expr::call(Builtin::Matches(crate::ir::RegexId(0)), vec![Expr::param(0, Ty::Str)]);
        let err = module(vec![p("s", Ty::Str)], Ty::Bool, body).validate().unwrap_err();
        assert!(matches!(err, IrError::UnknownRegex { index: 0, .. }));
        let mut m = module(vec![], Ty::Int, Expr::int(0));
        m.push(Function { name: "f".into(), params: vec![], ret: Ty::Int, body: Expr::int(1) });
        assert_eq!(m.validate(), Err(IrError::DuplicateFunction("f".into())));
        let mut m = Module::new();
        assert!(matches!(m.regex("(unclosed"), Err(IrError::InvalidRegex { .. })));
        m.regexes.push("[".into());
        assert!(matches!(m.validate(), Err(IrError::InvalidRegex { .. })));
    }
}
