//! `perturb`: a perturbed copy of each row's prompt, for pairs whose rejected side answers a
//! corrupted input (TEMPLE-style).
//!
//! Invariants: a row's edits come from its own stream `Rng::derive(seed, "data/perturb/<id>")`,
//! so they depend only on the seed and the row's id — not on the other rows, their order, or a
//! filter before `perturb`; an output row keeps its input row's id; the perturbed prompt differs
//! from the prompt whenever the prompt has at least one character.

use super::{DataError, Dataset};
use crate::rng::Rng;
use recipe_compiler::column::Column;
use std::ops::RangeInclusive;
use std::sync::Arc;

/// `data` with two more fields: `perturbed`, the prompt after `strength` edits, and `strength`,
/// drawn per row uniformly from `strength` (a range of at least 1). An edit swaps two digits
/// that differ (when the text has such a pair, with probability 1/2), else drops one character;
/// when swaps would undo each other and give back the prompt, the last edit drops a character
/// instead; a prompt already emptied takes no further edits.
///
/// Errors: `DataError::NoSuchField`/`FieldType` when the rows have no String `prompt`,
/// `DataError::Shape` for a range that starts at 0.
pub fn perturb(data: &Dataset, strength: RangeInclusive<u32>, seed: u64) -> Result<Dataset, DataError> {
    if *strength.start() == 0 || strength.start() > strength.end() {
        return Err(DataError::Shape {
            origin: format!("perturb({})", data.origin),
            message: format!(
                "`strength` must be a non-empty range of at least 1 edit, got {}..={}",
                strength.start(),
                strength.end()
            ),
        });
    }
    let prompts = data.strings("prompt")?;
    let mut perturbed = Vec::with_capacity(data.len());
    let mut strengths = Vec::with_capacity(data.len());
    for (row, prompt) in prompts.iter().enumerate() {
        let mut rng = Rng::derive(seed, &format!("data/perturb/{}", data.ids[row]));
        let edits = rng.range_inclusive(i64::from(*strength.start()), i64::from(*strength.end()));
        let original: Vec<char> = prompt.chars().collect();
        let mut text = original.clone();
        for _ in 1..edits {
            edit(&mut text, &mut rng, false);
        }
        // The last edit never restores the prompt (swaps could undo each other).
        let before = text.clone();
        edit(&mut text, &mut rng, false);
        if text == original {
            text = before;
            edit(&mut text, &mut rng, true);
        }
        perturbed.push(Arc::from(text.into_iter().collect::<String>()));
        strengths.push(edits);
    }
    let mut out = data.clone();
    out.origin = format!("perturb({})", data.origin);
    out.with_column("perturbed", Column::Str(perturbed))?.with_column("strength", Column::Int(strengths))
}

/// One edit of `text`: swap two differing digits or (always, with `drop`) drop a character.
fn edit(text: &mut Vec<char>, rng: &mut Rng, drop: bool) {
    if text.is_empty() {
        return;
    }
    let digits: Vec<usize> = (0..text.len()).filter(|&i| text[i].is_ascii_digit()).collect();
    let differing = digits.iter().any(|&i| text[i] != text[digits[0]]);
    if !drop && differing && rng.below(2) == 0 {
        let a = digits[rng.below(digits.len() as u64) as usize];
        let others: Vec<usize> = digits.iter().copied().filter(|&i| text[i] != text[a]).collect();
        let b = others[rng.below(others.len() as u64) as usize];
        text.swap(a, b);
    } else {
        let at = rng.below(text.len() as u64) as usize;
        text.remove(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synth;

    fn texts(d: &Dataset, field: &str) -> Vec<String> {
        d.strings(field).unwrap().iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn perturbs_every_prompt_with_its_drawn_strength() {
        let data = synth::addition(2..=3, 300, 1).unwrap();
        let out = perturb(&data, 1..=3, 7).unwrap();
        assert_eq!(out, perturb(&data, 1..=3, 7).unwrap(), "deterministic");
        assert_ne!(out.column("perturbed"), perturb(&data, 1..=3, 8).unwrap().column("perturbed"));
        assert_eq!(out.ids, data.ids);
        assert_eq!(out.column("completion"), data.column("completion"), "other fields are kept");
        let (prompts, perturbed, strength) =
            (texts(&out, "prompt"), texts(&out, "perturbed"), out.ints("strength").unwrap());
        let mut swapped = 0;
        for r in 0..out.len() {
            assert!((1..=3).contains(&strength[r]));
            assert_ne!(prompts[r], perturbed[r]);
            // Each edit drops one character or keeps the length (a swap).
            let dropped = prompts[r].len() - perturbed[r].len();
            assert!(dropped as i64 <= strength[r]);
            swapped += usize::from((dropped as i64) < strength[r]);
        }
        assert!(swapped > 50, "digit swaps happen: {swapped}");
        for s in 1..=3 {
            assert!(strength.contains(&s), "every strength is drawn");
        }
    }

    #[test]
    fn a_rows_edits_depend_only_on_its_id() {
        let data = synth::addition(2..=2, 50, 1).unwrap();
        let all = perturb(&data, 2..=2, 0).unwrap();
        let some = perturb(&data.select(&[40, 3, 17]), 2..=2, 0).unwrap();
        assert_eq!(texts(&some, "perturbed"), [40, 3, 17].map(|r| texts(&all, "perturbed")[r].clone()));
    }

    #[test]
    fn replaces_existing_fields_and_refuses_bad_input() {
        let data = perturb(&synth::reverse(3..=3, 5, 0).unwrap(), 1..=1, 0).unwrap();
        let again = perturb(&data, 2..=2, 0).unwrap();
        assert_eq!(again.columns.len(), data.columns.len(), "`perturbed` and `strength` are replaced");
        assert!(again.ints("strength").unwrap().iter().all(|&s| s == 2));
        assert_eq!(perturb(&data, 0..=2, 0).unwrap_err().code(), "recipe::data::shape");
        let no_prompt = Dataset::new("t", vec![1], vec![("x".into(), Column::Int(vec![1]))]).unwrap();
        assert_eq!(perturb(&no_prompt, 1..=1, 0).unwrap_err().code(), "recipe::data::field");
        let empty = Dataset::new("t", vec![1], vec![("prompt".into(), Column::Str(vec![Arc::from("")]))]).unwrap();
        assert_eq!(texts(&perturb(&empty, 1..=2, 0).unwrap(), "perturbed"), [""]);
    }
}
