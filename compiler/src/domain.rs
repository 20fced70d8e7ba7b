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

/// The shared settings of the training stage kinds.
const TRAINING: &[(&str, Domain)] = &[
    ("steps", at_least(1)),
    ("batch", at_least(1)),
    ("accumulate", at_least(1)),
    ("log_every", at_least(1)),
    ("max_grad_norm", POSITIVE),
    ("adam_beta1", DECAY),
    ("adam_beta2", DECAY),
    ("adam_epsilon", POSITIVE),
];

/// Per builtin (or prelude function), the domains of its numeric arguments beyond `TRAINING`.
const DOMAINS: &[(&str, &[(&str, Domain)])] = &[
    ("tiny_lm", &[("layers", at_least(1)), ("d_model", at_least(1)), ("heads", at_least(1)), ("context", at_least(2))]),
    ("grpo", &[("group", at_least(2)), ("max_tokens", at_least(1)), ("temperature", POSITIVE)]),
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
    ("all_pairs", &[("max_per_prompt", at_least(1))]),
    ("buckets", &[("count", at_least(1))]),
    ("pacing", &[("until", FRACTION)]),
    ("band_pass", &[("low", UNIT), ("high", UNIT)]),
    ("variance_filter", &[("kappa", NON_NEGATIVE), ("replay", UNIT)]),
    ("replay", &[("fraction", UNIT), ("capacity", at_least(1))]),
    ("boltzmann", &[("tau", POSITIVE)]),
    ("ucb", &[("c", NON_NEGATIVE)]),
    // Prelude losses: every `beta` is positive; the other parameters where the loss is defined.
    ("robust", &[("eps", NOISE)]),
    ("exo", &[("eps", NOISE)]),
    ("discopop", &[("tau", POSITIVE)]),
    ("ld_dpo", &[("alpha", UNIT)]),
    // Policy-gradient losses: `beta` (the KL weight) may be 0, TRL's default.
    ("grpo_loss", CLIPPED),
    ("bnpo", CLIPPED),
    ("dr_grpo", CLIPPED),
    ("dapo", CLIPPED),
    ("luspo", CLIPPED),
    ("cispo", &[("beta", NON_NEGATIVE), ("eps_high", NON_NEGATIVE)]),
    ("sapo", &[("beta", NON_NEGATIVE), ("temperature_pos", POSITIVE), ("temperature_neg", POSITIVE)]),
    ("vespo", &[("beta", NON_NEGATIVE)]),
];

/// The parameters of the clipped policy-gradient losses (`grpo_loss`, `dapo`, ...).
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
    let training = ["sft", "pretrain", "preference", "grpo"].contains(&callee);
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
        assert_eq!(of("grpo_loss", "eps_low", true).map(|d| d.describe()), Some("in [0, 1)".into()));
        assert!(of("sft", "lr", false).is_none());
    }
}
