//! The reference interpreter for the scalar IR: its results *define* what scalar code means, and
//! the JIT must agree with it bit for bit (`tests/differential.rs`).
//!
//! It is a typed tree-walker: each node is evaluated by the function for its type (`int`,
//! `float`, `boolean`, `string`), so numeric code moves plain `i64`/`f64`/`bool` values and never
//! allocates. Strings are borrowed from the inputs or the module's constants; only the builtins
//! that build a string (`lower`, `upper`, `replace`, `+`, `format`, `str`, `str_int`) and a cut
//! (`trim`, `split_part`, `capture`, …) of such an owned string allocate. Parameters and `let`
//! locals live in slices the caller reuses across rows.
//!
//! Invariant: only validated modules get here (`Interp::new` validates), so a node of the wrong
//! type for its position cannot occur; the `unreachable!`s below mark exactly that.

pub mod ops;

use crate::batch::EvalError;
use crate::ir::{BinOp, Builtin, Cmp, Const, Expr, ExprKind, FuncId, IrError, Module, Ty, UnOp};
use crate::messages;
use regex::Regex;
use std::rc::Rc;
use std::sync::Arc;

/// An owned scalar value, for calling a function once (a schedule at a step) and for results.
/// Equality compares Floats by bits, so `NaN == NaN` and `-0.0 != 0.0`.
#[derive(Clone, Debug)]
pub enum Value {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(Arc<str>),
}

impl Value {
    pub fn ty(&self) -> Ty {
        match self {
            Value::Int(_) => Ty::Int,
            Value::Float(_) => Ty::Float,
            Value::Bool(_) => Ty::Bool,
            Value::Str(_) => Ty::Str,
        }
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => a.to_bits() == b.to_bits(),
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Str(a), Value::Str(b)) => a == b,
            _ => false,
        }
    }
}

/// A string during evaluation: borrowed from an input or constant, or owned when a builtin built
/// it (`lower`, `replace`, …). Cloning is a copy or a reference-count bump.
#[derive(Clone, Debug)]
pub(crate) enum Text<'a> {
    Borrowed(&'a str),
    Owned(Rc<str>),
}

impl Text<'_> {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Text::Borrowed(s) => s,
            Text::Owned(s) => s,
        }
    }
}

/// A value during evaluation (parameters and locals).
#[derive(Clone, Debug)]
pub(crate) enum Val<'a> {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(Text<'a>),
}

/// A validated module ready to interpret, with its regexes compiled once.
#[derive(Debug)]
pub struct Interp {
    module: Module,
    regexes: Vec<Regex>,
    /// Local slots needed by each function.
    local_counts: Vec<usize>,
}

impl Interp {
    /// Validates `module` and prepares it for evaluation.
    pub fn new(module: &Module) -> Result<Interp, IrError> {
        module.validate()?;
        let regexes = module
            .regexes
            .iter()
            .map(|p| Regex::new(p).map_err(|e| IrError::InvalidRegex { pattern: p.clone(), message: e.to_string() }))
            .collect::<Result<_, _>>()?;
        let local_counts = module.functions.iter().map(|f| f.local_count()).collect();
        Ok(Interp { module: module.clone(), regexes, local_counts })
    }

    /// Evaluates `body`, an expression without parameters over `module`'s string and regex
    /// tables, as a function of its own: validated, and canonicalised like any result. This is
    /// how compile-time folding gets the interpreter's meaning (`eval::fold_ir`).
    pub fn eval_closed(mut module: Module, body: Expr) -> Result<Value, IrError> {
        let name = format!("closed#{}", module.functions.len());
        let f = module.push(crate::ir::Function { name, params: Vec::new(), ret: body.ty, body });
        let interp = Interp::new(&module)?;
        let mut locals = interp.locals(f);
        Ok(owned(interp.eval_row(f, &[], &mut locals)))
    }

    pub fn module(&self) -> &Module {
        &self.module
    }

    /// Calls function `f` once with owned arguments (checked against its parameters).
    pub fn call(&self, f: FuncId, args: &[Value]) -> Result<Value, EvalError> {
        let func = self.module.function(f);
        crate::batch::check_args(func, args)?;
        let params: Vec<Val<'_>> = args
            .iter()
            .map(|a| match a {
                Value::Int(v) => Val::Int(*v),
                Value::Float(v) => Val::Float(*v),
                Value::Bool(v) => Val::Bool(*v),
                Value::Str(s) => Val::Str(Text::Borrowed(s)),
            })
            .collect();
        let mut locals = self.locals(f);
        Ok(owned(self.eval_row(f, &params, &mut locals)))
    }

    /// Fresh local slots for function `f`, to be reused across rows.
    pub(crate) fn locals<'a>(&self, f: FuncId) -> Vec<Val<'a>> {
        vec![Val::Int(0); self.local_counts[f.0 as usize]]
    }

    /// Evaluates function `f` on one row. Float results are NaN-canonicalised.
    pub(crate) fn eval_row<'a>(&'a self, f: FuncId, params: &[Val<'a>], locals: &mut [Val<'a>]) -> Val<'a> {
        let body = &self.module.function(f).body;
        let mut frame = Frame { interp: self, params, locals };
        match frame.eval(body) {
            Val::Float(x) => Val::Float(ops::canonical(x)),
            v => v,
        }
    }
}

/// A result as an owned value.
fn owned(v: Val<'_>) -> Value {
    match v {
        Val::Int(v) => Value::Int(v),
        Val::Float(v) => Value::Float(v),
        Val::Bool(v) => Value::Bool(v),
        Val::Str(s) => Value::Str(Arc::from(s.as_str())),
    }
}

/// One evaluation: the interpreter, the row's parameters and the local slots.
struct Frame<'a, 'f> {
    interp: &'a Interp,
    params: &'f [Val<'a>],
    locals: &'f mut [Val<'a>],
}

impl<'a> Frame<'a, '_> {
    fn eval(&mut self, e: &'a Expr) -> Val<'a> {
        match e.ty {
            Ty::Int => Val::Int(self.int(e)),
            Ty::Float => Val::Float(self.float(e)),
            Ty::Bool => Val::Bool(self.boolean(e)),
            Ty::Str => Val::Str(self.string(e)),
        }
    }

    /// Reads a parameter or local slot; `let` binds the slot before its body runs.
    fn slot(&self, e: &ExprKind) -> &Val<'a> {
        match e {
            ExprKind::Param(i) => &self.params[*i as usize],
            ExprKind::Local(i) => &self.locals[*i as usize],
            _ => unreachable!("slot of a non-variable"),
        }
    }

    fn bind(&mut self, local: u32, value: &'a Expr) {
        let v = self.eval(value);
        self.locals[local as usize] = v;
    }

    fn int(&mut self, e: &'a Expr) -> i64 {
        match &e.kind {
            ExprKind::Const(Const::Int(v)) => *v,
            k @ (ExprKind::Param(_) | ExprKind::Local(_)) => match self.slot(k) {
                Val::Int(v) => *v,
                _ => unreachable!("validated: Int slot"),
            },
            ExprKind::Let { local, value, body } => {
                self.bind(*local, value);
                self.int(body)
            }
            ExprKind::Unary(UnOp::INeg, a) => self.int(a).wrapping_neg(),
            ExprKind::Binary(op, a, b) => {
                let (a, b) = (self.int(a), self.int(b));
                match op {
                    BinOp::IAdd => a.wrapping_add(b),
                    BinOp::ISub => a.wrapping_sub(b),
                    BinOp::IMul => a.wrapping_mul(b),
                    BinOp::IDiv => ops::idiv(a, b),
                    BinOp::IRem => ops::irem(a, b),
                    _ => unreachable!("validated: Int operator"),
                }
            }
            ExprKind::If { cond, then, otherwise } => {
                if self.boolean(cond) {
                    self.int(then)
                } else {
                    self.int(otherwise)
                }
            }
            ExprKind::Call(builtin, args) => match (builtin, args.as_slice()) {
                (Builtin::AbsInt, [a]) => self.int(a).wrapping_abs(),
                (Builtin::MinInt, [a, b]) => self.int(a).min(self.int(b)),
                (Builtin::MaxInt, [a, b]) => self.int(a).max(self.int(b)),
                (Builtin::ClampInt, [x, lo, hi]) => {
                    let (x, lo, hi) = (self.int(x), self.int(lo), self.int(hi));
                    ops::iclamp(x, lo, hi)
                }
                (Builtin::Int, [a]) => ops::to_int(self.float(a)),
                (Builtin::Len, [s]) => ops::len(self.string(s).as_str()),
                (Builtin::Bytes, [s]) => ops::bytes(self.string(s).as_str()),
                (Builtin::ParseInt, [s, d]) => {
                    let s = self.string(s);
                    ops::parse_int(s.as_str(), self.int(d))
                }
                _ => unreachable!("validated: Int builtin"),
            },
            _ => unreachable!("validated: Int node"),
        }
    }

    fn float(&mut self, e: &'a Expr) -> f64 {
        match &e.kind {
            ExprKind::Const(Const::Float(v)) => *v,
            k @ (ExprKind::Param(_) | ExprKind::Local(_)) => match self.slot(k) {
                Val::Float(v) => *v,
                _ => unreachable!("validated: Float slot"),
            },
            ExprKind::Let { local, value, body } => {
                self.bind(*local, value);
                self.float(body)
            }
            ExprKind::Unary(UnOp::FNeg, a) => -self.float(a),
            ExprKind::Binary(op, a, b) => {
                let (a, b) = (self.float(a), self.float(b));
                match op {
                    BinOp::FAdd => a + b,
                    BinOp::FSub => a - b,
                    BinOp::FMul => a * b,
                    BinOp::FDiv => a / b,
                    BinOp::FRem => ops::frem(a, b),
                    _ => unreachable!("validated: Float operator"),
                }
            }
            ExprKind::If { cond, then, otherwise } => {
                if self.boolean(cond) {
                    self.float(then)
                } else {
                    self.float(otherwise)
                }
            }
            ExprKind::Call(builtin, args) => match (builtin, args.as_slice()) {
                (Builtin::Float, [a]) => self.int(a) as f64,
                (Builtin::MinFloat, [a, b]) => ops::fmin(self.float(a), self.float(b)),
                (Builtin::MaxFloat, [a, b]) => ops::fmax(self.float(a), self.float(b)),
                (Builtin::ClampFloat, [x, lo, hi]) => {
                    let (x, lo, hi) = (self.float(x), self.float(lo), self.float(hi));
                    ops::fclamp(x, lo, hi)
                }
                (Builtin::Pow, [a, b]) => ops::pow(self.float(a), self.float(b)),
                (Builtin::ParseFloat, [s, d]) => {
                    let s = self.string(s);
                    ops::parse_float(s.as_str(), self.float(d))
                }
                (Builtin::FirstNumber, [s]) => ops::first_number(self.string(s).as_str()),
                (Builtin::LastNumber, [s]) => ops::last_number(self.string(s).as_str()),
                (b, [a]) => {
                    let x = self.float(a);
                    match b {
                        Builtin::AbsFloat => x.abs(),
                        Builtin::Floor => x.floor(),
                        Builtin::Ceil => x.ceil(),
                        Builtin::Sqrt => x.sqrt(),
                        Builtin::Round => ops::round(x),
                        Builtin::Exp => ops::exp(x),
                        Builtin::Log => ops::log(x),
                        Builtin::Log1p => ops::log1p(x),
                        Builtin::Tanh => ops::tanh(x),
                        Builtin::Cos => ops::cos(x),
                        Builtin::Sin => ops::sin(x),
                        Builtin::Sigmoid => ops::sigmoid(x),
                        _ => unreachable!("validated: unary Float builtin"),
                    }
                }
                _ => unreachable!("validated: Float builtin"),
            },
            _ => unreachable!("validated: Float node"),
        }
    }

    fn boolean(&mut self, e: &'a Expr) -> bool {
        match &e.kind {
            ExprKind::Const(Const::Bool(v)) => *v,
            k @ (ExprKind::Param(_) | ExprKind::Local(_)) => match self.slot(k) {
                Val::Bool(v) => *v,
                _ => unreachable!("validated: Bool slot"),
            },
            ExprKind::Let { local, value, body } => {
                self.bind(*local, value);
                self.boolean(body)
            }
            ExprKind::Unary(UnOp::Not, a) => !self.boolean(a),
            ExprKind::Binary(BinOp::And, a, b) => self.boolean(a) && self.boolean(b),
            ExprKind::Binary(BinOp::Or, a, b) => self.boolean(a) || self.boolean(b),
            ExprKind::Binary(BinOp::BEq, a, b) => self.boolean(a) == self.boolean(b),
            ExprKind::Binary(BinOp::BNe, a, b) => self.boolean(a) != self.boolean(b),
            ExprKind::Binary(BinOp::ICmp(c), a, b) => compare(*c, &self.int(a), &self.int(b)),
            ExprKind::Binary(BinOp::FCmp(c), a, b) => compare(*c, &self.float(a), &self.float(b)),
            ExprKind::If { cond, then, otherwise } => {
                if self.boolean(cond) {
                    self.boolean(then)
                } else {
                    self.boolean(otherwise)
                }
            }
            ExprKind::Call(Builtin::IsNan, args) => self.float(&args[0]).is_nan(),
            ExprKind::Call(Builtin::Matches(re), args) => {
                let s = self.string(&args[0]);
                self.interp.regexes[re.0 as usize].is_match(s.as_str())
            }
            ExprKind::Call(builtin, args) => {
                let (a, b) = (self.string(&args[0]), self.string(&args[1]));
                let (a, b) = (a.as_str(), b.as_str());
                match builtin {
                    Builtin::StrEq => a == b,
                    Builtin::Contains => a.contains(b),
                    Builtin::StartsWith => a.starts_with(b),
                    Builtin::EndsWith => a.ends_with(b),
                    _ => unreachable!("validated: Bool builtin"),
                }
            }
            _ => unreachable!("validated: Bool node"),
        }
    }

    fn string(&mut self, e: &'a Expr) -> Text<'a> {
        match &e.kind {
            ExprKind::Const(Const::Str(id)) => Text::Borrowed(&self.interp.module.strings[id.0 as usize]),
            k @ (ExprKind::Param(_) | ExprKind::Local(_)) => match self.slot(k) {
                Val::Str(s) => s.clone(),
                _ => unreachable!("validated: Str slot"),
            },
            ExprKind::Let { local, value, body } => {
                self.bind(*local, value);
                self.string(body)
            }
            ExprKind::If { cond, then, otherwise } => {
                if self.boolean(cond) {
                    self.string(then)
                } else {
                    self.string(otherwise)
                }
            }
            ExprKind::Call(Builtin::Turns, args) => {
                let (a, b) = (self.string(&args[0]), self.string(&args[1]));
                built(messages::concat(a.as_str(), b.as_str()))
            }
            ExprKind::Call(Builtin::Str, args) => built(ops::float_text(self.float(&args[0]))),
            ExprKind::Call(Builtin::StrInt, args) => built(self.int(&args[0]).to_string()),
            ExprKind::Call(Builtin::Capture(re), args) => {
                let (s, group) = (self.string(&args[0]), self.int(&args[1]));
                let re = &self.interp.regexes[re.0 as usize];
                cut(s, |s| ops::capture(re, s, group))
            }
            ExprKind::Call(builtin, args) => {
                let s = self.string(&args[0]);
                match builtin {
                    Builtin::Trim => cut(s, str::trim),
                    Builtin::Lower => built(s.as_str().to_lowercase()),
                    Builtin::Upper => built(s.as_str().to_uppercase()),
                    Builtin::Replace => {
                        let (from, to) = (self.string(&args[1]), self.string(&args[2]));
                        built(ops::replace(s.as_str(), from.as_str(), to.as_str()))
                    }
                    Builtin::SplitPart => {
                        let (sep, n) = (self.string(&args[1]), self.int(&args[2]));
                        cut(s, |s| ops::split_part(s, sep.as_str(), n))
                    }
                    Builtin::Before | Builtin::After | Builtin::AfterLast => {
                        let sep = self.string(&args[1]);
                        let f: for<'s> fn(&'s str, &str) -> &'s str = match builtin {
                            Builtin::Before => ops::before,
                            Builtin::After => ops::after,
                            _ => ops::after_last,
                        };
                        cut(s, |s| f(s, sep.as_str()))
                    }
                    Builtin::Concat => built(ops::concat(s.as_str(), self.string(&args[1]).as_str())),
                    Builtin::Format => built(ops::format(s.as_str(), self.string(&args[1]).as_str())),
                    Builtin::System => built(messages::turn("system", s.as_str())),
                    Builtin::User => built(messages::turn("user", s.as_str())),
                    Builtin::Assistant => built(messages::turn("assistant", s.as_str())),
                    _ => unreachable!("validated: Str builtin"),
                }
            }
            _ => unreachable!("validated: Str node"),
        }
    }
}

/// A string a builtin built.
fn built<'a>(s: String) -> Text<'a> {
    Text::Owned(Rc::from(s))
}

/// The part of `s` that `f` cuts out of it: borrowed from what `s` borrows, or (from an owned
/// string) copied unless it is all of it.
fn cut<'a>(s: Text<'a>, f: impl for<'s> FnOnce(&'s str) -> &'s str) -> Text<'a> {
    match s {
        Text::Borrowed(s) => Text::Borrowed(f(s)),
        Text::Owned(s) => {
            let part = f(&s);
            if part.len() == s.len() {
                Text::Owned(s.clone())
            } else {
                Text::Owned(Rc::from(part))
            }
        }
    }
}

/// Int and Float comparisons; Float ones are IEEE (false with NaN, except `!=`).
fn compare<T: PartialOrd>(c: Cmp, a: &T, b: &T) -> bool {
    match c {
        Cmp::Eq => a == b,
        Cmp::Ne => a != b,
        Cmp::Lt => a < b,
        Cmp::Le => a <= b,
        Cmp::Gt => a > b,
        Cmp::Ge => a >= b,
    }
}
