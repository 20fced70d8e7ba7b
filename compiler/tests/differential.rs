//! Differential tests: every scalar test vector runs through the interpreter (which defines the
//! meaning) and the Cranelift JIT, and the results must agree bit for bit — Floats compared with
//! `to_bits`, which is exact because both backends canonicalise NaN results
//! (`docs/scalar-semantics.md`). Each case runs over the cartesian product of special values for
//! its parameter types, both as one batch (`eval_batch`) and row by row (`call`).
//! A property test (`differential/random.rs`) does the same for random well-typed expressions,
//! and `differential/folding.rs` holds compile-time constant folding to the same results.

#[path = "differential/folding.rs"]
mod folding;
#[path = "differential/random.rs"]
mod random;

use recipe_compiler::batch::{eval_batch, Backend, Compiled};
use recipe_compiler::column::Column;
use recipe_compiler::interp::Value;
use recipe_compiler::ir::{self, Expr, Function, Module, Param, Ty};
use recipe_compiler::jit::{JitModule, JitOptions};
use std::sync::Arc;

fn floats() -> Vec<f64> {
    vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.5,
        -0.5,
        1.5,
        2.5,
        -2.5,
        3.0,
        -7.25,
        1e-300,
        5e-324,
        -5e-324,
        2.2250738585072014e-308,
        1e16 + 2.0,
        4503599627370497.0,
        9.223372036854776e18,        // 2^63: just past i64::MAX
        -9.223372036854776e18,       // -2^63 = i64::MIN exactly
        9_223_372_036_854_774_784.0, // the largest Float below 2^63
        709.8,
        -745.2,
        f64::MAX,
        f64::MIN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        -f64::NAN,
        f64::from_bits(0x7ff0_0000_0000_0001), // signalling NaN
        f64::from_bits(0xfff8_dead_beef_0001), // negative NaN with a payload
    ]
}

fn ints() -> Vec<i64> {
    vec![0, 1, -1, 2, -2, 3, -3, 7, -7, 100, 1 << 53, (1 << 53) + 1, i64::MAX, i64::MIN, i64::MIN + 1]
}

fn strings() -> Vec<&'static str> {
    vec![
        "",
        " ",
        "abc",
        "ABC",
        "ab",
        "  padded\t\n",
        "héllo wörld",
        "日本語",
        "ß",
        "İstanbul",
        "42",
        " -17 ",
        "+5",
        "3.5e2",
        "inf",
        "NaN",
        "9223372036854775808",
        "a\0b",
        "\u{2003}em\u{2003}",
        "12abc",
        "so 48 + 24 = 72 clips\n#### 72",
        "-$1,234.5",
        "a,b,,c",
        "10-4=6 or 1,23",
        "{} = {}",
        "aa",
    ]
}

fn column(ty: Ty) -> Column {
    match ty {
        Ty::Int => Column::Int(ints()),
        Ty::Float => Column::Float(floats()),
        Ty::Bool => Column::Bool(vec![false, true]),
        Ty::Str => Column::Str(strings().into_iter().map(Arc::from).collect()),
    }
}

/// The cartesian product of each parameter's special values, as columns.
fn product(tys: &[Ty]) -> Vec<Column> {
    let bases: Vec<Column> = tys.iter().map(|t| column(*t)).collect();
    let total: usize = bases.iter().map(Column::len).product();
    let mut out = Vec::new();
    let mut repeat = 1;
    for base in &bases {
        let n = base.len();
        let idx: Vec<usize> = (0..total).map(|r| (r / repeat) % n).collect();
        repeat *= n;
        out.push(match base {
            Column::Int(v) => Column::Int(idx.iter().map(|&i| v[i]).collect()),
            Column::Float(v) => Column::Float(idx.iter().map(|&i| v[i]).collect()),
            Column::Bool(v) => Column::Bool(idx.iter().map(|&i| v[i]).collect()),
            Column::Str(v) => Column::Str(idx.iter().map(|&i| v[i].clone()).collect()),
        });
    }
    out
}

fn row(cols: &[Column], r: usize) -> Vec<Value> {
    cols.iter()
        .map(|c| match c {
            Column::Int(v) => Value::Int(v[r]),
            Column::Float(v) => Value::Float(v[r]),
            Column::Bool(v) => Value::Bool(v[r]),
            Column::Str(v) => Value::Str(v[r].clone()),
        })
        .collect()
}

fn value_at(c: &Column, r: usize) -> Value {
    row(std::slice::from_ref(c), r).remove(0)
}

/// Builds the one-function module of a case: params `p0, p1, …` of the given types.
fn module_of(tys: &[Ty], build: &dyn Fn(&mut Module, Vec<Expr>) -> Expr) -> Module {
    let mut m = Module::new();
    let args = tys.iter().enumerate().map(|(i, t)| Expr::param(i as u32, *t)).collect();
    let body = build(&mut m, args);
    let params = tys.iter().enumerate().map(|(i, t)| Param { name: format!("p{i}"), ty: *t }).collect();
    m.push(Function { name: "f".into(), params, ret: body.ty, body });
    m
}

/// Runs `module`'s function `f` over `cols` on both backends, batch and row by row, and asserts
/// bit-identical results. Returns the interpreter's results.
pub fn assert_agree(module: &Module, cols: &[Column]) -> Column {
    let options = JitOptions { verify: true, keep_clif: false };
    JitModule::compile_with(module, options).unwrap_or_else(|e| panic!("{e}\n{module}"));
    let interp = Compiled::new(module, Backend::Interp).unwrap();
    let jit = Compiled::new(module, Backend::Jit).unwrap();
    let names: Vec<String> = (0..cols.len()).map(|i| format!("p{i}")).collect();
    let named: Vec<(&str, &Column)> = names.iter().map(String::as_str).zip(cols).collect();
    let expected = eval_batch(interp.func("f").unwrap(), &named).unwrap();
    let got = eval_batch(jit.func("f").unwrap(), &named).unwrap();
    for r in 0..expected.len() {
        let (want, have) = (value_at(&expected, r), value_at(&got, r));
        assert_eq!(want, have, "batch row {r}, args {:?}\n{module}", row(cols, r));
        let args = row(cols, r);
        let once = jit.func("f").unwrap().call(&args).unwrap();
        assert_eq!(want, once, "call, args {args:?}\n{module}");
        let reference = interp.func("f").unwrap().call(&args).unwrap();
        assert_eq!(want, reference, "interp call vs batch, args {args:?}\n{module}");
    }
    expected
}

/// One case: parameter types and how to build the body from the parameters.
fn case(tys: &[Ty], build: impl Fn(&mut Module, Vec<Expr>) -> Expr) -> Column {
    let module = module_of(tys, &build);
    assert_agree(&module, &product(tys))
}

fn call(name: &'static str) -> impl Fn(&mut Module, Vec<Expr>) -> Expr {
    move |m, args| m.call(name, args).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn binop(op: recipe_compiler::ast::BinOp) -> impl Fn(&mut Module, Vec<Expr>) -> Expr {
    move |_, mut args| {
        let b = args.pop().unwrap();
        let a = args.pop().unwrap();
        ir::binary(op, a, b).unwrap()
    }
}

use recipe_compiler::ast::BinOp as B;
use Ty::{Bool as TB, Float as TF, Int as TI, Str as TS};

#[test]
fn float_arithmetic_and_comparisons() {
    for op in [B::Add, B::Sub, B::Mul, B::Div, B::Rem, B::Pow] {
        case(&[TF, TF], binop(op));
    }
    for op in [B::Eq, B::Ne, B::Lt, B::Le, B::Gt, B::Ge] {
        case(&[TF, TF], binop(op));
    }
    case(&[TF], |_, a| ir::unary(recipe_compiler::ast::UnOp::Neg, a[0].clone()).unwrap());
}

#[test]
fn int_arithmetic_and_comparisons() {
    for op in [B::Add, B::Sub, B::Mul, B::Rem, B::Div, B::Pow] {
        case(&[TI, TI], binop(op));
    }
    for op in [B::Eq, B::Ne, B::Lt, B::Le, B::Gt, B::Ge] {
        case(&[TI, TI], binop(op));
    }
    let div = case(&[TI, TI], call("div"));
    // Spot-check the documented meaning, not only agreement.
    let cols = product(&[TI, TI]);
    if let (Column::Int(a), Column::Int(b), Column::Int(q)) = (&cols[0], &cols[1], &div) {
        for ((a, b), q) in a.iter().zip(b).zip(q) {
            let want = match (*a, *b) {
                (_, 0) => 0,
                (i64::MIN, -1) => i64::MIN,
                (a, b) => a.div_euclid(b) - if b < 0 && a.rem_euclid(b) != 0 { 1 } else { 0 },
            };
            assert_eq!(*q, want, "div({a}, {b})");
        }
    }
    case(&[TI], |_, a| ir::unary(recipe_compiler::ast::UnOp::Neg, a[0].clone()).unwrap());
}

#[test]
fn mixed_int_float_promotion() {
    for op in [B::Add, B::Sub, B::Mul, B::Div, B::Rem, B::Lt, B::Eq] {
        case(&[TI, TF], binop(op));
        case(&[TF, TI], binop(op));
    }
}

#[test]
fn numeric_builtins() {
    for name in ["abs", "floor", "ceil", "round", "sqrt", "exp", "log", "log1p", "tanh", "cos", "sin", "sigmoid"] {
        case(&[TF], call(name));
    }
    for name in ["is_nan", "int", "float"] {
        case(&[TF], call(name));
    }
    for name in ["abs", "float", "int", "sqrt", "cos"] {
        case(&[TI], call(name));
    }
    for name in ["min", "max", "pow"] {
        case(&[TF, TF], call(name));
        case(&[TI, TI], call(name));
        case(&[TI, TF], call(name));
    }
    case(&[TF, TF, TF], call("clamp"));
    case(&[TI, TI, TI], call("clamp"));
}

#[test]
fn documented_float_edge_cases() {
    let min = case(&[TF, TF], call("min"));
    let cols = product(&[TF, TF]);
    if let (Column::Float(a), Column::Float(b), Column::Float(m)) = (&cols[0], &cols[1], &min) {
        for ((a, b), m) in a.iter().zip(b).zip(m) {
            if a.is_nan() || b.is_nan() {
                assert_eq!(m.to_bits(), 0x7ff8_0000_0000_0000, "min({a}, {b}) is the canonical NaN");
            } else if *a == 0.0 && *b == 0.0 && (a.is_sign_negative() || b.is_sign_negative()) {
                assert_eq!(m.to_bits(), (-0.0f64).to_bits(), "min({a}, {b}) is -0");
            }
        }
    }
    let round = case(&[TF], call("round"));
    let int = case(&[TF], call("int"));
    if let (Column::Float(x), Column::Float(r), Column::Int(i)) = (column(TF), round, int) {
        for ((x, r), i) in x.iter().zip(r).zip(i) {
            if *x == 2.5 {
                assert_eq!(r, 3.0);
            }
            if *x == -2.5 {
                assert_eq!((r, i), (-3.0, -2));
            }
            if x.is_nan() {
                assert_eq!(i, 0);
            }
            if *x == f64::INFINITY {
                assert_eq!(i, i64::MAX);
            }
        }
    }
}

#[test]
fn booleans() {
    for op in [B::And, B::Or, B::Eq, B::Ne] {
        case(&[TB, TB], binop(op));
    }
    case(&[TB], |_, a| ir::unary(recipe_compiler::ast::UnOp::Not, a[0].clone()).unwrap());
    // Short-circuit with an expensive right side (a call, so the JIT branches).
    case(&[TB, TS], |m, a| {
        let b = Expr::str(m.string("b"));
        let rhs = m.call("contains", vec![a[1].clone(), b]).unwrap();
        ir::binary(B::And, a[0].clone(), rhs).unwrap()
    });
    case(&[TB, TS], |m, a| {
        let a0 = Expr::str(m.string("a"));
        let rhs = m.call("starts_with", vec![a[1].clone(), a0]).unwrap();
        ir::binary(B::Or, a[0].clone(), rhs).unwrap()
    });
}

#[test]
fn strings_builtins() {
    for name in ["len", "bytes", "trim", "lower", "upper"] {
        case(&[TS], call(name));
    }
    for name in ["str_eq", "contains", "starts_with", "ends_with"] {
        case(&[TS, TS], call(name));
    }
    case(&[TS, TS], binop(B::Eq));
    case(&[TS, TS], binop(B::Ne));
    case(&[TS, TI], call("parse_int"));
    case(&[TS, TF], call("parse_float"));
    // Nested string builtins: views of views, and of arena strings.
    case(&[TS], |m, a| {
        let upper = m.call("upper", vec![a[0].clone()]).unwrap();
        let trimmed = m.call("trim", vec![upper]).unwrap();
        m.call("len", vec![trimmed]).unwrap()
    });
    case(&[TS], |m, a| {
        let upper = m.call("upper", vec![a[0].clone()]).unwrap();
        m.call("bytes", vec![upper]).unwrap()
    });
    case(&[TS, TS], |m, a| {
        let l = m.call("lower", vec![a[0].clone()]).unwrap();
        let l = m.call("trim", vec![l]).unwrap();
        let r = m.call("trim", vec![a[1].clone()]).unwrap();
        ir::binary(B::Eq, l, r).unwrap()
    });
}

#[test]
fn string_cutting_and_building_builtins() {
    for name in ["first_number", "last_number"] {
        case(&[TS], call(name));
    }
    for name in ["before", "after", "after_last", "format"] {
        case(&[TS, TS], call(name));
    }
    case(&[TS, TS], binop(B::Add));
    case(&[TS, TS, TI], call("split_part"));
    case(&[TS, TS, TS], call("replace"));
    case(&[TF], call("str"));
    case(&[TI], call("str"));
    case(&[TI], call("str_int"));
    // Cuts of arena strings, and builders over cuts.
    case(&[TS, TS], |m, a| {
        let l = m.call("lower", vec![a[0].clone()]).unwrap();
        let part = m.call("split_part", vec![l, a[1].clone(), Expr::int(-1)]).unwrap();
        let joined = ir::binary(B::Add, part, a[1].clone()).unwrap();
        let comma = Expr::str(m.string(","));
        m.call("after", vec![joined, comma]).unwrap()
    });
    // GSM8K's reward: the completion's last number equals the answer's.
    let reward = case(&[TS, TS], |m, a| {
        let (c, r) = (m.call("last_number", vec![a[0].clone()]).unwrap(), m.call("last_number", vec![a[1].clone()]));
        let eq = ir::binary(B::Eq, c, r.unwrap()).unwrap();
        Expr::if_(eq, Expr::float(1.0), Expr::float(0.0))
    });
    let cols = product(&[TS, TS]);
    if let (Column::Str(c), Column::Str(r), Column::Float(v)) = (&cols[0], &cols[1], &reward) {
        for ((c, r), v) in c.iter().zip(r).zip(v) {
            if (&**c, &**r) == ("so 48 + 24 = 72 clips\n#### 72", "#### 72") || (&**c, &**r) == ("42", "42") {
                assert_eq!(*v, 1.0, "{c:?} {r:?}");
            }
            if &**c == "abc" {
                assert_eq!(*v, 0.0, "no number is never right");
            }
        }
    }
    // The documented values, through both backends.
    let numbers = case(&[TS], call("last_number"));
    let firsts = case(&[TS], call("first_number"));
    let want = [
        ("so 48 + 24 = 72 clips\n#### 72", 48.0, 72.0),
        ("-$1,234.5", -1234.5, -1234.5),
        ("10-4=6 or 1,23", 10.0, 23.0),
        ("3.5e2", 3.5, 2.0),
        (" -17 ", -17.0, -17.0),
    ];
    if let (Column::Str(s), Column::Float(last), Column::Float(first)) = (column(TS), numbers, firsts) {
        for (text, f, l) in want {
            let i = s.iter().position(|x| &**x == text).unwrap();
            assert_eq!((first[i], last[i]), (f, l), "{text:?}");
        }
        let i = s.iter().position(|x| &**x == "abc").unwrap();
        assert_eq!((first[i].to_bits(), last[i].to_bits()), (0x7ff8_0000_0000_0000, 0x7ff8_0000_0000_0000));
    }
}

#[test]
fn regex_capture() {
    for pattern in [r"#### (-?\d+)", r"(\d+)|([a-z]+)", r"(?i)(nan)|(inf)", "", r"(é)?"] {
        let got = case(&[TS, TI], |m, a| {
            let p = Expr::str(m.string(pattern));
            m.call("capture", vec![a[0].clone(), p, a[1].clone()]).unwrap()
        });
        if pattern.starts_with("####") {
            let cols = product(&[TS, TI]);
            if let (Column::Str(s), Column::Int(g), Column::Str(out)) = (&cols[0], &cols[1], &got) {
                for ((s, g), out) in s.iter().zip(g).zip(out) {
                    let want = match (&**s, *g) {
                        ("so 48 + 24 = 72 clips\n#### 72", 0) => "#### 72",
                        ("so 48 + 24 = 72 clips\n#### 72", 1) => "72",
                        _ => continue,
                    };
                    assert_eq!(&**out, want);
                }
            }
        }
    }
}

#[test]
fn messages_builtins() {
    for name in ["system", "user", "assistant"] {
        let out = case(&[TS], call(name));
        let Column::Str(texts) = out else { panic!("{name}: not a String column") };
        for (text, content) in texts.iter().zip(strings()) {
            assert_eq!(**text, recipe_compiler::messages::turn(name, content), "{name}({content:?})");
        }
    }
    // `system(a) + user(b)`, then the empty conversation on either side of a turn.
    let out = case(&[TS, TS], |m, a| {
        let s = m.call("system", vec![a[0].clone()]).unwrap();
        let u = m.call("user", vec![a[1].clone()]).unwrap();
        m.call("turns", vec![s, u]).unwrap()
    });
    let Column::Str(texts) = out else { panic!("turns: not a String column") };
    let parsed: serde_json::Value = serde_json::from_str(&texts[texts.len() - 1]).unwrap();
    assert_eq!(parsed.as_array().map(Vec::len), Some(2));
    case(&[TS, TS], |m, a| {
        let u = m.call("user", vec![a[0].clone()]).unwrap();
        let t = m.call("turns", vec![a[1].clone(), u]).unwrap();
        m.call("len", vec![t]).unwrap()
    });
}

#[test]
fn regex_matches() {
    for pattern in [r"^\d+$", r"[A-Z]", r"(?i)nan|inf", r"^\s*[-+]?\d+\s*$", "é", ""] {
        case(&[TS], |m, a| {
            let p = Expr::str(m.string(pattern));
            m.call("matches", vec![a[0].clone(), p]).unwrap()
        });
    }
}

#[test]
fn branches_lets_and_string_results() {
    // A string-valued `if` over a trimmed parameter and a constant.
    case(&[TB, TS], |m, a| {
        let t = m.call("trim", vec![a[1].clone()]).unwrap();
        Expr::if_(a[0].clone(), t, Expr::str(m.string("fallback")))
    });
    // The reward shape: if trim(completion) == answer { 1.0 } else { 0.0 }.
    case(&[TS, TS], |m, a| {
        let t = m.call("trim", vec![a[0].clone()]).unwrap();
        let eq = ir::binary(B::Eq, t, a[1].clone()).unwrap();
        Expr::if_(eq, Expr::float(1.0), Expr::float(0.0))
    });
    // Lets, including reuse of a local id in sibling scopes.
    case(&[TI, TF], |m, a| {
        let x = Expr::local(0, TF);
        let sq = ir::binary(B::Mul, x.clone(), x.clone()).unwrap();
        let big = ir::binary(B::Gt, a[0].clone(), Expr::int(2)).unwrap();
        let then = Expr::let_(1, m.call("log1p", vec![sq]).unwrap(), Expr::local(1, TF));
        let other = Expr::let_(1, Expr::float(-1.0), ir::binary(B::Sub, Expr::local(1, TF), x).unwrap());
        let value = ir::binary(B::Add, a[1].clone(), a[0].clone()).unwrap();
        Expr::let_(0, value, Expr::if_(big, then, other))
    });
}

#[test]
fn constant_functions_and_many_functions() {
    // A module of several functions compiled together; each is checked on its own.
    let mut m = Module::new();
    let s = m.string("héllo");
    let bodies = vec![
        ("c_int", Expr::int(i64::MIN)),
        ("c_float", Expr::float(-0.0)),
        ("c_nan", Expr::float(f64::from_bits(0xfff0_0000_0000_0001))),
        ("c_bool", Expr::bool(true)),
        ("c_str", Expr::str(s)),
    ];
    for (name, body) in bodies {
        let params = vec![Param { name: "x".into(), ty: TI }];
        m.push(Function { name: name.into(), params, ret: body.ty, body });
    }
    let interp = Compiled::new(&m, Backend::Interp).unwrap();
    let jit = Compiled::new(&m, Backend::Jit).unwrap();
    let x = Column::Int(vec![1, 2, 3]);
    for f in &m.functions {
        let a = eval_batch(interp.func(&f.name).unwrap(), &[("x", &x)]).unwrap();
        let b = eval_batch(jit.func(&f.name).unwrap(), &[("x", &x)]).unwrap();
        for r in 0..3 {
            assert_eq!(value_at(&a, r), value_at(&b, r), "{}", f.name);
        }
    }
    let nan = jit.func("c_nan").unwrap().call(&[Value::Int(0)]).unwrap();
    assert_eq!(nan, Value::Float(f64::from_bits(0x7ff8_0000_0000_0000)));
}
