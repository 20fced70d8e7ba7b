//! Domains of builtin arguments: numbers the types allow but a builtin cannot use (`batch = 0`,
//! `steps = -5`, `until = 0`, `count = 0`, a DPO `beta` of 0) are `recipe check` errors
//! (`recipe::call::out_of_domain`), labelled at the argument, before anything runs.
//!
//! It runs on the evaluated [`Program`], where every argument is a value (a `let`, an
//! arithmetic expression or a `--set` override has been computed), and is told where each
//! argument was written by [`Decl::arg_origins`]. A value the recipe did not write where it
//! is used (a curriculum bound by `let` and passed by name) is reported where it was written
//! (the `let`), once.
//!
//! Invariant: the table holds only what is true of the builtin whatever the data and models —
//! rules that need them (more buckets than rows, a row longer than the context) stay with the
//! runtime, which reports them at the same argument before any compute. Schedules (functions
//! of the step) are checked by the runtime over the stage's steps; only constants are checked
//! here.

use crate::diag::Diagnostic;
use crate::program::{Decl, Program, Value};

/// What an argument's value must satisfy.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Domain {
    /// An Int at least this.
    AtLeast(i64),
    /// A number greater than 0.
    Positive,
    /// A number not below 0.
    NonNegative,
    /// A number in (0, 1].
    UnitOpenClosed,
    /// A number in [0, 1].
    Unit,
    /// A number in [0, 1).
    UnitClosedOpen,
}

impl Domain {
    fn holds(self, v: f64) -> bool {
        match self {
            Domain::AtLeast(n) => v >= n as f64,
            Domain::Positive => v > 0.0,
            Domain::NonNegative => v >= 0.0,
            Domain::UnitOpenClosed => v > 0.0 && v <= 1.0,
            Domain::Unit => (0.0..=1.0).contains(&v),
            Domain::UnitClosedOpen => (0.0..1.0).contains(&v),
        }
    }

    /// `must be at least 1`, `must be in (0, 1]`.
    fn rule(self) -> String {
        match self {
            Domain::AtLeast(n) => format!("must be at least {n}"),
            Domain::Positive => "must be positive".into(),
            Domain::NonNegative => "must not be negative".into(),
            Domain::UnitOpenClosed => "must be in (0, 1]".into(),
            Domain::Unit => "must be in [0, 1]".into(),
            Domain::UnitClosedOpen => "must be in [0, 1)".into(),
        }
    }
}

/// The training stage builtins: they share the loop's settings.
const TRAINING_STAGES: &[&str] = &["sft", "pretrain", "preference", "grpo"];

/// The settings every training stage takes, and their domains (`max_grad_norm <= 0` turns
/// clipping off, so it has none; `lr` and `weight_decay` are checked when constant).
const TRAINING_SETTINGS: &[(&str, Domain)] = &[
    ("steps", Domain::AtLeast(1)),
    ("batch", Domain::AtLeast(1)),
    ("accumulate", Domain::AtLeast(1)),
    ("log_every", Domain::AtLeast(1)),
    ("lr", Domain::NonNegative),
    ("weight_decay", Domain::NonNegative),
    ("adam_beta1", Domain::UnitClosedOpen),
    ("adam_beta2", Domain::UnitClosedOpen),
    ("adam_epsilon", Domain::Positive),
];

/// Per builtin (as programs spell it), its arguments' domains beyond [`TRAINING_SETTINGS`].
const DOMAINS: &[(&str, &[(&str, Domain)])] = &[
    (
        "tiny_lm",
        &[
            ("layers", Domain::AtLeast(1)),
            ("d_model", Domain::AtLeast(1)),
            ("heads", Domain::AtLeast(1)),
            ("kv_heads", Domain::AtLeast(0)),
            ("context", Domain::AtLeast(1)),
            ("ffn", Domain::AtLeast(0)),
        ],
    ),
    ("synth.addition", &[("count", Domain::AtLeast(1))]),
    ("synth.multiplication", &[("count", Domain::AtLeast(1))]),
    ("synth.reverse", &[("count", Domain::AtLeast(1))]),
    ("synth.chain", &[("count", Domain::AtLeast(1))]),
    ("synth.rated_responses", &[("count", Domain::AtLeast(1)), ("responses", Domain::AtLeast(2))]),
    ("all_pairs", &[("max_per_prompt", Domain::AtLeast(1))]),
    ("split", &[("fraction", Domain::Unit)]),
    ("take", &[("count", Domain::AtLeast(0))]),
    (
        "grpo",
        &[
            ("group", Domain::AtLeast(2)),
            ("max_tokens", Domain::AtLeast(1)),
            ("temperature", Domain::NonNegative),
            ("eps_low", Domain::NonNegative),
            ("eps_high", Domain::NonNegative),
            ("beta_kl", Domain::NonNegative),
        ],
    ),
    (
        "self_pairs",
        &[("samples", Domain::AtLeast(1)), ("max_tokens", Domain::AtLeast(1)), ("temperature", Domain::NonNegative)],
    ),
    ("contrast_pairs", &[("max_tokens", Domain::AtLeast(1))]),
    ("score", &[("keep", Domain::UnitOpenClosed)]),
    ("accuracy", &[("every", Domain::AtLeast(0)), ("max_tokens", Domain::AtLeast(1))]),
    ("pair_accuracy", &[("every", Domain::AtLeast(0))]),
    ("loss_on", &[("every", Domain::AtLeast(0))]),
    ("buckets", &[("count", Domain::AtLeast(1))]),
    ("pacing", &[("until", Domain::UnitOpenClosed)]),
    ("band_pass", &[("low", Domain::Unit), ("high", Domain::Unit)]),
    ("variance_filter", &[("kappa", Domain::NonNegative), ("replay", Domain::Unit)]),
    ("replay", &[("fraction", Domain::Unit), ("capacity", Domain::AtLeast(1))]),
    ("bandit", &[("alpha", Domain::Unit)]),
    ("boltzmann", &[("tau", Domain::Positive)]),
    ("ucb", &[("c", Domain::NonNegative)]),
    ("pass_rate", &[("samples", Domain::AtLeast(1))]),
    ("group_variance", &[("samples", Domain::AtLeast(2))]),
];

/// The domain of argument `arg` of builtin `name`, if it has one.
fn domain(name: &str, arg: &str) -> Option<Domain> {
    let settings = TRAINING_STAGES.contains(&name).then_some(TRAINING_SETTINGS).into_iter();
    let own = DOMAINS.iter().filter(|(n, _)| *n == name).map(|(_, d)| *d);
    settings.chain(own).flatten().find(|(a, _)| *a == arg).map(|(_, d)| *d)
}

/// One argument outside its domain.
struct Violation<'p> {
    decl: &'p str,
    /// The argument's dotted path in the declaration (`curriculum.count`).
    path: String,
    message: String,
    rule: String,
    /// Whether the declaration wrote the argument itself (else it is located at the nearest
    /// enclosing argument it wrote).
    written: bool,
}

/// Every argument of `program` outside its builtin's domain, as diagnostics at the argument.
pub fn check(program: &Program) -> Vec<Diagnostic> {
    let decls = program.decls.iter().chain(program.rounds.iter().flat_map(|r| &r.stages));
    let mut found = Vec::new();
    for decl in decls {
        walk(decl, &decl.value, "", &mut found);
    }
    let mut diagnostics = Vec::new();
    let mut reported: Vec<&str> = Vec::new();
    // Where the recipe wrote the value first; elsewhere only when it was written nowhere.
    for pass in [true, false] {
        for v in found.iter().filter(|v| v.written == pass) {
            if !pass && reported.contains(&v.message.as_str()) {
                continue;
            }
            reported.push(&v.message);
            let d = Diagnostic::error("recipe::call::out_of_domain", v.message.clone())
                .with_help("the argument's type allows the value, but the builtin cannot use it");
            diagnostics.push(program.locate(d, v.decl, Some(&v.path), &v.rule));
        }
    }
    diagnostics
}

fn walk<'p>(decl: &'p Decl, value: &'p Value, path: &str, found: &mut Vec<Violation<'p>>) {
    let Value::Call { name, args } = value else {
        if let Value::List(items) = value {
            items.iter().for_each(|v| walk(decl, v, path, found));
        }
        return;
    };
    for (arg, v) in args {
        let at = if path.is_empty() { arg.clone() } else { format!("{path}.{arg}") };
        let written = decl.arg_origins.iter().any(|(p, _)| *p == at);
        let mut report = |message: String, rule: String| {
            found.push(Violation { decl: &decl.name, path: at.clone(), message, rule, written })
        };
        match (domain(name, arg), v.as_f64()) {
            (Some(d), Some(x)) if !d.holds(x) => {
                report(format!("`{name}`: `{arg}` {}, found {}", d.rule(), number(v)), d.rule());
            }
            _ => {}
        }
        if let Value::Loss(terms) = v {
            for term in terms {
                if let Some(beta) = term.beta.as_ref().and_then(Value::as_f64).filter(|b| !Domain::Positive.holds(*b)) {
                    let message = format!("`{}`: `beta` must be positive, found {beta}", term.name);
                    report(message, "a loss term's `beta` must be positive".into());
                }
            }
        }
        walk(decl, v, &at, found);
    }
}

/// A number as the recipe would write it (`0`, `-5`, `1.5`).
fn number(v: &Value) -> String {
    match v {
        Value::Int(i) => i.to_string(),
        Value::Float(f) => format!("{f:?}"),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::Source;

    fn codes(recipe: &str) -> Vec<String> {
        match crate::compile(&Source::new("t.recipe", recipe), &[]) {
            Ok(_) => Vec::new(),
            Err(diags) => diags.iter().map(|d| format!("{}: {}", d.code, d.message)).collect(),
        }
    }

    #[test]
    fn the_table_names_real_parameters() {
        let source = crate::diag::Source::new("<builtins>", recipe_stdlib::BUILTINS);
        let module = crate::parse(&source).expect("the stdlib parses");
        let params = |name: &str| -> Vec<String> {
            module
                .items
                .iter()
                .filter_map(|i| match i {
                    crate::ast::Item::Extern(f) if crate::check::display_name(&f.name.name) == name => {
                        Some(f.params.iter().map(|p| p.name.name.clone()).collect::<Vec<_>>())
                    }
                    _ => None,
                })
                .next()
                .unwrap_or_else(|| panic!("no builtin `{name}`"))
        };
        for stage in TRAINING_STAGES {
            for (arg, _) in TRAINING_SETTINGS {
                assert!(params(stage).iter().any(|p| p == arg), "`{stage}` has no `{arg}`");
            }
        }
        for (name, args) in DOMAINS {
            for (arg, _) in *args {
                assert!(params(name).iter().any(|p| p == arg), "`{name}` has no `{arg}`");
            }
        }
    }

    #[test]
    fn values_outside_their_domain_are_errors_once_where_written() {
        let base = "recipe \"t\" { seed = 1 }\nmodel m = tiny_lm()\ndata d = synth.addition()\n";
        let with = |rest: &str| codes(&format!("{base}{rest}\nrun s\n"));
        assert!(with("stage s = sft(m, d)").is_empty());
        assert_eq!(
            with("stage s = sft(m, d, batch = 0, steps = -5)"),
            [
                "recipe::call::out_of_domain: `sft`: `steps` must be at least 1, found -5",
                "recipe::call::out_of_domain: `sft`: `batch` must be at least 1, found 0",
            ]
        );
        assert_eq!(
            with("let n = 0\nstage s = sft(m, d, curriculum = buckets(by = |r| float(r.digits), count = n))"),
            ["recipe::call::out_of_domain: `buckets`: `count` must be at least 1, found 0"]
        );
        // A curriculum bound by `let` is reported at the `let`, once.
        assert_eq!(
            with("let c: Curriculum[Arith] = pacing(by = |r| float(r.digits), until = 1.5)\nstage s = sft(m, d, curriculum = c)"),
            ["recipe::call::out_of_domain: `pacing`: `until` must be in (0, 1], found 1.5"]
        );
        assert!(with("stage s = sft(m, d, curriculum = pacing(by = |r| float(r.digits), until = 1.0))").is_empty());
        assert_eq!(with("stage s = sft(m, d, lr = -1e-3)").len(), 1);
        assert!(with("stage s = sft(m, d, lr = interpolate(1e-3, 0.0), max_grad_norm = 0.0)").is_empty());
    }
}
