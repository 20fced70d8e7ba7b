//! Span erasure, for comparing trees "modulo spans": `parse(format(x))` must equal `parse(x)` in
//! everything but where things were written. Comments are dropped too (their text is checked
//! separately: the formatter moves them, it must not lose them).

use crate::ast::*;

/// A copy of `module` with every span zeroed and no comments.
pub fn erase_spans(module: &Module) -> Module {
    let mut m = module.clone();
    m.span = Span::default();
    m.comments.clear();
    m.items.iter_mut().for_each(item);
    m
}

fn id(i: &mut Ident) {
    i.span = Span::default();
}

fn item(it: &mut Item) {
    match it {
        Item::Header(h) => {
            h.span = Span::default();
            h.name_span = Span::default();
            h.fields.iter_mut().for_each(field);
        }
        Item::Binding(b) => binding(b),
        Item::Fn(f) => {
            f.span = Span::default();
            id(&mut f.name);
            f.params.iter_mut().for_each(param);
            f.ret.iter_mut().for_each(ty);
            expr(&mut f.body);
        }
        Item::Extern(e) => {
            e.span = Span::default();
            id(&mut e.name);
            e.type_params.iter_mut().for_each(id);
            e.params.iter_mut().for_each(param);
            ty(&mut e.ret);
        }
        Item::TypeAlias(t) => {
            t.span = Span::default();
            id(&mut t.name);
            ty(&mut t.ty);
        }
        Item::Rounds(r) => {
            r.span = Span::default();
            id(&mut r.name);
            expr(&mut r.count);
            expr(&mut r.from);
            r.stages.iter_mut().for_each(binding);
        }
        Item::Run(r) => {
            r.span = Span::default();
            r.steps.iter_mut().for_each(id);
        }
    }
}

fn binding(b: &mut Binding) {
    b.span = Span::default();
    id(&mut b.name);
    b.ty.iter_mut().for_each(ty);
    expr(&mut b.value);
}

fn field(f: &mut Field) {
    f.span = Span::default();
    id(&mut f.name);
    expr(&mut f.value);
}

fn param(p: &mut Param) {
    p.span = Span::default();
    id(&mut p.name);
    p.ty.iter_mut().for_each(ty);
    p.default.iter_mut().for_each(expr);
}

fn ty(t: &mut TypeExpr) {
    t.span = Span::default();
    match &mut t.kind {
        TypeExprKind::Named(n) => id(n),
        TypeExprKind::Applied(n, args) => {
            id(n);
            args.iter_mut().for_each(ty);
        }
        TypeExprKind::Record(fields) => {
            for (n, t) in fields {
                id(n);
                ty(t);
            }
        }
        TypeExprKind::Fn(params, ret) => {
            params.iter_mut().for_each(ty);
            ty(ret);
        }
    }
}

fn expr(e: &mut Expr) {
    e.span = Span::default();
    match &mut e.kind {
        ExprKind::Int(_) | ExprKind::Float(_) | ExprKind::Bool(_) | ExprKind::Str(_) => {}
        ExprKind::Name(n) => id(n),
        ExprKind::Field(base, n) => {
            expr(base);
            id(n);
        }
        ExprKind::Call(callee, args) => {
            expr(callee);
            for a in args {
                a.span = Span::default();
                a.name.iter_mut().for_each(id);
                expr(&mut a.value);
            }
        }
        ExprKind::Unary(_, x) => expr(x),
        ExprKind::Binary(_, l, r) => {
            expr(l);
            expr(r);
        }
        ExprKind::If { cond, then, otherwise } => {
            expr(cond);
            expr(then);
            expr(otherwise);
        }
        ExprKind::Lambda(params, body) => {
            params.iter_mut().for_each(param);
            expr(body);
        }
        ExprKind::List(items) => items.iter_mut().for_each(expr),
        ExprKind::Record(fields) => fields.iter_mut().for_each(field),
        ExprKind::Range { start, end, .. } => {
            expr(start);
            expr(end);
        }
        ExprKind::Block(lets, value) => {
            for l in lets {
                l.span = Span::default();
                id(&mut l.name);
                l.ty.iter_mut().for_each(ty);
                expr(&mut l.value);
            }
            expr(value);
        }
    }
}
