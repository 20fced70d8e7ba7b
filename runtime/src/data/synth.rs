//! Synthetic tasks for download-free runs, each row carrying difficulty fields a curriculum can
//! order or bucket by. Text follows `shared/peers/common.py`: prompt `"12+34="`, completion
//! `"46"`; the collator appends EOS, it is never stored.
//!
//! Invariants: a generator is a pure function of its arguments (its stream is
//! `Rng::derive(seed, "synth/<task>")`), so the same call gives the same rows on every machine;
//! row ids are row indices; the difficulty level of each row (digits, length, steps) is drawn
//! uniformly from the requested range, so every level is represented.

use super::{DataError, Dataset};
use crate::rng::Rng;
use recipe_compiler::column::Column;
use std::ops::RangeInclusive;
use std::sync::Arc;

/// Rows being built: prompt and completion text plus integer difficulty fields.
#[derive(Default)]
struct Rows {
    prompt: Vec<Arc<str>>,
    completion: Vec<Arc<str>>,
}

impl Rows {
    fn push(&mut self, prompt: String, completion: String) {
        self.prompt.push(prompt.into());
        self.completion.push(completion.into());
    }

    /// The dataset: `completion` is what SFT trains on, `answer` the same text for judges and
    /// rewards to compare a generated completion with (`|r| r.completion == r.answer`).
    fn finish(self, origin: String, fields: Vec<(&str, Vec<i64>)>) -> Result<Dataset, DataError> {
        let n = self.prompt.len();
        let answer = Column::Str(self.completion.clone());
        let mut columns = vec![
            ("prompt".to_string(), Column::Str(self.prompt)),
            ("completion".to_string(), Column::Str(self.completion)),
            ("answer".to_string(), answer),
        ];
        columns.extend(fields.into_iter().map(|(name, values)| (name.to_string(), Column::Int(values))));
        Dataset::new(origin, (0..n as u64).collect(), columns)
    }
}

fn check_range(task: &str, name: &str, range: &RangeInclusive<u32>, max: u32) -> Result<(), DataError> {
    if *range.start() < 1 || range.start() > range.end() || *range.end() > max {
        return Err(DataError::Shape {
            origin: format!("synth.{task}"),
            message: format!(
                "`{name}` must be a non-empty range within 1..={max}, got {}..={}",
                range.start(),
                range.end()
            ),
        });
    }
    Ok(())
}

fn origin(task: &str, arg: &str, range: &RangeInclusive<u32>, count: usize, seed: u64) -> String {
    format!("synth.{task}({arg} = {}..={}, count = {count}, seed = {seed})", range.start(), range.end())
}

/// A uniformly drawn number with exactly `digits` decimal digits (0..=9 for one digit).
fn number(rng: &mut Rng, digits: u32) -> i64 {
    let lo = if digits == 1 { 0 } else { 10i64.pow(digits - 1) };
    rng.range_inclusive(lo, 10i64.pow(digits) - 1)
}

fn level(rng: &mut Rng, range: &RangeInclusive<u32>) -> u32 {
    rng.range_inclusive(i64::from(*range.start()), i64::from(*range.end())) as u32
}

/// Number of carries when adding `a` and `b` column by column.
pub fn carries(mut a: i64, mut b: i64) -> i64 {
    let (mut carry, mut count) = (0, 0);
    while a > 0 || b > 0 {
        carry = i64::from(a % 10 + b % 10 + carry >= 10);
        count += carry;
        a /= 10;
        b /= 10;
    }
    count
}

/// `a+b=` → `a+b`, both operands with `digits` digits; fields
/// `{prompt, completion, answer: String, digits: Int, carries: Int}`.
pub fn addition(digits: RangeInclusive<u32>, count: usize, seed: u64) -> Result<Dataset, DataError> {
    check_range("addition", "digits", &digits, 18)?;
    let mut rng = Rng::derive(seed, "synth/addition");
    let mut rows = Rows::default();
    let (mut level_of, mut carry_of) = (Vec::new(), Vec::new());
    for _ in 0..count {
        let d = level(&mut rng, &digits);
        let (a, b) = (number(&mut rng, d), number(&mut rng, d));
        rows.push(format!("{a}+{b}="), (a + b).to_string());
        level_of.push(i64::from(d));
        carry_of.push(carries(a, b));
    }
    let origin = origin("addition", "digits", &digits, count, seed);
    rows.finish(origin, vec![("digits", level_of), ("carries", carry_of)])
}

/// `a*b=` → `a*b`, both operands with `digits` digits; fields
/// `{prompt, completion, answer: String, digits: Int}`.
pub fn multiplication(digits: RangeInclusive<u32>, count: usize, seed: u64) -> Result<Dataset, DataError> {
    check_range("multiplication", "digits", &digits, 9)?;
    let mut rng = Rng::derive(seed, "synth/multiplication");
    let mut rows = Rows::default();
    let mut level_of = Vec::new();
    for _ in 0..count {
        let d = level(&mut rng, &digits);
        let (a, b) = (number(&mut rng, d), number(&mut rng, d));
        rows.push(format!("{a}*{b}="), (a * b).to_string());
        level_of.push(i64::from(d));
    }
    let origin = origin("multiplication", "digits", &digits, count, seed);
    rows.finish(origin, vec![("digits", level_of)])
}

/// `reverse(abc)=` → `cba` for lowercase strings of `length` letters; fields
/// `{prompt, completion, answer: String, length: Int}`.
pub fn reverse(length: RangeInclusive<u32>, count: usize, seed: u64) -> Result<Dataset, DataError> {
    check_range("reverse", "length", &length, 64)?;
    let mut rng = Rng::derive(seed, "synth/reverse");
    let mut rows = Rows::default();
    let mut level_of = Vec::new();
    for _ in 0..count {
        let n = level(&mut rng, &length);
        let word: String = (0..n).map(|_| char::from(b'a' + rng.below(26) as u8)).collect();
        let reversed: String = word.chars().rev().collect();
        rows.push(format!("reverse({word})="), reversed);
        level_of.push(i64::from(n));
    }
    let origin = origin("reverse", "length", &length, count, seed);
    rows.finish(origin, vec![("length", level_of)])
}

/// `7+3-5=` → `5`: a one-digit start followed by `steps` additions or subtractions of one-digit
/// numbers, evaluated left to right; fields `{prompt, completion, answer: String, steps: Int}`.
pub fn chain(steps: RangeInclusive<u32>, count: usize, seed: u64) -> Result<Dataset, DataError> {
    check_range("chain", "steps", &steps, 32)?;
    let mut rng = Rng::derive(seed, "synth/chain");
    let mut rows = Rows::default();
    let mut level_of = Vec::new();
    for _ in 0..count {
        let n = level(&mut rng, &steps);
        let mut value = rng.range_inclusive(0, 9);
        let mut prompt = value.to_string();
        for _ in 0..n {
            let x = rng.range_inclusive(0, 9);
            if rng.below(2) == 0 {
                value += x;
                prompt.push_str(&format!("+{x}"));
            } else {
                value -= x;
                prompt.push_str(&format!("-{x}"));
            }
        }
        prompt.push('=');
        rows.push(prompt, value.to_string());
        level_of.push(i64::from(n));
    }
    let origin = origin("chain", "steps", &steps, count, seed);
    rows.finish(origin, vec![("steps", level_of)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(d: &Dataset, f: &str) -> Vec<String> {
        d.strings(f).unwrap().iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn addition_rows_are_correct_and_deterministic() {
        let a = addition(1..=3, 300, 5).unwrap();
        assert_eq!(a, addition(1..=3, 300, 5).unwrap());
        assert_ne!(a.column("prompt"), addition(1..=3, 300, 6).unwrap().column("prompt"));
        let (Some(Column::Str(ans)), Some(Column::Int(dig)), Some(Column::Int(car))) =
            (a.column("answer"), a.column("digits"), a.column("carries"))
        else {
            panic!("addition columns have the wrong types: {:?}", a.schema())
        };
        for (r, p) in strings(&a, "prompt").iter().enumerate() {
            let (x, y) = p.trim_end_matches('=').split_once('+').unwrap();
            let (x, y): (i64, i64) = (x.parse().unwrap(), y.parse().unwrap());
            assert_eq!((x + y).to_string(), ans[r].to_string());
            assert_eq!(strings(&a, "completion")[r], ans[r].to_string());
            assert_eq!(x.to_string().len() as i64, dig[r]);
            assert_eq!(y.to_string().len() as i64, dig[r]);
            assert_eq!(carries(x, y), car[r]);
        }
        for d in 1..=3 {
            assert!(dig.contains(&d), "every digit count appears");
        }
    }

    #[test]
    fn carries_counts_columns() {
        assert_eq!(carries(0, 0), 0);
        assert_eq!(carries(15, 17), 1);
        assert_eq!(carries(99, 1), 2);
        assert_eq!(carries(999, 999), 3);
    }

    #[test]
    fn other_tasks_are_correct() {
        let m = multiplication(2..=2, 50, 1).unwrap();
        for p in strings(&m, "prompt").iter().zip(strings(&m, "completion")) {
            let (x, y) = p.0.trim_end_matches('=').split_once('*').unwrap();
            assert_eq!(x.parse::<i64>().unwrap() * y.parse::<i64>().unwrap(), p.1.parse::<i64>().unwrap());
        }
        let r = reverse(3..=5, 50, 1).unwrap();
        for (p, c) in strings(&r, "prompt").iter().zip(strings(&r, "completion")) {
            let word = p.strip_prefix("reverse(").unwrap().strip_suffix(")=").unwrap();
            assert_eq!(word.chars().rev().collect::<String>(), c);
            assert!((3..=5).contains(&word.len()));
        }
        let c = chain(1..=4, 50, 1).unwrap();
        let Some(Column::Int(steps)) = c.column("steps") else { panic!("steps column") };
        for (r, (p, v)) in strings(&c, "prompt").iter().zip(strings(&c, "completion")).enumerate() {
            let expr = p.trim_end_matches('=');
            assert_eq!(expr.matches(['+', '-']).count() as i64, steps[r]);
            let mut total: i64 = expr[..1].parse().unwrap();
            for op in expr.as_bytes()[1..].chunks(2) {
                let x = i64::from(op[1] - b'0');
                total += if op[0] == b'+' { x } else { -x };
            }
            assert_eq!(total.to_string(), v);
        }
    }

    #[test]
    fn bad_ranges_are_errors() {
        assert_eq!(addition(0..=2, 1, 0).unwrap_err().code(), "recipe::data::shape");
        assert!(multiplication(RangeInclusive::new(3, 2), 1, 0).is_err(), "an empty range");
        assert!(addition(1..=19, 1, 0).is_err());
    }
}
