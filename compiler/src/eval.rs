//! Compile-time evaluation: the checked program → [`Program`]. Every top-level declaration is
//! evaluated to a value; calls of `fn`s are inlined, builtin calls become `Value::Call` with all
//! arguments, arithmetic on constants is folded, and closures (lambdas, `fn`s used as values,
//! losses) are turned into code at the end — scalar IR (`lower::scalar`) or a tensor DAG
//! (`lower::tensor`) — by the type they have.
//!
//! Invariants: evaluation cannot loop (fns are not recursive, checked earlier); an expression
//! that cannot be known at compile time outside a function body (an `if` on a parameter) is a
//! `recipe::eval::not_constant` diagnostic, not a panic.

use crate::ast::{BinOp, BindingKind, UnOp};
use crate::check::typed::{Coercion, FileId, FnId, Lambda, LocalId, TExpr, TKind};
use crate::check::{CheckedProgram, FnInfo};
use crate::diag::Diagnostic;
use crate::interp::ops;
use crate::ir;
use crate::lower;
use crate::program::{Decl, DeclKind, FunctionInfo, Origin, Program, Rounds, RowSchema, Value};
use crate::types::Ty;
use std::collections::HashMap;
use std::rc::Rc;

/// A value during compile-time evaluation: like `Value`, plus closures.
#[derive(Clone, Debug)]
pub enum CVal {
    V(Value),
    List(Vec<CVal>),
    Record(Vec<(String, CVal)>),
    Call(String, Vec<(String, CVal)>),
    Closure(Rc<Closure>),
    /// A weighted sum of losses: `0.8 * dpo() + nll()`.
    Loss(Vec<(f64, Rc<Closure>)>),
    /// Already reported.
    Error,
}

/// A function value with what it captured.
#[derive(Debug)]
pub struct Closure {
    pub kind: ClosureKind,
    pub env: Env,
    pub ty: Ty,
}

#[derive(Debug)]
pub enum ClosureKind {
    Lambda(Rc<Lambda>),
    Fn(FnId),
    Extern(String),
}

/// Local bindings visible to an expression.
pub type Env = HashMap<LocalId, CVal>;

pub struct Evaluator<'c, 'a> {
    pub checked: &'c CheckedProgram<'a>,
    pub module: ir::Module,
    pub infos: Vec<FunctionInfo>,
    pub diags: Vec<(FileId, Diagnostic)>,
    lets: HashMap<String, CVal>,
    kinds: HashMap<String, BindingKind>,
    /// The name of the declaration being evaluated, to name its functions.
    pub context: String,
    /// Closures already compiled (a `let` used twice is one function). Holding the `Rc` keeps
    /// the address from being reused by another closure.
    compiled: HashMap<*const Closure, (Rc<Closure>, u32)>,
}

/// Evaluate a checked program. `source` is the canonical text.
pub fn evaluate(
    checked: &CheckedProgram<'_>,
    source: String,
    overrides: &[(String, String)],
) -> Result<Program, Vec<(FileId, Diagnostic)>> {
    let mut ev = Evaluator {
        checked,
        module: ir::Module::new(),
        infos: Vec::new(),
        diags: Vec::new(),
        lets: HashMap::new(),
        kinds: HashMap::new(),
        context: String::new(),
        compiled: HashMap::new(),
    };
    for item in &checked.items {
        ev.kinds.insert(item.name.clone(), item.kind);
    }
    for r in &checked.rounds {
        ev.kinds.insert(r.name.clone(), BindingKind::Stage);
        for s in &r.stages {
            ev.kinds.insert(s.name.clone(), BindingKind::Stage);
        }
    }
    let mut header = Vec::new();
    for (name, value) in &checked.header {
        ev.context = format!("header.{name}");
        let v = ev.eval(value, &Env::new());
        header.push((name.clone(), ev.finalize(v, &value.ty)));
    }
    let seed = header.iter().find(|(n, _)| n == "seed").and_then(|(_, v)| v.as_int()).unwrap_or(0);
    let mut decls = Vec::new();
    for item in &checked.items {
        ev.context = item.name.clone();
        let v = ev.eval(&item.value, &Env::new());
        let value = ev.finalize(v, &item.ty);
        decls.push(Decl {
            kind: decl_kind(item.kind),
            name: item.name.clone(),
            ty: item.ty.to_string(),
            row: RowSchema::of_dataset(&item.ty),
            value,
            origin: origin(&item.value),
            arg_origins: arg_origins(&item.value),
        });
    }
    let mut rounds = Vec::new();
    for r in &checked.rounds {
        ev.context = r.name.clone();
        let count = match ev.eval(&r.count, &Env::new()) {
            CVal::V(Value::Int(n)) => n,
            _ => {
                ev.not_constant(&r.count, "a rounds count");
                0
            }
        };
        let from_v = ev.eval(&r.from, &Env::new());
        let from = ev.finalize(from_v, &r.from.ty);
        let mut stages = Vec::new();
        for s in &r.stages {
            ev.context = format!("{}.{}", r.name, s.name);
            let v = ev.eval(&s.value, &Env::new());
            let value = ev.finalize(v, &s.ty);
            stages.push(Decl {
                kind: DeclKind::Stage,
                name: s.name.clone(),
                ty: s.ty.to_string(),
                row: RowSchema::of_dataset(&s.ty),
                value,
                origin: origin(&s.value),
                arg_origins: arg_origins(&s.value),
            });
        }
        rounds.push(Rounds { name: r.name.clone(), count, from, stages });
    }
    if let Err(e) = ev.module.validate() {
        ev.diags.push((
            FileId::USER,
            Diagnostic::error("recipe::internal::ir", format!("the compiler produced invalid scalar IR: {e}"))
                .with_note("this is a bug in the recipe compiler"),
        ));
    }
    if !ev.diags.is_empty() {
        return Err(ev.diags);
    }
    Ok(Program {
        name: checked.name.clone(),
        seed,
        header,
        decls,
        rounds,
        run: checked.run.clone(),
        source,
        overrides: overrides.to_vec(),
        scalar: ev.module,
        functions: ev.infos,
        sources: Vec::new(),
    })
}

fn origin(e: &TExpr) -> Origin {
    Origin { file: e.file.0, span: e.span }
}

/// The written arguments of a builtin call, nested calls as dotted paths. Defaults are checked
/// in the stdlib's text, so they have no place in the recipe and are left out.
fn arg_origins(e: &TExpr) -> Vec<(String, Origin)> {
    fn walk(e: &TExpr, prefix: &str, out: &mut Vec<(String, Origin)>) {
        let TKind::CallExtern(_, args) = &e.kind else { return };
        for (name, _, arg) in args {
            if arg.file == FileId::PRELUDE || arg.file == FileId::BUILTINS {
                continue;
            }
            let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
            out.push((path.clone(), origin(arg)));
            walk(arg, &path, out);
        }
    }
    let mut out = Vec::new();
    walk(e, "", &mut out);
    out
}

fn decl_kind(kind: BindingKind) -> DeclKind {
    match kind {
        BindingKind::Model => DeclKind::Model,
        BindingKind::Data => DeclKind::Data,
        BindingKind::Stage => DeclKind::Stage,
        BindingKind::Eval => DeclKind::Eval,
        BindingKind::Let => DeclKind::Let,
    }
}

impl<'c, 'a> Evaluator<'c, 'a> {
    pub fn fn_info(&self, id: FnId) -> &FnInfo<'a> {
        &self.checked.fns[id]
    }

    pub fn not_constant(&mut self, e: &TExpr, what: &str) {
        self.diags.push((
            e.file,
            Diagnostic::error("recipe::eval::not_constant", format!("{what} must be known before the run starts"))
                .with_primary(e.span, "depends on a value only known while running")
                .with_help("use constants or top-level `let`s here"),
        ));
    }

    /// Evaluate an expression to a compile-time value.
    pub fn eval(&mut self, e: &TExpr, env: &Env) -> CVal {
        match &e.kind {
            TKind::Int(v) => CVal::V(Value::Int(*v)),
            TKind::Float(v) => CVal::V(Value::Float(*v)),
            TKind::Bool(v) => CVal::V(Value::Bool(*v)),
            TKind::Str(s) => CVal::V(Value::Str(s.clone())),
            TKind::Local(id) => env.get(id).cloned().unwrap_or(CVal::Error),
            TKind::Global(name) => self.global(name),
            TKind::RoundInput(name) => CVal::V(Value::RoundInput(name.clone())),
            TKind::FnRef(id) => closure(ClosureKind::Fn(*id), Env::new(), e.ty.clone()),
            TKind::ExternRef(name) => closure(ClosureKind::Extern(name.clone()), Env::new(), e.ty.clone()),
            TKind::Enum(ty, name) => CVal::V(Value::Enum { ty: ty.to_string(), name: name.clone() }),
            TKind::Field(base, field) => match self.eval(base, env) {
                CVal::Record(fields) => fields.into_iter().find(|(n, _)| n == field).map_or(CVal::Error, |(_, v)| v),
                CVal::V(Value::Record(fields)) => {
                    fields.into_iter().find(|(n, _)| n == field).map_or(CVal::Error, |(_, v)| CVal::V(v))
                }
                CVal::V(Value::Stage { stage, field: None }) => {
                    CVal::V(Value::Stage { stage, field: Some(field.clone()) })
                }
                CVal::Error => CVal::Error,
                _ => {
                    self.not_constant(e, "this field");
                    CVal::Error
                }
            },
            TKind::CallFn(id, args) => {
                let mut inner = Env::new();
                let params = self.fn_info(*id).params.clone();
                for (i, ((_, local, _), arg)) in params.iter().zip(args).enumerate() {
                    let v = match arg {
                        Some(a) => self.eval(a, env),
                        None => match self.checked.fns[*id].defaults[i].as_ref() {
                            Some(d) => self.eval(d, &inner),
                            None => CVal::Error,
                        },
                    };
                    inner.insert(*local, v);
                }
                match self.checked.fns[*id].body.as_ref() {
                    Some(body) => self.eval(body, &inner),
                    None => CVal::Error,
                }
            }
            TKind::CallExtern(name, args) => {
                let mut inner = Env::new();
                let mut values = Vec::new();
                for (param, local, arg) in args {
                    // Given arguments see the caller's scope; defaults see earlier parameters.
                    let scope = if arg.file == FileId::BUILTINS { &inner } else { env };
                    let v = self.eval(arg, scope);
                    inner.insert(*local, v.clone());
                    values.push((param.clone(), v));
                }
                fold_builtin(name, &values).unwrap_or_else(|| CVal::Call(crate::check::display_name(name), values))
            }
            TKind::CallValue(f, args) => {
                let f = self.eval(f, env);
                let args: Vec<CVal> = args.iter().map(|a| self.eval(a, env)).collect();
                self.apply(f, args, e)
            }
            TKind::Unary(op, a) => {
                let v = self.eval(a, env);
                match (op, v) {
                    (UnOp::Neg, CVal::V(Value::Int(x))) => CVal::V(Value::Int(x.wrapping_neg())),
                    (UnOp::Neg, CVal::V(Value::Float(x))) => CVal::V(Value::Float(-x)),
                    (UnOp::Not, CVal::V(Value::Bool(b))) => CVal::V(Value::Bool(!b)),
                    (_, CVal::Error) => CVal::Error,
                    _ => {
                        self.not_constant(e, "this value");
                        CVal::Error
                    }
                }
            }
            TKind::Binary(op, a, b) => {
                let (x, y) = (self.eval(a, env), self.eval(b, env));
                self.binary(*op, x, y, e)
            }
            TKind::If(c, t, o) => match self.eval(c, env) {
                CVal::V(Value::Bool(true)) => self.eval(t, env),
                CVal::V(Value::Bool(false)) => self.eval(o, env),
                CVal::Error => CVal::Error,
                _ => {
                    self.not_constant(c, "this condition");
                    CVal::Error
                }
            },
            TKind::Lambda(l) => closure(ClosureKind::Lambda(l.clone()), env.clone(), e.ty.clone()),
            TKind::List(items) => CVal::List(items.iter().map(|i| self.eval(i, env)).collect()),
            TKind::Record(fields) => CVal::Record(fields.iter().map(|(n, v)| (n.clone(), self.eval(v, env))).collect()),
            TKind::Range(s, t, inclusive) => match (self.eval(s, env), self.eval(t, env)) {
                (CVal::V(Value::Int(start)), CVal::V(Value::Int(end))) => {
                    CVal::V(Value::Range { start, end, inclusive: *inclusive })
                }
                _ => CVal::Error,
            },
            TKind::Block(lets, result) => {
                let mut inner = env.clone();
                for (local, value) in lets {
                    let v = self.eval(value, &inner);
                    inner.insert(*local, v);
                }
                self.eval(result, &inner)
            }
            TKind::Coerce(c, inner) => {
                let v = self.eval(inner, env);
                match (c, v) {
                    (Coercion::IntToFloat, CVal::V(Value::Int(x))) => CVal::V(Value::Float(x as f64)),
                    (Coercion::ToTensor | Coercion::ToSchedule, CVal::V(Value::Int(x))) => {
                        CVal::V(Value::Float(x as f64))
                    }
                    (Coercion::StageField(f), CVal::V(Value::Stage { stage, field: None })) => {
                        CVal::V(Value::Stage { stage, field: Some(f.to_string()) })
                    }
                    (_, v) => v,
                }
            }
            TKind::Error => CVal::Error,
        }
    }

    fn global(&mut self, name: &str) -> CVal {
        match self.kinds.get(name) {
            Some(BindingKind::Model) => CVal::V(Value::Model(name.to_string())),
            Some(BindingKind::Data) => CVal::V(Value::Data(name.to_string())),
            Some(BindingKind::Stage) => CVal::V(Value::Stage { stage: name.to_string(), field: None }),
            Some(BindingKind::Eval) => CVal::V(Value::Str(name.to_string())),
            Some(BindingKind::Let) => {
                if let Some(v) = self.lets.get(name) {
                    return v.clone();
                }
                let Some(item) = self.checked.items.iter().find(|i| i.name == name) else { return CVal::Error };
                let v = self.eval(&item.value, &Env::new());
                self.lets.insert(name.to_string(), v.clone());
                v
            }
            None => CVal::Error,
        }
    }

    /// Apply a function value at compile time.
    pub fn apply(&mut self, f: CVal, args: Vec<CVal>, at: &TExpr) -> CVal {
        match f {
            // A constant schedule called with (step, total).
            CVal::V(v @ (Value::Float(_) | Value::Int(_))) => CVal::V(v),
            CVal::Closure(c) => match &c.kind {
                ClosureKind::Lambda(l) => {
                    let mut env = c.env.clone();
                    for ((_, local, _), a) in l.params.iter().zip(args) {
                        env.insert(*local, a);
                    }
                    self.eval(&l.body, &env)
                }
                ClosureKind::Fn(id) => {
                    let mut env = Env::new();
                    let params = self.fn_info(*id).params.clone();
                    for ((_, local, _), a) in params.iter().zip(args) {
                        env.insert(*local, a);
                    }
                    match self.checked.fns[*id].body.as_ref() {
                        Some(body) => self.eval(body, &env),
                        None => CVal::Error,
                    }
                }
                ClosureKind::Extern(name) => {
                    let named: Vec<(String, CVal)> =
                        args.into_iter().enumerate().map(|(i, a)| (i.to_string(), a)).collect();
                    fold_builtin(name, &named).unwrap_or_else(|| {
                        self.not_constant(at, "this call");
                        CVal::Error
                    })
                }
            },
            CVal::Error => CVal::Error,
            _ => {
                self.not_constant(at, "this call");
                CVal::Error
            }
        }
    }

    fn binary(&mut self, op: BinOp, x: CVal, y: CVal, at: &TExpr) -> CVal {
        use BinOp::*;
        // Loss algebra.
        let as_loss = |v: &CVal| -> Option<Vec<(f64, Rc<Closure>)>> {
            match v {
                CVal::Loss(terms) => Some(terms.clone()),
                CVal::Closure(c) if c.ty.is_tensor_fn() => Some(vec![(1.0, c.clone())]),
                _ => None,
            }
        };
        let num = |v: &CVal| match v {
            CVal::V(Value::Int(i)) => Some(*i as f64),
            CVal::V(Value::Float(f)) => Some(*f),
            _ => None,
        };
        match (op, as_loss(&x), as_loss(&y)) {
            (Mul, None, Some(terms)) if num(&x).is_some() => {
                let w = num(&x).unwrap_or(1.0);
                return CVal::Loss(terms.into_iter().map(|(a, c)| (a * w, c)).collect());
            }
            (Mul, Some(terms), None) if num(&y).is_some() => {
                let w = num(&y).unwrap_or(1.0);
                return CVal::Loss(terms.into_iter().map(|(a, c)| (a * w, c)).collect());
            }
            (Add, Some(mut a), Some(b)) => {
                a.extend(b);
                return CVal::Loss(a);
            }
            (Sub, Some(mut a), Some(b)) => {
                a.extend(b.into_iter().map(|(w, c)| (-w, c)));
                return CVal::Loss(a);
            }
            _ => {}
        }
        match (x, y) {
            (CVal::V(a), CVal::V(b)) => match fold_binary(op, &a, &b) {
                Some(v) => CVal::V(v),
                None => {
                    self.not_constant(at, "this operation");
                    CVal::Error
                }
            },
            (CVal::Error, _) | (_, CVal::Error) => CVal::Error,
            _ => {
                self.not_constant(at, "this operation");
                CVal::Error
            }
        }
    }

    /// Turn a compile-time value into a program value, compiling closures by their type.
    pub fn finalize(&mut self, v: CVal, ty: &Ty) -> Value {
        match v {
            CVal::V(v) => v,
            CVal::List(items) => {
                let elem = match ty {
                    Ty::List(t) => (**t).clone(),
                    _ => Ty::Error,
                };
                Value::List(items.into_iter().map(|i| self.finalize(i, &elem)).collect())
            }
            CVal::Record(fields) => Value::Record(
                fields
                    .into_iter()
                    .map(|(n, v)| {
                        let t = ty.field(&n).cloned().unwrap_or(Ty::Error);
                        let v = self.finalize(v, &t);
                        (n, v)
                    })
                    .collect(),
            ),
            CVal::Call(name, args) => {
                Value::Call { name, args: args.into_iter().map(|(n, v)| (n, self.finalize_untyped(v))).collect() }
            }
            CVal::Closure(c) if c.ty.is_tensor_fn() => Value::Tensor(lower::tensor(self, &[(1.0, c)])),
            CVal::Loss(terms) => Value::Tensor(lower::tensor(self, &terms)),
            CVal::Closure(c) => {
                if let Some((_, id)) = self.compiled.get(&Rc::as_ptr(&c)) {
                    return Value::Scalar(*id);
                }
                match lower::scalar(self, &c) {
                    Some(id) => {
                        self.compiled.insert(Rc::as_ptr(&c), (c.clone(), id));
                        Value::Scalar(id)
                    }
                    // A diagnostic was reported: no Program is returned, so the placeholder
                    // is never seen.
                    None => Value::Bool(false),
                }
            }
            CVal::Error => Value::Bool(false),
        }
    }

    /// `finalize` where the value carries its own type (closures do; data needs none).
    fn finalize_untyped(&mut self, v: CVal) -> Value {
        match v {
            CVal::Closure(ref c) => {
                let ty = c.ty.clone();
                self.finalize(v, &ty)
            }
            CVal::List(items) => Value::List(items.into_iter().map(|i| self.finalize_untyped(i)).collect()),
            CVal::Record(fields) => {
                Value::Record(fields.into_iter().map(|(n, v)| (n, self.finalize_untyped(v))).collect())
            }
            other => self.finalize(other, &Ty::Error),
        }
    }

    /// Register a lowered scalar function; returns its index.
    pub fn push_function(&mut self, f: ir::Function) -> u32 {
        self.infos.push(FunctionInfo {
            name: f.name.clone(),
            params: f.params.iter().map(|p| (p.name.clone(), p.ty.name().to_string())).collect(),
            ret: f.ret.name().to_string(),
            text: String::new(),
        });
        let id = self.module.push(f);
        let text = self.module.function(id).to_string();
        self.infos[id.0 as usize].text = text;
        id.0
    }

    /// A fresh, unique function name for the current declaration.
    pub fn function_name(&self, hint: &str) -> String {
        let base = if self.context.is_empty() { hint.to_string() } else { format!("{}.{hint}", self.context) };
        let mut name = base.clone();
        let mut n = 1;
        while self.module.find(&name).is_some() {
            n += 1;
            name = format!("{base}#{n}");
        }
        name
    }
}

fn closure(kind: ClosureKind, env: Env, ty: Ty) -> CVal {
    CVal::Closure(Rc::new(Closure { kind, env, ty }))
}

/// Fold a binary operation on constants, with the scalar semantics of `interp::ops` (wrapping
/// Ints, `/` always Float, total `%` with the divisor's sign).
pub fn fold_binary(op: BinOp, a: &Value, b: &Value) -> Option<Value> {
    use BinOp::*;
    use Value::{Bool as B, Float as F, Int as I, Str as S};
    Some(match (op, a, b) {
        (Add, I(x), I(y)) => I(x.wrapping_add(*y)),
        (Sub, I(x), I(y)) => I(x.wrapping_sub(*y)),
        (Mul, I(x), I(y)) => I(x.wrapping_mul(*y)),
        (Rem, I(x), I(y)) => I(ops::irem(*x, *y)),
        (Add, S(x), S(y)) => S(format!("{x}{y}")),
        (Eq, S(x), S(y)) => B(x == y),
        (Ne, S(x), S(y)) => B(x != y),
        (Eq, B(x), B(y)) => B(x == y),
        (Ne, B(x), B(y)) => B(x != y),
        (And, B(x), B(y)) => B(*x && *y),
        (Or, B(x), B(y)) => B(*x || *y),
        (Eq, I(x), I(y)) => B(x == y),
        (Ne, I(x), I(y)) => B(x != y),
        (Lt, I(x), I(y)) => B(x < y),
        (Le, I(x), I(y)) => B(x <= y),
        (Gt, I(x), I(y)) => B(x > y),
        (Ge, I(x), I(y)) => B(x >= y),
        (op, x, y) => {
            let (x, y) = (x.as_f64()?, y.as_f64()?);
            match op {
                Add => F(x + y),
                Sub => F(x - y),
                Mul => F(x * y),
                Div => F(x / y),
                Rem => F(ops::frem(x, y)),
                Pow => F(ops::pow(x, y)),
                Eq => B(x == y),
                Ne => B(x != y),
                Lt => B(x < y),
                Le => B(x <= y),
                Gt => B(x > y),
                Ge => B(x >= y),
                And | Or => return None,
            }
        }
    })
}

/// Fold a scalar builtin on constant arguments (the interpreter's semantics).
fn fold_builtin(name: &str, args: &[(String, CVal)]) -> Option<CVal> {
    let vals: Vec<&Value> =
        args.iter().map(|(_, v)| if let CVal::V(v) = v { Some(v) } else { None }).collect::<Option<_>>()?;
    let text = |i: usize| vals.get(i).and_then(|v| v.as_str());
    let folded = match (name, vals.as_slice()) {
        ("len", [Value::Str(s)]) => Some(Value::Int(s.chars().count() as i64)),
        ("contains", [Value::Str(s), Value::Str(t)]) => Some(Value::Bool(s.contains(t.as_str()))),
        ("starts_with", [Value::Str(s), Value::Str(t)]) => Some(Value::Bool(s.starts_with(t.as_str()))),
        ("ends_with", [Value::Str(s), Value::Str(t)]) => Some(Value::Bool(s.ends_with(t.as_str()))),
        ("trim", [Value::Str(s)]) => Some(Value::Str(s.trim().to_string())),
        ("parse_int", [Value::Str(s), Value::Int(d)]) => Some(Value::Int(s.trim().parse().unwrap_or(*d))),
        ("parse_float", [Value::Str(s), d]) => Some(Value::Float(s.trim().parse().unwrap_or(d.as_f64()?))),
        ("matches", [Value::Str(s), Value::Str(p)]) => Some(Value::Bool(regex::Regex::new(p).ok()?.is_match(s))),
        ("is_nan", [x]) => Some(Value::Bool(x.as_f64()?.is_nan())),
        _ => None,
    };
    if let Some(v) = folded {
        return Some(CVal::V(v));
    }
    if text(0).is_some() {
        return None;
    }
    let nums: Option<Vec<f64>> = args
        .iter()
        .map(|(_, v)| match v {
            CVal::V(v) => v.as_f64(),
            _ => None,
        })
        .collect();
    let all_int = args.iter().all(|(_, v)| matches!(v, CVal::V(Value::Int(_))));
    let ints: Vec<i64> =
        args.iter().filter_map(|(_, v)| if let CVal::V(Value::Int(i)) = v { Some(*i) } else { None }).collect();
    let n = nums?;
    let f = |x: f64| Some(CVal::V(Value::Float(x)));
    match (name, n.as_slice()) {
        ("min", [_, _]) if all_int => Some(CVal::V(Value::Int(ints[0].min(ints[1])))),
        ("max", [_, _]) if all_int => Some(CVal::V(Value::Int(ints[0].max(ints[1])))),
        ("abs", [_]) if all_int => Some(CVal::V(Value::Int(ints[0].wrapping_abs()))),
        ("div", [_, _]) if all_int => Some(CVal::V(Value::Int(ops::idiv(ints[0], ints[1])))),
        ("float", [a]) => f(*a),
        ("int", [a]) => Some(CVal::V(Value::Int(*a as i64))),
        ("min", [a, b]) => f(ops::fmin(*a, *b)),
        ("max", [a, b]) => f(ops::fmax(*a, *b)),
        ("abs", [a]) => f(a.abs()),
        ("sqrt", [a]) => f(a.sqrt()),
        ("exp", [a]) => f(ops::exp(*a)),
        ("log", [a]) => f(ops::log(*a)),
        ("pow", [a, b]) => f(ops::pow(*a, *b)),
        ("floor", [a]) => f(a.floor()),
        ("ceil", [a]) => f(a.ceil()),
        ("round", [a]) => f(ops::round(*a)),
        ("tanh", [a]) => f(ops::tanh(*a)),
        ("log1p", [a]) => f(ops::log1p(*a)),
        ("sigmoid", [a]) => f(ops::sigmoid(*a)),
        ("clamp", [x, lo, hi]) => f(ops::fclamp(*x, *lo, *hi)),
        _ => None,
    }
}
