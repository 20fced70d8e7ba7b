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

/// Addition prompts with `responses` candidate answers each, one row per (prompt, response):
/// fields `{prompt, answer, response: String, rating: Float, digits: Int}`, `count` prompts so
/// `count * responses` rows, a prompt's rows adjacent. Each response is the true sum with
/// probability 1/4, else a typical slip of it: off by 1 to 9, a carry lost or doubled (±10), a
/// digit dropped, or two adjacent digits swapped. `rating = 1 / (1 + |response - answer|)`: 1 for
/// the correct answer, lower the further a wrong one is. Responses of a prompt may repeat.
pub fn rated_responses(
    digits: RangeInclusive<u32>,
    count: usize,
    responses: usize,
    seed: u64,
) -> Result<Dataset, DataError> {
    check_range("rated_responses", "digits", &digits, 17)?;
    let origin = format!(
        "synth.rated_responses(digits = {}..={}, count = {count}, responses = {responses}, seed = {seed})",
        digits.start(),
        digits.end()
    );
    if responses == 0 {
        return Err(DataError::Shape { origin, message: "`responses` must be at least 1".into() });
    }
    let mut rng = Rng::derive(seed, "synth/rated_responses");
    let (mut prompt, mut answer, mut response) = (Vec::new(), Vec::new(), Vec::new());
    let (mut rating, mut level_of) = (Vec::new(), Vec::new());
    for _ in 0..count {
        let d = level(&mut rng, &digits);
        let (a, b) = (number(&mut rng, d), number(&mut rng, d));
        let (p, truth): (Arc<str>, Arc<str>) = (format!("{a}+{b}=").into(), (a + b).to_string().into());
        for _ in 0..responses {
            let said = if rng.below(4) == 0 { a + b } else { slip(&mut rng, a + b) };
            prompt.push(p.clone());
            answer.push(truth.clone());
            response.push(Arc::from(said.to_string()));
            rating.push(1.0 / (1.0 + (said - (a + b)).abs() as f64));
            level_of.push(i64::from(d));
        }
    }
    let columns = vec![
        ("prompt".to_string(), Column::Str(prompt)),
        ("answer".to_string(), Column::Str(answer)),
        ("response".to_string(), Column::Str(response)),
        ("rating".to_string(), Column::Float(rating)),
        ("digits".to_string(), Column::Int(level_of)),
    ];
    Dataset::new(origin, (0..(count * responses) as u64).collect(), columns)
}

/// A wrong answer near `truth` (never `truth` itself), as a person or a small model slips.
fn slip(rng: &mut Rng, truth: i64) -> i64 {
    let text = truth.to_string();
    let wrong = match rng.below(4) {
        0 => truth + if rng.below(2) == 0 { 1 } else { -1 } * rng.range_inclusive(1, 9),
        1 => truth + if rng.below(2) == 0 { 10 } else { -10 },
        // A dropped digit (of a number with at least two).
        2 if text.len() >= 2 => {
            let at = rng.below(text.len() as u64) as usize;
            let kept: String = text.chars().enumerate().filter(|&(i, _)| i != at).map(|(_, c)| c).collect();
            kept.parse().unwrap_or(truth)
        }
        // Two adjacent digits swapped.
        3 if text.len() >= 2 => {
            let at = rng.below(text.len() as u64 - 1) as usize;
            let mut digits: Vec<u8> = text.into_bytes();
            digits.swap(at, at + 1);
            String::from_utf8(digits).ok().and_then(|t| t.parse().ok()).unwrap_or(truth)
        }
        _ => truth + 1,
    };
    // A slip that changed nothing (equal digits swapped) is off by one instead.
    if wrong == truth {
        truth + 1
    } else {
        wrong
    }
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
    fn rated_responses_are_rated_by_closeness_and_deterministic() {
        let d = rated_responses(1..=2, 200, 4, 3).unwrap();
        assert_eq!(d, rated_responses(1..=2, 200, 4, 3).unwrap());
        assert_eq!(d.len(), 800);
        assert_eq!(d.ids, (0..800).collect::<Vec<u64>>());
        let (prompt, answer, response) = (strings(&d, "prompt"), strings(&d, "answer"), strings(&d, "response"));
        let (rating, digits) = (d.floats("rating").unwrap(), d.ints("digits").unwrap());
        let mut correct = 0;
        for r in 0..d.len() {
            // A prompt's responses are adjacent.
            assert_eq!(prompt[r], prompt[r / 4 * 4]);
            let (x, y) = prompt[r].trim_end_matches('=').split_once('+').unwrap();
            let truth = x.parse::<i64>().unwrap() + y.parse::<i64>().unwrap();
            assert_eq!(answer[r], truth.to_string());
            assert_eq!(x.len() as i64, digits[r]);
            let said: i64 = response[r].parse().unwrap();
            assert_eq!(rating[r], 1.0 / (1.0 + (said - truth).abs() as f64));
            assert_eq!(rating[r] == 1.0, said == truth);
            correct += usize::from(said == truth);
        }
        assert!((100..300).contains(&correct), "about a quarter are correct: {correct}");
        assert!(rating.iter().any(|&r| r < 0.2), "some responses are far off");
        assert_eq!(rated_responses(1..=2, 1, 0, 0).unwrap_err().code(), "recipe::data::shape");
    }

    #[test]
    fn bad_ranges_are_errors() {
        assert_eq!(addition(0..=2, 1, 0).unwrap_err().code(), "recipe::data::shape");
        assert!(multiplication(RangeInclusive::new(3, 2), 1, 0).is_err(), "an empty range");
        assert!(addition(1..=19, 1, 0).is_err());
    }
}
