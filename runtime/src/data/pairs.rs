//! Preference pairs from rated responses (`Rated` rows → `RatedPair` rows): `all_pairs` and
//! `best_worst_pairs`.
//!
//! Invariants: a prompt's responses are the rows with the same `prompt` text wherever they are
//! in the dataset, taken in row order, and prompts come out in the order they first appear, so
//! the output is a pure function of the input rows; the chosen response of a pair is always
//! rated strictly higher than its rejected one (equal ratings never make a pair); a pair's id is
//! [`pair_id`] of its two rows' ids, so it does not depend on which builder made it or on what
//! else was in the dataset.

use super::{DataError, Dataset};
use recipe_compiler::column::Column;
use std::collections::HashMap;
use std::sync::Arc;

/// The `Rated` row fields the builders read, and the `RatedPair` fields they write, in the order
/// `stdlib/builtins.recipe` declares them.
pub const RATED_FIELDS: &[&str] = &["prompt", "answer", "response", "rating", "digits"];
pub const RATED_PAIR_FIELDS: &[&str] =
    &["prompt", "answer", "chosen", "rejected", "chosen_rating", "rejected_rating", "gap", "digits"];

/// The id of the pair of rows with ids `chosen` and `rejected`: a stable 64-bit mix of both
/// (SplitMix64's finaliser), equal on every machine and release.
pub fn pair_id(chosen: u64, rejected: u64) -> u64 {
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    mix(mix(chosen.wrapping_add(0x9e37_79b9_7f4a_7c15)) ^ rejected)
}

/// Every pair of differently rated responses of each prompt, the higher rated chosen: pairs
/// `(i, j)` of the prompt's rows `i < j` in row order, at most `max_per_prompt` per prompt (the
/// first ones in that order).
///
/// Errors: `DataError::NoSuchField`/`FieldType` when the rows are not `Rated`,
/// `DataError::BadValue` naming a row whose rating is not finite, `DataError::Shape` when
/// `max_per_prompt` is 0.
pub fn all_pairs(data: &Dataset, max_per_prompt: usize) -> Result<Dataset, DataError> {
    let origin = format!("all_pairs({})", data.origin);
    if max_per_prompt == 0 {
        return Err(DataError::Shape { origin, message: "`max_per_prompt` must be at least 1".into() });
    }
    let rated = Rated::of(data)?;
    let mut pairs = Vec::new();
    for rows in rated.by_prompt() {
        let mut taken = 0;
        'prompt: for (a, &i) in rows.iter().enumerate() {
            for &j in &rows[a + 1..] {
                if taken == max_per_prompt {
                    break 'prompt;
                }
                if let Some(pair) = rated.pair(i, j) {
                    pairs.push(pair);
                    taken += 1;
                }
            }
        }
    }
    rated.finish(origin, &pairs)
}

/// One pair per prompt: its highest rated response (the first of equals in row order) against
/// its lowest rated one (likewise); prompts whose responses are all rated equally are dropped.
///
/// Errors: as [`all_pairs`].
pub fn best_worst_pairs(data: &Dataset) -> Result<Dataset, DataError> {
    let rated = Rated::of(data)?;
    let mut pairs = Vec::new();
    for rows in rated.by_prompt() {
        let (mut best, mut worst) = (rows[0], rows[0]);
        for &r in &rows[1..] {
            if rated.rating[r] > rated.rating[best] {
                best = r;
            }
            if rated.rating[r] < rated.rating[worst] {
                worst = r;
            }
        }
        pairs.extend(rated.pair(best, worst));
    }
    rated.finish(format!("best_worst_pairs({})", data.origin), &pairs)
}

/// The `Rated` columns of a dataset, checked.
struct Rated<'d> {
    data: &'d Dataset,
    prompt: &'d [Arc<str>],
    answer: &'d [Arc<str>],
    response: &'d [Arc<str>],
    rating: &'d [f64],
    digits: &'d [i64],
}

impl<'d> Rated<'d> {
    fn of(data: &'d Dataset) -> Result<Rated<'d>, DataError> {
        let rated = Rated {
            data,
            prompt: data.strings("prompt")?,
            answer: data.strings("answer")?,
            response: data.strings("response")?,
            rating: data.floats("rating")?,
            digits: data.ints("digits")?,
        };
        if let Some(row) = rated.rating.iter().position(|r| !r.is_finite()) {
            let message = format!("`rating` is {}; ratings must be finite numbers", rated.rating[row]);
            return Err(DataError::BadValue { row: data.row_name(row), message });
        }
        Ok(rated)
    }

    /// Row indices grouped by prompt text: prompts in order of first appearance, rows in order.
    fn by_prompt(&self) -> Vec<Vec<usize>> {
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (row, prompt) in self.prompt.iter().enumerate() {
            let g = *index.entry(prompt).or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
            groups[g].push(row);
        }
        groups
    }

    /// `(chosen, rejected)` rows of `i` and `j`, the higher rated chosen; none when tied.
    fn pair(&self, i: usize, j: usize) -> Option<(usize, usize)> {
        match self.rating[i].partial_cmp(&self.rating[j]) {
            Some(std::cmp::Ordering::Greater) => Some((i, j)),
            Some(std::cmp::Ordering::Less) => Some((j, i)),
            _ => None,
        }
    }

    /// The `RatedPair` rows of `pairs`; `answer` and `digits` are the chosen row's (a prompt's).
    fn finish(&self, origin: String, pairs: &[(usize, usize)]) -> Result<Dataset, DataError> {
        let strs = |col: &[Arc<str>], pick: fn(&(usize, usize)) -> usize| {
            Column::Str(pairs.iter().map(|p| col[pick(p)].clone()).collect())
        };
        let chosen = |p: &(usize, usize)| p.0;
        let rejected = |p: &(usize, usize)| p.1;
        let columns = vec![
            ("prompt".to_string(), strs(self.prompt, chosen)),
            ("answer".to_string(), strs(self.answer, chosen)),
            ("chosen".to_string(), strs(self.response, chosen)),
            ("rejected".to_string(), strs(self.response, rejected)),
            ("chosen_rating".to_string(), Column::Float(pairs.iter().map(|&(c, _)| self.rating[c]).collect())),
            ("rejected_rating".to_string(), Column::Float(pairs.iter().map(|&(_, r)| self.rating[r]).collect())),
            ("gap".to_string(), Column::Float(pairs.iter().map(|&(c, r)| self.rating[c] - self.rating[r]).collect())),
            ("digits".to_string(), Column::Int(pairs.iter().map(|&(c, _)| self.digits[c]).collect())),
        ];
        let ids = pairs.iter().map(|&(c, r)| pair_id(self.data.ids[c], self.data.ids[r])).collect();
        Dataset::new(origin, ids, columns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rated rows `(prompt, response, rating)` with ids 10, 11, …
    fn rated(rows: &[(&str, &str, f64)]) -> Dataset {
        let prompts = Column::Str(rows.iter().map(|r| Arc::from(r.0)).collect());
        Dataset::new(
            "t",
            (10..10 + rows.len() as u64).collect(),
            vec![
                ("prompt".into(), prompts.clone()),
                ("answer".into(), prompts),
                ("response".into(), Column::Str(rows.iter().map(|r| Arc::from(r.1)).collect())),
                ("rating".into(), Column::Float(rows.iter().map(|r| r.2).collect())),
                ("digits".into(), Column::Int(vec![1; rows.len()])),
            ],
        )
        .unwrap()
    }

    fn texts(d: &Dataset, field: &str) -> Vec<String> {
        d.strings(field).unwrap().iter().map(|s| s.to_string()).collect()
    }

    fn sample() -> Dataset {
        // Prompt "a" has four responses (two tied), "b" two tied ones, "c" is interleaved.
        rated(&[
            ("a", "a1", 1.0),
            ("a", "a2", 0.5),
            ("b", "b1", 0.5),
            ("a", "a3", 0.5),
            ("c", "c1", 0.2),
            ("a", "a4", 0.25),
            ("b", "b2", 0.5),
            ("c", "c2", 0.9),
        ])
    }

    #[test]
    fn all_pairs_pairs_every_differently_rated_response() {
        let d = all_pairs(&sample(), 10).unwrap();
        let got: Vec<(String, String)> = texts(&d, "chosen").into_iter().zip(texts(&d, "rejected")).collect();
        let want = [("a1", "a2"), ("a1", "a3"), ("a1", "a4"), ("a2", "a4"), ("a3", "a4"), ("c2", "c1")];
        assert_eq!(got, want.map(|(c, r)| (c.to_string(), r.to_string())));
        assert_eq!(texts(&d, "prompt"), ["a", "a", "a", "a", "a", "c"]);
        let (chosen, rejected, gap) =
            (d.floats("chosen_rating").unwrap(), d.floats("rejected_rating").unwrap(), d.floats("gap").unwrap());
        for r in 0..d.len() {
            assert!(chosen[r] > rejected[r]);
            assert_eq!(gap[r], chosen[r] - rejected[r]);
        }
        let names: Vec<&str> = d.columns.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, RATED_PAIR_FIELDS);
        assert_eq!(d, all_pairs(&sample(), 10).unwrap(), "deterministic");
    }

    #[test]
    fn all_pairs_caps_each_prompt_at_the_first_pairs() {
        let d = all_pairs(&sample(), 2).unwrap();
        assert_eq!(texts(&d, "chosen"), ["a1", "a1", "c2"]);
        assert_eq!(texts(&d, "rejected"), ["a2", "a3", "c1"]);
        assert_eq!(all_pairs(&sample(), 0).unwrap_err().code(), "recipe::data::shape");
    }

    #[test]
    fn best_worst_drops_ties_and_takes_the_first_of_equals() {
        let d = best_worst_pairs(&sample()).unwrap();
        assert_eq!(texts(&d, "prompt"), ["a", "c"], "prompt `b` is all ties");
        assert_eq!(texts(&d, "chosen"), ["a1", "c2"]);
        assert_eq!(texts(&d, "rejected"), ["a4", "c1"]);
        let tied = best_worst_pairs(&rated(&[("x", "1", 0.5), ("x", "2", 0.5)])).unwrap();
        assert!(tied.is_empty());
    }

    #[test]
    fn pair_ids_come_from_their_rows_ids() {
        let all = all_pairs(&sample(), 10).unwrap();
        let best = best_worst_pairs(&sample()).unwrap();
        // Rows a1 (id 10) and a4 (id 15): the same pair has the same id from either builder.
        assert_eq!(best.ids[0], pair_id(10, 15));
        assert_eq!(all.ids[2], best.ids[0]);
        // Filtering the input keeps the ids of the pairs that remain.
        let fewer = all_pairs(&sample().select(&[0, 3, 4, 5, 7]), 10).unwrap();
        assert!(fewer.ids.iter().all(|id| all.ids.contains(id)), "{:?}", fewer.ids);
        let distinct: std::collections::HashSet<_> = all.ids.iter().collect();
        assert_eq!(distinct.len(), all.len());
        assert_ne!(pair_id(1, 2), pair_id(2, 1));
    }

    #[test]
    fn bad_rows_are_named() {
        let err = all_pairs(&rated(&[("x", "1", 0.5), ("x", "2", f64::NAN)]), 4).unwrap_err();
        assert_eq!(err.code(), "recipe::data::malformed");
        assert!(err.to_string().contains("row 11 of t"), "{err}");
        let no_rating = Dataset::new("u", vec![1], vec![("prompt".into(), Column::Str(vec![Arc::from("p")]))]).unwrap();
        let err = best_worst_pairs(&no_rating).unwrap_err();
        assert_eq!(err.code(), "recipe::data::field");
    }
}
