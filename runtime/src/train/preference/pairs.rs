//! Preference rows tokenised once, before any compute: the prompt on its own (the same prefix
//! of both sequences of a pair) and each response with EOS appended, as TRL's collator does.
//!
//! Invariants: every pair fits the model's context (prompt, the longer response and its EOS),
//! and the prompt is not empty (the first response token is predicted from it), so every
//! sequence has at least one scored token (its EOS) and no mean is a silent 0/0; a row that
//! breaks either is refused by name (`file:line`, or the row id of generated data). An empty
//! response text is scored as EOS alone, as TRL does (a policy that answers nothing).

use crate::data::{DataError, Dataset};
use crate::model::{ModelError, Tokenizer};
use rayon::prelude::*;

/// The pairs of a dataset's `prompt`/`chosen`/`rejected` rows, as token ids.
#[derive(Clone, Debug)]
pub struct Pairs {
    prompts: Vec<Vec<u32>>,
    /// Each chosen response, EOS appended.
    chosen: Vec<Vec<u32>>,
    /// Each rejected response, EOS appended.
    rejected: Vec<Vec<u32>>,
}

/// Why a dataset's rows cannot be preference pairs.
#[derive(Debug, thiserror::Error)]
pub enum PairsError {
    /// A field is missing or not a String.
    #[error(transparent)]
    Data(#[from] DataError),
    /// A text the tokenizer cannot encode.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Prompt, response and EOS need more positions than the model has.
    #[error(
        "{row} needs {needs} positions (prompt, `{field}` response and EOS) but the model has {context} \
         (its `context` / max_position_embeddings); shorten or leave out such rows, or use a longer context"
    )]
    TooLong { row: String, field: &'static str, needs: usize, context: usize },
    /// A prompt that encodes to no tokens.
    #[error("{row} has an empty `{field}`: {why}")]
    Empty { row: String, field: &'static str, why: &'static str },
}

impl Pairs {
    /// Tokenises every row of `data` with `tok` and checks it against `context` positions.
    ///
    /// Errors: `PairsError::Data` when `prompt`, `chosen` or `rejected` is missing or not a String;
    /// `Model` for a text that does not encode; `TooLong` and `Empty` (an empty prompt) naming the
    /// first such row.
    pub fn tokenize(data: &Dataset, tok: &Tokenizer, context: usize) -> Result<Pairs, PairsError> {
        let prompts = data.strings("prompt")?;
        let chosen = data.strings("chosen")?;
        let rejected = data.strings("rejected")?;
        let eos = tok.eos_id();
        let response = |text: &str| -> Result<Vec<u32>, ModelError> {
            let mut ids = tok.encode(text)?;
            ids.push(eos);
            Ok(ids)
        };
        // Parallel over rows; the first bad row (in row order) is the one reported.
        type Row = (Vec<u32>, Vec<u32>, Vec<u32>);
        let rows: Vec<Result<Row, ModelError>> = (0..data.len())
            .into_par_iter()
            .map(|r| Ok((tok.encode(&prompts[r])?, response(&chosen[r])?, response(&rejected[r])?)))
            .collect();
        let mut pairs = Pairs { prompts: Vec::new(), chosen: Vec::new(), rejected: Vec::new() };
        for (r, row) in rows.into_iter().enumerate() {
            let (p, c, j) = row?;
            let name = || data.row_name(r);
            if p.is_empty() {
                let why = "the first response token needs a prompt token to be predicted from";
                return Err(PairsError::Empty { row: name(), field: "prompt", why });
            }
            for (field, ids) in [("chosen", &c), ("rejected", &j)] {
                if p.len() + ids.len() > context {
                    return Err(PairsError::TooLong { row: name(), field, needs: p.len() + ids.len(), context });
                }
            }
            pairs.prompts.push(p);
            pairs.chosen.push(c);
            pairs.rejected.push(j);
        }
        Ok(pairs)
    }

    /// Rows.
    pub fn len(&self) -> usize {
        self.prompts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prompts.is_empty()
    }

    /// Row `r`'s prompt ids.
    pub fn prompt(&self, r: usize) -> &[u32] {
        &self.prompts[r]
    }

    /// Row `r`'s chosen response ids, EOS included.
    pub fn chosen(&self, r: usize) -> &[u32] {
        &self.chosen[r]
    }

    /// Row `r`'s rejected response ids, EOS included.
    pub fn rejected(&self, r: usize) -> &[u32] {
        &self.rejected[r]
    }

    /// The `2P` sequences of `rows` in TRL's layout: `(prompt, response)` ids, the chosen
    /// responses of rows `0..P` first, then their rejected responses.
    pub fn sequences(&self, rows: &[usize]) -> Vec<(Vec<u32>, Vec<u32>)> {
        let side = |of: &[Vec<u32>]| -> Vec<(Vec<u32>, Vec<u32>)> {
            rows.iter().map(|&r| (self.prompts[r].clone(), of[r].clone())).collect()
        };
        let mut all = side(&self.chosen);
        all.extend(side(&self.rejected));
        all
    }

    /// Completion tokens (EOS included) of `rows`: (chosen, rejected).
    pub fn completion_tokens(&self, rows: &[usize]) -> (usize, usize) {
        rows.iter().fold((0, 0), |(c, j), &r| (c + self.chosen[r].len(), j + self.rejected[r].len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use recipe_compiler::column::Column;
    use std::sync::Arc;

    fn data(rows: &[(&str, &str, &str)]) -> Dataset {
        let col = |i: usize| Column::Str(rows.iter().map(|r| Arc::from([r.0, r.1, r.2][i])).collect());
        let columns = vec![("prompt".into(), col(0)), ("chosen".into(), col(1)), ("rejected".into(), col(2))];
        Dataset::new("pairs", (0..rows.len() as u64).collect(), columns).unwrap()
    }

    #[test]
    fn the_prompt_is_shared_and_eos_is_appended_to_each_response() {
        let tok = Tokenizer::bytes();
        let pairs = Pairs::tokenize(&data(&[("1+1=", "2", "11")]), &tok, 64).unwrap();
        let eos = tok.eos_id();
        assert_eq!(pairs.prompt(0), b"1+1=".map(u32::from));
        assert_eq!(pairs.chosen(0), [u32::from(b'2'), eos]);
        assert_eq!(pairs.rejected(0), [u32::from(b'1'), u32::from(b'1'), eos]);
        let seqs = pairs.sequences(&[0, 0]);
        assert_eq!(seqs.len(), 4, "2P sequences");
        assert_eq!(seqs[0], seqs[1]);
        assert_eq!(seqs[0].1, pairs.chosen(0));
        assert_eq!(seqs[2].1, pairs.rejected(0), "rejected responses follow all chosen ones");
        assert!(seqs.iter().all(|(p, _)| p == pairs.prompt(0)), "one prompt prefix");
        assert_eq!(pairs.completion_tokens(&[0, 0]), (4, 6));
    }

    #[test]
    fn rows_that_do_not_fit_or_have_no_prompt_are_refused_by_name() {
        let tok = Tokenizer::bytes();
        // "12+34=" (6) + "100000" (6) + EOS needs 13 positions.
        let long = data(&[("1+1=", "2", "3"), ("12+34=", "46", "100000")]);
        assert!(Pairs::tokenize(&long, &tok, 13).is_ok());
        let err = Pairs::tokenize(&long, &tok, 12).unwrap_err();
        assert!(matches!(err, PairsError::TooLong { field: "rejected", needs: 13, context: 12, .. }), "{err}");
        assert!(err.to_string().starts_with("row 1 of pairs needs 13 positions"), "{err}");

        let no_prompt = data(&[("1+1=", "2", "3"), ("", "2", "3")]);
        let err = Pairs::tokenize(&no_prompt, &tok, 64).unwrap_err();
        assert!(matches!(err, PairsError::Empty { field: "prompt", .. }), "{err}");
        assert!(err.to_string().contains("row 1 of pairs has an empty `prompt`"), "{err}");
        // An empty response is EOS alone (TRL's collator), one scored token: never 0/0.
        let silent = Pairs::tokenize(&data(&[("2+2=", "", "5")]), &tok, 64).unwrap();
        assert_eq!(silent.chosen(0), [tok.eos_id()]);

        let sft = Dataset::new("sft", vec![0], vec![("prompt".into(), Column::Str(vec![Arc::from("a")]))]).unwrap();
        assert!(matches!(Pairs::tokenize(&sft, &tok, 64), Err(PairsError::Data(_))));
    }
}
