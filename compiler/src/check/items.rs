//! Top-level items: the header, bindings (checked on demand, so order does not matter; a cycle
//! is an error), rounds blocks, the `run` line and `--set` overrides.

use super::typed::{FileId, TExpr, TKind};
use super::{Checker, FnInfo, GlobalKind, State};
use crate::ast::{self, BindingKind, Item, Span};
use crate::diag::{suggest, Diagnostic};
use crate::types::Ty;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

/// Header fields a recipe may set, with their types.
pub const HEADER_FIELDS: &[(&str, Ty)] = &[
    ("seed", Ty::Int),
    ("description", Ty::String),
    ("threads", Ty::Int),
    ("checkpoint_every", Ty::Int),
    ("eval_on_start", Ty::Bool),
];

/// A `--set key=value` override, parsed.
pub struct Override {
    pub key: String,
    pub key_span: Span,
    pub value: ast::Expr,
    pub file: FileId,
}

/// A checked top-level binding.
pub struct CheckedItem {
    pub kind: BindingKind,
    pub name: String,
    pub ty: Ty,
    pub value: TExpr,
}

/// A checked `rounds` block.
pub struct CheckedRounds {
    pub name: String,
    pub count: TExpr,
    pub from: TExpr,
    pub stages: Vec<CheckedItem>,
}

/// Everything `eval` needs.
pub struct CheckedProgram<'a> {
    pub name: String,
    pub header: Vec<(String, TExpr)>,
    /// Top-level bindings in source order.
    pub items: Vec<CheckedItem>,
    pub rounds: Vec<CheckedRounds>,
    pub run: Vec<String>,
    pub fns: Vec<FnInfo<'a>>,
}

fn kind_type(kind: BindingKind, checker: &mut Checker<'_>) -> Option<Ty> {
    Some(match kind {
        BindingKind::Model => Ty::opaque("Model", vec![]),
        BindingKind::Data => Ty::opaque("Dataset", vec![checker.subst.fresh()]),
        BindingKind::Stage => Ty::opaque("Stage", vec![checker.subst.fresh()]),
        BindingKind::Eval => Ty::opaque("Eval", vec![]),
        BindingKind::Let => return None,
    })
}

impl<'a> Checker<'a> {
    pub(super) fn global_exists(&self, name: &str) -> bool {
        self.globals.contains_key(name)
    }

    /// The type of a top-level name visible here (checking it first if needed).
    pub(super) fn global_type(&mut self, name: &str, span: Span) -> Option<Ty> {
        let kind = self.globals.get(name)?.kind;
        match kind {
            GlobalKind::Rounds(_) => {
                return Some(Ty::opaque("Stage", vec![Ty::record(vec![("model".into(), Ty::opaque("Model", vec![]))])]))
            }
            GlobalKind::RoundStage(_, r) if !self.rounds.is_some_and(|cur| std::ptr::eq(cur, r)) => return None,
            _ => {}
        }
        match self.globals[name].state {
            State::Done => {}
            State::InProgress => {
                self.report(
                    Diagnostic::error("recipe::resolve::cycle", format!("`{name}` depends on itself"))
                        .with_primary(span, "used while it is being defined"),
                );
                return Some(Ty::Error);
            }
            State::Pending => self.check_global(name),
        }
        Some(self.globals[name].ty.clone())
    }

    fn check_global(&mut self, name: &str) {
        let (binding, rounds) = match self.globals[name].kind {
            GlobalKind::Binding(b) => (b, None),
            GlobalKind::RoundStage(b, r) => (b, Some(r)),
            GlobalKind::Rounds(_) => return,
        };
        if let Some(g) = self.globals.get_mut(name) {
            g.state = State::InProgress;
        }
        let next = rounds.or(self.rounds);
        let saved_rounds = std::mem::replace(&mut self.rounds, next);
        let (ty, value) = self.isolated(FileId::USER, |c| c.check_binding(binding));
        self.rounds = saved_rounds;
        let g = self.globals.get_mut(name).expect("global exists");
        g.ty = ty;
        g.value = Some(value);
        g.state = State::Done;
    }

    fn check_binding(&mut self, b: &'a ast::Binding) -> (Ty, TExpr) {
        let annotated = b.ty.as_ref().map(|t| (self.resolve_type(t, &HashMap::new()), t.span));
        let kind_ty = kind_type(b.kind, self);
        let mut value = match (&annotated, &kind_ty) {
            (Some((t, span)), _) => {
                let mut v = self.check_against(&b.value, t, Some(*span));
                v.ty = t.clone();
                v
            }
            (None, Some(k)) => {
                let v = self.expr(&b.value, Some(k));
                let found = self.subst.resolve(&v.ty);
                if self.subst.accept(&found, k).is_err() && !found.is_error() {
                    self.report(
                        Diagnostic::error(
                            "recipe::type::mismatch",
                            format!(
                                "a `{}` binding needs a `{}`, found `{found}`",
                                b.kind.keyword(),
                                self.subst.resolve(k)
                            ),
                        )
                        .with_primary(b.value.span, format!("this is `{found}`"))
                        .with_secondary(b.name.span, format!("declared with `{}`", b.kind.keyword())),
                    );
                }
                v
            }
            (None, None) => self.expr(&b.value, None),
        };
        if b.kind == BindingKind::Let {
            if let Some((expr, file)) = self.overrides.get(&b.name.name).copied() {
                let ty = self.subst.resolve(&value.ty);
                value = self.isolated(file, |c| c.check_against(expr, &ty, None));
                value.ty = ty;
            }
        }
        let value = self.zonk(value);
        if value.ty.has_vars() {
            self.report(
                Diagnostic::error(
                    "recipe::type::cannot_infer",
                    format!("cannot infer the full type of `{}`", b.name.name),
                )
                .with_primary(b.value.span, format!("inferred `{}`", value.ty))
                .with_help(format!(
                    "annotate it, e.g. `{} {}: Curriculum[Arith] = ...`",
                    b.kind.keyword(),
                    b.name.name
                )),
            );
        }
        (value.ty.clone(), value)
    }

    /// Replace inference variables by their bindings throughout a checked tree.
    pub(super) fn zonk(&self, mut e: TExpr) -> TExpr {
        e.ty = self.subst.resolve(&e.ty);
        e.kind = match e.kind {
            TKind::Field(b, f) => TKind::Field(Box::new(self.zonk(*b)), f),
            TKind::CallFn(id, args) => TKind::CallFn(id, args.into_iter().map(|a| a.map(|a| self.zonk(a))).collect()),
            TKind::CallExtern(n, args) => {
                TKind::CallExtern(n, args.into_iter().map(|(p, l, a)| (p, l, self.zonk(a))).collect())
            }
            TKind::CallValue(f, args) => {
                TKind::CallValue(Box::new(self.zonk(*f)), args.into_iter().map(|a| self.zonk(a)).collect())
            }
            TKind::Unary(op, a) => TKind::Unary(op, Box::new(self.zonk(*a))),
            TKind::Binary(op, a, b) => TKind::Binary(op, Box::new(self.zonk(*a)), Box::new(self.zonk(*b))),
            TKind::If(c, t, o) => TKind::If(Box::new(self.zonk(*c)), Box::new(self.zonk(*t)), Box::new(self.zonk(*o))),
            TKind::Lambda(l) => {
                let l = Rc::unwrap_or_clone(l);
                TKind::Lambda(Rc::new(super::typed::Lambda {
                    params: l.params.into_iter().map(|(n, id, t)| (n, id, self.subst.resolve(&t))).collect(),
                    body: self.zonk(l.body),
                }))
            }
            TKind::List(items) => TKind::List(items.into_iter().map(|a| self.zonk(a)).collect()),
            TKind::Record(fields) => TKind::Record(fields.into_iter().map(|(n, a)| (n, self.zonk(a))).collect()),
            TKind::Range(a, b, inc) => TKind::Range(Box::new(self.zonk(*a)), Box::new(self.zonk(*b)), inc),
            TKind::Block(lets, r) => {
                TKind::Block(lets.into_iter().map(|(l, a)| (l, self.zonk(a))).collect(), Box::new(self.zonk(*r)))
            }
            TKind::Coerce(c, a) => TKind::Coerce(c, Box::new(self.zonk(*a))),
            other => other,
        };
        e
    }

    /// Check every item of the recipe; returns what `eval` needs.
    pub(super) fn check_items(&mut self, module: &'a ast::Module, overrides: &'a [Override]) -> CheckedProgram<'a> {
        self.apply_overrides(module, overrides);
        let (name, header) = self.check_header(module);
        let mut items = Vec::new();
        let mut rounds = Vec::new();
        let mut run: Option<&'a ast::Run> = None;
        for item in &module.items {
            match item {
                Item::Binding(b) => {
                    if !matches!(self.globals.get(&b.name.name).map(|g| g.kind), Some(GlobalKind::Binding(x)) if std::ptr::eq(x, b))
                    {
                        continue; // a duplicate, already reported
                    }
                    self.global_type(&b.name.name, b.name.span);
                    let g = &self.globals[&b.name.name];
                    if let Some(value) = g.value.clone() {
                        items.push(CheckedItem { kind: b.kind, name: b.name.name.clone(), ty: g.ty.clone(), value });
                    }
                }
                Item::Rounds(r) => rounds.push(self.check_rounds(r)),
                Item::Run(r) => {
                    if let Some(first) = run {
                        self.report(
                            Diagnostic::error("recipe::run::duplicate", "a recipe has one `run` line")
                                .with_primary(r.span, "second `run`")
                                .with_secondary(first.span, "first `run`")
                                .with_help("put every stage in one pipeline: `run a -> b -> c`"),
                        );
                    } else {
                        run = Some(r);
                    }
                }
                _ => {}
            }
        }
        // Check every fn body, so errors in unused fns are reported too.
        for id in 0..self.fns.len() {
            self.ensure_fn(id, self.fns[id].def.name.span);
        }
        let run = self.check_run(module, run, &items, &rounds);
        CheckedProgram { name, header, items, rounds, run, fns: std::mem::take(&mut self.fns) }
    }

    fn check_rounds(&mut self, r: &'a ast::Rounds) -> CheckedRounds {
        let saved = self.rounds.replace(r);
        let (count, from) = self.isolated(FileId::USER, |c| {
            let count = c.check_against(&r.count, &Ty::Int, None);
            let from = c.check_against(&r.from, &Ty::opaque("Model", vec![]), None);
            (count, from)
        });
        let mut stages = Vec::new();
        for b in &r.stages {
            if b.kind != BindingKind::Stage {
                self.report(
                    Diagnostic::error("recipe::run::rounds_body", "a rounds block contains stages only")
                        .with_primary(b.span, format!("a `{}` binding", b.kind.keyword()))
                        .with_help("declare it before the rounds block"),
                );
                continue;
            }
            if !matches!(self.globals.get(&b.name.name).map(|g| g.kind), Some(GlobalKind::RoundStage(x, _)) if std::ptr::eq(x, b))
            {
                continue;
            }
            self.global_type(&b.name.name, b.name.span);
            let g = &self.globals[&b.name.name];
            if let Some(value) = g.value.clone() {
                stages.push(CheckedItem { kind: b.kind, name: b.name.name.clone(), ty: g.ty.clone(), value });
            }
        }
        self.rounds = saved;
        CheckedRounds { name: r.name.name.clone(), count: self.zonk(count), from: self.zonk(from), stages }
    }

    fn check_header(&mut self, module: &'a ast::Module) -> (String, Vec<(String, TExpr)>) {
        let headers: Vec<&ast::Header> =
            module.items.iter().filter_map(|i| if let Item::Header(h) = i { Some(h) } else { None }).collect();
        let Some(header) = headers.first() else {
            self.report(
                Diagnostic::error("recipe::header::missing", "a recipe starts with a header")
                    .with_primary(Span::new(0, 0), "no `recipe \"name\" { ... }` header")
                    .with_help("add `recipe \"my-recipe\" { seed = 0 }` as the first item"),
            );
            return (String::new(), Vec::new());
        };
        for extra in &headers[1..] {
            self.report(
                Diagnostic::error("recipe::header::duplicate", "a recipe has one header")
                    .with_primary(extra.span, "second header")
                    .with_secondary(header.span, "first header"),
            );
        }
        let mut out: Vec<(String, TExpr)> = Vec::new();
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for field in &header.fields {
            let name = field.name.name.as_str();
            let Some((_, ty)) = HEADER_FIELDS.iter().find(|(n, _)| *n == name) else {
                let mut d =
                    Diagnostic::error("recipe::header::unknown_field", format!("unknown header field `{name}`"))
                        .with_primary(field.name.span, "unknown field");
                let fields = HEADER_FIELDS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
                d = match suggest(name, HEADER_FIELDS.iter().map(|(n, _)| *n)) {
                    Some(s) => d.with_help(format!("did you mean `{s}`? (header fields: {fields})")),
                    None => d.with_help(format!("header fields: {fields}")),
                };
                self.report(d);
                continue;
            };
            if let Some(prev) = seen.insert(name, field.name.span) {
                self.report(
                    Diagnostic::error("recipe::resolve::duplicate", format!("header field `{name}` is set twice"))
                        .with_primary(field.name.span, "set again here")
                        .with_secondary(prev, "first set here"),
                );
                continue;
            }
            let value = match self.overrides.get(name).copied() {
                Some((expr, file)) => self.isolated(file, |c| c.check_against(expr, ty, None)),
                None => self.isolated(FileId::USER, |c| c.check_against(&field.value, ty, Some(field.name.span))),
            };
            out.push((name.to_string(), value));
        }
        // An override may set a field the header leaves out.
        for (field, ty) in HEADER_FIELDS {
            if seen.contains_key(field) {
                continue;
            }
            if let Some((expr, file)) = self.overrides.get(*field).copied() {
                let value = self.isolated(file, |c| c.check_against(expr, ty, None));
                out.push((field.to_string(), value));
            }
        }
        (header.name.clone(), out)
    }

    fn apply_overrides(&mut self, module: &'a ast::Module, overrides: &'a [Override]) {
        let lets: Vec<&str> = module
            .items
            .iter()
            .filter_map(|i| match i {
                Item::Binding(b) if b.kind == BindingKind::Let => Some(b.name.name.as_str()),
                _ => None,
            })
            .collect();
        for o in overrides {
            let key = o.key.as_str();
            if lets.contains(&key) || HEADER_FIELDS.iter().any(|(n, _)| *n == key) {
                self.overrides.insert(o.key.clone(), (&o.value, o.file));
                continue;
            }
            let mut d = Diagnostic::error(
                "recipe::override::unknown_key",
                format!("`--set {key}`: no `let {key}` or header field `{key}`"),
            )
            .with_primary(o.key_span, "unknown key");
            let candidates = lets.iter().copied().chain(HEADER_FIELDS.iter().map(|(n, _)| *n));
            d = match suggest(key, candidates) {
                Some(s) => d.with_help(format!("did you mean `{s}`?")),
                None => d.with_help(format!(
                    "overridable: {}",
                    lets.iter().copied().chain(HEADER_FIELDS.iter().map(|(n, _)| *n)).collect::<Vec<_>>().join(", ")
                )),
            };
            if self.globals.contains_key(key) {
                d = d.with_note(format!(
                    "only `let` bindings and header fields can be overridden; `{key}` is another kind of declaration"
                ));
            }
            self.report_in(o.file, d);
        }
    }

    /// Validate the `run` line: every step a stage or rounds block, each once, and every stage
    /// a step uses run earlier.
    fn check_run(
        &mut self,
        module: &'a ast::Module,
        run: Option<&'a ast::Run>,
        items: &[CheckedItem],
        rounds: &[CheckedRounds],
    ) -> Vec<String> {
        let Some(run) = run else {
            self.report(
                Diagnostic::error("recipe::run::missing", "the recipe has no `run` line")
                    .with_primary(
                        Span::new(module.span.end as usize, module.span.end as usize),
                        "expected `run stage -> ...`",
                    )
                    .with_help("end the recipe with `run first_stage -> second_stage`"),
            );
            return Vec::new();
        };
        let stage_names: Vec<&str> = items
            .iter()
            .filter(|i| i.kind == BindingKind::Stage)
            .map(|i| i.name.as_str())
            .chain(rounds.iter().map(|r| r.name.as_str()))
            .collect();
        let mut order: Vec<String> = Vec::new();
        let mut position: HashMap<String, Span> = HashMap::new();
        for step in &run.steps {
            let name = step.name.as_str();
            if !stage_names.contains(&name) {
                let what = match self.globals.get(name).map(|g| g.kind) {
                    Some(GlobalKind::RoundStage(_, r)) => {
                        format!("`{name}` runs as part of `rounds {}`; run the rounds block", r.name.name)
                    }
                    Some(GlobalKind::Binding(b)) => {
                        format!("`{name}` is a `{}` binding, not a stage", b.kind.keyword())
                    }
                    _ => match suggest(name, stage_names.iter().copied()) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => format!("stages: {}", stage_names.join(", ")),
                    },
                };
                self.report(
                    Diagnostic::error("recipe::run::unknown_stage", format!("`{name}` is not a stage"))
                        .with_primary(step.span, "not a stage or rounds block")
                        .with_help(what),
                );
                continue;
            }
            if let Some(prev) = position.get(name) {
                self.report(
                    Diagnostic::error("recipe::run::duplicate", format!("`{name}` runs twice"))
                        .with_primary(step.span, "again here")
                        .with_secondary(*prev, "first here")
                        .with_help("use a `rounds` block to repeat stages"),
                );
                continue;
            }
            position.insert(name.to_string(), step.span);
            order.push(name.to_string());
        }
        // Dependencies: every stage a step reads, through lets and data bindings.
        let values: HashMap<&str, &TExpr> = items.iter().map(|i| (i.name.as_str(), &i.value)).collect();
        let round_names: HashSet<&str> = rounds.iter().flat_map(|r| r.stages.iter().map(|s| s.name.as_str())).collect();
        for (i, step) in order.iter().enumerate() {
            let mut roots: Vec<&TExpr> = Vec::new();
            if let Some(v) = values.get(step.as_str()) {
                roots.push(v);
            }
            if let Some(r) = rounds.iter().find(|r| &r.name == step) {
                roots.push(&r.from);
                roots.extend(r.stages.iter().map(|s| &s.value));
            }
            let mut deps = Vec::new();
            let mut seen = HashSet::new();
            for root in roots {
                collect_stage_refs(root, &values, &stage_names, &mut seen, &mut deps);
            }
            for (dep, span) in deps {
                if dep == *step || round_names.contains(dep.as_str()) {
                    continue;
                }
                let step_span = position[step.as_str()];
                match order.iter().position(|o| *o == dep) {
                    Some(j) if j < i => {}
                    Some(_) => self.report(
                        Diagnostic::error("recipe::run::order", format!("`{step}` uses `{dep}`, which runs after it"))
                            .with_primary(span, format!("`{dep}` is used here"))
                            .with_secondary(position[dep.as_str()], format!("`{dep}` runs here"))
                            .with_secondary(step_span, format!("`{step}` runs here")),
                    ),
                    None => self.report(
                        Diagnostic::error("recipe::run::order", format!("`{step}` uses `{dep}`, which never runs"))
                            .with_primary(span, format!("`{dep}` is used here"))
                            .with_secondary(step_span, format!("`{step}` runs here"))
                            .with_help(format!("add `{dep}` to the `run` line before `{step}`")),
                    ),
                }
            }
        }
        order
    }
}

/// The stages (and rounds) an expression reads, following lets and data bindings.
fn collect_stage_refs<'e>(
    e: &'e TExpr,
    values: &HashMap<&str, &'e TExpr>,
    stages: &[&str],
    seen: &mut HashSet<String>,
    out: &mut Vec<(String, Span)>,
) {
    let mut stack = vec![e];
    while let Some(e) = stack.pop() {
        match &e.kind {
            TKind::Global(name) => {
                if stages.contains(&name.as_str()) {
                    if seen.insert(name.clone()) {
                        out.push((name.clone(), e.span));
                    }
                } else if let Some(v) = values.get(name.as_str()) {
                    if seen.insert(name.clone()) {
                        stack.push(v);
                    }
                }
            }
            TKind::Field(b, _) | TKind::Unary(_, b) | TKind::Coerce(_, b) => stack.push(b),
            TKind::CallFn(_, args) => stack.extend(args.iter().flatten()),
            TKind::CallExtern(_, args) => stack.extend(args.iter().map(|(_, _, a)| a)),
            TKind::CallValue(f, args) => {
                stack.push(f);
                stack.extend(args);
            }
            TKind::Binary(_, a, b) | TKind::Range(a, b, _) => {
                stack.push(a);
                stack.push(b);
            }
            TKind::If(c, t, o) => stack.extend([&**c, &**t, &**o]),
            TKind::Lambda(l) => stack.push(&l.body),
            TKind::List(items) => stack.extend(items),
            TKind::Record(fields) => stack.extend(fields.iter().map(|(_, v)| v)),
            TKind::Block(lets, r) => {
                stack.extend(lets.iter().map(|(_, v)| v));
                stack.push(r);
            }
            _ => {}
        }
    }
}
