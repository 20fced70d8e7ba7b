//! The syntax tree: what `parse` produces and `fmt`, `check` and `plan` consume.
//!
//! Invariants: every node carries the byte span of its source text; names are not yet resolved
//! (a `Name` may denote a local, a declaration or a builtin); the tree holds no types. Comments are
//! kept beside the tree, in source order, so the formatter can put them back.

use std::fmt;

/// A half-open byte range `[start, end)` into one source file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span { start: start as u32, end: end as u32 }
    }

    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span { start: self.start.min(other.start), end: self.end.max(other.end) }
    }

    pub fn len(self) -> usize {
        (self.end - self.start) as usize
    }

    pub fn is_empty(self) -> bool {
        self.start == self.end
    }
}

impl From<Span> for miette::SourceSpan {
    fn from(span: Span) -> Self {
        (span.start as usize, span.len()).into()
    }
}

/// A name as written, with where it was written.
#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// One parsed `.recipe` file (or the embedded prelude).
#[derive(Clone, Debug, PartialEq)]
pub struct Module {
    pub items: Vec<Item>,
    /// Every comment in source order, doc comments included.
    pub comments: Vec<Comment>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Comment {
    /// The text after `//` (or `///`), without the line break.
    pub text: String,
    pub doc: bool,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    /// `recipe "name" { seed = 7, ... }`
    Header(Header),
    /// `model policy = tiny_lm(...)`, `data sums = ...`, `stage sft = ...`, `eval acc = ...`,
    /// `let beta = 0.1`: a named top-level binding of the given kind.
    Binding(Binding),
    /// `fn lr(step: Int, total: Int) -> Float = ...`
    Fn(FnDef),
    /// `extern fn sft[R](model: Model, ...) -> Stage`: a native builtin's signature (stdlib only).
    Extern(ExternFn),
    /// `type Pair = {prompt: String, chosen: String, rejected: String}`
    TypeAlias(TypeAlias),
    /// `rounds irpo = 3 from sft.model { stage ... }`: stages repeated, each round starting from
    /// the previous round's model.
    Rounds(Rounds),
    /// `run sft -> pairs -> dpo`
    Run(Run),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Header {
    pub name: String,
    pub name_span: Span,
    pub fields: Vec<Field>,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BindingKind {
    Model,
    Data,
    Stage,
    Eval,
    Let,
}

impl BindingKind {
    pub fn keyword(self) -> &'static str {
        match self {
            BindingKind::Model => "model",
            BindingKind::Data => "data",
            BindingKind::Stage => "stage",
            BindingKind::Eval => "eval",
            BindingKind::Let => "let",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Binding {
    pub kind: BindingKind,
    pub name: Ident,
    /// An optional annotation: `let beta: Float = 0.1`.
    pub ty: Option<TypeExpr>,
    pub value: Expr,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FnDef {
    pub name: Ident,
    pub params: Vec<Param>,
    pub ret: Option<TypeExpr>,
    pub body: Expr,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ExternFn {
    pub name: Ident,
    /// Type parameters: `[R]` in `extern fn buckets[R](by: fn(R) -> Float) -> Curriculum[R]`.
    pub type_params: Vec<Ident>,
    pub params: Vec<Param>,
    pub ret: TypeExpr,
    pub span: Span,
}

/// A parameter of a `fn`, `extern fn` or lambda. `ty` is required except on lambdas;
/// `default` only appears on `fn` and `extern fn` parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    pub name: Ident,
    pub ty: Option<TypeExpr>,
    pub default: Option<Expr>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TypeAlias {
    pub name: Ident,
    pub ty: TypeExpr,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Rounds {
    pub name: Ident,
    pub count: Expr,
    /// The model the first round starts from.
    pub from: Expr,
    pub stages: Vec<Binding>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    /// Stage or rounds names, in execution order.
    pub steps: Vec<Ident>,
    pub span: Span,
}

/// `name = value` in a header or a record literal.
#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    pub name: Ident,
    pub value: Expr,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TypeExpr {
    pub kind: TypeExprKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum TypeExprKind {
    /// `Int`, `Model`, a type parameter `R`, or an alias.
    Named(Ident),
    /// `List[T]`, `Dataset[{...}]`, `Curriculum[R]`.
    Applied(Ident, Vec<TypeExpr>),
    /// `{prompt: String, digits: Int}`
    Record(Vec<(Ident, TypeExpr)>),
    /// `fn(Int, Int) -> Float`
    Fn(Vec<TypeExpr>, Box<TypeExpr>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    /// A local, a declaration, a stdlib function or namespace (`synth`), or an enum constant
    /// (`easy_first`).
    Name(Ident),
    /// `a.b`: a record field, a stage result's field (`sft.model`) or a namespaced builtin
    /// (`synth.addition`).
    Field(Box<Expr>, Ident),
    Call(Box<Expr>, Vec<Arg>),
    Unary(UnOp, Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// `if c { a } else { b }`; `else if` chains nest in `otherwise`.
    If {
        cond: Box<Expr>,
        then: Box<Expr>,
        otherwise: Box<Expr>,
    },
    /// `|r| r.completion == r.answer`, `|step: Int, total: Int| ...`
    Lambda(Vec<Param>, Box<Expr>),
    List(Vec<Expr>),
    Record(Vec<Field>),
    /// `1..=3` (inclusive) or `0..10` (exclusive end).
    Range {
        start: Box<Expr>,
        end: Box<Expr>,
        inclusive: bool,
    },
    /// `{ let a = 1; let b = a * 2; a + b }`
    Block(Vec<LetStmt>, Box<Expr>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct LetStmt {
    pub name: Ident,
    pub ty: Option<TypeExpr>,
    pub value: Expr,
    pub span: Span,
}

/// A call argument, positional (`name: None`) or named.
#[derive(Clone, Debug, PartialEq)]
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Expr,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnOp {
    Neg,
    Not,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    /// `/`: always a Float result (true division), as `step / total` reads. Floor division of
    /// Ints is the builtin `div(a, b)`: `//` starts a comment.
    Div,
    Rem,
    Pow,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
            BinOp::Pow => "**",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::And => "&&",
            BinOp::Or => "||",
        }
    }

    /// Binding strength; higher binds tighter. `**` is right-associative, the rest left.
    pub fn precedence(self) -> u8 {
        match self {
            BinOp::Or => 1,
            BinOp::And => 2,
            BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => 3,
            BinOp::Add | BinOp::Sub => 4,
            BinOp::Mul | BinOp::Div | BinOp::Rem => 5,
            BinOp::Pow => 7,
        }
    }
}
