//! Human-readable IR for debugging and test failure messages: one function per block, operators
//! by their typed names (`iadd`, `fcmp.lt`), parameters by name, locals as `%n`.

use super::{BinOp, Const, Expr, ExprKind, Function, Module, UnOp};
use std::fmt;

impl fmt::Display for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.strings.iter().enumerate() {
            writeln!(f, "str{i} = {s:?}")?;
        }
        for (i, r) in self.regexes.iter().enumerate() {
            writeln!(f, "re{i} = /{r}/")?;
        }
        for func in &self.functions {
            writeln!(f, "{func}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fn {}(", self.name)?;
        for (i, p) in self.params.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{}: {}", p.name, p.ty.name())?;
        }
        write!(f, ") -> {} =\n  ", self.ret.name())?;
        write_expr(f, &self.body, Some(self), 1)
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_expr(f, self, None, 0)
    }
}

impl fmt::Display for BinOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BinOp::IAdd => f.write_str("iadd"),
            BinOp::ISub => f.write_str("isub"),
            BinOp::IMul => f.write_str("imul"),
            BinOp::IDiv => f.write_str("idiv"),
            BinOp::IRem => f.write_str("irem"),
            BinOp::FAdd => f.write_str("fadd"),
            BinOp::FSub => f.write_str("fsub"),
            BinOp::FMul => f.write_str("fmul"),
            BinOp::FDiv => f.write_str("fdiv"),
            BinOp::FRem => f.write_str("frem"),
            BinOp::ICmp(c) => write!(f, "icmp{}", c.symbol()),
            BinOp::FCmp(c) => write!(f, "fcmp{}", c.symbol()),
            BinOp::BEq => f.write_str("beq"),
            BinOp::BNe => f.write_str("bne"),
            BinOp::And => f.write_str("and"),
            BinOp::Or => f.write_str("or"),
        }
    }
}

fn write_expr(f: &mut fmt::Formatter<'_>, e: &Expr, func: Option<&Function>, indent: usize) -> fmt::Result {
    match &e.kind {
        ExprKind::Const(Const::Int(v)) => write!(f, "{v}"),
        // `{:?}` keeps the `.0` and prints NaN/inf; -0.0 prints as `-0.0`.
        ExprKind::Const(Const::Float(v)) => write!(f, "{v:?}"),
        ExprKind::Const(Const::Bool(v)) => write!(f, "{v}"),
        ExprKind::Const(Const::Str(id)) => write!(f, "str{}", id.0),
        ExprKind::Param(i) => match func.and_then(|func| func.params.get(*i as usize)) {
            Some(p) => write!(f, "{}", p.name),
            None => write!(f, "param{i}"),
        },
        ExprKind::Local(i) => write!(f, "%{i}"),
        ExprKind::Let { local, value, body } => {
            write!(f, "let %{local}: {} = ", value.ty.name())?;
            write_expr(f, value, func, indent + 1)?;
            write!(f, ";\n{:width$}", "", width = 2 * indent)?;
            write_expr(f, body, func, indent)
        }
        ExprKind::Unary(op, a) => {
            let name = match op {
                UnOp::INeg => "ineg",
                UnOp::FNeg => "fneg",
                UnOp::Not => "not",
            };
            write!(f, "{name}(")?;
            write_expr(f, a, func, indent)?;
            f.write_str(")")
        }
        ExprKind::Binary(op, a, b) => {
            write!(f, "{op}(")?;
            write_expr(f, a, func, indent)?;
            f.write_str(", ")?;
            write_expr(f, b, func, indent)?;
            f.write_str(")")
        }
        ExprKind::If { cond, then, otherwise } => {
            f.write_str("if ")?;
            write_expr(f, cond, func, indent)?;
            f.write_str(" { ")?;
            write_expr(f, then, func, indent)?;
            f.write_str(" } else { ")?;
            write_expr(f, otherwise, func, indent)?;
            f.write_str(" }")
        }
        ExprKind::Call(builtin, args) => {
            f.write_str(builtin.name())?;
            if let Some(re) = builtin.regex() {
                write!(f, "[re{}]", re.0)?;
            }
            f.write_str("(")?;
            for (i, a) in args.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write_expr(f, a, func, indent)?;
            }
            f.write_str(")")
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::ir::*;

    #[test]
    fn prints_a_function() {
        let mut m = Module::new();
        let body = Expr::let_(
            0,
            Expr::param(0, Ty::Int).to_float(),
            Expr::binary(BinOp::FMul, Expr::local(0, Ty::Float), Expr::float(-0.0)),
        );
        let params = vec![Param { name: "digits".into(), ty: Ty::Int }];
        m.push(Function { name: "d".into(), params, ret: Ty::Float, body });
        let text = m.to_string();
        assert_eq!(text, "fn d(digits: Int) -> Float =\n  let %0: Float = float(digits);\n  fmul(%0, -0.0)\n");
    }
}
