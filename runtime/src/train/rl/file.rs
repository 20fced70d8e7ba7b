//! Rollouts from a JSONL file (`recipe loss --rollouts`): one completion a line, with its
//! `prompt` (text), its completion as `completion` (text; EOS appended unless
//! `"truncated": true`) or `completion_ids` (ids used verbatim, truncated unless the last is a
//! stop id), and its `reward` (a number, or `null` for unscored). Consecutive lines with the same
//! prompt form a group.

use super::rollouts::{Completion, Group, Rollouts, Tally};
use crate::data::{DataError, FieldType};
use crate::model::Tokenizer;
use serde_json::Value;
use std::path::Path;

/// The rollouts of the file at `path`, tokenised with `tok`, and their sampling metrics
/// (`reward`, `reward_std`, `completions/*`, ...; `batch_scaled` as [`Tally::metrics`]). Unscored completions are left out, as in
/// training. Advantages are 0: the caller sets them.
///
/// Errors: `DataError` naming `file:line` for an unreadable file, a line that is not a JSON
/// object, a missing or mistyped field, text the tokenizer cannot encode, an empty prompt, a
/// completion id outside the vocabulary of `vocab` tokens, or a file with no scored completion.
pub fn read_rollouts(path: &Path, tok: &Tokenizer, vocab: usize, batch_scaled: bool) -> Result<Rollouts, DataError> {
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Io { path: path.into(), source })?;
    let mut groups: Vec<(String, Group, Vec<(usize, bool)>, Vec<f64>)> = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let line_no = i + 1;
        let bad = |message: String| DataError::BadJson { path: path.into(), line: line_no, message };
        let wrong = |field: &str, expected: FieldType, found: &Value| DataError::WrongType {
            path: path.into(),
            line: line_no,
            field: field.into(),
            expected,
            found: found.to_string(),
        };
        let row: Value = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        let Value::Object(row) = row else { return Err(bad("a rollout is a JSON object".into())) };
        let field = |name: &str| row.get(name).filter(|v| !v.is_null());
        let prompt = match field("prompt") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => return Err(wrong("prompt", FieldType::Str, other)),
            None => {
                let (field, expected) = ("prompt".into(), FieldType::Str);
                return Err(DataError::MissingField { path: path.into(), line: line_no, field, expected });
            }
        };
        let declared_truncated = match field("truncated") {
            None => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(other) => return Err(wrong("truncated", FieldType::Bool, other)),
        };
        let encode = |s: &str| tok.encode(s).map_err(|e| bad(e.to_string()));
        let (ids, truncated) = match (field("completion"), field("completion_ids")) {
            (_, Some(Value::Array(items))) => {
                let ids = items
                    .iter()
                    .map(|v| v.as_u64().and_then(|x| u32::try_from(x).ok()))
                    .collect::<Option<Vec<u32>>>()
                    .ok_or_else(|| bad("`completion_ids` must be a list of token ids".into()))?;
                let stopped = ids.last().is_some_and(|&t| tok.is_stop(t));
                (ids, declared_truncated.unwrap_or(!stopped))
            }
            (_, Some(other)) => {
                return Err(bad(format!("`completion_ids` must be a list of token ids, found {other}")))
            }
            (Some(Value::String(s)), None) => {
                let mut ids = encode(s)?;
                let truncated = declared_truncated.unwrap_or(false);
                if !truncated {
                    ids.push(tok.eos_id());
                }
                (ids, truncated)
            }
            (Some(other), None) => return Err(wrong("completion", FieldType::Str, other)),
            (None, None) => return Err(bad("a rollout needs `completion` (text) or `completion_ids`".into())),
        };
        if ids.is_empty() {
            return Err(bad("the completion has no token".into()));
        }
        if let Some(id) = ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(bad(format!("completion id {id} is outside the policy's vocabulary of {vocab} tokens")));
        }
        if prompt.is_empty() || tok.encode(&prompt).map_err(|e| bad(e.to_string()))?.is_empty() {
            return Err(bad("the prompt is empty: the first completion token would be predicted from nothing".into()));
        }
        let reward = match row.get("reward") {
            Some(Value::Null) => f64::NAN,
            Some(v) => v.as_f64().ok_or_else(|| wrong("reward", FieldType::Float, v))?,
            None => {
                let (field, expected) = ("reward".into(), FieldType::Float);
                return Err(DataError::MissingField { path: path.into(), line: line_no, field, expected });
            }
        };
        let stopped = usize::from(ids.last().is_some_and(|&t| tok.is_stop(t)));
        let text = tok.decode(&ids[..ids.len() - stopped]);
        let completion = Completion { ids, text, reward, truncated, advantage: 0.0, old_logps: None, entropy: None };
        if groups.last().is_none_or(|(p, ..)| *p != prompt) {
            let group = Group {
                row: groups.len(),
                example_id: line_no as u64,
                prompt: encode(&prompt)?,
                completions: Vec::new(),
            };
            groups.push((prompt, group, Vec::new(), Vec::new()));
        }
        let (_, group, shapes, rewards) = groups.last_mut().expect("pushed");
        shapes.push((completion.ids.len(), completion.truncated));
        rewards.push(completion.reward);
        group.completions.push(completion);
    }
    let mut tally = Tally::default();
    let mut kept = Vec::new();
    for (_, mut group, shapes, rewards) in groups {
        tally.record_group(&shapes, &rewards);
        group.completions.retain(|c| !c.reward.is_nan());
        match group.completions.is_empty() {
            true => tally.unscored_groups += 1,
            false => kept.push(group),
        }
    }
    if kept.is_empty() {
        return Err(DataError::Empty { path: path.into(), skipped: 0 });
    }
    Ok(Rollouts { groups: kept, metrics: tally.metrics(batch_scaled), reused: false })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{TokenizerSpec, Vocab};

    #[test]
    fn lines_with_one_prompt_are_a_group_and_eos_follows_unless_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        let rows = [
            r#"{"prompt": "1+1=", "completion": "2", "reward": 1.0}"#,
            r#"{"prompt": "1+1=", "completion": "33", "truncated": true, "reward": 0.0}"#,
            r#"{"prompt": "1+1=", "completion": "x", "reward": null}"#,
            r#"{"prompt": "2+2=", "completion_ids": [52, 256], "reward": 1}"#,
        ];
        std::fs::write(&path, rows.join("\n")).unwrap();
        let tok = Tokenizer::new(Vocab::bytes(), TokenizerSpec::bytes());
        let r = read_rollouts(&path, &tok, 257, false).unwrap();
        assert_eq!(r.groups.len(), 2);
        let first = &r.groups[0].completions;
        assert_eq!(first.len(), 2, "the unscored completion is left out");
        assert_eq!((first[0].ids.clone(), first[0].truncated), (vec![u32::from(b'2'), tok.eos_id()], false));
        assert_eq!((first[1].ids.len(), first[1].truncated), (2, true));
        assert_eq!((r.groups[1].completions[0].text.as_str(), r.groups[1].completions[0].truncated), ("4", false));
        let metric = |k: &str| r.metrics.iter().find(|(n, _)| n == k).unwrap().1;
        assert_eq!(metric("rewards/unscored"), 1.0);
        assert_eq!(metric("completions/clipped_ratio"), 0.25);

        std::fs::write(&path, "{\"prompt\": \"a\", \"reward\": 1}\n").unwrap();
        let err = read_rollouts(&path, &tok, 257, false).unwrap_err().to_string();
        assert!(err.contains("r.jsonl:1") && err.contains("completion"), "{err}");
        for (row, says) in [
            (r#"{"prompt": "a", "completion_ids": [99999], "reward": 1}"#, "outside the policy's vocabulary"),
            (r#"{"prompt": "", "completion": "1", "reward": 1}"#, "the prompt is empty"),
        ] {
            std::fs::write(&path, row).unwrap();
            let err = read_rollouts(&path, &tok, 257, false).unwrap_err().to_string();
            assert!(err.contains("r.jsonl:1") && err.contains(says), "{err}");
        }
    }
}
