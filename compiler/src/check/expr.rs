//! Expressions: bidirectional checking. `expr` infers a type, using the expected type (when
//! one is known) to type lambda parameters, enum constants, empty lists and `if` branches;
//! `check_against` then accepts the result where the expected type is required, inserting a
//! conversion or reporting `type::mismatch` / `type::tensor_in_scalar`.

use super::typed::{Coercion, Lambda, TExpr, TKind};
use super::{Checker, GlobalKind};
use crate::ast::{BinOp, Expr, ExprKind, Span, UnOp};
use crate::diag::{suggest, Diagnostic};
use crate::types::{self, Ty};
use std::collections::HashMap;
use std::rc::Rc;

impl<'a> Checker<'a> {
    /// Check `e` where `expected` is required; `why` is the span (in the current file) of what
    /// set the expectation, for the secondary label.
    pub(super) fn check_against(&mut self, e: &'a Expr, expected: &Ty, why: Option<Span>) -> TExpr {
        let texpr = self.expr(e, Some(expected));
        self.coerce(texpr, expected, why)
    }

    /// Accept an already-checked expression where `expected` is required.
    pub(super) fn coerce(&mut self, texpr: TExpr, expected: &Ty, why: Option<Span>) -> TExpr {
        match self.subst.accept(&texpr.ty, expected) {
            Ok(None) => texpr,
            Ok(Some(coercion)) => {
                let ty = match coercion {
                    Coercion::IntToFloat => Ty::Float,
                    Coercion::ToTensor => Ty::Tensor,
                    Coercion::ToSchedule => Ty::schedule(),
                    Coercion::StageField(field) => {
                        self.subst.resolve(&texpr.ty).field(field).cloned().unwrap_or(Ty::Error)
                    }
                };
                let (span, file) = (texpr.span, texpr.file);
                TExpr::new(TKind::Coerce(coercion, Box::new(texpr)), ty, span, file)
            }
            Err(_) => {
                self.mismatch(&texpr, expected, why);
                TExpr::error(texpr.span, texpr.file)
            }
        }
    }

    fn mismatch(&mut self, found: &TExpr, expected: &Ty, why: Option<Span>) {
        let found_ty = self.subst.resolve(&found.ty);
        let expected = self.subst.resolve(expected);
        let diag = if found_ty == Ty::Tensor && matches!(expected, Ty::Float | Ty::Int | Ty::Bool) {
            self.tensor_in_scalar(found, &format!("a {expected} is needed here"))
        } else {
            let mut d =
                Diagnostic::error("recipe::type::mismatch", format!("expected `{expected}`, found `{found_ty}`"))
                    .with_primary(found.span, format!("this is `{found_ty}`"));
            if let Some(why) = why {
                d = d.with_secondary(why, format!("`{expected}` expected because of this"));
            }
            if let (Ty::Float, Ty::Int) = (&found_ty, &expected) {
                d = d.with_help("use `int(x)` to truncate a Float to an Int");
            } else if let Some(hint) = &self.param_hint {
                d = d.with_help(hint.clone());
            }
            d
        };
        self.report(diag);
    }

    pub(super) fn tensor_in_scalar(&self, found: &TExpr, why: &str) -> Diagnostic {
        let origin = found.tensor_origin();
        let mut d = Diagnostic::error("recipe::type::tensor_in_scalar", "a batch Tensor cannot be used as a scalar")
            .with_primary(found.span, why.to_string());
        if origin != found.span {
            d = d.with_secondary(origin, "this is a Tensor (one value per batch row)");
        }
        d.with_help("reduce it inside a loss with `mean(...)` or `sum(...)`; scalar code (conditions, schedules, rewards) cannot depend on batch tensors")
    }

    /// Infer the type of `e`, guided by `expected` where that helps.
    pub(super) fn expr(&mut self, e: &'a Expr, expected: Option<&Ty>) -> TExpr {
        let file = self.file;
        let mk = |kind, ty| TExpr::new(kind, ty, e.span, file);
        match &e.kind {
            ExprKind::Int(v) => mk(TKind::Int(*v), Ty::Int),
            ExprKind::Float(v) => mk(TKind::Float(*v), Ty::Float),
            ExprKind::Bool(v) => mk(TKind::Bool(*v), Ty::Bool),
            ExprKind::Str(s) => mk(TKind::Str(s.clone()), Ty::String),
            ExprKind::Name(ident) => self.name(&ident.name, e.span, expected),
            ExprKind::Field(base, field) => self.field(e, base, &field.name, field.span),
            ExprKind::Call(callee, args) => self.call(e, callee, args, expected),
            ExprKind::Unary(op, operand) => self.unary(e, *op, operand),
            ExprKind::Binary(op, lhs, rhs) => self.binary(e, *op, lhs, rhs),
            ExprKind::If { cond, then, otherwise } => self.if_(e, cond, then, otherwise, expected),
            ExprKind::Lambda(params, body) => self.lambda(e, params, body, expected),
            ExprKind::List(items) => self.list(e, items, expected),
            ExprKind::Record(fields) => {
                let mut seen: HashMap<&str, Span> = HashMap::new();
                let mut out = Vec::new();
                for f in fields {
                    if let Some(prev) = seen.insert(&f.name.name, f.name.span) {
                        self.report(
                            Diagnostic::error(
                                "recipe::resolve::duplicate",
                                format!("field `{}` is given twice", f.name.name),
                            )
                            .with_primary(f.name.span, "given again here")
                            .with_secondary(prev, "first given here"),
                        );
                        continue;
                    }
                    let want = expected.map(|t| self.subst.resolve(t));
                    let field_ty = want.as_ref().and_then(|t| t.field(&f.name.name).cloned());
                    let value = match field_ty {
                        Some(t) => self.check_against(&f.value, &t, None),
                        None => self.expr(&f.value, None),
                    };
                    out.push((f.name.name.clone(), value));
                }
                let ty = Ty::record(out.iter().map(|(n, v)| (n.clone(), v.ty.clone())).collect());
                mk(TKind::Record(out), ty)
            }
            ExprKind::Range { start, end, inclusive } => {
                let s = self.check_against(start, &Ty::Int, None);
                let t = self.check_against(end, &Ty::Int, None);
                mk(TKind::Range(Box::new(s), Box::new(t), *inclusive), Ty::Range)
            }
            ExprKind::Block(stmts, result) => self.scoped(file, |c| {
                let mut lets = Vec::new();
                for stmt in stmts {
                    let value = match &stmt.ty {
                        Some(t) => {
                            let ty = c.resolve_type(t, &HashMap::new());
                            c.check_against(&stmt.value, &ty, Some(t.span))
                        }
                        None => c.expr(&stmt.value, None),
                    };
                    let local = c.push_local(&stmt.name.name, value.ty.clone());
                    lets.push((local, value));
                }
                let result = c.expr(result, expected);
                let ty = result.ty.clone();
                mk(TKind::Block(lets, Box::new(result)), ty)
            }),
        }
    }

    /// A name in value position (see the module docs for the lookup order).
    fn name(&mut self, name: &str, span: Span, expected: Option<&Ty>) -> TExpr {
        let file = self.file;
        let mk = |kind, ty| TExpr::new(kind, ty, span, file);
        if let Some(Ty::Enum(e)) = expected.map(|t| self.subst.resolve(t)) {
            if types::enum_constants(e).contains(&name) {
                return mk(TKind::Enum(e, name.to_string()), Ty::Enum(e));
            }
        }
        if let Some((local, ty)) = self.lookup_local(name) {
            return mk(TKind::Local(local), ty);
        }
        if let Some(ty) = self.global_type(name, span) {
            return mk(TKind::Global(name.to_string()), ty);
        }
        if let Some(&id) = self.fn_names.get(name) {
            self.ensure_fn(id, span);
            let info = &self.fns[id];
            let ty = Ty::Fn(
                info.params.iter().map(|(_, _, t)| t.clone()).collect(),
                Box::new(info.ret.clone().unwrap_or(Ty::Error)),
            );
            return mk(TKind::FnRef(id), ty);
        }
        if let Some(ext) = self.externs.get(name).copied() {
            if ext.type_params.is_empty() {
                let params: Vec<Ty> = ext
                    .params
                    .iter()
                    .map(|p| p.ty.as_ref().map_or(Ty::Error, |t| self.resolve_type(t, &HashMap::new())))
                    .collect();
                let ret = self.resolve_type(&ext.ret, &HashMap::new());
                return mk(TKind::ExternRef(name.to_string()), Ty::Fn(params, Box::new(ret)));
            }
        }
        if let Some(e) = types::enum_of_constant(name) {
            return mk(TKind::Enum(e, name.to_string()), Ty::Enum(e));
        }
        let mut diag = Diagnostic::error("recipe::resolve::unknown_name", format!("unknown name `{name}`"))
            .with_primary(span, "not found in this scope");
        if types::NAMESPACES.contains(&name) {
            diag = diag
                .with_help(format!("`{name}` is a namespace: call one of its builtins, e.g. `{name}.addition(...)`"));
        } else if let Some(Ty::Enum(e)) = expected.map(|t| self.subst.resolve(t)) {
            let constants = types::enum_constants(e);
            diag = diag.with_help(match suggest(name, constants.iter().copied()) {
                Some(s) => format!("did you mean `{s}`? (`{e}` is one of {})", constants.join(", ")),
                None => format!("`{e}` is one of {}", constants.join(", ")),
            });
        } else if let Some(s) = suggest(name, self.visible_names()) {
            diag = diag.with_help(format!("did you mean `{s}`?"));
        } else if let Some((rounds, _)) = self.round_stage_owner(name) {
            diag = diag.with_help(format!("`{name}` is a stage inside `rounds {rounds}` and is only visible there"));
        }
        self.report(diag);
        TExpr::error(span, file)
    }

    /// The rounds block that declares the stage `name`, if it is one.
    fn round_stage_owner(&self, name: &str) -> Option<(String, ())> {
        match self.globals.get(name)?.kind {
            GlobalKind::RoundStage(_, r) => Some((r.name.name.clone(), ())),
            _ => None,
        }
    }

    fn field(&mut self, e: &'a Expr, base: &'a Expr, field: &str, field_span: Span) -> TExpr {
        let file = self.file;
        // `synth.addition` used as a value.
        if let ExprKind::Name(ns) = &base.kind {
            if types::NAMESPACES.contains(&ns.name.as_str()) && self.lookup_local(&ns.name).is_none() {
                let name = format!("{}_{}", ns.name, field);
                if self.externs.contains_key(&name) {
                    return self.name(&name, e.span, None);
                }
                self.report(
                    Diagnostic::error(
                        "recipe::resolve::unknown_name",
                        format!("`{}` has no builtin `{field}`", ns.name),
                    )
                    .with_primary(field_span, "not found"),
                );
                return TExpr::error(e.span, file);
            }
            // `r.input` of the rounds block being checked.
            if field == "input" {
                if let Some(GlobalKind::Rounds(r)) = self.globals.get(&ns.name).map(|g| g.kind) {
                    if self.rounds.is_some_and(|cur| std::ptr::eq(cur, r)) {
                        return TExpr::new(
                            TKind::RoundInput(ns.name.clone()),
                            Ty::opaque("Model", vec![]),
                            e.span,
                            file,
                        );
                    }
                    self.report(
                        Diagnostic::error(
                            "recipe::resolve::unknown_field",
                            format!("`{}.input` is only visible inside its rounds block", ns.name),
                        )
                        .with_primary(e.span, "outside `rounds`")
                        .with_help(format!("use `{}.model`, the model after the last round", ns.name)),
                    );
                    return TExpr::error(e.span, file);
                }
            }
        }
        let base = self.expr(base, None);
        let ty = self.subst.resolve(&base.ty);
        if ty.is_error() {
            // Keep the reference, so the run order is still checked.
            return TExpr::new(TKind::Field(Box::new(base), field.to_string()), Ty::Error, e.span, file);
        }
        if let Some(ft) = ty.field(field) {
            let ft = ft.clone();
            return TExpr::new(TKind::Field(Box::new(base), field.to_string()), ft, e.span, file);
        }
        let diag = match &ty {
            Ty::Var(_) => Diagnostic::error(
                "recipe::type::cannot_infer",
                format!("cannot infer the type whose field `{field}` is read"),
            )
            .with_primary(base.span, "type unknown here")
            .with_help("annotate the parameter, e.g. `|r: {digits: Int}| r.digits`, or the binding"),
            Ty::Record(_) | Ty::Opaque(..) if !ty.field_names().is_empty() => {
                let mut d =
                    Diagnostic::error("recipe::resolve::unknown_field", format!("`{ty}` has no field `{field}`"))
                        .with_primary(field_span, "unknown field");
                d = match suggest(field, ty.field_names()) {
                    Some(s) => d.with_help(format!("did you mean `{s}`?")),
                    None => d.with_help(format!("fields: {}", ty.field_names().join(", "))),
                };
                d
            }
            _ => Diagnostic::error("recipe::resolve::unknown_field", format!("`{ty}` has no fields"))
                .with_primary(field_span, "no field here"),
        };
        self.report(diag);
        TExpr::error(e.span, file)
    }

    fn unary(&mut self, e: &'a Expr, op: UnOp, operand: &'a Expr) -> TExpr {
        let file = self.file;
        let t = self.expr(operand, None);
        let ty = self.subst.resolve(&t.ty);
        let result = match (op, &ty) {
            (_, Ty::Error) => Ty::Error,
            (UnOp::Neg, Ty::Int | Ty::Float | Ty::Tensor) => ty.clone(),
            (UnOp::Not, Ty::Bool) => Ty::Bool,
            (UnOp::Not, Ty::Tensor) => {
                let d = self.tensor_in_scalar(&t, "`!` needs a Bool");
                self.report(d);
                Ty::Error
            }
            _ => {
                let want = if op == UnOp::Neg { "a number" } else { "a Bool" };
                self.report(
                    Diagnostic::error("recipe::type::mismatch", format!("expected {want}, found `{ty}`"))
                        .with_primary(t.span, format!("this is `{ty}`")),
                );
                Ty::Error
            }
        };
        TExpr::new(TKind::Unary(op, Box::new(t)), result, e.span, file)
    }

    fn binary(&mut self, e: &'a Expr, op: BinOp, lhs: &'a Expr, rhs: &'a Expr) -> TExpr {
        let file = self.file;
        let l = self.expr(lhs, None);
        let r = self.expr(rhs, None);
        let (lt, rt) = (self.subst.resolve(&l.ty), self.subst.resolve(&r.ty));
        if (op, &lt, &rt) == (BinOp::Add, &Ty::Messages, &Ty::Messages) {
            // Conversations concatenate: `a + b` is the builtin `turns(a, b)`.
            let args = vec![("a".to_string(), self.fresh_local(), l), ("b".to_string(), self.fresh_local(), r)];
            return TExpr::new(TKind::CallExtern("turns".to_string(), args), Ty::Messages, e.span, file);
        }
        let ty = self.binary_type(op, &l, &lt, &r, &rt);
        TExpr::new(TKind::Binary(op, Box::new(l), Box::new(r)), ty, e.span, file)
    }

    fn binary_type(&mut self, op: BinOp, l: &TExpr, lt: &Ty, r: &TExpr, rt: &Ty) -> Ty {
        use BinOp::*;
        if lt.is_error() || rt.is_error() {
            return Ty::Error;
        }
        let tensorish = |t: &Ty| matches!(t, Ty::Int | Ty::Float | Ty::Tensor);
        match op {
            Add | Sub | Mul | Div | Rem | Pow => {
                // Losses form a vector space: weights times losses, sums of losses.
                if op == Mul && lt.is_numeric() && rt.is_tensor_fn() {
                    return rt.clone();
                }
                if op == Mul && lt.is_tensor_fn() && rt.is_numeric() {
                    return lt.clone();
                }
                if matches!(op, Add | Sub) && lt.is_tensor_fn() && lt == rt {
                    return lt.clone();
                }
                if tensorish(lt) && tensorish(rt) && (*lt == Ty::Tensor || *rt == Ty::Tensor) {
                    return Ty::Tensor;
                }
                match (lt, rt) {
                    (Ty::Int, Ty::Int) if !matches!(op, Div | Pow) => Ty::Int,
                    (a, b) if a.is_numeric() && b.is_numeric() => Ty::Float,
                    (Ty::String, Ty::String) if op == Add => Ty::String,
                    _ => self.operator_error(op, l, lt, r, rt),
                }
            }
            Eq | Ne | Lt | Le | Gt | Ge => {
                if *lt == Ty::Tensor || *rt == Ty::Tensor {
                    let t = if *lt == Ty::Tensor { l } else { r };
                    let d = self.tensor_in_scalar(t, "compared here");
                    self.report(d);
                    return Ty::Error;
                }
                let ok = (lt.is_numeric() && rt.is_numeric())
                    || (matches!(op, Eq | Ne) && lt == rt && matches!(lt, Ty::String | Ty::Bool | Ty::Enum(_)));
                if ok {
                    Ty::Bool
                } else {
                    self.operator_error(op, l, lt, r, rt)
                }
            }
            And | Or => {
                for (t, ty) in [(l, lt), (r, rt)] {
                    if *ty == Ty::Tensor {
                        let d = self.tensor_in_scalar(t, "used as a Bool here");
                        self.report(d);
                        return Ty::Error;
                    }
                    if *ty != Ty::Bool {
                        self.report(
                            Diagnostic::error("recipe::type::mismatch", format!("expected `Bool`, found `{ty}`"))
                                .with_primary(t.span, format!("this is `{ty}`"))
                                .with_help(format!("`{}` combines two Bools", op.symbol())),
                        );
                        return Ty::Error;
                    }
                }
                Ty::Bool
            }
        }
    }

    fn operator_error(&mut self, op: BinOp, l: &TExpr, lt: &Ty, r: &TExpr, rt: &Ty) -> Ty {
        self.report(
            Diagnostic::error("recipe::type::operator", format!("`{}` cannot combine `{lt}` and `{rt}`", op.symbol()))
                .with_primary(l.span.to(r.span), "in this expression")
                .with_secondary(l.span, format!("`{lt}`"))
                .with_secondary(r.span, format!("`{rt}`")),
        );
        Ty::Error
    }

    fn if_(
        &mut self,
        e: &'a Expr,
        cond: &'a Expr,
        then: &'a Expr,
        otherwise: &'a Expr,
        expected: Option<&Ty>,
    ) -> TExpr {
        let file = self.file;
        let c = self.expr(cond, Some(&Ty::Bool));
        let c = if self.subst.resolve(&c.ty) == Ty::Tensor {
            let d = self.tensor_in_scalar(&c, "an `if` condition must be a scalar Bool");
            self.report(d);
            TExpr::error(c.span, file)
        } else {
            self.coerce(c, &Ty::Bool, None)
        };
        let (t, o, ty) = match expected.map(|t| self.subst.resolve(t)).filter(|t| !t.has_vars()) {
            Some(want) => {
                let t = self.check_against(then, &want, None);
                let o = self.check_against(otherwise, &want, None);
                (t, o, want)
            }
            None => {
                let t = self.expr(then, None);
                let o = self.expr(otherwise, None);
                let (tt, ot) = (self.subst.resolve(&t.ty), self.subst.resolve(&o.ty));
                let joined = match (&tt, &ot) {
                    (Ty::Int, Ty::Float) | (Ty::Float, Ty::Int) => Ty::Float,
                    (Ty::Tensor, x) | (x, Ty::Tensor) if x.is_numeric() || *x == Ty::Tensor => Ty::Tensor,
                    _ => tt.clone(),
                };
                let t = self.coerce(t, &joined, None);
                let o = self.coerce(o, &joined, Some(then.span));
                (t, o, joined)
            }
        };
        TExpr::new(TKind::If(Box::new(c), Box::new(t), Box::new(o)), ty, e.span, file)
    }

    fn lambda(&mut self, e: &'a Expr, params: &'a [crate::ast::Param], body: &'a Expr, expected: Option<&Ty>) -> TExpr {
        let file = self.file;
        let want = expected.map(|t| self.subst.resolve(t));
        let (want_params, want_ret) = match &want {
            Some(Ty::Fn(ps, r)) if ps.len() == params.len() => (Some(ps.clone()), Some((**r).clone())),
            Some(Ty::Fn(ps, _)) => {
                self.report(
                    Diagnostic::error(
                        "recipe::type::mismatch",
                        format!("expected a function of {} parameter(s), this lambda takes {}", ps.len(), params.len()),
                    )
                    .with_primary(e.span, format!("expected `{}`", want.as_ref().map_or(String::new(), Ty::to_string))),
                );
                return TExpr::error(e.span, file);
            }
            _ => (None, None),
        };
        self.scoped(file, |c| {
            let mut out = Vec::new();
            let mut failed = false;
            for (i, p) in params.iter().enumerate() {
                let given = p.ty.as_ref().map(|t| c.resolve_type(t, &HashMap::new()));
                let inferred = want_params.as_ref().map(|ps| c.subst.resolve(&ps[i]));
                let ty = match (given, inferred) {
                    (Some(g), _) => g,
                    (None, Some(t)) if !t.has_vars() => t,
                    _ => {
                        c.report(
                            Diagnostic::error(
                                "recipe::type::cannot_infer",
                                format!("cannot infer the type of parameter `{}`", p.name.name),
                            )
                            .with_primary(p.name.span, "type unknown")
                            .with_help(format!(
                                "annotate it (`|{}: {{digits: Int}}| ...`) or the binding (`let x: Curriculum[Row] = ...`)",
                                p.name.name
                            )),
                        );
                        failed = true;
                        Ty::Error
                    }
                };
                let local = c.push_local(&p.name.name, ty.clone());
                out.push((p.name.name.clone(), local, ty));
            }
            let body = match want_ret.filter(|r| !r.has_vars()) {
                Some(r) if !failed => c.check_against(body, &r, None),
                _ => c.expr(body, None),
            };
            let ty = Ty::Fn(out.iter().map(|(_, _, t)| t.clone()).collect(), Box::new(body.ty.clone()));
            TExpr::new(TKind::Lambda(Rc::new(Lambda { params: out, body })), ty, e.span, file)
        })
    }

    fn list(&mut self, e: &'a Expr, items: &'a [Expr], expected: Option<&Ty>) -> TExpr {
        let file = self.file;
        let elem = match expected.map(|t| self.subst.resolve(t)) {
            Some(Ty::List(t)) => Some(*t),
            _ => None,
        };
        let mut out = Vec::new();
        let mut elem_ty = elem.clone();
        let mut first_span = None;
        for item in items {
            let t = match &elem_ty {
                Some(want) => self.check_against(item, want, first_span),
                None => {
                    let t = self.expr(item, None);
                    elem_ty = Some(t.ty.clone());
                    first_span = Some(item.span);
                    t
                }
            };
            out.push(t);
        }
        let ty = match elem_ty {
            Some(t) => Ty::List(Box::new(t)),
            None => {
                self.report(
                    Diagnostic::error("recipe::type::cannot_infer", "cannot infer the element type of an empty list")
                        .with_primary(e.span, "empty list")
                        .with_help("annotate the binding, e.g. `let xs: List[Int] = []`"),
                );
                Ty::Error
            }
        };
        TExpr::new(TKind::List(out), ty, e.span, file)
    }
}
