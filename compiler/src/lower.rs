//! Lowering of closures to code: scalar closures (schedules, rewards, difficulty measures,
//! filters, scheduler updates) to the typed scalar IR of [`crate::ir`], and losses to the tensor
//! DAG of [`crate::tensor`].
//!
//! Both work by symbolic evaluation of the checked tree: parameters are symbolic, everything
//! else (captured constants, top-level `let`s, arguments of the enclosing call) is known, calls
//! of `fn`s and closures are inlined, and operations on constants are folded. A record
//! parameter is flattened: each field the body reads becomes one IR parameter named like the
//! field (the runtime matches it to the dataset column of that name). Scalar parameters come
//! first, in order, then the fields in order of first use.

use crate::ast::{BinOp, UnOp};
use crate::check::typed::{Coercion, FileId, LocalId, TExpr, TKind};
use crate::check::CheckedProgram;
use crate::diag::Diagnostic;
use crate::eval::{call_args, coerce, inline, Arg, CVal, Closure, ClosureKind, Env, Evaluator, Walker};
use crate::ir::{self, Expr};
use crate::program::Value;
use crate::tensor::{Axis, BinaryOp, Builder, Node, NodeId, Reduce, Shape, TensorFn, UnaryOp};
use crate::types::Ty;
use std::collections::HashMap;
use std::rc::Rc;

mod rows;
pub use rows::row_fields;

/// The IR type of a scalar language type.
fn ir_ty(ty: &Ty) -> Option<ir::Ty> {
    Some(match ty {
        Ty::Int => ir::Ty::Int,
        Ty::Float => ir::Ty::Float,
        Ty::Bool => ir::Ty::Bool,
        // A conversation is its canonical JSON text (`crate::messages`).
        Ty::String | Ty::Messages => ir::Ty::Str,
        _ => return None,
    })
}

fn unsupported(ev: &mut Evaluator<'_, '_>, e: &TExpr, what: &str) {
    ev.diags.push((
        e.file,
        Diagnostic::error("recipe::eval::unsupported", format!("{what} cannot be compiled"))
            .with_primary(e.span, "here")
            .with_help("scalar code works on Int, Float, Bool and String values; losses on the batch's Tensors"),
    ));
}

// ---- scalar ------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum SV {
    Ir(Expr),
    C(CVal),
    /// A record parameter (its index among the closure's parameters).
    Row(usize),
    /// A record written in the body with a field that is not constant (a row function's result).
    Record(Vec<(String, SV)>),
}

struct Scalar<'e, 'c, 'a> {
    ev: &'e mut Evaluator<'c, 'a>,
    params: Vec<ir::Param>,
    /// (record parameter, field) → IR parameter index.
    fields: HashMap<(usize, String), u32>,
    next_local: u32,
    failed: bool,
}

/// Lower a scalar closure to an IR function; `None` (with a diagnostic) if it cannot be.
pub fn scalar(ev: &mut Evaluator<'_, '_>, c: &Rc<Closure>) -> Option<u32> {
    let Ty::Fn(_, ret) = &c.ty else { return None };
    let ret_ty = ir_ty(ret)?;
    let (mut s, body, hint) = symbolic(ev, c)?;
    let body = s.as_ir(body, None)?;
    let body = if ret_ty == ir::Ty::Float { body.to_float() } else { body };
    if s.failed {
        return None;
    }
    let name = s.ev.function_name(&hint);
    let f = ir::Function { name, params: s.params, ret: ret_ty, body };
    Some(s.ev.push_function(f))
}

/// Applies closure `c` to symbolic parameters: scalar ones become IR parameters, record ones
/// rows whose fields become IR parameters as the body reads them. Returns the lowering state,
/// the body's value and a name hint for the functions made of it.
fn symbolic<'e, 'c, 'a>(ev: &'e mut Evaluator<'c, 'a>, c: &Rc<Closure>) -> Option<(Scalar<'e, 'c, 'a>, SV, String)> {
    let Ty::Fn(param_tys, _) = &c.ty else { return None };
    let names: Vec<String> = match &c.kind {
        ClosureKind::Lambda(l) => l.params.iter().map(|(n, _, _)| n.clone()).collect(),
        ClosureKind::Fn(id) => ev.fn_info(*id).params.iter().map(|(n, _, _)| n.clone()).collect(),
        ClosureKind::Extern(_) => (0..param_tys.len()).map(|i| format!("x{i}")).collect(),
    };
    let hint = match &c.kind {
        ClosureKind::Fn(id) => ev.fn_info(*id).name.clone(),
        ClosureKind::Extern(n) => n.clone(),
        ClosureKind::Lambda(_) => "lambda".to_string(),
    };
    let mut s = Scalar { ev, params: Vec::new(), fields: HashMap::new(), next_local: 0, failed: false };
    let mut args = Vec::new();
    for (i, (name, ty)) in names.iter().zip(param_tys).enumerate() {
        match ir_ty(ty) {
            Some(t) => {
                s.params.push(ir::Param { name: name.clone(), ty: t });
                args.push(SV::Ir(Expr::param(s.params.len() as u32 - 1, t)));
            }
            None => args.push(SV::Row(i)),
        }
    }
    let body = s.apply(SV::C(CVal::Closure(c.clone())), args, None);
    Some((s, body, hint))
}

impl Scalar<'_, '_, '_> {
    fn fail(&mut self, e: Option<&TExpr>, what: &str) {
        if !self.failed {
            if let Some(e) = e {
                unsupported(self.ev, e, what);
            } else {
                self.ev.diags.push((
                    FileId::USER,
                    Diagnostic::error("recipe::eval::unsupported", format!("{what} cannot be compiled")),
                ));
            }
        }
        self.failed = true;
    }

    /// A value as IR, if it is a scalar.
    fn as_ir(&mut self, v: SV, at: Option<&TExpr>) -> Option<Expr> {
        match v {
            SV::Ir(e) => Some(e),
            SV::C(CVal::V(Value::Int(x))) => Some(Expr::int(x)),
            SV::C(CVal::V(Value::Float(x))) => Some(Expr::float(x)),
            SV::C(CVal::V(Value::Bool(x))) => Some(Expr::bool(x)),
            SV::C(CVal::V(Value::Str(s))) => Some(Expr::str(self.ev.module.string(&s))),
            SV::C(CVal::Error) => {
                self.failed = true;
                None
            }
            _ => {
                self.fail(at, "a non-scalar value in scalar code");
                None
            }
        }
    }

    fn ir_result(&mut self, r: Result<Expr, ir::IrError>, at: &TExpr) -> SV {
        match r {
            Ok(e) => SV::Ir(e),
            Err(err) => {
                self.fail(Some(at), &format!("this operation ({err})"));
                SV::C(CVal::Error)
            }
        }
    }

    fn apply(&mut self, f: SV, args: Vec<SV>, at: Option<&TExpr>) -> SV {
        let SV::C(f) = f else {
            self.fail(at, "a call of an unknown function");
            return SV::C(CVal::Error);
        };
        // Constant arguments: evaluate at compile time.
        if args.iter().all(|a| matches!(a, SV::C(_))) && !matches!(f, CVal::Closure(_)) {
            let args = args.into_iter().map(|a| if let SV::C(c) = a { c } else { CVal::Error }).collect();
            return match at {
                Some(at) => SV::C(self.ev.apply(f, args, at)),
                None => SV::C(CVal::Error),
            };
        }
        match f {
            CVal::V(v @ (Value::Float(_) | Value::Int(_))) => SV::C(CVal::V(v)),
            CVal::Closure(c) => match &c.kind {
                ClosureKind::Lambda(l) => {
                    let mut env: HashMap<LocalId, SV> = c.env.iter().map(|(k, v)| (*k, SV::C(v.clone()))).collect();
                    for ((_, local, _), a) in l.params.iter().zip(args) {
                        env.insert(*local, a);
                    }
                    let l = l.clone();
                    self.sx(&l.body, &env)
                }
                ClosureKind::Fn(id) => inline(self, *id, args.into_iter().map(Arg::Value)),
                ClosureKind::Extern(name) => {
                    let name = name.clone();
                    self.builtin(&name, args, at)
                }
            },
            _ => {
                self.fail(at, "a call of a non-function");
                SV::C(CVal::Error)
            }
        }
    }

    fn builtin(&mut self, name: &str, args: Vec<SV>, at: Option<&TExpr>) -> SV {
        let mut irs = Vec::new();
        for a in args {
            match self.as_ir(a, at) {
                Some(e) => irs.push(e),
                None => return SV::C(CVal::Error),
            }
        }
        match (self.ev.module.call(name, irs), at) {
            (Ok(e), _) => SV::Ir(e),
            (Err(err), Some(at)) => self.ir_result(Err(err), at),
            (Err(err), None) => {
                self.fail(None, &format!("`{name}` ({err})"));
                SV::C(CVal::Error)
            }
        }
    }

    /// Lowers `e` symbolically: constants fold (through the compile-time evaluator), the rest
    /// becomes IR.
    fn sx(&mut self, e: &TExpr, env: &HashMap<LocalId, SV>) -> SV {
        if self.failed {
            return SV::C(CVal::Error);
        }
        match &e.kind {
            TKind::Local(id) => env.get(id).cloned().unwrap_or(SV::C(CVal::Error)),
            TKind::Field(base, field) => {
                let base = self.sx(base, env);
                self.field(base, field, e)
            }
            TKind::CallFn(id, args) => inline(self, *id, call_args(args, env)),
            TKind::CallExtern(name, args) => {
                let vals: Vec<SV> = args.iter().map(|(_, _, a)| self.sx(a, env)).collect();
                if vals.iter().all(|v| matches!(v, SV::C(_))) {
                    return SV::C(self.ev.eval(e, &constants(env)));
                }
                self.builtin(name, vals, Some(e))
            }
            TKind::CallValue(f, args) => {
                let f = self.sx(f, env);
                let args = args.iter().map(|a| self.sx(a, env)).collect();
                self.apply(f, args, Some(e))
            }
            TKind::Unary(op, a) => match self.sx(a, env) {
                SV::C(_) => SV::C(self.ev.eval(e, &constants(env))),
                v => match self.as_ir(v, Some(e)) {
                    Some(x) => self.ir_result(ir::unary(*op, x), e),
                    None => SV::C(CVal::Error),
                },
            },
            TKind::Binary(op, a, b) => {
                let (x, y) = (self.sx(a, env), self.sx(b, env));
                if let (SV::C(_), SV::C(_)) = (&x, &y) {
                    return SV::C(self.ev.eval(e, &constants(env)));
                }
                match (self.as_ir(x, Some(e)), self.as_ir(y, Some(e))) {
                    (Some(x), Some(y)) => self.ir_result(ir::binary(*op, x, y), e),
                    _ => SV::C(CVal::Error),
                }
            }
            TKind::Record(fields) => {
                let values: Vec<(String, SV)> = fields.iter().map(|(n, v)| (n.clone(), self.sx(v, env))).collect();
                if values.iter().all(|(_, v)| matches!(v, SV::C(_))) {
                    return SV::C(self.ev.eval(e, &constants(env)));
                }
                SV::Record(values)
            }
            TKind::If(c, t, o) => self.if_(c, t, o, env, e),
            TKind::Block(lets, result) => self.block(lets, result, env, e),
            TKind::Coerce(Coercion::IntToFloat, a) => match self.sx(a, env) {
                SV::Ir(x) => SV::Ir(x.to_float()),
                SV::C(c) => SV::C(coerce(Coercion::IntToFloat, c)),
                v => v,
            },
            TKind::Coerce(_, a) => self.sx(a, env),
            TKind::Lambda(_) => {
                if env.values().all(|v| matches!(v, SV::C(_))) {
                    SV::C(self.ev.eval(e, &constants(env)))
                } else {
                    self.fail(Some(e), "a lambda that captures a parameter");
                    SV::C(CVal::Error)
                }
            }
            _ => SV::C(self.ev.eval(e, &constants(env))),
        }
    }

    /// `base.field`: a record parameter's field becomes an IR parameter; a constant record's is
    /// looked up.
    fn field(&mut self, base: SV, field: &str, e: &TExpr) -> SV {
        match base {
            SV::Row(r) => self.field_param(r, field, e),
            SV::Record(values) => values.into_iter().find(|(n, _)| n == field).map_or(SV::C(CVal::Error), |(_, v)| v),
            SV::C(c) => {
                let v = match c {
                    CVal::Record(fs) => fs.into_iter().find(|(n, _)| n == field).map(|(_, v)| v),
                    CVal::V(Value::Record(fs)) => fs.into_iter().find(|(n, _)| n == field).map(|(_, v)| CVal::V(v)),
                    _ => None,
                };
                SV::C(v.unwrap_or(CVal::Error))
            }
            SV::Ir(_) => {
                self.fail(Some(e), "this field access");
                SV::C(CVal::Error)
            }
        }
    }

    /// `if`: a constant condition picks its branch; otherwise an IR `if` over both branches
    /// (promoted to Float when one is Int and the other Float).
    fn if_(&mut self, c: &TExpr, t: &TExpr, o: &TExpr, env: &HashMap<LocalId, SV>, e: &TExpr) -> SV {
        match self.sx(c, env) {
            SV::C(CVal::V(Value::Bool(b))) => self.sx(if b { t } else { o }, env),
            cond => {
                let (tv, ov) = (self.sx(t, env), self.sx(o, env));
                match (self.as_ir(cond, Some(e)), self.as_ir(tv, Some(e)), self.as_ir(ov, Some(e))) {
                    (Some(c), Some(mut t), Some(mut o)) => {
                        if t.ty != o.ty {
                            t = t.to_float();
                            o = o.to_float();
                        }
                        SV::Ir(Expr::if_(c, t, o))
                    }
                    _ => SV::C(CVal::Error),
                }
            }
        }
    }

    /// A block: a `let` whose value is computed IR becomes an IR `let` (so it is computed once);
    /// constants and plain parameters are substituted.
    fn block(&mut self, lets: &[(LocalId, TExpr)], result: &TExpr, env: &HashMap<LocalId, SV>, e: &TExpr) -> SV {
        let mut inner = env.clone();
        let mut bound = Vec::new();
        for (local, value) in lets {
            match self.sx(value, &inner) {
                SV::Ir(x) if !matches!(x.kind, ir::ExprKind::Param(_) | ir::ExprKind::Const(_)) => {
                    let id = self.next_local;
                    self.next_local += 1;
                    inner.insert(*local, SV::Ir(Expr::local(id, x.ty)));
                    bound.push((id, x));
                }
                v => {
                    inner.insert(*local, v);
                }
            }
        }
        let r = self.sx(result, &inner);
        if bound.is_empty() {
            return r;
        }
        if let SV::Record(values) = r {
            // A row function's result: each field computes the lets it needs.
            return SV::Record(values.into_iter().map(|(n, v)| (n, self.with_lets(&bound, v, e))).collect());
        }
        self.with_lets(&bound, r, e)
    }

    /// `v` under the IR `let`s `bound` (outermost first).
    fn with_lets(&mut self, bound: &[(u32, Expr)], v: SV, e: &TExpr) -> SV {
        let Some(mut body) = self.as_ir(v, Some(e)) else { return SV::C(CVal::Error) };
        for (id, value) in bound.iter().rev() {
            body = Expr::let_(*id, value.clone(), body);
        }
        SV::Ir(body)
    }

    fn field_param(&mut self, record: usize, field: &str, e: &TExpr) -> SV {
        if let Some(&i) = self.fields.get(&(record, field.to_string())) {
            return SV::Ir(Expr::param(i, self.params[i as usize].ty));
        }
        let Some(ty) = ir_ty(&e.ty) else {
            self.fail(Some(e), "a field that is not Int, Float, Bool or String");
            return SV::C(CVal::Error);
        };
        let mut name = field.to_string();
        if self.params.iter().any(|p| p.name == name) {
            name = format!("{record}.{field}");
        }
        self.params.push(ir::Param { name, ty });
        let i = self.params.len() as u32 - 1;
        self.fields.insert((record, field.to_string()), i);
        SV::Ir(Expr::param(i, ty))
    }
}

/// The constant part of a symbolic environment.
fn constants<V: AsConst>(env: &HashMap<LocalId, V>) -> Env {
    env.iter().filter_map(|(k, v)| v.as_const().map(|c| (*k, c))).collect()
}

trait AsConst {
    fn as_const(&self) -> Option<CVal>;
}

impl AsConst for SV {
    fn as_const(&self) -> Option<CVal> {
        if let SV::C(c) = self {
            Some(c.clone())
        } else {
            None
        }
    }
}

impl AsConst for TV {
    fn as_const(&self) -> Option<CVal> {
        if let TV::C(c) = self {
            Some(c.clone())
        } else {
            None
        }
    }
}

impl<'c, 'a> Walker<'c, 'a> for Scalar<'_, 'c, 'a> {
    type Val = SV;

    fn program(&self) -> &'c CheckedProgram<'a> {
        self.ev.checked
    }

    fn walk(&mut self, e: &TExpr, env: &HashMap<LocalId, SV>) -> SV {
        self.sx(e, env)
    }

    fn error() -> SV {
        SV::C(CVal::Error)
    }
}

impl<'c, 'a> Walker<'c, 'a> for Tensor<'_, 'c, 'a> {
    type Val = TV;

    fn program(&self) -> &'c CheckedProgram<'a> {
        self.ev.checked
    }

    fn walk(&mut self, e: &TExpr, env: &HashMap<LocalId, TV>) -> TV {
        self.tx(e, env)
    }

    fn error() -> TV {
        TV::C(CVal::Error)
    }
}

// ---- tensor ------------------------------------------------------------------------------

const SHAPE_HELP: &str = "a loss's values are per pair or prompt [G], per response [B] or per token [B, T]; \
reduce tokens with `sum_per_seq`/`mean_per_seq` and responses with `sum_per_group`/`mean_per_group`, \
or spread a value with `per_seq` ([G] -> [B]) and `per_token` ([B] -> [B, T])";

/// The builtins that exist only on Tensors (reductions, broadcasts, `sort`, `stop_gradient`,
/// `greater`): a call of one is a node even when its arguments are constants.
const TENSOR_BUILTINS: &[&str] = &[
    "mean",
    "sum",
    "sum_per_seq",
    "mean_per_seq",
    "sum_per_group",
    "mean_per_group",
    "per_token",
    "per_seq",
    "sort",
    "stop_gradient",
    "greater",
];

/// The shape of each Tensor field of the batch records a loss reads (`PrefBatch` and
/// `RolloutBatch` in `stdlib/builtins.recipe`): per pair or prompt (`Group`), per sequence
/// (`Seq`), per token (`Token`). A field both records have has one shape. A test holds this
/// table to the records' fields.
pub const BATCH_FIELDS: &[(&str, Shape)] = &[
    ("policy_chosen", Shape::Group),
    ("policy_rejected", Shape::Group),
    ("ref_chosen", Shape::Group),
    ("ref_rejected", Shape::Group),
    ("len_chosen", Shape::Group),
    ("len_rejected", Shape::Group),
    ("wpo_chosen", Shape::Group),
    ("wpo_rejected", Shape::Group),
    ("logps", Shape::Seq),
    ("ref_logps", Shape::Seq),
    ("len", Shape::Seq),
    ("chosen", Shape::Seq),
    ("token_logps", Shape::Token),
    ("ref_token_logps", Shape::Token),
    ("position", Shape::Token),
    // RolloutBatch (`len`, `token_logps` and `ref_token_logps` are shared with PrefBatch).
    ("advantage", Shape::Seq),
    ("reward", Shape::Seq),
    ("truncated", Shape::Seq),
    ("old_token_logps", Shape::Token),
];

/// The Tensor fields of `PrefBatch`, in the record's order.
pub const PREF_BATCH: &[&str] = &[
    "policy_chosen",
    "policy_rejected",
    "ref_chosen",
    "ref_rejected",
    "len_chosen",
    "len_rejected",
    "wpo_chosen",
    "wpo_rejected",
    "logps",
    "ref_logps",
    "len",
    "chosen",
    "token_logps",
    "ref_token_logps",
    "position",
];

/// The Tensor fields of `RolloutBatch`.
pub const ROLLOUT_BATCH: &[&str] =
    &["token_logps", "old_token_logps", "ref_token_logps", "advantage", "reward", "len", "truncated"];

/// The shape of the batch's Tensor field `name` (`Seq` for a field the table lacks, which the
/// table's test rules out).
pub fn batch_field_shape(name: &str) -> Shape {
    BATCH_FIELDS.iter().find(|(n, _)| *n == name).map_or(Shape::Seq, |(_, s)| *s)
}

#[derive(Clone, Debug)]
enum TV {
    Node(NodeId),
    /// The batch record parameter.
    Batch,
    /// A scalar field of the batch (`step`, `total`).
    BatchScalar(String),
    C(CVal),
}

struct Tensor<'e, 'c, 'a> {
    ev: &'e mut Evaluator<'c, 'a>,
    b: Builder,
    failed: bool,
}

/// Lower a weighted sum of losses to one tensor function.
pub fn tensor(ev: &mut Evaluator<'_, '_>, terms: &[(f64, Rc<Closure>)]) -> TensorFn {
    let mut t = Tensor { ev, b: Builder::default(), failed: false };
    let mut total: Option<NodeId> = None;
    for (w, c) in terms {
        let v = t.apply(TV::C(CVal::Closure(c.clone())), vec![TV::Batch], None);
        let Some(mut node) = t.node(v, None) else { continue };
        if *w != 1.0 {
            let wn = t.b.constant(*w);
            let Some(n) = t.add(Node::Binary(BinaryOp::Mul, wn, node), None) else { continue };
            node = n;
        }
        total = match total {
            None => Some(node),
            Some(acc) => t.add(Node::Binary(BinaryOp::Add, acc, node), None).or(Some(acc)),
        };
    }
    let out = total.unwrap_or_else(|| t.b.constant(0.0));
    t.b.finish(out)
}

impl Tensor<'_, '_, '_> {
    fn fail(&mut self, e: Option<&TExpr>, what: &str) {
        if !self.failed {
            if let Some(e) = e {
                unsupported(self.ev, e, what);
            }
        }
        self.failed = true;
    }

    /// Add a node; an ill-shaped one is a diagnostic, at `at` or (for the sum of a loss's
    /// terms, which has no one place) unplaced.
    fn add(&mut self, node: Node, at: Option<&TExpr>) -> Option<NodeId> {
        match self.b.add(node) {
            Ok(id) => Some(id),
            Err(err) => {
                if !self.failed {
                    let mut d =
                        Diagnostic::error("recipe::eval::shape", format!("this loss expression is ill-shaped: {err}"))
                            .with_help(SHAPE_HELP);
                    let file = match at {
                        Some(e) => {
                            d = d.with_primary(e.span, "here");
                            e.file
                        }
                        None => FileId::USER,
                    };
                    self.ev.diags.push((file, d));
                }
                self.failed = true;
                None
            }
        }
    }

    fn node(&mut self, v: TV, at: Option<&TExpr>) -> Option<NodeId> {
        match v {
            TV::Node(n) => Some(n),
            TV::C(CVal::V(Value::Float(x))) => Some(self.b.constant(x)),
            TV::C(CVal::V(Value::Int(x))) => Some(self.b.constant(x as f64)),
            _ => {
                self.fail(at, "a non-numeric value in a loss");
                None
            }
        }
    }

    fn apply(&mut self, f: TV, args: Vec<TV>, at: Option<&TExpr>) -> TV {
        match f {
            TV::C(CVal::V(v @ (Value::Float(_) | Value::Int(_)))) => TV::C(CVal::V(v)),
            TV::C(CVal::Closure(c)) => {
                // A scalar closure of the batch's scalar fields: a per-batch scalar node.
                if !c.ty.is_tensor_fn() && args.iter().all(|a| matches!(a, TV::BatchScalar(_))) {
                    let names: Vec<String> = args
                        .iter()
                        .filter_map(|a| if let TV::BatchScalar(n) = a { Some(n.clone()) } else { None })
                        .collect();
                    return match scalar(self.ev, &c) {
                        Some(func) => {
                            self.add(Node::Scalar { func, args: names }, at).map_or(TV::C(CVal::Error), TV::Node)
                        }
                        None => TV::C(CVal::Error),
                    };
                }
                match &c.kind {
                    ClosureKind::Lambda(l) => {
                        let mut env: HashMap<LocalId, TV> = c.env.iter().map(|(k, v)| (*k, TV::C(v.clone()))).collect();
                        for ((_, local, _), a) in l.params.iter().zip(args) {
                            env.insert(*local, a);
                        }
                        let l = l.clone();
                        self.tx(&l.body, &env)
                    }
                    ClosureKind::Fn(id) => inline(self, *id, args.into_iter().map(Arg::Value)),
                    ClosureKind::Extern(name) => {
                        let name = name.clone();
                        self.builtin(&name, args, at)
                    }
                }
            }
            _ => {
                self.fail(at, "this call");
                TV::C(CVal::Error)
            }
        }
    }

    fn builtin(&mut self, name: &str, args: Vec<TV>, at: Option<&TExpr>) -> TV {
        let mut nodes = Vec::new();
        for a in args {
            match self.node(a, at) {
                Some(n) => nodes.push(n),
                None => return TV::C(CVal::Error),
            }
        }
        let node = match (name, nodes.as_slice()) {
            // `mean` and `sum` reduce a whole value to a scalar; a scalar is first broadcast over
            // the batch's sequences, so `sum(c)` is B × c.
            ("mean" | "sum", [x]) => {
                let r = if name == "mean" { Reduce::Mean } else { Reduce::Sum };
                let shape = self.b.shape(*x).unwrap_or(Shape::Scalar);
                Node::Reduce(r, Axis::to_scalar(shape).unwrap_or(Axis::SeqToScalar), *x)
            }
            ("sum_per_seq", [x]) => Node::Reduce(Reduce::Sum, Axis::TokenToSeq, *x),
            ("mean_per_seq", [x]) => Node::Reduce(Reduce::Mean, Axis::TokenToSeq, *x),
            ("sum_per_group", [x]) => Node::Reduce(Reduce::Sum, Axis::SeqToGroup, *x),
            ("mean_per_group", [x]) => Node::Reduce(Reduce::Mean, Axis::SeqToGroup, *x),
            ("per_token", [x]) => Node::Broadcast(Shape::Token, *x),
            ("per_seq", [x]) => Node::Broadcast(Shape::Seq, *x),
            ("sort", [x]) => Node::Sort(*x),
            ("stop_gradient", [x]) => Node::StopGradient(*x),
            ("min", [x, y]) => Node::Binary(BinaryOp::Min, *x, *y),
            ("max", [x, y]) => Node::Binary(BinaryOp::Max, *x, *y),
            ("pow", [x, y]) => Node::Binary(BinaryOp::Pow, *x, *y),
            ("greater", [x, y]) => Node::Binary(BinaryOp::Greater, *x, *y),
            ("clamp", [x, lo, hi]) => match self.add(Node::Binary(BinaryOp::Max, *x, *lo), at) {
                Some(m) => Node::Binary(BinaryOp::Min, m, *hi),
                None => return TV::C(CVal::Error),
            },
            (n, [x]) if UnaryOp::from_builtin(n).is_some() => {
                Node::Unary(UnaryOp::from_builtin(n).unwrap_or(UnaryOp::Neg), *x)
            }
            _ => {
                self.fail(at, &format!("`{name}` in a loss"));
                return TV::C(CVal::Error);
            }
        };
        self.add(node, at).map_or(TV::C(CVal::Error), TV::Node)
    }

    fn tx(&mut self, e: &TExpr, env: &HashMap<LocalId, TV>) -> TV {
        if self.failed {
            return TV::C(CVal::Error);
        }
        match &e.kind {
            TKind::Local(id) => env.get(id).cloned().unwrap_or(TV::C(CVal::Error)),
            TKind::Field(base, field) => match self.tx(base, env) {
                // A Tensor field has the shape the batch table gives it; a Float field is one
                // value for the batch. Int fields (`step`, `total`) stay arguments of scalar
                // functions, evaluated once per batch.
                TV::Batch if e.ty == Ty::Tensor || e.ty == Ty::Float => {
                    let shape = if e.ty == Ty::Float { Shape::Scalar } else { batch_field_shape(field) };
                    self.add(Node::Input { name: field.clone(), shape }, Some(e)).map_or(TV::C(CVal::Error), TV::Node)
                }
                TV::Batch => TV::BatchScalar(field.clone()),
                TV::C(_) => TV::C(self.ev.eval(e, &constants(env))),
                _ => {
                    self.fail(Some(e), "this field access");
                    TV::C(CVal::Error)
                }
            },
            TKind::CallFn(id, args) => inline(self, *id, call_args(args, env)),
            TKind::CallExtern(name, args) => {
                let vals: Vec<TV> = args.iter().map(|(_, _, a)| self.tx(a, env)).collect();
                // A tensor builtin of constants is still a node: `sum_per_group(1.0)` counts
                // each group's responses.
                if vals.iter().all(|v| matches!(v, TV::C(_))) && !TENSOR_BUILTINS.contains(&name.as_str()) {
                    return TV::C(self.ev.eval(e, &constants(env)));
                }
                self.builtin(name, vals, Some(e))
            }
            TKind::CallValue(f, args) => {
                let f = self.tx(f, env);
                let args: Vec<TV> = args.iter().map(|a| self.tx(a, env)).collect();
                if let (TV::C(_), true) = (&f, args.iter().all(|a| matches!(a, TV::C(_)))) {
                    return TV::C(self.ev.eval(e, &constants(env)));
                }
                self.apply(f, args, Some(e))
            }
            TKind::Unary(UnOp::Neg, a) => match self.tx(a, env) {
                TV::C(_) => TV::C(self.ev.eval(e, &constants(env))),
                v => match self.node(v, Some(e)) {
                    Some(n) => self.add(Node::Unary(UnaryOp::Neg, n), Some(e)).map_or(TV::C(CVal::Error), TV::Node),
                    None => TV::C(CVal::Error),
                },
            },
            TKind::Binary(op, a, b) => {
                let (x, y) = (self.tx(a, env), self.tx(b, env));
                if let (TV::C(_), TV::C(_)) = (&x, &y) {
                    return TV::C(self.ev.eval(e, &constants(env)));
                }
                let bop = match op {
                    BinOp::Add => BinaryOp::Add,
                    BinOp::Sub => BinaryOp::Sub,
                    BinOp::Mul => BinaryOp::Mul,
                    BinOp::Div => BinaryOp::Div,
                    BinOp::Pow => BinaryOp::Pow,
                    _ => {
                        self.fail(Some(e), &format!("`{}` on Tensors", op.symbol()));
                        return TV::C(CVal::Error);
                    }
                };
                match (self.node(x, Some(e)), self.node(y, Some(e))) {
                    (Some(x), Some(y)) => {
                        self.add(Node::Binary(bop, x, y), Some(e)).map_or(TV::C(CVal::Error), TV::Node)
                    }
                    _ => TV::C(CVal::Error),
                }
            }
            TKind::If(c, t, o) => match self.tx(c, env) {
                TV::C(CVal::V(Value::Bool(b))) => self.tx(if b { t } else { o }, env),
                _ => {
                    self.fail(Some(e), "an `if` on a batch value");
                    TV::C(CVal::Error)
                }
            },
            TKind::Block(lets, result) => {
                let mut inner = env.clone();
                for (local, value) in lets {
                    let v = self.tx(value, &inner);
                    inner.insert(*local, v);
                }
                self.tx(result, &inner)
            }
            TKind::Coerce(_, a) => self.tx(a, env),
            _ => TV::C(self.ev.eval(e, &constants(env))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Tensor fields of the stdlib record `name`.
    fn tensor_fields(name: &str) -> Vec<&'static str> {
        let builtins = recipe_stdlib::BUILTINS;
        let start = builtins.find(&format!("type {name} = {{")).unwrap_or_else(|| panic!("{name} is declared"));
        let body = &builtins[start..start + builtins[start..].find('}').expect("closed")];
        body.lines().filter_map(|l| l.trim().strip_suffix(": Tensor,")).collect()
    }

    /// `BATCH_FIELDS` lists exactly the Tensor fields of the batch records in the stdlib, each
    /// once, so a field both records have (`token_logps`, `len`) has one shape.
    #[test]
    fn the_batch_table_matches_the_batch_records() {
        let (pref, rollout) = (tensor_fields("PrefBatch"), tensor_fields("RolloutBatch"));
        for shared in ["token_logps", "ref_token_logps", "len"] {
            assert!(pref.contains(&shared) && rollout.contains(&shared), "{shared} is in both records");
        }
        let mut fields: Vec<&str> = pref.into_iter().chain(rollout).collect();
        fields.sort();
        fields.dedup();
        let mut table: Vec<&str> = BATCH_FIELDS.iter().map(|(n, _)| *n).collect();
        table.sort();
        let len = table.len();
        table.dedup();
        assert_eq!(table.len(), len, "a field is listed once");
        assert_eq!(fields, table);
        let sorted = |xs: &[&'static str]| {
            let mut v = xs.to_vec();
            v.sort();
            v
        };
        assert_eq!(sorted(PREF_BATCH), sorted(&tensor_fields("PrefBatch")));
        assert_eq!(sorted(ROLLOUT_BATCH), sorted(&tensor_fields("RolloutBatch")));
        assert_eq!(batch_field_shape("advantage"), Shape::Seq);
        assert_eq!(batch_field_shape("old_token_logps"), Shape::Token);
    }
}
