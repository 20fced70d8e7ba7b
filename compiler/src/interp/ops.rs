//! The meaning of every scalar operation that is more than one machine instruction, as plain Rust
//! functions. The interpreter calls them directly and the JIT calls them through `extern "C"`
//! shims (`jit::natives`), so both backends compute transcendental functions, division, remainder
//! and string operations with the very same code. See `docs/scalar-semantics.md`.

mod text;

pub use text::{
    after, after_last, before, capture, concat, first_number, float_text, format, last_number, replace, split_part,
};

/// The one NaN that leaves a function: quiet, positive, zero payload (`0x7ff8_0000_0000_0000`).
/// NaN payloads and signs inside a computation are unspecified (they differ between instruction
/// sets and compilers); every Float result is canonicalised on the way out, so results agree
/// bit for bit.
pub const CANONICAL_NAN: f64 = f64::from_bits(0x7ff8_0000_0000_0000);

/// Replaces any NaN by [`CANONICAL_NAN`].
#[inline]
pub fn canonical(x: f64) -> f64 {
    if x.is_nan() {
        CANONICAL_NAN
    } else {
        x
    }
}

/// Floor division, total and wrapping: `idiv(a, 0) == 0`, `idiv(i64::MIN, -1) == i64::MIN`.
#[inline]
pub fn idiv(a: i64, b: i64) -> i64 {
    if b == 0 {
        return 0;
    }
    let q = a.wrapping_div(b);
    let r = a.wrapping_rem(b);
    if r != 0 && ((r < 0) != (b < 0)) {
        q - 1
    } else {
        q
    }
}

/// Remainder with the sign of the divisor (Python's `%`), total: `irem(a, 0) == 0`.
/// Always `a == idiv(a, b) * b + irem(a, b)` in wrapping arithmetic.
#[inline]
pub fn irem(a: i64, b: i64) -> i64 {
    if b == 0 {
        return 0;
    }
    let r = a.wrapping_rem(b);
    if r != 0 && ((r < 0) != (b < 0)) {
        r + b
    } else {
        r
    }
}

/// Float remainder with the sign of the divisor (Python's `%`): `x % 0.0` and `inf % y` are NaN;
/// a zero result takes the divisor's sign.
pub fn frem(x: f64, y: f64) -> f64 {
    let r = x % y;
    if r != 0.0 {
        if (y < 0.0) != (r < 0.0) {
            r + y
        } else {
            r
        }
    } else {
        0.0f64.copysign(y)
    }
}

/// Minimum that propagates NaN and orders `-0.0 < +0.0` (IEEE 754-2019 `minimum`).
#[inline]
pub fn fmin(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        CANONICAL_NAN
    } else if a < b {
        a
    } else if b < a {
        b
    } else if a.is_sign_negative() {
        a
    } else {
        b
    }
}

/// Maximum that propagates NaN and orders `-0.0 < +0.0` (IEEE 754-2019 `maximum`).
#[inline]
pub fn fmax(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        CANONICAL_NAN
    } else if a > b {
        a
    } else if b > a {
        b
    } else if a.is_sign_positive() {
        a
    } else {
        b
    }
}

/// `clamp(x, lo, hi) = fmin(fmax(x, lo), hi)`.
#[inline]
pub fn fclamp(x: f64, lo: f64, hi: f64) -> f64 {
    fmin(fmax(x, lo), hi)
}

/// `clamp(x, lo, hi) = min(max(x, lo), hi)`.
#[inline]
pub fn iclamp(x: i64, lo: i64, hi: i64) -> i64 {
    x.max(lo).min(hi)
}

/// Rounds half away from zero.
pub fn round(x: f64) -> f64 {
    x.round()
}

pub fn exp(x: f64) -> f64 {
    x.exp()
}

/// Natural logarithm: `log(0) = -inf`, `log(x < 0) = NaN`.
pub fn log(x: f64) -> f64 {
    x.ln()
}

pub fn log1p(x: f64) -> f64 {
    x.ln_1p()
}

pub fn tanh(x: f64) -> f64 {
    x.tanh()
}

/// Cosine of `x` radians (the platform libm, as every other transcendental here).
pub fn cos(x: f64) -> f64 {
    x.cos()
}

/// Sine of `x` radians.
pub fn sin(x: f64) -> f64 {
    x.sin()
}

/// `1 / (1 + e^-x)`, computed without overflow for large `|x|`.
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// The C library's `pow` (as `f64::powf`): `pow(x, 0) = 1` even for NaN `x`.
pub fn pow(x: f64, y: f64) -> f64 {
    x.powf(y)
}

/// Float → Int: truncates toward zero, saturates at the Int range, NaN → 0.
#[inline]
pub fn to_int(x: f64) -> i64 {
    x as i64
}

/// Number of Unicode scalar values.
pub fn len(s: &str) -> i64 {
    s.chars().count() as i64
}

/// Number of bytes of the UTF-8 encoding: what the embedded byte tokenizer counts as tokens.
pub fn bytes(s: &str) -> i64 {
    s.len() as i64
}

/// Parses a trimmed decimal Int with optional sign; `default` on any failure, overflow included.
pub fn parse_int(s: &str, default: i64) -> i64 {
    s.trim().parse::<i64>().unwrap_or(default)
}

/// Parses a trimmed Float in Rust's `f64::from_str` syntax (`1e3`, `.5`, `inf`, `NaN`); `default`
/// on failure.
pub fn parse_float(s: &str, default: f64) -> f64 {
    s.trim().parse::<f64>().unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_division_is_floored_and_total() {
        assert_eq!((idiv(7, 2), irem(7, 2)), (3, 1));
        assert_eq!((idiv(-7, 2), irem(-7, 2)), (-4, 1));
        assert_eq!((idiv(7, -2), irem(7, -2)), (-4, -1));
        assert_eq!((idiv(-7, -2), irem(-7, -2)), (3, -1));
        assert_eq!((idiv(5, 0), irem(5, 0)), (0, 0));
        assert_eq!((idiv(i64::MIN, -1), irem(i64::MIN, -1)), (i64::MIN, 0));
        for (a, b) in [(i64::MIN, 3), (i64::MAX, -7), (-1, i64::MIN), (13, 13)] {
            assert_eq!(idiv(a, b).wrapping_mul(b).wrapping_add(irem(a, b)), a);
        }
    }

    #[test]
    fn float_remainder_follows_python() {
        assert_eq!(frem(5.5, 2.0), 1.5);
        assert_eq!(frem(-5.5, 2.0), 0.5);
        assert_eq!(frem(5.5, -2.0), -0.5);
        assert_eq!(frem(4.0, -2.0).to_bits(), (-0.0f64).to_bits());
        assert!(frem(1.0, 0.0).is_nan());
        assert_eq!(frem(-1.0, f64::INFINITY), f64::INFINITY);
    }

    #[test]
    fn min_max_propagate_nan_and_order_zeros() {
        assert!(fmin(1.0, f64::NAN).is_nan() && fmax(f64::NAN, 1.0).is_nan());
        assert_eq!(fmin(0.0, -0.0).to_bits(), (-0.0f64).to_bits());
        assert_eq!(fmin(-0.0, 0.0).to_bits(), (-0.0f64).to_bits());
        assert_eq!(fmax(-0.0, 0.0).to_bits(), 0.0f64.to_bits());
        assert_eq!(fclamp(5.0, 0.0, 1.0), 1.0);
        assert_eq!(fclamp(0.5, 1.0, 0.0), 0.0);
        assert_eq!(iclamp(5, 9, 1), 1);
    }

    #[test]
    fn conversions_and_parsing() {
        assert_eq!(to_int(f64::NAN), 0);
        assert_eq!(to_int(1e300), i64::MAX);
        assert_eq!(to_int(-2.7), -2);
        assert_eq!(round(-2.5), -3.0);
        assert_eq!(parse_int(" -42 ", 0), -42);
        assert_eq!(parse_int("99999999999999999999", 7), 7);
        assert_eq!(parse_int("1_000", 7), 7);
        assert_eq!(parse_float(" 2.5e1", 0.0), 25.0);
        assert_eq!(parse_float("x", -1.0), -1.0);
        assert_eq!(parse_float("-INF", 0.0), f64::NEG_INFINITY);
        assert!(parse_float(" nan ", 0.0).is_nan());
        assert_eq!(pow(1.0, f64::NAN), 1.0);
        assert_eq!(pow(f64::NAN, 0.0), 1.0);
        assert_eq!(len("héllo"), 5);
        assert_eq!(sigmoid(-1000.0), 0.0);
        assert_eq!(sigmoid(1000.0), 1.0);
    }
}
