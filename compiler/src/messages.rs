//! `Messages`, TRL's conversational rows: a list of `{role, content}` turns, held everywhere
//! (scalar code, columns, generated data) as its canonical JSON text:
//! `[{"role":"user","content":"..."}]` — keys in that order, no spaces, strings escaped as
//! `serde_json` escapes them (`"`, `\`, control characters; other Unicode as is).
//!
//! Canonical text makes equal conversations equal strings, and lets two lists be concatenated
//! as text (`concat`) without parsing. Both scalar backends and the JSONL reader build their
//! text through this module, so they agree byte for byte.

/// The roles the language's builtins (`system`, `user`, `assistant`) write.
pub const ROLES: &[&str] = &["system", "user", "assistant"];

/// The canonical text of a list of `(role, content)` turns.
pub fn canonical<'s>(turns: impl IntoIterator<Item = (&'s str, &'s str)>) -> String {
    let mut out = String::from("[");
    for (i, (role, content)) in turns.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"role\":");
        out.push_str(&json_string(role));
        out.push_str(",\"content\":");
        out.push_str(&json_string(content));
        out.push('}');
    }
    out.push(']');
    out
}

/// One turn: `user("hi")` is `[{"role":"user","content":"hi"}]`.
pub fn turn(role: &str, content: &str) -> String {
    canonical([(role, content)])
}

/// The turns of `a` followed by those of `b`; both are canonical texts (what every producer of
/// a `Messages` value writes), so the result is too. The empty list `[]` is the identity.
/// Total on any strings (scalar code never fails), though only canonical inputs mean anything.
pub fn concat(a: &str, b: &str) -> String {
    let head = a.strip_suffix(']').unwrap_or(a);
    let tail = b.strip_prefix('[').unwrap_or(b);
    match (head, tail) {
        ("[", _) => b.to_string(),
        (_, "]") => a.to_string(),
        _ => format!("{head},{tail}"),
    }
}

/// Reads a JSON value as a conversation: an array of objects, each with a string `role` and a
/// string `content` (other keys ignored), giving its canonical text. `Err` says what is wrong
/// (`turn 2 is not ...`), for a malformed-row message.
pub fn from_json(value: &serde_json::Value) -> Result<String, String> {
    let serde_json::Value::Array(items) = value else {
        return Err("not a list of turns".into());
    };
    let mut turns = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let text = |key: &str| item.get(key).and_then(serde_json::Value::as_str);
        match (text("role"), text("content")) {
            (Some(role), Some(content)) => turns.push((role, content)),
            _ => return Err(format!("turn {i} is not an object with String `role` and `content`")),
        }
    }
    Ok(canonical(turns))
}

/// A string as a JSON string literal, escaped as `serde_json` escapes it.
fn json_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_are_canonical_json() {
        assert_eq!(turn("user", "hi"), r#"[{"role":"user","content":"hi"}]"#);
        let tricky = "say \"hé\" \\ 🙂\n\tend\u{1}";
        let text = turn("assistant", tricky);
        assert_eq!(text, r#"[{"role":"assistant","content":"say \"hé\" \\ 🙂\n\tend\u0001"}]"#);
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed[0]["content"], tricky);
        assert_eq!(from_json(&parsed).unwrap(), text, "reading canonical text gives it back");
    }

    #[test]
    fn concat_appends_turns() {
        let both = concat(&turn("system", "s"), &turn("user", "u"));
        assert_eq!(both, r#"[{"role":"system","content":"s"},{"role":"user","content":"u"}]"#);
        assert_eq!(concat("[]", &both), both);
        assert_eq!(concat(&both, "[]"), both);
        let parsed: serde_json::Value = serde_json::from_str(&concat(&both, &both)).unwrap();
        assert_eq!(parsed.as_array().unwrap().len(), 4);
    }

    #[test]
    fn json_is_read_strictly() {
        let read = |s: &str| from_json(&serde_json::from_str(s).unwrap());
        let spaced = r#"[ {"content": "x", "role": "user", "name": "n"} ]"#;
        assert_eq!(read(spaced).unwrap(), turn("user", "x"), "key order, spaces and other keys");
        assert_eq!(read("[]").unwrap(), "[]");
        assert!(read(r#""hi""#).is_err());
        assert!(read(r#"[{"role": "user"}]"#).unwrap_err().contains("turn 0"));
        assert!(read(r#"[{"role": "user", "content": 3}]"#).is_err());
        assert!(read(r#"[["user", "x"]]"#).is_err());
    }
}
