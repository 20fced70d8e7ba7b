//! The string builtins that cut, rebuild, format and read numbers out of text: one Rust function
//! each, which the interpreter calls directly and the JIT through `jit::natives`. Cutting ones
//! return a slice of their input (no allocation); the others build a `String`. None panics.
//! The contract is `docs/scalar-semantics.md` ("String").

use regex::Regex;
use std::sync::LazyLock;

/// Group `group` of `re`'s first (leftmost) match in `s`; group 0 is the whole match. `""` when
/// `re` does not match, the group took no part in the match, or there is no such group
/// (negative or past the pattern's last group).
pub fn capture<'s>(re: &Regex, s: &'s str, group: i64) -> &'s str {
    let Ok(group) = usize::try_from(group) else { return "" };
    if group == 0 {
        return re.find(s).map_or("", |m| m.as_str());
    }
    re.captures(s).and_then(|c| c.get(group)).map_or("", |m| m.as_str())
}

/// `s` with every non-overlapping occurrence of `from`, left to right, replaced by `to`. An
/// empty `from` occurs at every character boundary: `replace("ab", "", "-") == "-a-b-"`.
pub fn replace(s: &str, from: &str, to: &str) -> String {
    s.replace(from, to)
}

/// Part `n` of `s` split on every occurrence of `sep` (found left to right, without overlap):
/// 0 is the first part, -1 the last; `""` when there is no part `n`. An empty `sep` does not
/// split: the one part is `s`.
pub fn split_part<'s>(s: &'s str, sep: &str, n: i64) -> &'s str {
    if sep.is_empty() {
        return if n == 0 || n == -1 { s } else { "" };
    }
    // Counting from the end with the same left-to-right parts (a right-to-left split would
    // find other occurrences of a self-overlapping `sep`: "aaa" on "aa").
    let index = if n >= 0 { n } else { s.matches(sep).count() as i64 + 1 + n };
    usize::try_from(index).ok().and_then(|i| s.split(sep).nth(i)).unwrap_or("")
}

/// The text before the first occurrence of `sep`; all of `s` when `sep` does not occur.
pub fn before<'s>(s: &'s str, sep: &str) -> &'s str {
    s.split_once(sep).map_or(s, |(head, _)| head)
}

/// The text after the first occurrence of `sep`; `""` when `sep` does not occur.
pub fn after<'s>(s: &'s str, sep: &str) -> &'s str {
    s.split_once(sep).map_or("", |(_, tail)| tail)
}

/// The text after the last occurrence of `sep`; `""` when `sep` does not occur.
pub fn after_last<'s>(s: &'s str, sep: &str) -> &'s str {
    s.rsplit_once(sep).map_or("", |(_, tail)| tail)
}

/// `a` followed by `b`.
pub fn concat(a: &str, b: &str) -> String {
    let mut out = String::with_capacity(a.len() + b.len());
    out.push_str(a);
    out.push_str(b);
    out
}

/// `template` with its first `{}` replaced by `a`; `template` itself when it has none.
pub fn format(template: &str, a: &str) -> String {
    template.replacen("{}", a, 1)
}

/// The shortest text that `parse_float` reads back as exactly `x` (Rust's `{:?}`: `0.1`, `1e16`,
/// `1e-7`, `inf`, `-inf`), without the `.0` of an integral value (`72`, `-0`); `NaN` for NaN.
pub fn float_text(x: f64) -> String {
    if x.is_nan() {
        return "NaN".to_owned();
    }
    let text = format!("{x:?}");
    match text.strip_suffix(".0") {
        Some(integral) => integral.to_owned(),
        None => text,
    }
}

/// A number as text writes it: an optional `-`, an optional `$`, digits — either runs of three
/// after a 1–3 digit head separated by commas (`1,234,567`) or plain (`1234`) — and an optional
/// decimal part (`.5`). ASCII digits only; no exponent. Matches are found left to right without
/// overlap, the comma form first.
static NUMBER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"-?\$?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?").expect("a valid constant pattern")
});

/// The first number written in `s` (see [`NUMBER`]), NaN when there is none.
pub fn first_number(s: &str) -> f64 {
    NUMBER.find(s).map_or(f64::NAN, |m| number_value(s, m))
}

/// The last number written in `s` (see [`NUMBER`]): GSM8K's answer extraction. NaN when there is
/// none.
pub fn last_number(s: &str) -> f64 {
    NUMBER.find_iter(s).last().map_or(f64::NAN, |m| number_value(s, m))
}

/// The value of a [`NUMBER`] match: commas and `$` dropped, the closest Float (±inf beyond the
/// range). A `-` right after a digit is a minus, not a sign: `10-4` holds 10 and 4.
fn number_value(s: &str, m: regex::Match<'_>) -> f64 {
    let after_digit = s[..m.start()].ends_with(|c: char| c.is_ascii_digit());
    let text = m.as_str();
    let text = if after_digit { text.strip_prefix('-').unwrap_or(text) } else { text };
    let digits: String = text.chars().filter(|c| *c != ',' && *c != '$').collect();
    digits.parse().unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_takes_a_group_of_the_first_match() {
        let re = Regex::new(r"#### (-?\d+)|(x)").unwrap();
        assert_eq!(capture(&re, "so 9 #### 72 #### 8", 1), "72");
        assert_eq!(capture(&re, "so 9 #### 72", 0), "#### 72");
        assert_eq!(capture(&re, "x #### 72", 1), "", "group 1 took no part in the first match");
        assert_eq!(capture(&re, "x #### 72", 2), "x");
        assert_eq!(capture(&re, "#### 72", 3), "", "no group 3");
        assert_eq!(capture(&re, "#### 72", -1), "");
        assert_eq!(capture(&re, "no match", 0), "");
    }

    #[test]
    fn replace_and_split_part_are_literal() {
        assert_eq!(replace("a.b.c", ".", "::"), "a::b::c");
        assert_eq!(replace("aaa", "aa", "b"), "ba");
        assert_eq!(replace("ab", "", "-"), "-a-b-");
        assert_eq!(replace("1,234", ",", ""), "1234");
        let parts = |s, sep| (-4..4).map(|n| split_part(s, sep, n)).collect::<Vec<_>>();
        assert_eq!(parts("a,b,,c", ","), ["a", "b", "", "c", "a", "b", "", "c"]);
        assert_eq!(parts("a,b", ","), ["", "", "a", "b", "a", "b", "", ""]);
        assert_eq!(parts("abc", ""), ["", "", "", "abc", "abc", "", "", ""]);
        assert_eq!(parts("aaa", "aa"), ["", "", "", "a", "", "a", "", ""]);
        assert_eq!(split_part("x", ",", i64::MIN), "");
        assert_eq!(split_part("x", ",", i64::MAX), "");
    }

    #[test]
    fn before_and_after_cut_at_the_separator() {
        let answer = "She has 3 + 4 = 7 apples.\n#### 7";
        assert_eq!(after(answer, "####").trim(), "7");
        assert_eq!(before("a=b=c", "="), "a");
        assert_eq!(after("a=b=c", "="), "b=c");
        assert_eq!(after_last("a=b=c", "="), "c");
        assert_eq!((before("abc", "="), after("abc", "="), after_last("abc", "=")), ("abc", "", ""));
        assert_eq!((before("abc", ""), after("abc", ""), after_last("abc", "")), ("", "abc", ""));
    }

    #[test]
    fn concat_and_format() {
        assert_eq!(concat("é", "ß"), "éß");
        assert_eq!(format("{} = {}", "1"), "1 = {}");
        assert_eq!(format("none", "1"), "none");
    }

    #[test]
    fn float_text_is_shortest_and_reads_back() {
        let cases = [
            (72.0, "72"),
            (-0.0, "-0"),
            (0.1, "0.1"),
            (2.5, "2.5"),
            (1e16, "1e16"),
            (1e15, "1000000000000000"),
            (1e-7, "1e-7"),
            (1.5e300, "1.5e300"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
            (f64::NAN, "NaN"),
            (-f64::NAN, "NaN"),
        ];
        for (x, want) in cases {
            assert_eq!(float_text(x), want, "{x:?}");
        }
        for x in [0.1 + 0.2, 5e-324, f64::MAX, -1.0 / 3.0, 9007199254740993.0, -0.0, 123456.0] {
            let back: f64 = float_text(x).parse().unwrap();
            assert_eq!(back.to_bits(), x.to_bits(), "{x:?}");
        }
    }

    #[test]
    fn numbers_in_text() {
        let first = |s| first_number(s);
        let last = |s| last_number(s);
        assert_eq!(last("Natalia sold 48 + 24 = 72 clips.\n#### 72"), 72.0);
        assert_eq!(last("The answer is 1,234.5"), 1234.5);
        assert_eq!(last("1,234,567 people"), 1234567.0);
        assert_eq!(last("it costs $18."), 18.0);
        assert_eq!(last("a loss of -$1,000.25"), -1000.25);
        assert_eq!(last("-3"), -3.0);
        assert_eq!(last("12."), 12.0);
        assert_eq!((first("a1b2"), last("a1b2")), (1.0, 2.0));
        assert_eq!((first("1,23"), last("1,23")), (1.0, 23.0), "not a thousands group");
        assert_eq!((first("1234,567"), last("1234,567")), (1234.0, 567.0));
        assert_eq!((first("10-4=6"), last("5-3")), (10.0, 3.0), "a minus after a digit");
        assert_eq!(last("x = -0").to_bits(), (-0.0f64).to_bits());
        assert_eq!(last("1.2.3"), 3.0);
        assert_eq!(last("0.5 or .5"), 5.0, "a number starts with a digit");
        assert_eq!(last("1e5"), 5.0, "no exponents");
        assert!(last("٣ apples").is_nan(), "ASCII digits only");
        assert!(last("no digits").is_nan() && first("").is_nan() && last("$-,.").is_nan());
        assert_eq!(last(&"9".repeat(400)), f64::INFINITY);
    }
}
