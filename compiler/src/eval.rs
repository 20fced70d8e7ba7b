//! Compile-time evaluation: the checked program → [`Program`]. Every top-level declaration is
//! evaluated to a value; calls of `fn`s are inlined ([`inline`], shared with the lowering),
//! builtin calls become `Value::Call` with all arguments, scalar operations on constants are
//! folded by the interpreter (see `fold_ir`), and closures (lambdas, `fn`s used as values,
//! losses) are turned into code at the end — scalar IR (`lower::scalar`) or a tensor DAG
//! (`lower::tensor`) — by the type they have.
//!
//! Invariants: evaluation cannot loop (fns are not recursive, checked earlier); an expression
//! that cannot be known at compile time outside a function body (an `if` on a parameter) is a
//! `recipe::eval::not_constant` diagnostic, not a panic.

use crate::ast::{BinOp, BindingKind, UnOp};
use crate::check::typed::{Coercion, FileId, FnId, Lambda, LocalId, TExpr, TKind};
use crate::check::{CheckedProgram, CheckedRounds, FnInfo};
use crate::diag::Diagnostic;
use crate::interp::{self, Interp};
use crate::ir;
use crate::lower;
use crate::program::{Decl, DeclKind, FunctionInfo, LossTerm, Origin, Program, Rounds, RowSchema, Value};
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
    /// For a loss made by calling a named function (`dpo(beta = 0.1)`): that function's name
    /// and its arguments that are values, plus `beta` even when it is a schedule: they name
    /// the term in metrics, scale its implicit rewards and set thresholds its metrics report
    /// (`eps_low` for `clip_ratio/low_mean`).
    pub label: Option<(String, Vec<(String, CVal)>)>,
}

#[derive(Clone, Debug)]
pub enum ClosureKind {
    Lambda(Rc<Lambda>),
    Fn(FnId),
    Extern(String),
}

/// Local bindings visible to an expression.
pub type Env = HashMap<LocalId, CVal>;

/// One of the three walkers of checked code — compile-time evaluation ([`Evaluator`]), scalar
/// and tensor lowering (`lower`) — as far as [`inline`] needs it: its value type and how it
/// evaluates an expression in an environment of such values.
pub trait Walker<'c, 'a: 'c> {
    /// What an expression evaluates to in this walker.
    type Val;
    /// The checked program whose `fn`s are inlined.
    fn program(&self) -> &'c CheckedProgram<'a>;
    /// Evaluates `e` with `env` binding its locals.
    fn walk(&mut self, e: &TExpr, env: &HashMap<LocalId, Self::Val>) -> Self::Val;
    /// The value of something already reported (a `fn` whose body did not check).
    fn error() -> Self::Val;
}

/// An argument of an inlined `fn` call.
pub enum Arg<'t, V> {
    /// Written at the call: evaluated in the caller's environment.
    Expr(&'t TExpr, &'t HashMap<LocalId, V>),
    /// Already a value (a `fn` called as a function value).
    Value(V),
    /// Omitted: the parameter's default.
    Default,
}

/// The arguments of a `TKind::CallFn` evaluated in `env`.
pub fn call_args<'t, V>(args: &'t [Option<TExpr>], env: &'t HashMap<LocalId, V>) -> impl Iterator<Item = Arg<'t, V>> {
    args.iter().map(move |a| a.as_ref().map_or(Arg::Default, |a| Arg::Expr(a, env)))
}

/// Inlines a call of `fn` `id` in any walker — the one place that knows how a `fn` call binds.
/// Each parameter, in order, is bound to its argument, or else to its default evaluated in the
/// callee's environment so far (so a default can use earlier parameters); the body is then
/// evaluated in that environment. Missing arguments take their defaults.
pub fn inline<'c, 'a: 'c, 't, W: Walker<'c, 'a>>(
    w: &mut W,
    id: FnId,
    args: impl IntoIterator<Item = Arg<'t, W::Val>>,
) -> W::Val
where
    W::Val: 't,
{
    let info = &w.program().fns[id];
    let mut env = HashMap::new();
    let mut args = args.into_iter();
    for ((_, local, _), default) in info.params.iter().zip(&info.defaults) {
        let v = match (args.next().unwrap_or(Arg::Default), default) {
            (Arg::Expr(e, caller), _) => w.walk(e, caller),
            (Arg::Value(v), _) => v,
            (Arg::Default, Some(d)) => w.walk(d, &env),
            (Arg::Default, None) => W::error(),
        };
        env.insert(*local, v);
    }
    match &info.body {
        Some(body) => w.walk(body, &env),
        None => W::error(),
    }
}

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
    let mut ev = Evaluator::new(checked);
    let mut header = Vec::new();
    for (name, value) in &checked.header {
        ev.context = format!("header.{name}");
        let v = ev.eval(value, &Env::new());
        header.push((name.clone(), ev.finalize(v, &value.ty)));
    }
    let seed = header.iter().find(|(n, _)| n == "seed").and_then(|(_, v)| v.as_int()).unwrap_or(0);
    let decls = checked
        .items
        .iter()
        .map(|item| ev.decl(decl_kind(item.kind), &item.name, &item.name, &item.value, &item.ty))
        .collect();
    let rounds = checked.rounds.iter().map(|r| ev.rounds(r)).collect();
    if let Err(e) = ev.module.validate() {
        ev.diags.push((
            FileId::USER,
            Diagnostic::error("recipe::internal::ir", format!("the compiler produced invalid scalar IR: {e}"))
                .with_note("this is a bug in the recipe compiler"),
        ));
    }
    if !ev.diags.is_empty() {
        // A value used twice (a `let` loss passed to a stage) is lowered twice; report once.
        let mut seen = Vec::new();
        ev.diags.retain(|(file, d)| {
            let key = (*file, d.code, d.message.clone(), d.labels.first().map(|l| l.span));
            let new = !seen.contains(&key);
            seen.push(key);
            new
        });
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
    fn new(checked: &'c CheckedProgram<'a>) -> Self {
        let mut kinds = HashMap::new();
        for item in &checked.items {
            kinds.insert(item.name.clone(), item.kind);
        }
        for r in &checked.rounds {
            kinds.insert(r.name.clone(), BindingKind::Stage);
            for s in &r.stages {
                kinds.insert(s.name.clone(), BindingKind::Stage);
            }
        }
        Evaluator {
            checked,
            module: ir::Module::new(),
            infos: Vec::new(),
            diags: Vec::new(),
            lets: HashMap::new(),
            kinds,
            context: String::new(),
            compiled: HashMap::new(),
        }
    }

    /// Evaluate one declaration; `context` names the functions it compiles.
    fn decl(&mut self, kind: DeclKind, name: &str, context: &str, expr: &TExpr, ty: &Ty) -> Decl {
        self.context = context.to_string();
        let v = self.eval(expr, &Env::new());
        let value = self.finalize(v, ty);
        Decl {
            kind,
            name: name.to_string(),
            ty: ty.to_string(),
            row: RowSchema::of_dataset(ty),
            value,
            origin: origin(expr),
            arg_origins: arg_origins(expr),
        }
    }

    fn rounds(&mut self, r: &CheckedRounds) -> Rounds {
        self.context = r.name.clone();
        let count = match self.eval(&r.count, &Env::new()) {
            CVal::V(Value::Int(n)) => n,
            _ => {
                self.not_constant(&r.count, "a rounds count");
                0
            }
        };
        let from_v = self.eval(&r.from, &Env::new());
        let from = self.finalize(from_v, &r.from.ty);
        let stages = r
            .stages
            .iter()
            .map(|s| self.decl(DeclKind::Stage, &s.name, &format!("{}.{}", r.name, s.name), &s.value, &s.ty))
            .collect();
        Rounds { name: r.name.clone(), count, from, stages }
    }

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
            TKind::Field(base, field) => {
                let base = self.eval(base, env);
                self.field(base, field, e)
            }
            TKind::CallFn(id, args) => {
                self.check_fn_domains(*id, args, env);
                let v = inline(self, *id, call_args(args, env));
                self.label_loss(*id, v)
            }
            TKind::CallExtern(name, args) => self.call_extern(name, args, env),
            TKind::CallValue(f, args) => {
                let f = self.eval(f, env);
                let args: Vec<CVal> = args.iter().map(|a| self.eval(a, env)).collect();
                self.apply(f, args, e)
            }
            TKind::Unary(op, a) => match self.eval(a, env) {
                CVal::V(v) => self.folded(fold_unary(*op, &v), e, "this value"),
                CVal::Error => CVal::Error,
                _ => self.folded(None, e, "this value"),
            },
            TKind::Binary(op, a, b) => {
                let (x, y) = (self.eval(a, env), self.eval(b, env));
                self.binary(*op, x, y, e)
            }
            TKind::If(c, t, o) => match self.eval(c, env) {
                CVal::V(Value::Bool(true)) => self.eval(t, env),
                CVal::V(Value::Bool(false)) => self.eval(o, env),
                CVal::Error => CVal::Error,
                _ => self.folded(None, c, "this condition"),
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
                coerce(*c, v)
            }
            TKind::Error => CVal::Error,
        }
    }

    /// A folded value, or the `not_constant` diagnostic for `what` at `at` when there is none.
    fn folded(&mut self, v: Option<Value>, at: &TExpr, what: &str) -> CVal {
        match v {
            Some(v) => CVal::V(v),
            None => {
                self.not_constant(at, what);
                CVal::Error
            }
        }
    }

    /// `base.field` of an evaluated `base`.
    fn field(&mut self, base: CVal, field: &str, at: &TExpr) -> CVal {
        match base {
            CVal::Record(fields) => fields.into_iter().find(|(n, _)| n == field).map_or(CVal::Error, |(_, v)| v),
            CVal::V(Value::Record(fields)) => {
                fields.into_iter().find(|(n, _)| n == field).map_or(CVal::Error, |(_, v)| CVal::V(v))
            }
            CVal::V(Value::Stage { stage, field: None }) => {
                CVal::V(Value::Stage { stage, field: Some(field.to_string()) })
            }
            CVal::Error => CVal::Error,
            _ => self.folded(None, at, "this field"),
        }
    }

    /// A builtin call: folded when it is scalar code on constants, else a `Value::Call` for the
    /// runtime with every argument named.
    fn call_extern(&mut self, name: &str, args: &[(String, LocalId, TExpr)], env: &Env) -> CVal {
        let mut inner = Env::new();
        let mut values = Vec::new();
        for (param, local, arg) in args {
            // Given arguments see the caller's scope; defaults see earlier parameters.
            let scope = if arg.file == FileId::BUILTINS { &inner } else { env };
            let v = self.eval(arg, scope);
            if arg.file != FileId::BUILTINS {
                self.check_domain(&crate::check::display_name(name), param, &v, arg, false);
            }
            inner.insert(*local, v.clone());
            values.push((param.clone(), v));
        }
        match fold_builtin(name, values.iter().map(|(_, v)| v)) {
            Some(v) => CVal::V(v),
            None => CVal::Call(crate::check::display_name(name), values),
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
                ClosureKind::Fn(id) => inline(self, *id, args.into_iter().map(Arg::Value)),
                ClosureKind::Extern(name) => {
                    let v = fold_builtin(name, &args);
                    self.folded(v, at, "this call")
                }
            },
            CVal::Error => CVal::Error,
            _ => self.folded(None, at, "this call"),
        }
    }

    fn binary(&mut self, op: BinOp, x: CVal, y: CVal, at: &TExpr) -> CVal {
        if let Some(loss) = loss_algebra(op, &x, &y) {
            return loss;
        }
        match (x, y) {
            (CVal::V(a), CVal::V(b)) => self.folded(fold_binary(op, &a, &b), at, "this operation"),
            (CVal::Error, _) | (_, CVal::Error) => CVal::Error,
            _ => self.folded(None, at, "this operation"),
        }
    }

    /// A loss's terms, each lowered on its own (see [`LossTerm`]).
    fn loss(&mut self, terms: Vec<(f64, Rc<Closure>)>) -> Value {
        let terms = terms
            .into_iter()
            .map(|(weight, c)| {
                let (name, params) = c.label.clone().unwrap_or_else(|| ("loss".into(), Vec::new()));
                let params = params.into_iter().map(|(n, v)| (n, self.finalize_untyped(v))).collect();
                LossTerm { name, weight, params, f: lower::tensor(self, &[(1.0, c)]) }
            })
            .collect();
        Value::Loss(terms)
    }

    /// Reports a written argument outside its domain ([`crate::domain`]) at the argument.
    fn check_domain(&mut self, callee: &str, param: &str, v: &CVal, arg: &TExpr, is_loss: bool) {
        let (Some(domain), CVal::V(value)) = (crate::domain::of(callee, param, is_loss), v) else { return };
        let Some(x) = crate::domain::number(value) else { return };
        if !domain.contains(x) {
            self.diags.push((
                arg.file,
                Diagnostic::error(
                    "recipe::call::domain",
                    format!("`{param}` of `{callee}` must be {}, not {x}", domain.describe()),
                )
                .with_primary(arg.span, format!("must be {}", domain.describe())),
            ));
        }
    }

    /// The domain checks of a `fn` call's written arguments (a loss's `beta`, `robust`'s `eps`).
    fn check_fn_domains(&mut self, id: FnId, args: &[Option<TExpr>], env: &Env) {
        let info = &self.checked.fns[id];
        let is_loss = info.ret.as_ref().is_some_and(|t| t.is_tensor_fn());
        let name = info.name.clone();
        let params: Vec<String> = info.params.iter().map(|(n, _, _)| n.clone()).collect();
        for (param, arg) in params.iter().zip(args) {
            if let Some(arg) = arg {
                if crate::domain::of(&name, param, is_loss).is_some() {
                    let v = self.eval(arg, env);
                    self.check_domain(&name, param, &v, arg, is_loss);
                }
            }
        }
    }

    /// `v`, labelled with the function `id` that returned it when it is an unlabelled loss.
    fn label_loss(&self, id: FnId, v: CVal) -> CVal {
        let CVal::Closure(c) = &v else { return v };
        if !c.ty.is_tensor_fn() || c.label.is_some() {
            return v;
        }
        let info = &self.checked.fns[id];
        let params = info
            .params
            .iter()
            .filter_map(|(n, local, _)| {
                let v = c.env.get(local)?;
                (matches!(v, CVal::V(_)) || n == "beta").then(|| (n.clone(), v.clone()))
            })
            .collect();
        CVal::Closure(Rc::new(Closure {
            kind: c.kind.clone(),
            env: c.env.clone(),
            ty: c.ty.clone(),
            label: Some((info.name.clone(), params)),
        }))
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
            CVal::Closure(c) if c.ty.is_tensor_fn() => self.loss(vec![(1.0, c)]),
            CVal::Loss(terms) => self.loss(terms),
            CVal::Closure(c) if matches!(&c.ty, Ty::Fn(_, ret) if matches!(**ret, Ty::Record(_))) => {
                match lower::row_fields(self, &c) {
                    Some(fields) => Value::Record(fields.into_iter().map(|(n, id)| (n, Value::Scalar(id))).collect()),
                    // A diagnostic was reported, as below.
                    None => Value::Bool(false),
                }
            }
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

impl<'c, 'a> Walker<'c, 'a> for Evaluator<'c, 'a> {
    type Val = CVal;

    fn program(&self) -> &'c CheckedProgram<'a> {
        self.checked
    }

    fn walk(&mut self, e: &TExpr, env: &Env) -> CVal {
        self.eval(e, env)
    }

    fn error() -> CVal {
        CVal::Error
    }
}

fn closure(kind: ClosureKind, env: Env, ty: Ty) -> CVal {
    CVal::Closure(Rc::new(Closure { kind, env, ty, label: None }))
}

/// Losses form a vector space: a number times a loss, and sums and differences of losses, are
/// weighted sums of loss terms. `None` when `op` does not combine losses.
fn loss_algebra(op: BinOp, x: &CVal, y: &CVal) -> Option<CVal> {
    let as_loss = |v: &CVal| -> Option<Vec<(f64, Rc<Closure>)>> {
        match v {
            CVal::Loss(terms) => Some(terms.clone()),
            CVal::Closure(c) if c.ty.is_tensor_fn() => Some(vec![(1.0, c.clone())]),
            _ => None,
        }
    };
    let num = |v: &CVal| match v {
        CVal::V(v) => v.as_f64(),
        _ => None,
    };
    let scale =
        |terms: Vec<(f64, Rc<Closure>)>, w: f64| CVal::Loss(terms.into_iter().map(|(a, c)| (a * w, c)).collect());
    match (op, as_loss(x), as_loss(y)) {
        (BinOp::Mul, None, Some(terms)) => num(x).map(|w| scale(terms, w)),
        (BinOp::Mul, Some(terms), None) => num(y).map(|w| scale(terms, w)),
        (BinOp::Add, Some(mut a), Some(b)) => {
            a.extend(b);
            Some(CVal::Loss(a))
        }
        (BinOp::Sub, Some(mut a), Some(b)) => {
            a.extend(b.into_iter().map(|(w, c)| (-w, c)));
            Some(CVal::Loss(a))
        }
        _ => None,
    }
}

/// An implicit conversion of an evaluated value. Int → Float goes through the IR's `float`, like
/// every other scalar operation on constants.
pub fn coerce(c: Coercion, v: CVal) -> CVal {
    match (c, v) {
        (Coercion::IntToFloat | Coercion::ToTensor | Coercion::ToSchedule, CVal::V(v @ Value::Int(_))) => {
            fold_builtin("float", [&CVal::V(v)]).map_or(CVal::Error, CVal::V)
        }
        (Coercion::StageField(f), CVal::V(Value::Stage { stage, field: None })) => {
            CVal::V(Value::Stage { stage, field: Some(f.to_string()) })
        }
        (_, v) => v,
    }
}

// Constant folding. Scalar operations on constants are not given a meaning here: each is built as
// scalar IR (`ir::Module::call`, `ir::binary`, `ir::unary` — the lowering's own builders, so with
// the same overload and promotion choices and hence the checker's result type) and run on the
// interpreter, which defines scalar semantics. Compile-time values therefore are, bit for bit,
// what the scalar backends compute (`tests/differential.rs` checks the three against each other).

/// Folds the operation `build` makes of `args` as IR constants on the interpreter. `None` if an
/// argument is not a scalar or the IR has no such operation on these types.
fn fold_ir(
    args: &[&Value],
    build: impl FnOnce(&mut ir::Module, Vec<ir::Expr>) -> Result<ir::Expr, ir::IrError>,
) -> Option<Value> {
    let mut module = ir::Module::new();
    let mut operands = Vec::with_capacity(args.len());
    for a in args {
        operands.push(match a {
            Value::Int(x) => ir::Expr::int(*x),
            Value::Float(x) => ir::Expr::float(*x),
            Value::Bool(x) => ir::Expr::bool(*x),
            Value::Str(s) => ir::Expr::str(module.string(s)),
            _ => return None,
        });
    }
    let body = build(&mut module, operands).ok()?;
    Some(match Interp::eval_closed(module, body).ok()? {
        interp::Value::Int(x) => Value::Int(x),
        interp::Value::Float(x) => Value::Float(x),
        interp::Value::Bool(x) => Value::Bool(x),
        interp::Value::Str(s) => Value::Str(s.to_string()),
    })
}

fn fold_unary(op: UnOp, a: &Value) -> Option<Value> {
    fold_ir(&[a], |_, mut xs| ir::unary(op, xs.remove(0)))
}

/// Folds a binary operator. Enum equality exists only at compile time (scalar code has no
/// enums), so it is the one operation defined here.
fn fold_binary(op: BinOp, a: &Value, b: &Value) -> Option<Value> {
    match (op, a, b) {
        (BinOp::Eq | BinOp::Ne, Value::Enum { name: x, .. }, Value::Enum { name: y, .. }) => {
            Some(Value::Bool((x == y) == (op == BinOp::Eq)))
        }
        _ => fold_ir(&[a, b], |_, mut xs| {
            let y = xs.remove(1);
            ir::binary(op, xs.remove(0), y)
        }),
    }
}

/// Folds a call of the builtin `name` when it is scalar code on constants (`None` for the other
/// builtins: stages, data sources, curricula).
fn fold_builtin<'v>(name: &str, args: impl IntoIterator<Item = &'v CVal>) -> Option<Value> {
    let values: Vec<&Value> =
        args.into_iter().map(|v| if let CVal::V(v) = v { Some(v) } else { None }).collect::<Option<_>>()?;
    fold_ir(&values, |m, xs| m.call(name, xs))
}
