//! Types of the recipe language and the operations the checker needs on them: display,
//! substitution of inference variables, and the tables of stdlib-declared opaque and enum types.
//!
//! Invariants: a `Ty` never names a type alias (aliases are expanded when a type expression is
//! resolved); records keep their fields sorted by name, so two records with the same fields are
//! structurally equal; `Ty::Var` only exists while a call is being checked — types stored in the
//! checked program are fully resolved (a variable left over is a `cannot_infer` diagnostic).

use std::fmt;

/// A type. Records are structural with width subtyping (see `check::unify`).
#[derive(Clone, Debug, PartialEq)]
pub enum Ty {
    Int,
    Float,
    Bool,
    String,
    /// A conversation: a list of `{role, content}` turns (TRL's conversational rows). Scalar code
    /// holds it as the canonical JSON text of the list (`crate::messages`), but it is not a
    /// `String`: nothing converts between the two, so string code never reads it by accident.
    Messages,
    /// A batch tensor (one value per sequence of a batch): the world of losses. Never converts
    /// back to a scalar.
    Tensor,
    Range,
    /// Fields sorted by name.
    Record(Vec<(String, Ty)>),
    List(Box<Ty>),
    Fn(Vec<Ty>, Box<Ty>),
    /// A stdlib-declared opaque type, with its arguments: `Model`, `Dataset[R]`, `Reward[R]`,
    /// `Curriculum[R]`, `Stage[{model: Model}]`.
    Opaque(String, Vec<Ty>),
    /// An enum whose constants are listed in `ENUMS` (`Order`: `easy_first`, ...).
    Enum(&'static str),
    /// An inference variable (extern type parameters), resolved through the checker's
    /// substitution.
    Var(u32),
    /// The type of an expression that already produced a diagnostic: accepted everywhere so one
    /// mistake is reported once.
    Error,
}

/// Opaque types declared by the stdlib, with their number of type arguments. Their values are
/// produced only by builtins (`extern fn`), so the language needs nothing but their names.
pub const OPAQUE: &[(&str, usize)] = &[
    ("Model", 0),
    ("Dataset", 1),
    ("Stage", 1),
    ("Reward", 1),
    ("Curriculum", 1),
    ("Eval", 0),
    ("Difficulty", 1),
    ("BanditPolicy", 0),
    ("Judge", 1),
];

/// Enum types and their constants. A constant is resolved by the type expected where it is
/// written (`order = easy_first`, `scale = none`), so constants of different enums and
/// functions may share a name.
pub const ENUMS: &[(&str, &[&str])] = &[
    ("Order", &["easy_first", "hard_first", "shuffled"]),
    ("BucketMode", &["exclusive", "cumulative"]),
    ("Scale", &["group", "batch", "none"]),
    ("OnError", &["skip", "fail"]),
    ("Optimizer", &["keep", "reset"]),
    ("Select", &["top", "bottom", "random"]),
    ("Importance", &["token", "sequence"]),
];

/// Namespaces of builtins: `extern fn synth_addition` is called `synth.addition`.
pub const NAMESPACES: &[&str] = &["synth"];

/// Builtins whose `Float` parameters also accept a `Tensor`; the result is then a `Tensor`
/// (elementwise lifting). They are declared with their scalar signature in builtins.recipe.
pub const ELEMENTWISE: &[&str] = &[
    "log",
    "exp",
    "log_sigmoid",
    "sigmoid",
    "softplus",
    "relu",
    "abs",
    "sqrt",
    "tanh",
    "min",
    "max",
    "clamp",
    "pow",
    "log1p",
];

/// The enum type that has `constant`, if exactly one has it.
pub fn enum_of_constant(constant: &str) -> Option<&'static str> {
    let mut owners = ENUMS.iter().filter(|(_, cs)| cs.contains(&constant)).map(|(e, _)| *e);
    let first = owners.next()?;
    owners.next().is_none().then_some(first)
}

/// The constants of an enum type.
pub fn enum_constants(name: &str) -> &'static [&'static str] {
    ENUMS.iter().find(|(e, _)| *e == name).map_or(&[], |(_, cs)| cs)
}

impl Ty {
    /// `fn(Int, Int) -> Float`: a schedule over (step, total steps).
    pub fn schedule() -> Ty {
        Ty::Fn(vec![Ty::Int, Ty::Int], Box::new(Ty::Float))
    }

    pub fn opaque(name: &str, args: Vec<Ty>) -> Ty {
        Ty::Opaque(name.to_string(), args)
    }

    /// A record type from fields in any order.
    pub fn record(mut fields: Vec<(String, Ty)>) -> Ty {
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        Ty::Record(fields)
    }

    pub fn is_numeric(&self) -> bool {
        matches!(self, Ty::Int | Ty::Float)
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Ty::Error)
    }

    /// Whether this is a function returning a Tensor: a loss or another tensor function.
    pub fn is_tensor_fn(&self) -> bool {
        matches!(self, Ty::Fn(_, ret) if **ret == Ty::Tensor)
    }

    /// The field of a record (or of the record inside a `Stage[...]`).
    pub fn field(&self, name: &str) -> Option<&Ty> {
        match self {
            Ty::Record(fields) => fields.iter().find(|(n, _)| n == name).map(|(_, t)| t),
            Ty::Opaque(stage, args) if stage == "Stage" => args.first()?.field(name),
            _ => None,
        }
    }

    /// The names of a record's (or stage result's) fields, for "did you mean".
    pub fn field_names(&self) -> Vec<&str> {
        match self {
            Ty::Record(fields) => fields.iter().map(|(n, _)| n.as_str()).collect(),
            Ty::Opaque(stage, args) if stage == "Stage" => args.first().map_or_else(Vec::new, |r| r.field_names()),
            _ => Vec::new(),
        }
    }

    /// Whether an inference variable occurs anywhere inside.
    pub fn has_vars(&self) -> bool {
        match self {
            Ty::Var(_) => true,
            Ty::Record(fields) => fields.iter().any(|(_, t)| t.has_vars()),
            Ty::List(t) => t.has_vars(),
            Ty::Fn(ps, r) => ps.iter().any(Ty::has_vars) || r.has_vars(),
            Ty::Opaque(_, args) => args.iter().any(Ty::has_vars),
            _ => false,
        }
    }

    /// Rebuild with `f` applied to every variable.
    pub fn map_vars(&self, f: &mut impl FnMut(u32) -> Ty) -> Ty {
        match self {
            Ty::Var(v) => f(*v),
            Ty::Record(fields) => Ty::Record(fields.iter().map(|(n, t)| (n.clone(), t.map_vars(f))).collect()),
            Ty::List(t) => Ty::List(Box::new(t.map_vars(f))),
            Ty::Fn(ps, r) => Ty::Fn(ps.iter().map(|p| p.map_vars(f)).collect(), Box::new(r.map_vars(f))),
            Ty::Opaque(n, args) => Ty::Opaque(n.clone(), args.iter().map(|a| a.map_vars(f)).collect()),
            other => other.clone(),
        }
    }
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ty::Int => f.write_str("Int"),
            Ty::Float => f.write_str("Float"),
            Ty::Bool => f.write_str("Bool"),
            Ty::String => f.write_str("String"),
            Ty::Messages => f.write_str("Messages"),
            Ty::Tensor => f.write_str("Tensor"),
            Ty::Range => f.write_str("Range"),
            Ty::Record(fields) => {
                f.write_str("{")?;
                for (i, (n, t)) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{n}: {t}")?;
                }
                f.write_str("}")
            }
            Ty::List(t) => write!(f, "List[{t}]"),
            Ty::Fn(ps, r) if **r == Ty::Tensor && ps.len() == 1 && is_pref_batch(&ps[0]) => f.write_str("Loss"),
            Ty::Fn(ps, r) if **r == Ty::Tensor && ps.len() == 1 && is_rollout_batch(&ps[0]) => {
                f.write_str("PolicyLoss")
            }
            Ty::Fn(ps, r) if **r == Ty::Float && ps[..] == [Ty::Int, Ty::Int] => f.write_str("Schedule"),
            Ty::Fn(ps, r) => {
                f.write_str("fn(")?;
                for (i, p) in ps.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{p}")?;
                }
                write!(f, ") -> {r}")
            }
            Ty::Opaque(n, args) if args.is_empty() => f.write_str(n),
            Ty::Opaque(n, args) => {
                write!(f, "{n}[")?;
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{a}")?;
                }
                f.write_str("]")
            }
            Ty::Enum(n) => f.write_str(n),
            Ty::Var(_) => f.write_str("_"),
            Ty::Error => f.write_str("{error}"),
        }
    }
}

/// Whether a type is the preference batch record (so `fn(PrefBatch) -> Tensor` prints as `Loss`).
fn is_pref_batch(ty: &Ty) -> bool {
    ty.field("policy_chosen").is_some() && ty.field("ref_rejected").is_some()
}

/// Whether a type is the rollout batch record (so `fn(RolloutBatch) -> Tensor` prints as
/// `PolicyLoss`).
fn is_rollout_batch(ty: &Ty) -> bool {
    ty.field("old_token_logps").is_some() && ty.field("advantage").is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_sorted_and_display() {
        let r = Ty::record(vec![("b".into(), Ty::Int), ("a".into(), Ty::String)]);
        assert_eq!(r.to_string(), "{a: String, b: Int}");
        assert_eq!(r.field("b"), Some(&Ty::Int));
        assert_eq!(Ty::schedule().to_string(), "Schedule");
    }

    #[test]
    fn enum_constants_resolve_when_unique() {
        assert_eq!(enum_of_constant("easy_first"), Some("Order"));
        assert_eq!(enum_of_constant("nope"), None);
    }
}
