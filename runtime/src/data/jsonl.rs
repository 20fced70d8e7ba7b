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
use recipe_compiler::messages;
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

    let conversations: Vec<&str> =
        schema.fields.iter().filter(|(_, ty)| *ty == FieldType::Messages).map(|(n, _)| n.as_str()).collect();
    let mut data = Dataset::new(path.display().to_string(), ids, columns)?.with_messages(&conversations)?;
    data.sources.push(digest);
    Ok((data, report))
}

/// `data` as JSON Lines: one object per row, its fields in column order (what `read_jsonl`
/// reads back with the same schema; ids are not written). A non-finite Float is written `null`,
/// a conversation as its list of turns.
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
                Column::Str(v) if data.messages.contains(name) => {
                    // Its canonical text is already the JSON list.
                    out.push_str(&v[row]);
                    continue;
                }
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
        let value = field_value(value, *ty).map_err(|found| DataError::WrongType {
            path: path.to_path_buf(),
            line,
            field: field.clone(),
            expected: *ty,
            found,
        })?;
        values.push(value);
    }
    Ok(values)
}

/// The value of a field declared `ty` (a conversation's canonical text), or what was found
/// instead, for the message.
fn field_value(v: &Value, ty: FieldType) -> Result<Value, String> {
    let fits = match ty {
        FieldType::Int => v.as_i64().is_some(),
        FieldType::Float => v.is_number(),
        FieldType::Bool => v.is_boolean(),
        FieldType::Str => v.is_string(),
        FieldType::Messages => {
            return messages::from_json(v).map(Value::String).map_err(|problem| format!("{} ({problem})", describe(v)))
        }
    };
    if fits {
        Ok(v.clone())
    } else {
        Err(describe(v))
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

/// Builds a column from values already checked by `field_value`.
fn to_column(ty: FieldType, values: &[Value]) -> Column {
    match ty {
        FieldType::Int => Column::Int(values.iter().map(|v| v.as_i64().unwrap_or_default()).collect()),
        FieldType::Float => Column::Float(values.iter().map(|v| v.as_f64().unwrap_or(f64::NAN)).collect()),
        FieldType::Bool => Column::Bool(values.iter().map(|v| v.as_bool().unwrap_or_default()).collect()),
        // A conversation's value is already its canonical text (`parse_row`).
        FieldType::Str | FieldType::Messages => {
            Column::Str(values.iter().map(|v| Arc::from(v.as_str().unwrap_or_default())).collect())
        }
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

    fn chat_schema() -> Schema {
        Schema::new([("messages", FieldType::Messages), ("n", FieldType::Int)])
    }

    fn read(text: &str, policy: BadRowPolicy) -> Result<(Dataset, LoadReport), DataError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chat.jsonl");
        std::fs::write(&path, text).unwrap();
        read_jsonl(&path, &chat_schema(), policy)
    }

    #[test]
    fn conversations_are_read_canonically_and_written_back() {
        let rows = concat!(
            r#"{"messages": [{"role": "system", "content": "Be \"brief\"."}, {"content": "2+2?\nNow", "role": "user", "name": "x"}], "n": 1}"#,
            "\n",
            r#"{"n": 2, "messages": [{"role":"assistant","content":"héllo 🙂"}], "other": [1]}"#,
            "\n",
        );
        let (data, _) = read(rows, BadRowPolicy::Fail).unwrap();
        assert_eq!(data.schema(), chat_schema(), "the column is tagged a conversation");
        let texts = data.conversations("messages").unwrap();
        let first = messages::concat(&messages::turn("system", "Be \"brief\"."), &messages::turn("user", "2+2?\nNow"));
        assert_eq!(&*texts[0], first, "keys in order, no spaces, other keys dropped");
        assert_eq!(&*texts[1], messages::turn("assistant", "héllo 🙂"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("back.jsonl");
        std::fs::write(&path, to_jsonl(&data)).unwrap();
        let (back, _) = read_jsonl(&path, &chat_schema(), BadRowPolicy::Fail).unwrap();
        assert_eq!(back.columns, data.columns, "written as lists of turns, read back the same");
    }

    #[test]
    fn malformed_conversations_name_their_line() {
        let good = r#"{"messages": [{"role": "user", "content": "hi"}], "n": 1}"#;
        for (bad, says) in [
            (r#"{"messages": "hi", "n": 2}"#, "not a list of turns"),
            (r#"{"messages": [{"role": "user"}], "n": 2}"#, "turn 0 is not an object"),
            (r#"{"messages": [{"role": "user", "content": "a"}, {"role": 1, "content": "b"}], "n": 2}"#, "turn 1"),
            (r#"{"messages": [["user", "hi"]], "n": 2}"#, "turn 0"),
        ] {
            let text = format!("{good}\n\n{bad}\n");
            let err = read(&text, BadRowPolicy::Fail).unwrap_err();
            let message = err.to_string();
            assert_eq!(err.code(), "recipe::data::malformed", "{message}");
            assert!(
                message.contains("chat.jsonl:3: field `messages` should be Messages") && message.contains(says),
                "{message}"
            );
            let (kept, report) = read(&text, BadRowPolicy::Skip).unwrap();
            assert_eq!((kept.len(), report.skipped), (1, 1));
        }
    }
}
