//! JSON Lines datasets in TRL's field conventions (`prompt`/`completion`,
//! `prompt`/`chosen`/`rejected`), checked against the schema a recipe declares.
//!
//! Invariants: a row's id is its 1-based line number, so a message about a row always points at
//! the file's line; declared fields come first in declaration order; an extra field is kept when
//! every kept row has it with one type (Int widens to Float), and is otherwise dropped and named in
//! the report; blank lines are not rows; the sha256 covers the exact bytes that were parsed.

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
    /// Extra fields dropped because some row lacked them or their type varied.
    pub dropped_fields: Vec<String>,
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
    let mut extra = ExtraFields::default();
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        match parse_row(path, line_no, line, schema) {
            Ok((values, object)) => {
                for (slot, v) in declared.iter_mut().zip(values) {
                    slot.push(v);
                }
                extra.add_row(object, schema);
                ids.push(line_no as u64);
            }
            Err(err) => match policy {
                BadRowPolicy::Fail => return Err(err),
                BadRowPolicy::Skip => {
                    report.skipped += 1;
                    if report.examples.len() < MAX_REPORTED {
                        report.examples.push(err);
                    }
                }
            },
        }
    }
    if ids.is_empty() {
        return Err(DataError::Empty { path: path.to_path_buf(), skipped: report.skipped });
    }

    let mut columns: Vec<(String, Column)> = schema
        .fields
        .iter()
        .zip(declared)
        .map(|((name, ty), values)| (name.clone(), to_column(*ty, &values)))
        .collect();
    let (kept, dropped) = extra.finish(ids.len());
    columns.extend(kept);
    report.dropped_fields = dropped;
    report.rows = ids.len();

    let mut data = Dataset::new(path.display().to_string(), ids, columns)?;
    data.sources.push(digest);
    Ok((data, report))
}

/// Parses one line: the declared fields' values (type-checked) and the whole object.
fn parse_row(
    path: &Path,
    line: usize,
    text: &str,
    schema: &Schema,
) -> Result<(Vec<Value>, serde_json::Map<String, Value>), DataError> {
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
    Ok((values, object))
}

fn fits(v: &Value, ty: FieldType) -> bool {
    match ty {
        FieldType::Int => v.as_i64().is_some(),
        FieldType::Float => v.is_number(),
        FieldType::Bool => v.is_boolean(),
        FieldType::Str => v.is_string(),
    }
}

/// The narrowest field type of a JSON value, if it has one.
fn infer(v: &Value) -> Option<FieldType> {
    match v {
        Value::Bool(_) => Some(FieldType::Bool),
        Value::String(_) => Some(FieldType::Str),
        Value::Number(n) if n.is_i64() => Some(FieldType::Int),
        Value::Number(_) => Some(FieldType::Float),
        _ => None,
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

/// Fields beyond the schema, collected per kept row.
#[derive(Default)]
struct ExtraFields {
    /// Field name, its type so far (`None` once inconsistent), values of the rows that had it.
    fields: Vec<(String, Option<FieldType>, Vec<Value>)>,
}

impl ExtraFields {
    fn add_row(&mut self, object: serde_json::Map<String, Value>, schema: &Schema) {
        for (name, value) in object {
            if schema.get(&name).is_some() {
                continue;
            }
            let ty = infer(&value);
            match self.fields.iter_mut().find(|(n, _, _)| *n == name) {
                Some((_, known, values)) => {
                    *known = match (*known, ty) {
                        (Some(a), Some(b)) if a == b => Some(a),
                        (Some(FieldType::Int | FieldType::Float), Some(FieldType::Int | FieldType::Float)) => {
                            Some(FieldType::Float)
                        }
                        _ => None,
                    };
                    values.push(value);
                }
                None => self.fields.push((name, ty, vec![value])),
            }
        }
    }

    /// Columns for fields every row had with one type; the names of the others.
    fn finish(self, rows: usize) -> (Vec<(String, Column)>, Vec<String>) {
        let mut kept = Vec::new();
        let mut dropped = Vec::new();
        for (name, ty, values) in self.fields {
            match ty {
                Some(ty) if values.len() == rows => kept.push((name, to_column(ty, &values))),
                _ => dropped.push(name),
            }
        }
        (kept, dropped)
    }
}
