//! Calls: matching arguments to parameters (positional, then named; unknown, duplicate, missing
//! and surplus arguments are errors), checking them, and typing the result. Calls of an
//! `extern fn` instantiate its type parameters and infer them by unification: arguments that
//! are not lambdas are checked first, then lambdas against the now-known parameter types, then
//! the defaults of omitted parameters (which may mention earlier parameters).

use super::typed::{FileId, LocalId, TExpr, TKind};
use super::Checker;
use crate::ast::{self, Arg, Expr, ExprKind, Span};
use crate::diag::{suggest, Diagnostic};
use crate::types::{self, Ty};
use std::collections::HashMap;

/// A parameter as argument matching sees it.
struct ParamSpec<'p> {
    name: &'p str,
    has_default: bool,
    ty: Ty,
}

impl<'a> Checker<'a> {
    pub(super) fn call(&mut self, e: &'a Expr, callee: &'a Expr, args: &'a [Arg], expected: Option<&Ty>) -> TExpr {
        let file = self.file;
        match &callee.kind {
            ExprKind::Name(ident) if self.lookup_local(&ident.name).is_none() => {
                let name = ident.name.as_str();
                if let Some(&id) = self.fn_names.get(name) {
                    return self.call_fn(e, id, args);
                }
                if self.externs.contains_key(name) {
                    return self.call_extern(e, name, callee.span, args, expected);
                }
                if self.global_exists(name) {
                    let f = self.expr(callee, None);
                    return self.call_value(e, f, args);
                }
                let mut names: Vec<&str> = self.fn_names.keys().map(String::as_str).collect();
                names.extend(self.externs.keys().map(String::as_str).filter(|n| !n.contains('_') || !is_namespaced(n)));
                let mut d = Diagnostic::error("recipe::resolve::unknown_name", format!("unknown function `{name}`"))
                    .with_primary(ident.span, "not found");
                if let Some(s) = suggest(name, names) {
                    d = d.with_help(format!("did you mean `{s}`?"));
                }
                self.report(d);
                for a in args {
                    self.expr(&a.value, None);
                }
                TExpr::error(e.span, file)
            }
            ExprKind::Field(base, member) => {
                if let ExprKind::Name(ns) = &base.kind {
                    if types::NAMESPACES.contains(&ns.name.as_str()) && self.lookup_local(&ns.name).is_none() {
                        let full = format!("{}_{}", ns.name, member.name);
                        if self.externs.contains_key(&full) {
                            return self.call_extern(e, &full, callee.span, args, expected);
                        }
                        let members: Vec<String> = self
                            .externs
                            .keys()
                            .filter_map(|k| k.strip_prefix(&format!("{}_", ns.name)).map(str::to_string))
                            .collect();
                        let mut d = Diagnostic::error(
                            "recipe::resolve::unknown_name",
                            format!("`{}` has no builtin `{}`", ns.name, member.name),
                        )
                        .with_primary(member.span, "not found");
                        if let Some(s) = suggest(&member.name, members.iter().map(String::as_str)) {
                            d = d.with_help(format!("did you mean `{}.{s}`?", ns.name));
                        }
                        self.report(d);
                        return TExpr::error(e.span, file);
                    }
                }
                let f = self.expr(callee, None);
                self.call_value(e, f, args)
            }
            _ => {
                let f = self.expr(callee, None);
                self.call_value(e, f, args)
            }
        }
    }

    /// Match arguments to parameters. Returns, per parameter, the index of its argument.
    /// Unmatched arguments are checked without an expectation (so their own errors show), and the
    /// call is then an error: `None`.
    fn match_args(
        &mut self,
        callee: &str,
        callee_span: Span,
        params: &[ParamSpec<'_>],
        args: &'a [Arg],
    ) -> Option<Vec<Option<usize>>> {
        let mut slots: Vec<Option<usize>> = vec![None; params.len()];
        let mut ok = true;
        for (i, arg) in args.iter().enumerate() {
            let Some(slot) = self.param_of(callee, callee_span, params, args, i) else {
                ok = false;
                continue;
            };
            if let Some(prev) = slots[slot] {
                self.report(
                    Diagnostic::error(
                        "recipe::call::duplicate_argument",
                        format!("argument `{}` is given twice", params[slot].name),
                    )
                    .with_primary(arg.span, "given again here")
                    .with_secondary(args[prev].span, "first given here"),
                );
                ok = false;
                continue;
            }
            slots[slot] = Some(i);
        }
        ok &= self.report_missing(callee, callee_span, params, &slots);
        if !ok {
            self.check_unmatched(params, args, &slots);
        }
        ok.then_some(slots)
    }

    /// The parameter argument `i` is for (by position or name), or `None` after reporting a
    /// surplus or unknown argument.
    fn param_of(
        &mut self,
        callee: &str,
        callee_span: Span,
        params: &[ParamSpec<'_>],
        args: &[Arg],
        i: usize,
    ) -> Option<usize> {
        let arg = &args[i];
        let Some(name) = &arg.name else {
            if i < params.len() {
                return Some(i);
            }
            self.report(
                Diagnostic::error(
                    "recipe::call::too_many_arguments",
                    format!(
                        "`{callee}` takes {} argument(s), {} given",
                        params.len(),
                        args.iter().filter(|a| a.name.is_none()).count()
                    ),
                )
                .with_primary(arg.span, "surplus argument")
                .with_secondary(callee_span, format!("`{callee}` called here")),
            );
            return None;
        };
        if let Some(p) = params.iter().position(|p| p.name == name.name) {
            return Some(p);
        }
        let d =
            Diagnostic::error("recipe::call::unknown_argument", format!("`{callee}` has no parameter `{}`", name.name))
                .with_primary(name.span, "unknown argument");
        let d = match suggest(&name.name, params.iter().map(|p| p.name)) {
            Some(s) => d.with_help(format!("did you mean `{s}`?")),
            None => {
                d.with_help(format!("parameters: {}", params.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")))
            }
        };
        self.report(d);
        None
    }

    /// Reports the parameters without an argument or a default; true if there are none.
    fn report_missing(
        &mut self,
        callee: &str,
        callee_span: Span,
        params: &[ParamSpec<'_>],
        slots: &[Option<usize>],
    ) -> bool {
        let missing: Vec<&ParamSpec<'_>> =
            params.iter().zip(slots).filter(|(p, s)| s.is_none() && !p.has_default).map(|(p, _)| p).collect();
        if missing.is_empty() {
            return true;
        }
        let list = missing
            .iter()
            .map(|p| format!("`{}: {}`", p.name, self.subst.resolve(&p.ty)))
            .collect::<Vec<_>>()
            .join(", ");
        self.report(
            Diagnostic::error(
                "recipe::call::missing_argument",
                format!("`{callee}` is missing {} required argument(s)", missing.len()),
            )
            .with_primary(callee_span, "called here")
            .with_help(format!("add {list}, e.g. `{} = ...`", missing[0].name)),
        );
        false
    }

    /// Checks the arguments of a call that failed to match, so their own errors are reported:
    /// a matched one against its parameter's type, the others without an expectation.
    fn check_unmatched(&mut self, params: &[ParamSpec<'_>], args: &'a [Arg], slots: &[Option<usize>]) {
        for (i, a) in args.iter().enumerate() {
            match slots.iter().position(|s| *s == Some(i)) {
                Some(p) => {
                    let want = params[p].ty.clone();
                    let t = self.expr(&a.value, Some(&want));
                    self.coerce(t, &want, None);
                }
                None => {
                    self.expr(&a.value, None);
                }
            }
        }
    }

    fn call_fn(&mut self, e: &'a Expr, id: usize, args: &'a [Arg]) -> TExpr {
        let file = self.file;
        let callee_span = match &e.kind {
            ExprKind::Call(c, _) => c.span,
            _ => e.span,
        };
        self.ensure_fn(id, callee_span);
        let name = self.fns[id].name.clone();
        let params: Vec<(String, Ty, bool)> = self.fns[id]
            .params
            .iter()
            .zip(&self.fns[id].defaults)
            .map(|((n, _, t), d)| (n.clone(), t.clone(), d.is_some()))
            .collect();
        let specs: Vec<ParamSpec<'_>> =
            params.iter().map(|(n, t, d)| ParamSpec { name: n, has_default: *d, ty: t.clone() }).collect();
        let ret = self.fns[id].ret.clone().unwrap_or(Ty::Error);
        let Some(slots) = self.match_args(&name, callee_span, &specs, args) else {
            return TExpr::error(e.span, file);
        };
        let mut out = Vec::new();
        for ((pname, ty, _), slot) in params.iter().zip(slots) {
            out.push(slot.map(|i| {
                let saved = self.param_hint.replace(format!("`{name}` takes `{pname}: {ty}`"));
                let t = self.check_against(&args[i].value, ty, None);
                self.param_hint = saved;
                t
            }));
        }
        TExpr::new(TKind::CallFn(id, out), ret, e.span, file)
    }

    fn call_value(&mut self, e: &'a Expr, f: TExpr, args: &'a [Arg]) -> TExpr {
        let file = self.file;
        let ty = self.subst.resolve(&f.ty);
        let (ps, ret) = match ty {
            Ty::Fn(ps, ret) => (ps, *ret),
            Ty::Error => return TExpr::error(e.span, file),
            other => {
                self.report(
                    Diagnostic::error("recipe::type::not_callable", format!("`{other}` is not a function"))
                        .with_primary(f.span, format!("this is `{other}`, not a function")),
                );
                return TExpr::error(e.span, file);
            }
        };
        if let Some(named) = args.iter().find_map(|a| a.name.as_ref()) {
            self.report(
                Diagnostic::error("recipe::call::unknown_argument", "a function value takes positional arguments only")
                    .with_primary(named.span, "named argument")
                    .with_help("pass the arguments in order, without names"),
            );
            return TExpr::error(e.span, file);
        }
        if args.len() != ps.len() {
            let code = if args.len() > ps.len() {
                "recipe::call::too_many_arguments"
            } else {
                "recipe::call::missing_argument"
            };
            self.report(
                Diagnostic::error(code, format!("this function takes {} argument(s), {} given", ps.len(), args.len()))
                    .with_primary(e.span, "in this call")
                    .with_secondary(f.span, format!("this is `{}`", Ty::Fn(ps.clone(), Box::new(ret.clone())))),
            );
            return TExpr::error(e.span, file);
        }
        let out: Vec<TExpr> = args.iter().zip(&ps).map(|(a, p)| self.check_against(&a.value, p, None)).collect();
        TExpr::new(TKind::CallValue(Box::new(f), out), ret, e.span, file)
    }

    fn call_extern(
        &mut self,
        e: &'a Expr,
        name: &str,
        callee_span: Span,
        args: &'a [Arg],
        expected: Option<&Ty>,
    ) -> TExpr {
        let file = self.file;
        let ext = self.externs[name];
        let display = display_name(name);
        // Instantiate the type parameters.
        let mut tparams = HashMap::new();
        for tp in &ext.type_params {
            let v = self.subst.fresh();
            tparams.insert(tp.name.clone(), v);
        }
        let outer = std::mem::replace(&mut self.file, FileId::BUILTINS);
        let mut ptys: Vec<Ty> =
            ext.params.iter().map(|p| p.ty.as_ref().map_or(Ty::Error, |t| self.resolve_type(t, &tparams))).collect();
        let mut ret = self.resolve_type(&ext.ret, &tparams);
        self.file = outer;
        let specs: Vec<ParamSpec<'_>> = ext
            .params
            .iter()
            .zip(&ptys)
            .map(|(p, t)| ParamSpec { name: &p.name.name, has_default: p.default.is_some(), ty: t.clone() })
            .collect();
        let Some(slots) = self.match_args(&display, callee_span, &specs, args) else {
            return TExpr::error(e.span, file);
        };
        let mut checked = HashMap::new();
        if types::ELEMENTWISE.contains(&name) {
            checked = self.lift_elementwise(name, args, &slots, &mut ptys, &mut ret);
        }
        // Let the expected result type inform the type parameters (`jsonl` rows).
        if let Some(want) = expected {
            if ret.has_vars() {
                let snapshot = self.subst.snapshot();
                if !self.subst.subtype(&ret, want) {
                    self.subst.restore(snapshot);
                }
            }
        }
        let locals: Vec<LocalId> = ext.params.iter().map(|_| self.fresh_local()).collect();
        let mut values = self.extern_args(&display, ext, args, &slots, &ptys, checked);
        // Defaults, in the scope of the earlier parameters.
        for (p, param) in ext.params.iter().enumerate() {
            if values[p].is_some() {
                continue;
            }
            let Some(default) = &param.default else { continue };
            let earlier: Vec<(String, LocalId, Ty)> =
                (0..p).map(|q| (ext.params[q].name.name.clone(), locals[q], self.subst.resolve(&ptys[q]))).collect();
            let want = ptys[p].clone();
            let t = self.isolated(FileId::BUILTINS, |c| {
                c.scopes.extend(earlier);
                c.check_against(default, &want, None)
            });
            values[p] = Some(t);
        }
        self.check_row_needs(name, ext, args, &slots, &ptys, callee_span);
        if name == "map" {
            self.check_map_rows(args, &slots, &ptys, callee_span);
        }
        let args_out: Vec<(String, LocalId, TExpr)> = ext
            .params
            .iter()
            .zip(locals)
            .zip(values)
            .map(|((p, l), v)| (p.name.name.clone(), l, v.unwrap_or_else(|| TExpr::error(e.span, file))))
            .collect();
        let ret = self.subst.resolve(&ret);
        TExpr::new(TKind::CallExtern(name.to_string(), args_out), ret, e.span, file)
    }

    /// Elementwise builtins lift to Tensors: a Tensor argument turns their Float parameters and
    /// result into Tensors. `min`/`max`/`abs`/`clamp` on Ints only stay Int. The arguments are
    /// checked first to see their types; returns them by argument index.
    fn lift_elementwise(
        &mut self,
        name: &str,
        args: &'a [Arg],
        slots: &[Option<usize>],
        ptys: &mut [Ty],
        ret: &mut Ty,
    ) -> HashMap<usize, TExpr> {
        let mut checked = HashMap::new();
        let mut tys = Vec::new();
        for &i in slots.iter().flatten() {
            let t = self.expr(&args[i].value, None);
            tys.push(self.subst.resolve(&t.ty));
            checked.insert(i, t);
        }
        let to = if tys.contains(&Ty::Tensor) {
            Ty::Tensor
        } else if matches!(name, "min" | "max" | "abs" | "clamp")
            && !tys.is_empty()
            && tys.iter().all(|t| *t == Ty::Int)
        {
            Ty::Int
        } else {
            return checked;
        };
        for t in ptys.iter_mut().chain(std::iter::once(ret)) {
            if *t == Ty::Float {
                *t = to.clone();
            }
        }
        checked
    }

    /// Checks the given arguments of an `extern fn` call against their parameter types, lambdas
    /// last (their parameter types are inferred from the other arguments). `checked` holds
    /// arguments already checked (by argument index), which are only coerced. Per parameter.
    fn extern_args(
        &mut self,
        display: &str,
        ext: &ast::ExternFn,
        args: &'a [Arg],
        slots: &[Option<usize>],
        ptys: &[Ty],
        mut checked: HashMap<usize, TExpr>,
    ) -> Vec<Option<TExpr>> {
        let mut values: Vec<Option<TExpr>> = vec![None; slots.len()];
        let is_lambda = |i: usize| matches!(args[i].value.kind, ExprKind::Lambda(..));
        for pass in [false, true] {
            for (p, slot) in slots.iter().enumerate() {
                let Some(i) = *slot else { continue };
                if is_lambda(i) != pass {
                    continue;
                }
                let want = self.subst.resolve(&ptys[p]);
                let saved = self.param_hint.replace(format!("`{display}` takes `{}: {want}`", ext.params[p].name.name));
                values[p] = Some(match checked.remove(&i) {
                    Some(t) => self.coerce(t, &ptys[p], None),
                    None => self.check_against(&args[i].value, &ptys[p], None),
                });
                self.param_hint = saved;
            }
        }
        values
    }
}

fn is_namespaced(name: &str) -> bool {
    types::NAMESPACES.iter().any(|ns| name.starts_with(&format!("{ns}_")))
}

/// How users write a builtin: `synth.addition` for `synth_addition`.
pub fn display_name(name: &str) -> String {
    for ns in types::NAMESPACES {
        if let Some(rest) = name.strip_prefix(&format!("{ns}_")) {
            return format!("{ns}.{rest}");
        }
    }
    name.to_string()
}
