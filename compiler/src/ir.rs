//! The scalar IR: what `lower` produces from checked scalar code (schedules, difficulty measures,
//! filters, rewards, pacing and scheduler updates) and what the interpreter (`interp`, the
//! reference semantics) and the Cranelift JIT (`jit`) consume.
//!
//! Invariants (checked by [`Module::validate`], which catches lowering bugs, not user errors):
//! - every node carries its [`Ty`]; operators are typed (`IAdd` vs `FAdd`), nothing is overloaded
//!   and nothing converts implicitly — `Int → Float` is an explicit [`Builtin::Float`] call;
//! - a function body refers only to its own parameters (`Param(i)`) and to locals bound by an
//!   enclosing `Let`; there are no user calls and no recursion (the lowering inlines user fns);
//! - record parameters are flattened by the lowering: a row function takes one parameter per used
//!   field, named like the field (`digits`, `prompt`), which is how batch evaluation finds columns;
//! - string constants and regex patterns live in the [`Module`]'s tables and are referred to by id.
//!
//! The meaning of every operation (wrapping Int arithmetic, total division, NaN rules) is written
//! down once in `docs/scalar-semantics.md`; the `build` helpers are the easy way to target the IR
//! from surface operators and builtin names, with the language's numeric promotion applied.

mod build;
mod display;
mod validate;

pub use build::{binary, unary, BUILTIN_NAMES};
pub use validate::IrError;

/// A scalar type. `Str` values are immutable UTF-8 strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ty {
    /// 64-bit two's-complement integer; arithmetic wraps.
    Int,
    /// IEEE-754 binary64.
    Float,
    Bool,
    Str,
}

impl Ty {
    /// The name the language uses for this type.
    pub fn name(self) -> &'static str {
        match self {
            Ty::Int => "Int",
            Ty::Float => "Float",
            Ty::Bool => "Bool",
            Ty::Str => "String",
        }
    }
}

/// Index of a string constant in [`Module::strings`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StrId(pub u32);

/// Index of a regex in [`Module::regexes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegexId(pub u32);

/// Index of a function in [`Module::functions`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FuncId(pub u32);

/// A compilation unit: every scalar function of a recipe, compiled together, plus the constant
/// tables they share.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Module {
    pub functions: Vec<Function>,
    /// Regex patterns (`regex` crate syntax), each compiled once per backend.
    pub regexes: Vec<String>,
    /// String constants.
    pub strings: Vec<String>,
}

/// One scalar function: `fn(step: Int, total: Int) -> Float`, or a row function over flattened
/// record fields.
#[derive(Clone, Debug, PartialEq)]
pub struct Function {
    /// Unique within its module; the name batch evaluation and the runtime look it up by.
    pub name: String,
    pub params: Vec<Param>,
    pub ret: Ty,
    pub body: Expr,
}

/// A function parameter. For row functions the name is the record field (= column) name.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    pub name: String,
    pub ty: Ty,
}

/// A typed expression node.
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub ty: Ty,
    pub kind: ExprKind,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    Const(Const),
    /// The function's parameter at this index.
    Param(u32),
    /// A local bound by an enclosing `Let`.
    Local(u32),
    /// `let local = value; body`. Local ids are unique within a function (the lowering numbers
    /// them 0, 1, 2, …); shadowing in the source becomes a fresh id.
    Let {
        local: u32,
        value: Box<Expr>,
        body: Box<Expr>,
    },
    Unary(UnOp, Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// Evaluates exactly one branch.
    If {
        cond: Box<Expr>,
        then: Box<Expr>,
        otherwise: Box<Expr>,
    },
    Call(Builtin, Vec<Expr>),
}

/// A constant. Float constants compare by bits, so `-0.0` and NaN constants survive round trips.
#[derive(Clone, Copy, Debug)]
pub enum Const {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(StrId),
}

impl PartialEq for Const {
    fn eq(&self, other: &Const) -> bool {
        match (self, other) {
            (Const::Int(a), Const::Int(b)) => a == b,
            (Const::Float(a), Const::Float(b)) => a.to_bits() == b.to_bits(),
            (Const::Bool(a), Const::Bool(b)) => a == b,
            (Const::Str(a), Const::Str(b)) => a == b,
            _ => false,
        }
    }
}

impl Const {
    pub fn ty(self) -> Ty {
        match self {
            Const::Int(_) => Ty::Int,
            Const::Float(_) => Ty::Float,
            Const::Bool(_) => Ty::Bool,
            Const::Str(_) => Ty::Str,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnOp {
    /// Int negation, wrapping (`-i64::MIN == i64::MIN`).
    INeg,
    /// Float negation: flips the sign bit (also of NaN and 0).
    FNeg,
    /// Bool negation.
    Not,
}

/// Comparison kinds, shared by Int and Float comparisons.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Cmp {
    pub fn symbol(self) -> &'static str {
        match self {
            Cmp::Eq => "==",
            Cmp::Ne => "!=",
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinOp {
    /// Int `+ - *`, wrapping.
    IAdd,
    ISub,
    IMul,
    /// Int floor division (the builtin `div`); `div(a, 0) == 0`, `div(i64::MIN, -1) == i64::MIN`.
    IDiv,
    /// Int remainder with the sign of the divisor (Python's `%`); `a % 0 == 0`.
    IRem,
    FAdd,
    FSub,
    FMul,
    FDiv,
    /// Float remainder with the sign of the divisor (Python's `%`).
    FRem,
    /// Int comparison: (Int, Int) → Bool.
    ICmp(Cmp),
    /// Float comparison: (Float, Float) → Bool; false when either side is NaN, except `!=`.
    FCmp(Cmp),
    /// Bool equality.
    BEq,
    BNe,
    /// Short-circuit: the right side is evaluated only when needed.
    And,
    Or,
}

impl BinOp {
    /// (operand type, result type).
    pub fn signature(self) -> (Ty, Ty) {
        use BinOp::*;
        match self {
            IAdd | ISub | IMul | IDiv | IRem => (Ty::Int, Ty::Int),
            FAdd | FSub | FMul | FDiv | FRem => (Ty::Float, Ty::Float),
            ICmp(_) => (Ty::Int, Ty::Bool),
            FCmp(_) => (Ty::Float, Ty::Bool),
            BEq | BNe | And | Or => (Ty::Bool, Ty::Bool),
        }
    }
}

/// The native builtins. Numeric ones come in typed variants; [`Module::call`] picks the variant
/// from the argument types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Builtin {
    AbsInt,
    AbsFloat,
    MinInt,
    MinFloat,
    MaxInt,
    MaxFloat,
    /// `clamp(x, lo, hi) = min(max(x, lo), hi)`: `hi` wins when `lo > hi`.
    ClampInt,
    ClampFloat,
    Floor,
    Ceil,
    /// Half away from zero.
    Round,
    Sqrt,
    Exp,
    Log,
    Log1p,
    Tanh,
    /// Cosine and sine of radians.
    Cos,
    Sin,
    Sigmoid,
    Pow,
    IsNan,
    /// Int → Float, round to nearest.
    Float,
    /// Float → Int, truncating and saturating; NaN → 0.
    Int,
    /// Number of Unicode scalar values.
    Len,
    /// Number of bytes of the UTF-8 encoding.
    Bytes,
    StrEq,
    Contains,
    StartsWith,
    EndsWith,
    /// Strips Unicode white space at both ends.
    Trim,
    /// Unicode lower / upper case.
    Lower,
    Upper,
    /// `parse_int(s, default)`: `s` trimmed, optional sign, decimal digits; `default` otherwise.
    ParseInt,
    /// `parse_float(s, default)`: `s` trimmed, Rust `f64::from_str` syntax; `default` otherwise.
    ParseFloat,
    /// `matches(s, pattern)`: does the constant regex match anywhere in `s`.
    Matches(RegexId),
    /// `capture(s, pattern, group)`: group `group` (0: the whole match) of the constant regex's
    /// first match in `s`; `""` without a match or when the group took no part.
    Capture(RegexId),
    /// `replace(s, from, to)`: every non-overlapping literal occurrence of `from`, left to right.
    Replace,
    /// `split_part(s, sep, n)`: part `n` (0-based, negative from the end) of `s` split on `sep`.
    SplitPart,
    /// `before(s, sep)`, `after(s, sep)`: around the first occurrence of `sep`;
    /// `after_last(s, sep)`: after the last one.
    Before,
    After,
    AfterLast,
    /// `first_number(s)`, `last_number(s)`: a number written in `s` (thousands separators,
    /// decimals, `$`), NaN when there is none.
    FirstNumber,
    LastNumber,
    /// `str(x)`: shortest text that reads back as `x`, without a trailing `.0`.
    Str,
    /// `str_int(i)`: decimal text of an Int.
    StrInt,
    /// `a + b` on Strings (called `concat` in IR text: the language writes it `+`).
    Concat,
    /// `format(template, a)`: the first `{}` of `template` replaced by `a`.
    Format,
    /// One turn of a conversation (`Messages`, canonical JSON text: `crate::messages::turn`)
    /// with the role `system`, `user` or `assistant` and the argument as content.
    System,
    User,
    Assistant,
    /// Two conversations' turns, one after the other (`crate::messages::concat`).
    Turns,
}

impl Builtin {
    /// The name the language calls it by.
    pub fn name(self) -> &'static str {
        use Builtin::*;
        match self {
            AbsInt | AbsFloat => "abs",
            MinInt | MinFloat => "min",
            MaxInt | MaxFloat => "max",
            ClampInt | ClampFloat => "clamp",
            Floor => "floor",
            Ceil => "ceil",
            Round => "round",
            Sqrt => "sqrt",
            Exp => "exp",
            Log => "log",
            Log1p => "log1p",
            Tanh => "tanh",
            Cos => "cos",
            Sin => "sin",
            Sigmoid => "sigmoid",
            Pow => "pow",
            IsNan => "is_nan",
            Float => "float",
            Int => "int",
            Len => "len",
            Bytes => "bytes",
            StrEq => "str_eq",
            Contains => "contains",
            StartsWith => "starts_with",
            EndsWith => "ends_with",
            Trim => "trim",
            Lower => "lower",
            Upper => "upper",
            ParseInt => "parse_int",
            ParseFloat => "parse_float",
            Matches(_) => "matches",
            Capture(_) => "capture",
            Replace => "replace",
            SplitPart => "split_part",
            Before => "before",
            After => "after",
            AfterLast => "after_last",
            FirstNumber => "first_number",
            LastNumber => "last_number",
            Str => "str",
            StrInt => "str_int",
            Concat => "concat",
            Format => "format",
            System => "system",
            User => "user",
            Assistant => "assistant",
            Turns => "turns",
        }
    }

    /// The constant regex a builtin reads (`matches`, `capture`).
    pub fn regex(self) -> Option<RegexId> {
        match self {
            Builtin::Matches(re) | Builtin::Capture(re) => Some(re),
            _ => None,
        }
    }

    /// Parameter types and result type. `Matches` and `Capture` do not take their pattern: it is
    /// the `RegexId` inside them.
    pub fn signature(self) -> (&'static [Ty], Ty) {
        use Builtin::*;
        use Ty::{Bool as B, Float as F, Int as I, Str as S};
        match self {
            AbsInt => (&[I], I),
            MinInt | MaxInt => (&[I, I], I),
            ClampInt => (&[I, I, I], I),
            AbsFloat | Floor | Ceil | Round | Sqrt | Exp | Log | Log1p | Tanh | Cos | Sin | Sigmoid => (&[F], F),
            MinFloat | MaxFloat | Pow => (&[F, F], F),
            ClampFloat => (&[F, F, F], F),
            IsNan => (&[F], B),
            Float => (&[I], F),
            Int => (&[F], I),
            Len | Bytes => (&[S], I),
            StrEq | Contains | StartsWith | EndsWith => (&[S, S], B),
            Trim | Lower | Upper => (&[S], S),
            ParseInt => (&[S, I], I),
            ParseFloat => (&[S, F], F),
            Matches(_) => (&[S], B),
            Capture(_) => (&[S, I], S),
            Replace => (&[S, S, S], S),
            SplitPart => (&[S, S, I], S),
            Before | After | AfterLast | Concat | Format => (&[S, S], S),
            FirstNumber | LastNumber => (&[S], F),
            Str => (&[F], S),
            StrInt => (&[I], S),
            System | User | Assistant => (&[S], S),
            Turns => (&[S, S], S),
        }
    }
}

impl Expr {
    pub fn int(v: i64) -> Expr {
        Expr { ty: Ty::Int, kind: ExprKind::Const(Const::Int(v)) }
    }

    pub fn float(v: f64) -> Expr {
        Expr { ty: Ty::Float, kind: ExprKind::Const(Const::Float(v)) }
    }

    pub fn bool(v: bool) -> Expr {
        Expr { ty: Ty::Bool, kind: ExprKind::Const(Const::Bool(v)) }
    }

    /// A string constant already in the module's table (see [`Module::string`]).
    pub fn str(id: StrId) -> Expr {
        Expr { ty: Ty::Str, kind: ExprKind::Const(Const::Str(id)) }
    }

    pub fn param(index: u32, ty: Ty) -> Expr {
        Expr { ty, kind: ExprKind::Param(index) }
    }

    pub fn local(index: u32, ty: Ty) -> Expr {
        Expr { ty, kind: ExprKind::Local(index) }
    }

    /// `let local = value; body`; the node has the body's type.
    pub fn let_(local: u32, value: Expr, body: Expr) -> Expr {
        Expr { ty: body.ty, kind: ExprKind::Let { local, value: Box::new(value), body: Box::new(body) } }
    }

    /// A typed unary operation; the result has the operand's type.
    pub fn unary(op: UnOp, operand: Expr) -> Expr {
        let ty = match op {
            UnOp::INeg => Ty::Int,
            UnOp::FNeg => Ty::Float,
            UnOp::Not => Ty::Bool,
        };
        Expr { ty, kind: ExprKind::Unary(op, Box::new(operand)) }
    }

    /// A typed binary operation; the result type follows from `op` (checked by `validate`).
    pub fn binary(op: BinOp, lhs: Expr, rhs: Expr) -> Expr {
        Expr { ty: op.signature().1, kind: ExprKind::Binary(op, Box::new(lhs), Box::new(rhs)) }
    }

    /// `if cond { then } else { otherwise }`; the node has the `then` branch's type.
    pub fn if_(cond: Expr, then: Expr, otherwise: Expr) -> Expr {
        Expr {
            ty: then.ty,
            kind: ExprKind::If { cond: Box::new(cond), then: Box::new(then), otherwise: Box::new(otherwise) },
        }
    }

    /// A typed builtin call; the result type follows from the builtin.
    pub fn call(builtin: Builtin, args: Vec<Expr>) -> Expr {
        Expr { ty: builtin.signature().1, kind: ExprKind::Call(builtin, args) }
    }

    /// Int → Float if `self` is an Int; otherwise unchanged. The language's only implicit
    /// promotion, made explicit here.
    pub fn to_float(self) -> Expr {
        if self.ty == Ty::Int {
            Expr::call(Builtin::Float, vec![self])
        } else {
            self
        }
    }
}

impl Module {
    pub fn new() -> Module {
        Module::default()
    }

    /// Interns a string constant and returns its id.
    pub fn string(&mut self, text: &str) -> StrId {
        if let Some(i) = self.strings.iter().position(|s| s == text) {
            return StrId(i as u32);
        }
        self.strings.push(text.to_owned());
        StrId(self.strings.len() as u32 - 1)
    }

    /// Interns a regex pattern, checking that it compiles. An invalid pattern is a user error the
    /// caller should report with the pattern's span.
    pub fn regex(&mut self, pattern: &str) -> Result<RegexId, IrError> {
        if let Some(i) = self.regexes.iter().position(|s| s == pattern) {
            return Ok(RegexId(i as u32));
        }
        regex::Regex::new(pattern)
            .map_err(|e| IrError::InvalidRegex { pattern: pattern.to_owned(), message: e.to_string() })?;
        self.regexes.push(pattern.to_owned());
        Ok(RegexId(self.regexes.len() as u32 - 1))
    }

    /// Adds a function; names must be unique (checked by `validate`).
    pub fn push(&mut self, function: Function) -> FuncId {
        self.functions.push(function);
        FuncId(self.functions.len() as u32 - 1)
    }

    /// Finds a function by name.
    pub fn find(&self, name: &str) -> Option<FuncId> {
        self.functions.iter().position(|f| f.name == name).map(|i| FuncId(i as u32))
    }

    pub fn function(&self, id: FuncId) -> &Function {
        &self.functions[id.0 as usize]
    }
}

impl Function {
    /// The number of local slots the body uses (one more than the largest local id).
    pub fn local_count(&self) -> usize {
        fn walk(e: &Expr, max: &mut usize) {
            match &e.kind {
                ExprKind::Let { local, value, body } => {
                    *max = (*max).max(*local as usize + 1);
                    walk(value, max);
                    walk(body, max);
                }
                ExprKind::Const(_) | ExprKind::Param(_) | ExprKind::Local(_) => {}
                ExprKind::Unary(_, a) => walk(a, max),
                ExprKind::Binary(_, a, b) => {
                    walk(a, max);
                    walk(b, max);
                }
                ExprKind::If { cond, then, otherwise } => {
                    walk(cond, max);
                    walk(then, max);
                    walk(otherwise, max);
                }
                ExprKind::Call(_, args) => args.iter().for_each(|a| walk(a, max)),
            }
        }
        let mut max = 0;
        walk(&self.body, &mut max);
        max
    }
}
