//! The checked tree: what `check` produces and `eval` consumes. Names are resolved (a local by
//! its unique id, a declaration by name, a function by id), every node has its type, implicit
//! conversions are explicit `Coerce` nodes, and every call lists all its arguments in parameter
//! order (defaults included).

use crate::ast::{BinOp, Span, UnOp};
use crate::types::Ty;
use std::rc::Rc;

/// Which source a span points into: the user's file, the prelude, the builtins or an override.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileId(pub u32);

impl FileId {
    pub const USER: FileId = FileId(0);
    pub const PRELUDE: FileId = FileId(1);
    pub const BUILTINS: FileId = FileId(2);
}

/// A local variable: unique per binding site across the whole program.
pub type LocalId = u32;

/// Index of a `fn` (prelude or user) in the checker's function table.
pub type FnId = usize;

#[derive(Clone, Debug)]
pub struct TExpr {
    pub kind: TKind,
    pub ty: Ty,
    pub span: Span,
    pub file: FileId,
}

/// An implicit conversion the checker inserted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coercion {
    /// Int → Float.
    IntToFloat,
    /// Int/Float → Tensor (broadcast constant).
    ToTensor,
    /// Int/Float → Schedule (a constant schedule).
    ToSchedule,
    /// A stage result → its `data` (Dataset) or `model` (Model) field.
    StageField(&'static str),
}

#[derive(Clone, Debug)]
pub enum TKind {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Local(LocalId),
    /// A top-level `model`/`data`/`stage`/`eval`/`let`, a `rounds` block, or a stage inside one.
    Global(String),
    /// `r.input` of a rounds block `r`: the model the current round starts from.
    RoundInput(String),
    /// A `fn` used as a value.
    FnRef(FnId),
    /// A builtin used as a value (`judge = exact`): only scalar builtins.
    ExternRef(String),
    Enum(&'static str, String),
    Field(Box<TExpr>, String),
    /// A call of a `fn`: one entry per parameter; `None` takes the parameter's default.
    CallFn(FnId, Vec<Option<TExpr>>),
    /// A call of an `extern fn`: per parameter, its name, the local the later defaults see it
    /// as, and its value (given, or the default checked at this call).
    CallExtern(String, Vec<(String, LocalId, TExpr)>),
    /// A call of a function value (a lambda parameter, a schedule argument).
    CallValue(Box<TExpr>, Vec<TExpr>),
    Unary(UnOp, Box<TExpr>),
    Binary(BinOp, Box<TExpr>, Box<TExpr>),
    If(Box<TExpr>, Box<TExpr>, Box<TExpr>),
    Lambda(Rc<Lambda>),
    List(Vec<TExpr>),
    Record(Vec<(String, TExpr)>),
    Range(Box<TExpr>, Box<TExpr>, bool),
    Block(Vec<(LocalId, TExpr)>, Box<TExpr>),
    Coerce(Coercion, Box<TExpr>),
    /// Already reported.
    Error,
}

#[derive(Clone, Debug)]
pub struct Lambda {
    pub params: Vec<(String, LocalId, Ty)>,
    pub body: TExpr,
}

impl TExpr {
    pub fn new(kind: TKind, ty: Ty, span: Span, file: FileId) -> TExpr {
        TExpr { kind, ty, span, file }
    }

    pub fn error(span: Span, file: FileId) -> TExpr {
        TExpr { kind: TKind::Error, ty: Ty::Error, span, file }
    }

    /// Where a Tensor-typed expression got its tensor-ness: the first leaf that is a Tensor
    /// (a batch field, a tensor builtin's result), for the secondary label of
    /// `tensor_in_scalar`.
    pub fn tensor_origin(&self) -> Span {
        let children: Vec<&TExpr> = match &self.kind {
            TKind::Unary(_, a) => vec![a],
            TKind::Binary(_, a, b) => vec![a, b],
            TKind::If(_, a, b) => vec![a, b],
            TKind::Block(_, e) => vec![e],
            TKind::Coerce(_, e) => vec![e],
            _ => vec![],
        };
        children.into_iter().find(|c| c.ty == Ty::Tensor).map_or(self.span, |c| c.tensor_origin())
    }
}
