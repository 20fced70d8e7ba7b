//! Declarations and type expressions: collecting the stdlib's and the recipe's names
//! (duplicates are errors), resolving type expressions (aliases expanded, arities checked) and
//! `fn` signatures.

use super::typed::FileId;
use super::{Checker, FnInfo, Global, GlobalKind, State};
use crate::ast::{self, Item, TypeExpr, TypeExprKind};
use crate::diag::{suggest, Diagnostic};
use crate::types::{self, Ty};
use std::collections::HashMap;

const PRIMITIVES: &[(&str, Ty)] = &[
    ("Int", Ty::Int),
    ("Float", Ty::Float),
    ("Bool", Ty::Bool),
    ("String", Ty::String),
    ("Messages", Ty::Messages),
    ("Tensor", Ty::Tensor),
    ("Range", Ty::Range),
];

impl<'a> Checker<'a> {
    /// Type aliases, externs and fns of a stdlib module.
    pub(super) fn collect_stdlib(&mut self, module: &'a ast::Module, file: FileId) {
        for item in &module.items {
            match item {
                Item::TypeAlias(alias) => {
                    self.aliases.insert(alias.name.name.clone(), (&alias.ty, file));
                }
                Item::Extern(ext) => {
                    self.externs.insert(ext.name.name.clone(), ext);
                }
                Item::Fn(def) => self.add_fn(def, file),
                _ => {}
            }
        }
    }

    fn add_fn(&mut self, def: &'a ast::FnDef, file: FileId) {
        let id = self.fns.len();
        self.fns.push(FnInfo {
            name: def.name.name.clone(),
            def,
            file,
            params: Vec::new(),
            defaults: Vec::new(),
            ret: None,
            body: None,
            state: State::Pending,
        });
        self.fn_names.insert(def.name.name.clone(), id);
    }

    /// The recipe's own declarations; a second declaration of a name is `resolve::duplicate`.
    pub(super) fn collect_user(&mut self, module: &'a ast::Module) {
        let mut seen: HashMap<String, ast::Span> = HashMap::new();
        let mut first = |c: &mut Self, ident: &ast::Ident| -> bool {
            if let Some(prev) = seen.get(&ident.name) {
                c.report(
                    Diagnostic::error("recipe::resolve::duplicate", format!("`{}` is declared twice", ident.name))
                        .with_primary(ident.span, "declared again here")
                        .with_secondary(*prev, "first declared here")
                        .with_help("rename one of them"),
                );
                false
            } else {
                seen.insert(ident.name.clone(), ident.span);
                true
            }
        };
        for item in &module.items {
            match item {
                Item::Binding(b) => {
                    if first(self, &b.name) {
                        self.add_global(&b.name.name, GlobalKind::Binding(b));
                    }
                }
                Item::Rounds(r) => {
                    if first(self, &r.name) {
                        self.add_global(&r.name.name, GlobalKind::Rounds(r));
                    }
                    for stage in &r.stages {
                        if first(self, &stage.name) {
                            self.add_global(&stage.name.name, GlobalKind::RoundStage(stage, r));
                        }
                    }
                }
                Item::Fn(def) => {
                    if first(self, &def.name) {
                        self.add_fn(def, FileId::USER);
                    }
                }
                Item::TypeAlias(alias) => {
                    if first(self, &alias.name) {
                        self.aliases.insert(alias.name.name.clone(), (&alias.ty, FileId::USER));
                    }
                }
                Item::Extern(ext) => self.report(
                    Diagnostic::error(
                        "recipe::resolve::extern_outside_stdlib",
                        "`extern fn` declares a native builtin and is only allowed in the stdlib",
                    )
                    .with_primary(ext.span, "not allowed in a recipe")
                    .with_help("write a `fn` with a body instead"),
                ),
                Item::Header(_) | Item::Run(_) => {}
            }
        }
    }

    fn add_global(&mut self, name: &str, kind: GlobalKind<'a>) {
        self.global_order.push(name.to_string());
        self.globals.insert(name.to_string(), Global { kind, state: State::Pending, ty: Ty::Error, value: None });
    }

    /// Resolve every fn's parameter and result types, and check parameter defaults.
    pub(super) fn resolve_signatures(&mut self) {
        for id in 0..self.fns.len() {
            let def = self.fns[id].def;
            let file = self.fns[id].file;
            let (params, defaults, ret) = self.isolated(file, |c| {
                let mut params = Vec::new();
                let mut defaults = Vec::new();
                for p in &def.params {
                    let ty = match &p.ty {
                        Some(t) => c.resolve_type(t, &HashMap::new()),
                        None => {
                            c.report(
                                Diagnostic::error(
                                    "recipe::type::cannot_infer",
                                    format!("parameter `{}` needs a type", p.name.name),
                                )
                                .with_primary(p.name.span, "no type annotation")
                                .with_help(format!("write `{}: Float` (or the type it has)", p.name.name)),
                            );
                            Ty::Error
                        }
                    };
                    let default = p.default.as_ref().map(|d| c.check_against(d, &ty, p.ty.as_ref().map(|t| t.span)));
                    let local = c.push_local(&p.name.name, ty.clone());
                    params.push((p.name.name.clone(), local, ty));
                    defaults.push(default);
                }
                let ret = def.ret.as_ref().map(|t| c.resolve_type(t, &HashMap::new()));
                (params, defaults, ret)
            });
            let info = &mut self.fns[id];
            info.params = params;
            info.defaults = defaults;
            info.ret = ret;
        }
    }

    /// The type a type expression denotes. `params` maps an extern's type parameters to their
    /// instantiation.
    pub(super) fn resolve_type(&mut self, texpr: &TypeExpr, params: &HashMap<String, Ty>) -> Ty {
        self.resolve_type_depth(texpr, params, 0)
    }

    fn resolve_type_depth(&mut self, texpr: &TypeExpr, params: &HashMap<String, Ty>, depth: usize) -> Ty {
        match &texpr.kind {
            TypeExprKind::Named(ident) => self.resolve_named(ident, params, depth),
            TypeExprKind::Applied(ident, args) => {
                let args: Vec<Ty> = args.iter().map(|a| self.resolve_type_depth(a, params, depth)).collect();
                let name = ident.name.as_str();
                let arity = match name {
                    "List" => Some(1),
                    "With" => Some(2),
                    _ => types::OPAQUE.iter().find(|(n, _)| *n == name).map(|(_, a)| *a),
                };
                match arity {
                    Some(n) if n == args.len() => match name {
                        "List" => Ty::List(Box::new(args.into_iter().next().unwrap_or(Ty::Error))),
                        _ => Ty::Opaque(name.to_string(), args),
                    },
                    Some(n) => {
                        self.report(
                            Diagnostic::error(
                                "recipe::resolve::type_arity",
                                format!("`{name}` takes {n} type argument(s), found {}", args.len()),
                            )
                            .with_primary(texpr.span, "wrong number of type arguments"),
                        );
                        Ty::Error
                    }
                    None => self.unknown_type(ident, params),
                }
            }
            TypeExprKind::Record(fields) => Ty::record(
                fields.iter().map(|(n, t)| (n.name.clone(), self.resolve_type_depth(t, params, depth))).collect(),
            ),
            TypeExprKind::Fn(ps, r) => Ty::Fn(
                ps.iter().map(|p| self.resolve_type_depth(p, params, depth)).collect(),
                Box::new(self.resolve_type_depth(r, params, depth)),
            ),
        }
    }

    fn resolve_named(&mut self, ident: &ast::Ident, params: &HashMap<String, Ty>, depth: usize) -> Ty {
        let name = ident.name.as_str();
        if let Some(ty) = params.get(name) {
            return ty.clone();
        }
        if let Some((_, ty)) = PRIMITIVES.iter().find(|(n, _)| *n == name) {
            return ty.clone();
        }
        if let Some((enum_name, _)) = types::ENUMS.iter().find(|(n, _)| *n == name) {
            return Ty::Enum(enum_name);
        }
        let arity = types::OPAQUE.iter().find(|(n, _)| *n == name).map(|(_, a)| *a);
        if arity == Some(0) {
            return Ty::opaque(name, Vec::new());
        }
        if let Some(n) = arity.or((name == "List").then_some(1)) {
            self.report(
                Diagnostic::error("recipe::resolve::type_arity", format!("`{name}` takes {n} type argument(s)"))
                    .with_primary(ident.span, "type arguments missing")
                    .with_help(format!("write `{name}[...]`, e.g. `{name}[Arith]`")),
            );
            return Ty::Error;
        }
        if let Some(&(alias, file)) = self.aliases.get(name) {
            if depth > 32 {
                self.report(
                    Diagnostic::error("recipe::resolve::cycle", format!("type `{name}` refers to itself"))
                        .with_primary(ident.span, "recursive type alias"),
                );
                return Ty::Error;
            }
            let outer = std::mem::replace(&mut self.file, file);
            let ty = self.resolve_type_depth(alias, &HashMap::new(), depth + 1);
            self.file = outer;
            return ty;
        }
        self.unknown_type(ident, params)
    }

    fn unknown_type(&mut self, ident: &ast::Ident, params: &HashMap<String, Ty>) -> Ty {
        let mut names: Vec<&str> = PRIMITIVES.iter().map(|(n, _)| *n).collect();
        names.extend(types::OPAQUE.iter().map(|(n, _)| *n));
        names.extend(types::ENUMS.iter().map(|(n, _)| *n));
        names.extend(self.aliases.keys().map(String::as_str));
        names.extend(params.keys().map(String::as_str));
        names.push("List");
        let mut diag = Diagnostic::error("recipe::resolve::unknown_type", format!("unknown type `{}`", ident.name))
            .with_primary(ident.span, "not a type");
        if let Some(s) = suggest(&ident.name, names) {
            diag = diag.with_help(format!("did you mean `{s}`?"));
        }
        self.report(diag);
        Ty::Error
    }
}
