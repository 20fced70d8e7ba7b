//! Property test: random well-typed IR expressions (depth-bounded, every type, operator and
//! builtin, `let` and `if`) over random inputs (special values mixed with arbitrary ones) must
//! give bit-identical results on the interpreter and the JIT.
//!
//! Expressions are built from a proptest-generated list of choice numbers rather than from nested
//! strategies: construction stays cheap at any depth, and shrinking the list shrinks the
//! expression (an exhausted list picks the first, simplest alternative everywhere).

use super::assert_agree;
use proptest::prelude::*;
use recipe_compiler::column::Column;
use recipe_compiler::ir::{BinOp, Builtin, Cmp, Expr, Function, Module, Param, RegexId, StrId, Ty, UnOp};
use std::sync::Arc;

/// The random function's parameters (named `p<i>` as `assert_agree` binds them): two Ints, two
/// Floats, a Bool, two Strings.
pub(super) const PARAMS: [(&str, Ty); 7] = [
    ("p0", Ty::Int),
    ("p1", Ty::Int),
    ("p2", Ty::Float),
    ("p3", Ty::Float),
    ("p4", Ty::Bool),
    ("p5", Ty::Str),
    ("p6", Ty::Str),
];

pub(super) const STRINGS: [&str; 8] = ["", "a", " 12 ", "Ünïcode", "-3.5", "abc", "{}:", "1,234"];
pub(super) const REGEXES: [&str; 4] = [r"^\d+$", r"[aeiou]", r"(?i)^\s*x", r"(\d+)|([a-z]+)"];
const MAX_DEPTH: u32 = 5;
const ROWS: usize = 6;

struct Gen<'a> {
    choices: &'a [u32],
    pos: usize,
    /// Locals in scope: (id, type).
    scope: Vec<(u32, Ty)>,
    /// Only what a recipe can write with constants: no parameters.
    surface: bool,
}

impl Gen<'_> {
    fn pick(&mut self, n: usize) -> usize {
        let c = self.choices.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        c as usize % n
    }

    fn ty(&mut self) -> Ty {
        [Ty::Int, Ty::Float, Ty::Bool, Ty::Str][self.pick(4)]
    }

    fn expr(&mut self, ty: Ty, depth: u32) -> Expr {
        if depth == 0 || self.pick(4) == 0 {
            return self.leaf(ty);
        }
        let d = depth - 1;
        match self.pick(8) {
            0 => {
                // let: a value of any type, then a body that may use it.
                let vty = self.ty();
                let value = self.expr(vty, d);
                let id = self.scope.len() as u32;
                self.scope.push((id, vty));
                let body = self.expr(ty, d);
                self.scope.pop();
                Expr::let_(id, value, body)
            }
            1 => {
                let c = self.expr(Ty::Bool, d);
                Expr::if_(c, self.expr(ty, d), self.expr(ty, d))
            }
            _ => self.op(ty, d),
        }
    }

    fn leaf(&mut self, ty: Ty) -> Expr {
        let locals: Vec<u32> = self.scope.iter().filter(|(_, t)| *t == ty).map(|(id, _)| *id).collect();
        let params: Vec<u32> =
            PARAMS.iter().enumerate().filter(|(_, (_, t))| *t == ty).map(|(i, _)| i as u32).collect();
        match self.pick(3) {
            0 if !locals.is_empty() => Expr::local(locals[self.pick(locals.len())], ty),
            1 if !self.surface => Expr::param(params[self.pick(params.len())], ty),
            _ => self.constant(ty),
        }
    }

    fn constant(&mut self, ty: Ty) -> Expr {
        match ty {
            Ty::Int => Expr::int([0, 1, -1, 2, 7, -3, i64::MAX, i64::MIN][self.pick(8)]),
            Ty::Float => Expr::float([0.0, -0.0, 1.0, -2.5, 0.5, 1e300, f64::INFINITY, f64::NAN, 5e-324][self.pick(9)]),
            Ty::Bool => Expr::bool(self.pick(2) == 1),
            Ty::Str => Expr::str(StrId(self.pick(STRINGS.len()) as u32)),
        }
    }

    fn op(&mut self, ty: Ty, d: u32) -> Expr {
        use Builtin as B;
        match ty {
            Ty::Int => match self.pick(8) {
                0 => Expr::unary(UnOp::INeg, self.expr(Ty::Int, d)),
                1 => {
                    let op = [BinOp::IAdd, BinOp::ISub, BinOp::IMul, BinOp::IDiv, BinOp::IRem][self.pick(5)];
                    Expr::binary(op, self.expr(Ty::Int, d), self.expr(Ty::Int, d))
                }
                2 => self.one_of(&[B::AbsInt, B::MinInt, B::MaxInt, B::ClampInt], d),
                3 => self.builtin(B::Int, d),
                4 => self.one_of(&[B::Len, B::Bytes], d),
                5 => self.builtin(B::ParseInt, d),
                _ => {
                    let op = [BinOp::IAdd, BinOp::IMul, BinOp::IDiv][self.pick(3)];
                    Expr::binary(op, self.expr(Ty::Int, d), self.expr(Ty::Int, d))
                }
            },
            Ty::Float => match self.pick(8) {
                0 => Expr::unary(UnOp::FNeg, self.expr(Ty::Float, d)),
                1 | 2 => {
                    let op = [BinOp::FAdd, BinOp::FSub, BinOp::FMul, BinOp::FDiv, BinOp::FRem][self.pick(5)];
                    Expr::binary(op, self.expr(Ty::Float, d), self.expr(Ty::Float, d))
                }
                3 => {
                    let all = [
                        B::AbsFloat,
                        B::Floor,
                        B::Ceil,
                        B::Round,
                        B::Sqrt,
                        B::Exp,
                        B::Log,
                        B::Log1p,
                        B::Tanh,
                        B::Cos,
                        B::Sin,
                        B::Sigmoid,
                    ];
                    self.one_of(&all, d)
                }
                4 => self.one_of(&[B::MinFloat, B::MaxFloat, B::ClampFloat, B::Pow], d),
                5 => self.builtin(B::Float, d),
                6 => self.builtin(B::ParseFloat, d),
                _ => self.one_of(&[B::FirstNumber, B::LastNumber], d),
            },
            Ty::Bool => match self.pick(7) {
                0 => Expr::unary(UnOp::Not, self.expr(Ty::Bool, d)),
                1 => {
                    let op = [BinOp::And, BinOp::Or, BinOp::BEq, BinOp::BNe][self.pick(4)];
                    Expr::binary(op, self.expr(Ty::Bool, d), self.expr(Ty::Bool, d))
                }
                2 => Expr::binary(BinOp::ICmp(self.cmp()), self.expr(Ty::Int, d), self.expr(Ty::Int, d)),
                3 => Expr::binary(BinOp::FCmp(self.cmp()), self.expr(Ty::Float, d), self.expr(Ty::Float, d)),
                4 => self.builtin(B::IsNan, d),
                5 => {
                    let all = [B::StrEq, B::Contains, B::StartsWith, B::EndsWith];
                    self.one_of(&all, d)
                }
                _ => {
                    let re = RegexId(self.pick(REGEXES.len()) as u32);
                    self.builtin(B::Matches(re), d)
                }
            },
            Ty::Str => match self.pick(6) {
                0 => self.one_of(&[B::Trim, B::Lower, B::Upper], d),
                1 => self.one_of(&[B::Before, B::After, B::AfterLast, B::Concat, B::Format], d),
                2 => self.builtin(B::SplitPart, d),
                3 => {
                    // `to` is a constant: replacing "" inserts it at every boundary, and nested
                    // replacements by computed strings would grow without bound.
                    let (s, from) = (self.expr(Ty::Str, d), self.expr(Ty::Str, d));
                    Expr::call(B::Replace, vec![s, from, self.constant(Ty::Str)])
                }
                4 => self.one_of(&[B::Str, B::StrInt], d),
                _ => {
                    let re = RegexId(self.pick(REGEXES.len()) as u32);
                    self.builtin(B::Capture(re), d)
                }
            },
        }
    }

    fn cmp(&mut self) -> Cmp {
        [Cmp::Eq, Cmp::Ne, Cmp::Lt, Cmp::Le, Cmp::Gt, Cmp::Ge][self.pick(6)]
    }

    fn one_of(&mut self, all: &[Builtin], d: u32) -> Expr {
        let b = all[self.pick(all.len())];
        self.builtin(b, d)
    }

    fn builtin(&mut self, b: Builtin, d: u32) -> Expr {
        let args = b.signature().0.iter().map(|t| self.expr(*t, d)).collect();
        Expr::call(b, args)
    }
}

/// A module of one random function `f` of [`PARAMS`]; with `surface`, its body uses no parameter
/// and only operations a recipe can write.
pub(super) fn module(choices: &[u32], surface: bool) -> Module {
    let mut m = Module::new();
    for s in STRINGS {
        m.string(s);
    }
    for r in REGEXES {
        m.regex(r).unwrap();
    }
    let mut g = Gen { choices, pos: 0, scope: Vec::new(), surface };
    let ret = g.ty();
    let body = g.expr(ret, MAX_DEPTH);
    let params = PARAMS.iter().map(|(n, t)| Param { name: (*n).into(), ty: *t }).collect();
    m.push(Function { name: "f".into(), params, ret, body });
    m
}

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        prop::sample::select(vec![
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.5,
            2.5,
            -2.5,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            -f64::NAN,
            5e-324,
            f64::MAX,
            9.3e18,
        ]),
        any::<f64>(),
        (-1e3..1e3f64),
    ]
}

fn int() -> impl Strategy<Value = i64> {
    prop_oneof![
        prop::sample::select(vec![0, 1, -1, 2, -2, 3, i64::MAX, i64::MIN, i64::MIN + 1]),
        any::<i64>(),
        (-100..100i64),
    ]
}

fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec!["", " ", "42", " -7 ", "1e3", "nan", "ÀÉÎ", "ß", "İ", "a", "#### -1,234.5"])
            .prop_map(String::from),
        "\\PC{0,8}",
        "[ 0-9aeiouxX.+-]{0,6}",
        "[ 0-9a,.$#{}-]{0,10}",
    ]
}

fn columns() -> impl Strategy<Value = Vec<Column>> {
    (
        prop::collection::vec(int(), ROWS * 2),
        prop::collection::vec(float(), ROWS * 2),
        prop::collection::vec(any::<bool>(), ROWS),
        prop::collection::vec(string(), ROWS * 2),
    )
        .prop_map(|(i, f, b, s)| {
            let strs = |r: std::ops::Range<usize>| Column::Str(s[r].iter().map(|x| Arc::from(x.as_str())).collect());
            vec![
                Column::Int(i[..ROWS].to_vec()),
                Column::Int(i[ROWS..].to_vec()),
                Column::Float(f[..ROWS].to_vec()),
                Column::Float(f[ROWS..].to_vec()),
                Column::Bool(b),
                strs(0..ROWS),
                strs(ROWS..2 * ROWS),
            ]
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_expressions_agree(
        choices in prop::collection::vec(any::<u32>(), 0..160),
        cols in columns(),
    ) {
        let m = module(&choices, false);
        m.validate().unwrap();
        assert_agree(&m, &cols);
    }
}
