//! Datasets: named columns (`recipe_compiler::column::Column`) plus a stable id per row, with the
//! schema they were checked against and the digests of the files they came from.
//!
//! Invariants: every column has `ids.len()` rows; a row id never changes when a dataset is
//! filtered, split or reordered (JSONL rows use their 1-based line number, synthetic rows their
//! index), so an error can always name the examples of a batch; a row derived from others keeps
//! an id derived from theirs (`perturb` keeps its input row's, a pair gets [`pairs::pair_id`]
//! of its two rows'); splitting by a key field never puts one key on both sides.

pub mod jsonl;
pub mod pairs;
pub mod perturb;
pub mod synth;

use crate::artifact::FileDigest;
use crate::rng::Rng;
use recipe_compiler::column::Column;
use recipe_compiler::diag::Diagnostic;
use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// The type of one record field, as a recipe declares it (`{prompt: String, digits: Int}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum FieldType {
    Int,
    Float,
    Bool,
    /// Text (`String` in recipes; named like `Column::Str`).
    Str,
    /// A conversation (`Messages` in recipes): a JSON list of `{role, content}` turns in a file,
    /// held in a `Column::Str` as its canonical text (`recipe_compiler::messages`).
    Messages,
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FieldType::Int => "Int",
            FieldType::Float => "Float",
            FieldType::Bool => "Bool",
            FieldType::Str => "String",
            FieldType::Messages => "Messages",
        })
    }
}

impl FieldType {
    /// The type a column holds (a `Str` column is `Str`: whether it holds conversations is the
    /// dataset's to say, [`Dataset::schema`]).
    pub fn of(column: &Column) -> FieldType {
        match column {
            Column::Int(_) => FieldType::Int,
            Column::Float(_) => FieldType::Float,
            Column::Bool(_) => FieldType::Bool,
            Column::Str(_) => FieldType::Str,
        }
    }
}

/// A record schema: required fields and their types, in declaration order.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Schema {
    pub fields: Vec<(String, FieldType)>,
}

impl Schema {
    pub fn new<S: Into<String>>(fields: impl IntoIterator<Item = (S, FieldType)>) -> Schema {
        Schema { fields: fields.into_iter().map(|(n, t)| (n.into(), t)).collect() }
    }

    /// TRL's supervised layout: `{prompt: String, completion: String}`.
    pub fn prompt_completion() -> Schema {
        Schema::new([("prompt", FieldType::Str), ("completion", FieldType::Str)])
    }

    /// TRL's preference layout: `{prompt: String, chosen: String, rejected: String}`.
    pub fn preference() -> Schema {
        Schema::new([("prompt", FieldType::Str), ("chosen", FieldType::Str), ("rejected", FieldType::Str)])
    }

    pub fn get(&self, name: &str) -> Option<FieldType> {
        self.fields.iter().find(|(n, _)| n == name).map(|&(_, t)| t)
    }
}

/// What to do with a malformed JSONL row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum BadRowPolicy {
    /// Stop at the first malformed row with its error.
    Fail,
    /// Drop malformed rows, counting them in the load report.
    Skip,
}

/// A dataset held as columns. Cheap to clone (strings are shared).
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// Where the rows came from, for messages and ids (`data/train.jsonl`, `synth.addition`).
    pub origin: String,
    /// Stable row ids (see the module invariants).
    pub ids: Vec<u64>,
    /// Columns in a fixed order: the declared fields (for JSONL, exactly the row type's).
    pub columns: Vec<(String, Column)>,
    /// sha256 of every file the rows were read from (empty for synthetic data).
    pub sources: Vec<FileDigest>,
    /// The `Str` columns that hold conversations (`FieldType::Messages`), by name.
    pub messages: Vec<String>,
}

impl Dataset {
    /// A dataset from columns; every column must have `ids.len()` rows.
    pub fn new(origin: impl Into<String>, ids: Vec<u64>, columns: Vec<(String, Column)>) -> Result<Dataset, DataError> {
        let origin = origin.into();
        if let Some((name, col)) = columns.iter().find(|(_, c)| c.len() != ids.len()) {
            return Err(DataError::Shape {
                origin,
                message: format!("column `{name}` has {} rows, expected {}", col.len(), ids.len()),
            });
        }
        Ok(Dataset { origin, ids, columns, sources: Vec::new(), messages: Vec::new() })
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// How errors name row `row`: `file:line` for rows read from a file, else its id and the
    /// dataset's origin.
    pub fn row_name(&self, row: usize) -> String {
        if self.sources.is_empty() {
            format!("row {} of {}", self.ids[row], self.origin)
        } else {
            format!("{}:{}", self.origin, self.ids[row])
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|(n, _)| n == name).map(|(_, c)| c)
    }

    /// The schema of all columns: a conversation column is `Messages`, not `Str`.
    pub fn schema(&self) -> Schema {
        let ty =
            |n: &String, c: &Column| if self.messages.contains(n) { FieldType::Messages } else { FieldType::of(c) };
        Schema { fields: self.columns.iter().map(|(n, c)| (n.clone(), ty(n, c))).collect() }
    }

    /// The dataset with the `Str` columns `names` marked as conversations (`Messages`).
    ///
    /// Errors: `DataError::NoSuchField`/`FieldType` when one is not a `Str` column.
    pub fn with_messages(mut self, names: &[&str]) -> Result<Dataset, DataError> {
        for name in names {
            match self.column(name) {
                Some(Column::Str(_)) if !self.messages.iter().any(|m| m == name) => {
                    self.messages.push(name.to_string())
                }
                Some(Column::Str(_)) => {}
                Some(other) => return Err(self.wrong_type(name, FieldType::Messages, other)),
                None => return Err(self.missing(name)),
            }
        }
        Ok(self)
    }

    /// A `String` column, or an error naming the field the caller needs. A conversation column
    /// is not one (its text is JSON, not the prompt): read it with [`Dataset::conversations`].
    pub fn strings(&self, name: &str) -> Result<&[Arc<str>], DataError> {
        match self.column(name) {
            Some(Column::Str(_)) if self.messages.iter().any(|m| m == name) => Err(DataError::FieldType {
                origin: self.origin.clone(),
                field: name.to_string(),
                expected: FieldType::Str,
                found: FieldType::Messages,
            }),
            Some(Column::Str(v)) => Ok(v),
            Some(other) => Err(DataError::FieldType {
                origin: self.origin.clone(),
                field: name.to_string(),
                expected: FieldType::Str,
                found: FieldType::of(other),
            }),
            None => Err(self.missing(name)),
        }
    }

    /// A conversation column: each row's canonical JSON text of its turns
    /// (`recipe_compiler::messages`), or an error naming the field the caller needs.
    pub fn conversations(&self, name: &str) -> Result<&[Arc<str>], DataError> {
        match self.column(name) {
            Some(Column::Str(v)) if self.messages.iter().any(|m| m == name) => Ok(v),
            Some(other) => Err(DataError::FieldType {
                origin: self.origin.clone(),
                field: name.to_string(),
                expected: FieldType::Messages,
                found: self.schema().get(name).unwrap_or(FieldType::of(other)),
            }),
            None => Err(self.missing(name)),
        }
    }

    /// A `Float` column, or an error naming the field the caller needs.
    pub fn floats(&self, name: &str) -> Result<&[f64], DataError> {
        match self.column(name) {
            Some(Column::Float(v)) => Ok(v),
            Some(other) => Err(self.wrong_type(name, FieldType::Float, other)),
            None => Err(self.missing(name)),
        }
    }

    /// An `Int` column, or an error naming the field the caller needs.
    pub fn ints(&self, name: &str) -> Result<&[i64], DataError> {
        match self.column(name) {
            Some(Column::Int(v)) => Ok(v),
            Some(other) => Err(self.wrong_type(name, FieldType::Int, other)),
            None => Err(self.missing(name)),
        }
    }

    fn wrong_type(&self, name: &str, expected: FieldType, found: &Column) -> DataError {
        DataError::FieldType {
            origin: self.origin.clone(),
            field: name.to_string(),
            expected,
            found: FieldType::of(found),
        }
    }

    /// This dataset with the column `name` set to `column`: replaced where it exists (keeping its
    /// place), else appended (what `With[R, {name: T}]` types). The new column holds no
    /// conversations (mark it with [`Dataset::with_messages`] if it does).
    ///
    /// Errors: `DataError::Shape` when `column` does not have one value per row.
    pub fn with_column(mut self, name: &str, column: Column) -> Result<Dataset, DataError> {
        if column.len() != self.len() {
            return Err(DataError::Shape {
                origin: self.origin.clone(),
                message: format!("column `{name}` has {} rows, expected {}", column.len(), self.len()),
            });
        }
        match self.columns.iter_mut().find(|(n, _)| n == name) {
            Some((_, slot)) => *slot = column,
            None => self.columns.push((name.to_string(), column)),
        }
        self.messages.retain(|m| m != name);
        Ok(self)
    }

    /// A field of one row rendered as text (`42`, `true`, the string itself): what an exact-match
    /// comparison against generated text uses.
    pub fn text_at(&self, name: &str, row: usize) -> Result<String, DataError> {
        Ok(match self.column(name).ok_or_else(|| self.missing(name))? {
            Column::Int(v) => v[row].to_string(),
            Column::Float(v) => v[row].to_string(),
            Column::Bool(v) => v[row].to_string(),
            Column::Str(v) => v[row].to_string(),
        })
    }

    fn missing(&self, name: &str) -> DataError {
        DataError::NoSuchField {
            origin: self.origin.clone(),
            field: name.to_string(),
            available: self.columns.iter().map(|(n, _)| n.clone()).collect(),
        }
    }

    /// The rows at `rows` (in that order), keeping their ids.
    pub fn select(&self, rows: &[usize]) -> Dataset {
        let columns = self.columns.iter().map(|(n, c)| (n.clone(), select_column(c, rows))).collect();
        Dataset {
            origin: self.origin.clone(),
            ids: rows.iter().map(|&r| self.ids[r]).collect(),
            columns,
            sources: self.sources.clone(),
            messages: self.messages.clone(),
        }
    }

    /// Rows whose `key` field value does not occur in `held`'s `key` column: how a training set
    /// is kept free of held-out examples (e.g. the same sum drawn by both generators).
    pub fn without_keys_of(&self, held: &Dataset, key: &str) -> Result<Dataset, DataError> {
        let held_keys: HashSet<String> = (0..held.len()).map(|r| held.text_at(key, r)).collect::<Result<_, _>>()?;
        let mut keep = Vec::with_capacity(self.len());
        for r in 0..self.len() {
            if !held_keys.contains(&self.text_at(key, r)?) {
                keep.push(r);
            }
        }
        Ok(self.select(&keep))
    }

    /// Splits into (train, held) with about `held_fraction` of the distinct `key` values held out,
    /// chosen by `rng`. All rows sharing a key land on the same side, so nothing leaks.
    pub fn split_by_key(&self, key: &str, held_fraction: f64, rng: &mut Rng) -> Result<(Dataset, Dataset), DataError> {
        let texts: Vec<String> = (0..self.len()).map(|r| self.text_at(key, r)).collect::<Result<_, _>>()?;
        // Distinct keys in first-seen order, so the split depends only on the data and the stream.
        let mut seen = HashSet::new();
        let mut keys: Vec<&str> = texts.iter().map(String::as_str).filter(|k| seen.insert(*k)).collect();
        rng.shuffle(&mut keys);
        let n_held = ((keys.len() as f64) * held_fraction.clamp(0.0, 1.0)).round() as usize;
        let held: HashSet<&str> = keys[..n_held].iter().copied().collect();
        let (mut train_rows, mut held_rows) = (Vec::new(), Vec::new());
        for (r, t) in texts.iter().enumerate() {
            if held.contains(t.as_str()) {
                held_rows.push(r);
            } else {
                train_rows.push(r);
            }
        }
        Ok((self.select(&train_rows), self.select(&held_rows)))
    }
}

fn select_column(c: &Column, rows: &[usize]) -> Column {
    match c {
        Column::Int(v) => Column::Int(rows.iter().map(|&r| v[r]).collect()),
        Column::Float(v) => Column::Float(rows.iter().map(|&r| v[r]).collect()),
        Column::Bool(v) => Column::Bool(rows.iter().map(|&r| v[r]).collect()),
        Column::Str(v) => Column::Str(rows.iter().map(|&r| v[r].clone()).collect()),
    }
}

/// A data problem a user can fix. Each names the file (and line and field where there is one).
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The data file could not be opened or read.
    #[error("cannot read data file `{}`: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// A row is not a JSON object.
    #[error("{}:{line}: not a JSON object: {message}", path.display())]
    BadJson { path: PathBuf, line: usize, message: String },
    /// A row lacks a field the schema declares.
    #[error("{}:{line}: missing field `{field}` (declared {expected})", path.display())]
    MissingField { path: PathBuf, line: usize, field: String, expected: FieldType },
    /// A row's field holds a value of the wrong type.
    #[error("{}:{line}: field `{field}` should be {expected}, found {found}", path.display())]
    WrongType { path: PathBuf, line: usize, field: String, expected: FieldType, found: String },
    /// The file holds no usable row.
    #[error("`{}` has no rows{}", path.display(), if *skipped > 0 { format!(" ({skipped} malformed rows skipped)") } else { String::new() })]
    Empty { path: PathBuf, skipped: usize },
    /// A stage asked for a field the dataset does not have.
    #[error("dataset `{origin}` has no field `{field}` (fields: {})", available.join(", "))]
    NoSuchField { origin: String, field: String, available: Vec<String> },
    /// A stage needs a field of another type.
    #[error("field `{field}` of dataset `{origin}` is {found}, expected {expected}")]
    FieldType { origin: String, field: String, expected: FieldType, found: FieldType },
    /// Columns of unequal length or bad generator arguments.
    #[error("dataset `{origin}`: {message}")]
    Shape { origin: String, message: String },
    /// A row holds a value its consumer cannot use (a non-finite rating); `row` names it as
    /// [`Dataset::row_name`] does.
    #[error("{row}: {message}")]
    BadValue { row: String, message: String },
}

impl DataError {
    /// Stable code for tests and the command's exit status.
    pub fn code(&self) -> &'static str {
        match self {
            DataError::Io { .. } => "recipe::data::io",
            DataError::BadJson { .. }
            | DataError::MissingField { .. }
            | DataError::WrongType { .. }
            | DataError::BadValue { .. } => "recipe::data::malformed",
            DataError::Empty { .. } => "recipe::data::empty",
            DataError::NoSuchField { .. } | DataError::FieldType { .. } => "recipe::data::field",
            DataError::Shape { .. } => "recipe::data::shape",
        }
    }

    /// The error as a user-facing diagnostic (no source span: the position is in the message).
    pub fn to_diagnostic(&self) -> Diagnostic {
        let d = Diagnostic::error(self.code(), self.to_string());
        match self {
            DataError::BadJson { .. } | DataError::MissingField { .. } | DataError::WrongType { .. } => {
                d.with_help("fix the row, or load the data with `on_error = skip` to drop malformed rows")
            }
            DataError::NoSuchField { field, available, .. } => {
                match recipe_compiler::diag::suggest(field, available.iter().map(String::as_str)) {
                    Some(s) => d.with_help(format!("did you mean `{s}`?")),
                    None => d,
                }
            }
            _ => d,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sums() -> Dataset {
        let prompts: Vec<Arc<str>> = ["1+1=", "2+2=", "1+1=", "3+3="].iter().map(|s| Arc::from(*s)).collect();
        Dataset::new(
            "t",
            vec![1, 2, 3, 4],
            vec![("prompt".into(), Column::Str(prompts)), ("n".into(), Column::Int(vec![1, 2, 1, 3]))],
        )
        .unwrap()
    }

    #[test]
    fn select_keeps_ids() {
        let d = sums().select(&[3, 0]);
        assert_eq!(d.ids, vec![4, 1]);
        assert_eq!(d.column("n"), Some(&Column::Int(vec![3, 1])));
    }

    #[test]
    fn without_keys_removes_every_duplicate() {
        let held = sums().select(&[0]);
        let train = sums().without_keys_of(&held, "prompt").unwrap();
        assert_eq!(train.ids, vec![2, 4]);
    }

    #[test]
    fn split_by_key_never_shares_a_key() {
        for seed in 0..20 {
            let (train, held) = sums().split_by_key("prompt", 0.5, &mut Rng::derive(seed, "split")).unwrap();
            assert_eq!(train.len() + held.len(), 4);
            let tk: HashSet<_> = (0..train.len()).map(|r| train.text_at("prompt", r).unwrap()).collect();
            assert!((0..held.len()).all(|r| !tk.contains(&held.text_at("prompt", r).unwrap())));
        }
    }

    #[test]
    fn unknown_field_suggests() {
        let err = sums().strings("promt").unwrap_err();
        assert_eq!(err.code(), "recipe::data::field");
        assert_eq!(err.to_diagnostic().help.as_deref(), Some("did you mean `prompt`?"));
    }

    #[test]
    fn with_column_replaces_in_place_or_appends() {
        let d = sums().with_column("n", Column::Float(vec![0.5; 4])).unwrap();
        assert_eq!(d.columns[1].0, "n");
        assert_eq!(d.floats("n").unwrap(), &[0.5; 4]);
        let d = d.with_column("m", Column::Int(vec![7; 4])).unwrap();
        assert_eq!(d.columns.len(), 3);
        assert_eq!(d.ints("m").unwrap(), &[7; 4]);
        assert_eq!(d.ints("n").unwrap_err().code(), "recipe::data::field");
        assert_eq!(d.with_column("x", Column::Int(vec![1])).unwrap_err().code(), "recipe::data::shape");
    }

    #[test]
    fn conversation_columns_are_not_strings() {
        let turns: Vec<Arc<str>> =
            (0..4).map(|i| Arc::from(recipe_compiler::messages::turn("user", &i.to_string()))).collect();
        let d = sums().with_column("chat", Column::Str(turns)).unwrap().with_messages(&["chat"]).unwrap();
        assert_eq!(d.schema().get("chat"), Some(FieldType::Messages));
        assert_eq!(d.schema().get("prompt"), Some(FieldType::Str));
        assert_eq!(d.strings("chat").unwrap_err().code(), "recipe::data::field");
        assert_eq!(&*d.conversations("chat").unwrap()[1], r#"[{"role":"user","content":"1"}]"#);
        assert_eq!(d.conversations("prompt").unwrap_err().code(), "recipe::data::field");
        assert_eq!(d.select(&[2]).schema().get("chat"), Some(FieldType::Messages), "rows keep the tag");
        let replaced = d.clone().with_column("chat", Column::Str(vec![Arc::from("x"); 4])).unwrap();
        assert_eq!(replaced.schema().get("chat"), Some(FieldType::Str), "a new column is plain text");
        assert_eq!(d.with_messages(&["n"]).unwrap_err().code(), "recipe::data::field");
    }

    #[test]
    fn ragged_columns_are_rejected() {
        let err = Dataset::new("t", vec![1, 2], vec![("n".into(), Column::Int(vec![1]))]).unwrap_err();
        assert_eq!(err.code(), "recipe::data::shape");
    }
}
