//! JSON Lines datasets in TRL's field conventions (`prompt`/`completion`,
//! `prompt`/`chosen`/`rejected`), checked against the schema a recipe declares.
//!
//! Invariants: a row's id is its 1-based line number, so a message about a row always points at
//! the file's line; the schema is what is read: its fields, in declaration order, and no other
//! (a field the row type does not declare is never a column, so nothing downstream can read it);
//! blank lines are not rows; the sha256 covers the exact bytes that were parsed.

use super::{BadRowPolicy, DataError, Dataset, FieldType, Schema};
use crate::artifact::FileDigest;
use recipe_compiler::column::Column;
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;

/// What loading a file found besides the rows.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Rows kept.
    pub rows: usize,
    /// Malformed rows dropped under `BadRowPolicy::Skip`.
    pub skipped: usize,
    /// The first few skipped rows' errors (at most `MAX_REPORTED`), for the user to look at.
    pub examples: Vec<DataError>,
    /// The 1-based lines of those rows.
    pub skipped_lines: Vec<u64>,
}

/// How many skipped-row errors a report keeps.
pub const MAX_REPORTED: usize = 5;

/// Reads `path` as JSONL checked against `schema`.
pub fn read_jsonl(path: &Path, schema: &Schema, policy: BadRowPolicy) -> Result<(Dataset, LoadReport), DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
    let digest = FileDigest::of_bytes(path, &bytes);
    let text = String::from_utf8_lossy(&bytes);

    let mut report = LoadReport::default();
    let mut ids = Vec::new();
    let mut declared: Vec<Vec<Value>> = vec![Vec::new(); schema.fields.len()];
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        match parse_row(path, line_no, line, schema) {
            Ok(values) => {
                for (slot, v) in declared.iter_mut().zip(values) {
                    slot.push(v);
                }
                ids.push(line_no as u64);
            }
            Err(err) => match policy {
                BadRowPolicy::Fail => return Err(err),
                BadRowPolicy::Skip => {
                    report.skipped += 1;
                    if report.examples.len() < MAX_REPORTED {
                        report.examples.push(err);
                        report.skipped_lines.push(line_no as u64);
                    }
                }
            },
        }
    }
    if ids.is_empty() {
        return Err(DataError::Empty { path: path.to_path_buf(), skipped: report.skipped });
    }

    let columns: Vec<(String, Column)> = schema
        .fields
        .iter()
        .zip(declared)
        .map(|((name, ty), values)| (name.clone(), to_column(*ty, &values)))
        .collect();
    report.rows = ids.len();

    let mut data = Dataset::new(path.display().to_string(), ids, columns)?;
    data.sources.push(digest);
    Ok((data, report))
}

/// `data` as JSON Lines: one object per row, its fields in column order (what `read_jsonl`
/// reads back with the same schema; ids are not written). A non-finite Float is written `null`.
pub fn to_jsonl(data: &Dataset) -> Vec<u8> {
    let mut out = String::new();
    for row in 0..data.len() {
        out.push('{');
        for (i, (name, column)) in data.columns.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(&Value::from(name.as_str()).to_string());
            out.push_str(": ");
            let value = match column {
                Column::Int(v) => Value::from(v[row]),
                Column::Float(v) => Value::from(v[row]),
                Column::Bool(v) => Value::from(v[row]),
                Column::Str(v) => Value::from(&*v[row]),
            };
            out.push_str(&value.to_string());
        }
        out.push_str("}\n");
    }
    out.into_bytes()
}

/// Parses one line into the declared fields' values (type-checked); other fields are ignored.
fn parse_row(path: &Path, line: usize, text: &str, schema: &Schema) -> Result<Vec<Value>, DataError> {
    let bad = |message: String| DataError::BadJson { path: path.to_path_buf(), line, message };
    let object = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(o)) => o,
        Ok(other) => return Err(bad(format!("found {}", json_kind(&other)))),
        Err(e) => return Err(bad(e.to_string())),
    };
    let mut values = Vec::with_capacity(schema.fields.len());
    for (field, ty) in &schema.fields {
        let value = object.get(field).ok_or_else(|| DataError::MissingField {
            path: path.to_path_buf(),
            line,
            field: field.clone(),
            expected: *ty,
        })?;
        if !fits(value, *ty) {
            return Err(DataError::WrongType {
                path: path.to_path_buf(),
                line,
                field: field.clone(),
                expected: *ty,
                found: describe(value),
            });
        }
        values.push(value.clone());
    }
    Ok(values)
}

fn fits(v: &Value, ty: FieldType) -> bool {
    match ty {
        FieldType::Int => v.as_i64().is_some(),
        FieldType::Float => v.is_number(),
        FieldType::Bool => v.is_boolean(),
        FieldType::Str => v.is_string(),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A value for an error message: its kind and a short rendering.
fn describe(v: &Value) -> String {
    let mut shown = v.to_string();
    if shown.len() > 40 {
        let cut = (0..=40).rev().find(|&i| shown.is_char_boundary(i)).unwrap_or(0);
        shown.truncate(cut);
        shown.push('…');
    }
    format!("{} `{shown}`", json_kind(v))
}

/// Builds a column from values already checked by `fits`.
fn to_column(ty: FieldType, values: &[Value]) -> Column {
    match ty {
        FieldType::Int => Column::Int(values.iter().map(|v| v.as_i64().unwrap_or_default()).collect()),
        FieldType::Float => Column::Float(values.iter().map(|v| v.as_f64().unwrap_or(f64::NAN)).collect()),
        FieldType::Bool => Column::Bool(values.iter().map(|v| v.as_bool().unwrap_or_default()).collect()),
        FieldType::Str => Column::Str(values.iter().map(|v| Arc::from(v.as_str().unwrap_or_default())).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_rows_read_back_unchanged() {
        let rated = crate::data::synth::rated_responses(1..=2, 20, 4, 1).unwrap();
        let pairs = crate::data::pairs::best_worst_pairs(&rated).unwrap();
        let n = pairs.len();
        let pairs = pairs
            .with_column("note", Column::Str(vec![Arc::from("a \"quoted\"\nline é"); n]))
            .unwrap()
            .with_column("ok", Column::Bool(vec![true; n]))
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.jsonl");
        std::fs::write(&path, to_jsonl(&pairs)).unwrap();
        let (back, _) = read_jsonl(&path, &pairs.schema(), BadRowPolicy::Fail).unwrap();
        for ((name, read), (_, written)) in back.columns.iter().zip(&pairs.columns) {
            match (read, written) {
                // Written as the shortest text that round-trips (ryu); serde_json's reader (without
                // its `float_roundtrip` feature) may land one ulp away.
                (Column::Float(read), Column::Float(written)) => {
                    for (r, w) in read.iter().zip(written) {
                        assert!((r - w).abs() <= 4.0 * f64::EPSILON * w.abs(), "`{name}`: {r} vs {w}");
                    }
                }
                _ => assert_eq!(read, written, "`{name}`"),
            }
        }
        let first = std::fs::read_to_string(&path).unwrap();
        assert!(first.starts_with("{\"prompt\": "), "fields in column order: {first}");
    }
}
