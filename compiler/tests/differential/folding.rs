//! Constant folding under the differential net: a random scalar expression over constants is
//! written as recipe text (`let x = ...`), compiled — so the compile-time evaluator folds it
//! through parse, check and evaluation — and the folded value must be bit for bit what the
//! interpreter and the JIT compute for the same expression as IR (with the type they give it).

use super::assert_agree;
use super::random::{module, PARAMS};
use proptest::prelude::*;
use recipe_compiler::column::Column;
use recipe_compiler::compile;
use recipe_compiler::diag::Source;
use recipe_compiler::interp::Value as IV;
use recipe_compiler::ir::{BinOp, Builtin, Cmp, Const, Expr, ExprKind, Module, UnOp};
use recipe_compiler::program::Value;
use std::sync::Arc;

/// `e` as recipe source: every compound parenthesised, locals named `v<id>`. Literals the
/// language has no syntax for are written as constant expressions (`(0.0 / 0.0)` for NaN).
fn source(e: &Expr, m: &Module) -> String {
    let s = |e: &Expr| source(e, m);
    match &e.kind {
        ExprKind::Const(c) => constant(*c, m),
        ExprKind::Local(i) => format!("v{i}"),
        ExprKind::Param(i) => panic!("a parameter (p{i}) in a constant expression"),
        ExprKind::Let { local, value, body } => format!("{{ let v{local} = {}; {} }}", s(value), s(body)),
        ExprKind::Unary(op, a) => format!("({}{})", if *op == UnOp::Not { "!" } else { "-" }, s(a)),
        ExprKind::Binary(BinOp::IDiv, a, b) => format!("div({}, {})", s(a), s(b)),
        ExprKind::Binary(op, a, b) => format!("({} {} {})", s(a), symbol(*op), s(b)),
        ExprKind::If { cond, then, otherwise } => {
            format!("(if {} {{ {} }} else {{ {} }})", s(cond), s(then), s(otherwise))
        }
        ExprKind::Call(Builtin::StrEq, args) => format!("({} == {})", s(&args[0]), s(&args[1])),
        ExprKind::Call(Builtin::Concat, args) => format!("({} + {})", s(&args[0]), s(&args[1])),
        ExprKind::Call(Builtin::Matches(re), args) => {
            format!("matches({}, {})", s(&args[0]), quote(&m.regexes[re.0 as usize]))
        }
        ExprKind::Call(Builtin::Capture(re), args) => {
            format!("capture({}, {}, {})", s(&args[0]), quote(&m.regexes[re.0 as usize]), s(&args[1]))
        }
        ExprKind::Call(b, args) => format!("{}({})", b.name(), args.iter().map(s).collect::<Vec<_>>().join(", ")),
    }
}

fn constant(c: Const, m: &Module) -> String {
    match c {
        Const::Int(i64::MIN) => "(-9223372036854775807 - 1)".into(),
        Const::Int(v) if v < 0 => format!("(-{})", v.unsigned_abs()),
        Const::Int(v) => v.to_string(),
        Const::Float(v) if v.is_nan() => "(0.0 / 0.0)".into(),
        Const::Float(v) if v.is_infinite() => format!("({}1.0 / 0.0)", if v < 0.0 { "-" } else { "" }),
        Const::Float(v) if v.is_sign_negative() => format!("(-{:?})", -v),
        Const::Float(v) => format!("{v:?}"),
        Const::Bool(b) => b.to_string(),
        Const::Str(id) => quote(&m.strings[id.0 as usize]),
    }
}

fn symbol(op: BinOp) -> &'static str {
    match op {
        BinOp::IAdd | BinOp::FAdd => "+",
        BinOp::ISub | BinOp::FSub => "-",
        BinOp::IMul | BinOp::FMul => "*",
        BinOp::FDiv => "/",
        BinOp::IRem | BinOp::FRem => "%",
        BinOp::And => "&&",
        BinOp::Or => "||",
        BinOp::BEq => "==",
        BinOp::BNe => "!=",
        BinOp::ICmp(c) | BinOp::FCmp(c) => c.symbol(),
        BinOp::IDiv => unreachable!("written as div(a, b)"),
    }
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// What compile-time evaluation makes of `expr` (recipe text) as a top-level `let`.
fn folded(expr: &str) -> Value {
    let text = format!(
        "recipe \"fold\" {{ seed = 1 }}\nmodel m = tiny_lm()\ndata d = synth.addition()\nstage s = sft(m, d)\nrun s\nlet x = {expr}\n"
    );
    let program = compile(&Source::new("fold.recipe", text.clone()), &[])
        .unwrap_or_else(|e| panic!("{text}\n{:#?}", e.iter().map(|d| (d.code, &d.message)).collect::<Vec<_>>()));
    program.decl("x").expect("x is declared").value.clone()
}

/// Bit-for-bit equality of the interpreter's value and the folded one, types included.
fn same(want: &IV, got: &Value) -> bool {
    match (want, got) {
        (IV::Int(a), Value::Int(b)) => a == b,
        (IV::Float(a), Value::Float(b)) => a.to_bits() == b.to_bits(),
        (IV::Bool(a), Value::Bool(b)) => a == b,
        (IV::Str(a), Value::Str(b)) => **a == **b,
        _ => false,
    }
}

/// One row of arbitrary arguments: the constant expression reads none of them.
fn one_row() -> Vec<Column> {
    PARAMS
        .iter()
        .map(|(_, ty)| match ty {
            recipe_compiler::ir::Ty::Int => Column::Int(vec![0]),
            recipe_compiler::ir::Ty::Float => Column::Float(vec![0.0]),
            recipe_compiler::ir::Ty::Bool => Column::Bool(vec![false]),
            recipe_compiler::ir::Ty::Str => Column::Str(vec![Arc::from("")]),
        })
        .collect()
}

/// Folds `m`'s function body as recipe text and checks it against both backends.
fn assert_fold_agrees(m: &Module) {
    let body = &m.functions[0].body;
    let text = source(body, m);
    let want = match assert_agree(m, &one_row()) {
        Column::Int(v) => IV::Int(v[0]),
        Column::Float(v) => IV::Float(v[0]),
        Column::Bool(v) => IV::Bool(v[0]),
        Column::Str(v) => IV::Str(v[0].clone()),
    };
    let got = folded(&text);
    assert!(same(&want, &got), "`{text}` folds to {got:?}, the backends compute {want:?}");
}

#[test]
fn the_source_form_is_faithful() {
    // The printer itself, on the constants the generator draws and a few shapes.
    let mut m = Module::new();
    let s = m.string("a\"b\\");
    let e = Expr::binary(
        BinOp::FCmp(Cmp::Lt),
        Expr::float(-0.0),
        Expr::call(Builtin::Pow, vec![Expr::float(f64::NEG_INFINITY), Expr::float(5e-324)]),
    );
    assert_eq!(source(&e, &m), "((-0.0) < pow((-1.0 / 0.0), 5e-324))");
    assert_eq!(constant(Const::Str(s), &m), r#""a\"b\\""#);
    assert_eq!(constant(Const::Int(i64::MIN), &m), "(-9223372036854775807 - 1)");
}

#[test]
fn documented_folds() {
    // The clamp of the tracker's bug: Int on Ints, as the checker types it.
    assert!(matches!(folded("clamp(500, 1, 20)"), Value::Int(20)));
    assert!(matches!(folded("min(3, 2)"), Value::Int(2)));
    assert!(matches!(folded("abs(-9223372036854775807 - 1)"), Value::Int(i64::MIN)));
    assert!(matches!(folded("clamp(5, 1.0, 2)"), Value::Float(x) if x == 2.0));
    // relu/softplus/log_sigmoid fold by the definitions scalar code uses.
    assert!(matches!(folded("relu(-2.0)"), Value::Float(x) if x == 0.0));
    assert!(matches!(folded("softplus(0.0)"), Value::Float(x) if x == 2f64.ln()));
    // A NaN leaves compile time canonical, like any scalar result.
    assert!(matches!(folded("-(0.0 / 0.0)"), Value::Float(x) if x.to_bits() == 0x7ff8_0000_0000_0000));
    // String builtins fold as scalar code computes them; `+` joins Strings.
    assert!(matches!(folded("\"ab\" + \"c\""), Value::Str(s) if s == "abc"));
    assert!(matches!(folded("last_number(\"#### 1,234\")"), Value::Float(x) if x == 1234.0));
    assert!(matches!(folded("format(\"#### {}\", str(72))"), Value::Str(s) if s == "#### 72"));
    assert!(matches!(folded("capture(\"a=1\", \"(\\\\w)=(\\\\d)\", 2)"), Value::Str(s) if s == "1"));
    // The operation only compile time has.
    assert!(matches!(folded("easy_first == hard_first"), Value::Bool(false)));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn folding_agrees_with_both_backends(choices in prop::collection::vec(any::<u32>(), 0..120)) {
        let m = module(&choices, true);
        m.validate().unwrap();
        assert_fold_agrees(&m);
    }
}
