//! The domains of builtins' numeric arguments, checked where a recipe's value is known at
//! compile time, so that `batch = 0`, `steps = -5`, `keep = 1.5`, `dpo(beta = -0.1)` or
//! `dapo(eps_low = 1.5)` are `recipe check` errors at the argument (`recipe::call::domain`),
//! not runtime failures. A value computed at run time (a schedule) is checked by the runtime
//! when it binds the stage.

use crate::program::Value;

/// An interval of the real line, with the words an error uses for it.
#[derive(Clone, Copy, Debug)]
pub struct Domain {
    pub low: f64,
    pub low_open: bool,
    pub high: f64,
    pub high_open: bool,
}

const fn at_least(n: i64) -> Domain {
    Domain { low: n as f64, low_open: false, high: f64::INFINITY, high_open: true }
}
/// (0, ∞).
const POSITIVE: Domain = Domain { low: 0.0, low_open: true, high: f64::INFINITY, high_open: true };
/// [0, ∞).
const NON_NEGATIVE: Domain = at_least(0);
/// (0, 1]: a fraction of something that must keep some of it.
const FRACTION: Domain = Domain { low: 0.0, low_open: true, high: 1.0, high_open: false };
/// [0, 1].
const UNIT: Domain = Domain { low: 0.0, low_open: false, high: 1.0, high_open: false };
/// [0, 1): an Adam moment decay.
const DECAY: Domain = Domain { low: 0.0, low_open: false, high: 1.0, high_open: true };
/// (0, 1/2): label-noise rates, where the robust and EXO losses are defined.
const NOISE: Domain = Domain { low: 0.0, low_open: true, high: 0.5, high_open: true };

impl Domain {
    pub fn contains(&self, x: f64) -> bool {
        let above = if self.low_open { x > self.low } else { x >= self.low };
        let below = if self.high_open { x < self.high } else { x <= self.high };
        above && below
    }

    /// `at least 1`, `in (0, 1]`, `positive`.
    pub fn describe(&self) -> String {
        match (self.low, self.low_open, self.high) {
            (l, false, h) if h == f64::INFINITY => format!("at least {l}"),
            (l, true, h) if l == 0.0 && h == f64::INFINITY => "positive".into(),
            (l, lo, h) => {
                format!("in {}{l}, {h}{}", if lo { "(" } else { "[" }, if self.high_open { ")" } else { "]" })
            }
        }
    }
}

/// The training stage kinds: they share the loop's settings.
const TRAINING_STAGES: &[&str] = &["sft", "pretrain", "preference", "rl"];

/// The shared settings of the training stage kinds.
const TRAINING: &[(&str, Domain)] = &[
    ("steps", at_least(1)),
    ("batch", at_least(1)),
    ("accumulate", at_least(1)),
    ("log_every", at_least(1)),
    // 0 turns clipping off (`docs/language.md`), so only a negative threshold is refused.
    ("max_grad_norm", NON_NEGATIVE),
    ("adam_beta1", DECAY),
    ("adam_beta2", DECAY),
    ("adam_epsilon", POSITIVE),
];

/// Per builtin (or prelude function), the domains of its numeric arguments beyond `TRAINING`.
const DOMAINS: &[(&str, &[(&str, Domain)])] = &[
    (
        "tiny_lm",
        &[
            ("layers", at_least(1)),
            ("d_model", at_least(1)),
            ("heads", at_least(1)),
            ("kv_heads", NON_NEGATIVE),
            ("context", at_least(2)),
            ("ffn", NON_NEGATIVE),
        ],
    ),
    (
        "rl",
        &[
            ("group", at_least(2)),
            ("iterations", at_least(1)),
            ("max_tokens", at_least(1)),
            ("temperature", POSITIVE),
            ("top_p", FRACTION),
        ],
    ),
    ("self_pairs", &[("samples", at_least(2)), ("max_tokens", at_least(1)), ("temperature", POSITIVE)]),
    ("contrast_pairs", &[("max_tokens", at_least(1))]),
    ("score", &[("keep", FRACTION)]),
    ("accuracy", &[("every", NON_NEGATIVE), ("max_tokens", at_least(1))]),
    ("pair_accuracy", &[("every", NON_NEGATIVE)]),
    ("loss_on", &[("every", NON_NEGATIVE)]),
    ("split", &[("fraction", Domain { low: 0.0, low_open: true, high: 1.0, high_open: true })]),
    ("take", &[("count", NON_NEGATIVE)]),
    ("synth.addition", &[("count", at_least(1))]),
    ("synth.multiplication", &[("count", at_least(1))]),
    ("synth.reverse", &[("count", at_least(1))]),
    ("synth.chain", &[("count", at_least(1))]),
    ("synth.rated_responses", &[("count", at_least(1)), ("responses", at_least(2))]),
    ("all_pairs", &[("max_per_prompt", at_least(1))]),
    ("buckets", &[("count", at_least(1))]),
    ("pacing", &[("until", FRACTION)]),
    ("band_pass", &[("low", UNIT), ("high", UNIT), ("max_rounds", NON_NEGATIVE)]),
    ("variance_filter", &[("kappa", NON_NEGATIVE), ("replay", UNIT)]),
    ("replay", &[("fraction", UNIT), ("capacity", at_least(1))]),
    ("bandit", &[("alpha", UNIT)]),
    ("boltzmann", &[("tau", POSITIVE)]),
    ("ucb", &[("c", NON_NEGATIVE)]),
    ("pass_rate", &[("samples", at_least(1)), ("max_tokens", at_least(1))]),
    ("group_variance", &[("samples", at_least(2)), ("max_tokens", at_least(1))]),
    // Prelude losses: every `beta` is positive; the other parameters where the loss is defined.
    ("robust", &[("eps", NOISE)]),
    ("exo", &[("eps", NOISE)]),
    ("discopop", &[("tau", POSITIVE)]),
    ("ld_dpo", &[("alpha", UNIT)]),
    // Policy-gradient losses: `beta` (the KL weight) may be 0, TRL's default.
    ("grpo", CLIPPED),
    ("bnpo", CLIPPED),
    ("dr_grpo", CLIPPED),
    ("dapo", CLIPPED),
    ("luspo", CLIPPED),
    ("cispo", &[("beta", NON_NEGATIVE), ("eps_high", NON_NEGATIVE)]),
    ("sapo", &[("beta", NON_NEGATIVE), ("temperature_pos", POSITIVE), ("temperature_neg", POSITIVE)]),
    ("vespo", &[("beta", NON_NEGATIVE)]),
];

/// The parameters of the clipped policy-gradient losses (`grpo`, `dapo`, ...).
const CLIPPED: &[(&str, Domain)] =
    &[("beta", NON_NEGATIVE), ("eps_low", DECAY), ("eps_high", NON_NEGATIVE), ("ratio_cap", NON_NEGATIVE)];

/// The domain of argument `param` of `callee` (as users write it: `synth.addition`), if it has
/// one: its own table's, else, for a function returning a loss (`is_loss`), a positive `beta`,
/// else the training stages' shared settings.
pub fn of(callee: &str, param: &str, is_loss: bool) -> Option<Domain> {
    let own = DOMAINS.iter().find(|(n, _)| *n == callee).and_then(|(_, ds)| ds.iter().find(|(p, _)| *p == param));
    if let Some((_, d)) = own {
        return Some(*d);
    }
    if is_loss && param == "beta" {
        return Some(POSITIVE);
    }
    let training = TRAINING_STAGES.contains(&callee);
    training.then(|| TRAINING.iter().find(|(p, _)| *p == param)).flatten().map(|(_, d)| *d)
}

/// A constant number's value (an Int or a Float), if `v` is one.
pub fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(x) => Some(*x),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_contain_what_they_say() {
        assert!(at_least(1).contains(1.0) && !at_least(1).contains(0.0));
        assert!(FRACTION.contains(1.0) && !FRACTION.contains(0.0) && !FRACTION.contains(1.5));
        assert!(!POSITIVE.contains(f64::NAN));
        assert_eq!(at_least(1).describe(), "at least 1");
        assert_eq!(POSITIVE.describe(), "positive");
        assert_eq!(FRACTION.describe(), "in (0, 1]");
        assert_eq!(of("sft", "batch", false).map(|d| d.describe()), Some("at least 1".into()));
        assert_eq!(of("dpo", "beta", true).map(|d| d.describe()), Some("positive".into()));
        assert_eq!(of("dapo", "beta", true).map(|d| d.describe()), Some("at least 0".into()));
        assert_eq!(of("grpo", "eps_low", true).map(|d| d.describe()), Some("in [0, 1)".into()));
        assert!(of("sft", "lr", false).is_none());
    }

    fn errors(recipe: &str) -> Vec<String> {
        match crate::compile(&crate::diag::Source::new("t.recipe", recipe), &[]) {
            Ok(_) => Vec::new(),
            Err(diags) => diags.iter().map(|d| format!("{}: {}", d.code, d.message)).collect(),
        }
    }

    #[test]
    fn curricula_and_settings_are_checked_once_at_the_call() {
        let base = "recipe \"t\" { seed = 1 }\nmodel m = tiny_lm()\ndata d = synth.addition()\n";
        let with = |rest: &str| errors(&format!("{base}{rest}\nrun s\n"));
        assert!(with("stage s = sft(m, d)").is_empty());
        assert_eq!(
            with("let n = 0\nstage s = pretrain(m, d, curriculum = buckets(by = |r| float(r.digits), count = n))"),
            ["recipe::call::domain: `count` of `buckets` must be at least 1, not 0"]
        );
        // A curriculum bound by `let` and used twice is reported once.
        assert_eq!(
            with(
                "let c: Curriculum[Arith] = pacing(by = |r| float(r.digits), until = 1.5)\n\
                 stage s = sft(m, d, curriculum = c)\nstage t = sft(s.model, d, curriculum = c)"
            ),
            ["recipe::call::domain: `until` of `pacing` must be in (0, 1], not 1.5"]
        );
        assert!(with("stage s = sft(m, d, curriculum = pacing(by = |r| float(r.digits), until = 1.0))").is_empty());
        assert_eq!(
            with("stage s = rl(m, d, reward = |r| 1.0, curriculum = band_pass(max_rounds = -1))"),
            ["recipe::call::domain: `max_rounds` of `band_pass` must be at least 0, not -1"]
        );
        // A schedule is the runtime's to check; clipping turned off is a setting, not an error.
        assert!(with("stage s = sft(m, d, lr = interpolate(1e-3, 0.0), max_grad_norm = 0.0)").is_empty());
        assert_eq!(with("stage s = sft(m, d, max_grad_norm = -1.0)").len(), 1);
    }

    /// Every name in the tables is a parameter of the builtin or prelude function it is listed
    /// under, so a renamed parameter cannot silently lose its check.
    #[test]
    fn the_tables_name_real_parameters() {
        let mut signatures: Vec<(String, Vec<String>)> = Vec::new();
        for (file, text) in [("<builtins>", recipe_stdlib::BUILTINS), ("<prelude>", recipe_stdlib::PRELUDE)] {
            let module = crate::parse(&crate::diag::Source::new(file, text)).expect("the stdlib parses");
            for item in &module.items {
                let (name, params) = match item {
                    crate::ast::Item::Extern(f) => (&f.name.name, &f.params),
                    crate::ast::Item::Fn(f) => (&f.name.name, &f.params),
                    _ => continue,
                };
                let params = params.iter().map(|p| p.name.name.clone()).collect();
                signatures.push((crate::check::display_name(name), params));
            }
        }
        let params = |name: &str| -> &Vec<String> {
            let found = signatures.iter().find(|(n, _)| n == name);
            &found.unwrap_or_else(|| panic!("no builtin or prelude function `{name}`")).1
        };
        for stage in TRAINING_STAGES {
            for (param, _) in TRAINING {
                assert!(params(stage).contains(&param.to_string()), "`{stage}` has no `{param}`");
            }
        }
        for (name, entries) in DOMAINS {
            for (param, _) in *entries {
                assert!(params(name).contains(&param.to_string()), "`{name}` has no `{param}`");
            }
        }
    }
}
