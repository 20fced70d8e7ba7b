//! Chat templates: a model's Jinja template (tokenizer_config.json's `chat_template`, or a GGUF
//! file's `tokenizer.chat_template`) rendered as transformers' `apply_chat_template` renders it,
//! and TRL's conversational rows turned into the text a stage tokenises.
//!
//! The template engine is minijinja (Jinja's author's Rust implementation) with
//! minijinja-contrib's Python-compatibility methods (`.strip()`, `.startswith()`, …), which Hub
//! templates call. The environment is transformers' (`utils/chat_template_utils.py`,
//! `_cached_compile_jinja_template`): `trim_blocks`, `lstrip_blocks`, loop controls, a
//! `raise_exception(message)` function, a `tojson` filter that writes what Python's
//! `json.dumps(x, ensure_ascii=False)` writes (not Jinja's HTML-escaping one), and the special
//! tokens (`bos_token`, `eos_token`, `pad_token`, `unk_token`) as variables. `strftime_now` is
//! deliberately not defined: a template that reads the clock could not replay, and the templates
//! that call it (Llama 3) fall back to a fixed date when it is undefined.
//!
//! What a conversational row becomes (TRL 1.16's `apply_chat_template`) is
//! `exec::conversations`'s.

use super::Tokenizer;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One turn of a conversation (TRL's conversational format: `{"role": ..., "content": ...}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// Parses a conversation stored as canonical JSON (`[{"role":"user","content":"…"}]`, how a
/// `Messages` field is held in a column).
///
/// Errors: a message naming what is malformed.
pub fn parse_messages(json: &str) -> Result<Vec<Message>, String> {
    serde_json::from_str(json).map_err(|e| format!("not a list of {{role, content}} messages: {e}"))
}

/// A compiled chat template with the special tokens it may read.
pub struct ChatTemplate {
    env: minijinja::Environment<'static>,
    /// `bos_token`, `eos_token`, … as their text (transformers' `special_tokens_map`).
    special: BTreeMap<&'static str, String>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").field("special", &self.special).finish()
    }
}

/// The name the template is compiled under (in minijinja's error messages).
const NAME: &str = "chat_template";

impl ChatTemplate {
    /// Compiles `source`. `special` maps `bos_token`, `eos_token`, `pad_token`, `unk_token` to
    /// their text (absent ones are undefined in the template, as in transformers).
    ///
    /// Errors: the template's syntax error, with its line (e.g. a `{% generation %}` block,
    /// which only transformers' own extension parses).
    pub fn new(source: &str, special: BTreeMap<&'static str, String>) -> Result<ChatTemplate, String> {
        let mut env = minijinja::Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |message: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, message))
        });
        env.add_filter("tojson", tojson);
        env.add_template_owned(NAME, source.to_owned()).map_err(|e| describe(&e))?;
        Ok(ChatTemplate { env, special })
    }

    /// The template of `tokenizer`'s model, with its BOS, EOS and PAD tokens; `None` when the
    /// model has no template (the embedded byte tokenizer, a folder without one).
    ///
    /// Errors: as [`ChatTemplate::new`].
    pub fn of(tokenizer: &Tokenizer) -> Result<Option<ChatTemplate>, String> {
        let spec = tokenizer.spec();
        let Some(source) = &spec.chat_template else { return Ok(None) };
        let named = [("bos_token", spec.bos_id), ("eos_token", Some(spec.eos_id)), ("pad_token", Some(spec.pad_id))];
        let special = named.into_iter().filter_map(|(name, id)| Some((name, tokenizer.token(id?)?))).collect();
        ChatTemplate::new(source, special).map(Some)
    }

    /// The text of `messages` (transformers' `apply_chat_template(messages, tokenize=False,
    /// add_generation_prompt=…)`).
    ///
    /// Errors: the template's own (`raise_exception`, an undefined method), with its line.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String, String> {
        let template = self.env.get_template(NAME).map_err(|e| describe(&e))?;
        let mut ctx: BTreeMap<&str, minijinja::Value> =
            self.special.iter().map(|(k, v)| (*k, minijinja::Value::from(v.as_str()))).collect();
        ctx.insert("messages", minijinja::Value::from_serialize(messages));
        ctx.insert("add_generation_prompt", minijinja::Value::from(add_generation_prompt));
        template.render(ctx).map_err(|e| describe(&e))
    }

    /// A prompt's text as TRL renders it: with the generation prompt after a user (or tool)
    /// turn; continuing the final turn when it is the assistant's (transformers'
    /// `continue_final_message`: the text up to the end of that turn's content).
    ///
    /// Errors: an empty prompt, a last turn of another role, the template's errors.
    pub fn prompt(&self, prompt: &[Message]) -> Result<String, String> {
        let last = prompt.last().ok_or("the prompt has no messages")?;
        match last.role.as_str() {
            "user" | "tool" => self.render(prompt, true),
            "assistant" => {
                let text = self.render(prompt, false)?;
                match text.rfind(last.content.trim()) {
                    Some(at) if !last.content.trim().is_empty() => {
                        Ok(text[..at + last.content.trim().len()].to_owned())
                    }
                    _ => Err("the template does not write the final assistant message's content".into()),
                }
            }
            role => Err(format!("the prompt's last message is a `{role}` turn (TRL accepts user, tool or assistant)")),
        }
    }
}

/// minijinja's error with its line, the way a user finds it in the template.
fn describe(e: &minijinja::Error) -> String {
    match (e.line(), e.detail()) {
        (Some(line), Some(detail)) => format!("chat template line {line}: {} ({detail})", e.kind()),
        (Some(line), None) => format!("chat template line {line}: {}", e.kind()),
        (None, _) => format!("chat template: {e}"),
    }
}

/// transformers' `tojson`: Python's `json.dumps(x, ensure_ascii=False, indent=indent,
/// sort_keys=sort_keys)` — separators `", "` and `": "` without indent, `","` and `": "` with it.
fn tojson(value: minijinja::Value, kwargs: minijinja::value::Kwargs) -> Result<String, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let _: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PyFormatter { indent, depth: 0, has_value: false });
    // Without `sort_keys` the value is written as it is, in the template's key order (as Python's
    // dicts keep it); serde_json's own map (without `preserve_order`) sorts its keys.
    let written = if sort_keys == Some(true) {
        serde_json::to_value(&value).and_then(|v| serde::Serialize::serialize(&v, &mut ser))
    } else {
        serde::Serialize::serialize(&value, &mut ser)
    };
    written.map_err(|e| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e.to_string()))?;
    Ok(String::from_utf8(out).expect("serde_json writes UTF-8"))
}

/// Python `json.dumps`'s layout on serde_json's writer.
struct PyFormatter {
    indent: Option<usize>,
    depth: usize,
    /// Whether the innermost open array or object has a value (its closing bracket goes on a
    /// line of its own when indenting).
    has_value: bool,
}

impl PyFormatter {
    fn newline<W: ?Sized + std::io::Write>(&self, w: &mut W) -> std::io::Result<()> {
        if let Some(n) = self.indent {
            w.write_all(b"\n")?;
            w.write_all(" ".repeat(n * self.depth).as_bytes())?;
        }
        Ok(())
    }
    fn separator<W: ?Sized + std::io::Write>(&self, w: &mut W, first: bool) -> std::io::Result<()> {
        if !first {
            w.write_all(if self.indent.is_some() { b"," } else { b", " })?;
        }
        self.newline(w)
    }
}

impl serde_json::ser::Formatter for PyFormatter {
    fn begin_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.depth += 1;
        self.has_value = false;
        w.write_all(b"[")
    }
    fn end_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.depth -= 1;
        if self.has_value {
            self.newline(w)?;
        }
        w.write_all(b"]")
    }
    fn end_array_value<W: ?Sized + std::io::Write>(&mut self, _: &mut W) -> std::io::Result<()> {
        self.has_value = true;
        Ok(())
    }
    fn begin_array_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        self.separator(w, first)
    }
    fn begin_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.depth += 1;
        self.has_value = false;
        w.write_all(b"{")
    }
    fn end_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.depth -= 1;
        if self.has_value {
            self.newline(w)?;
        }
        w.write_all(b"}")
    }
    fn end_object_value<W: ?Sized + std::io::Write>(&mut self, _: &mut W) -> std::io::Result<()> {
        self.has_value = true;
        Ok(())
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        self.separator(w, first)
    }
    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-Instruct's template (its tokenizer_config.json and GGUF metadata).
    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    fn m(role: &str, content: &str) -> Message {
        Message { role: role.into(), content: content.into() }
    }

    fn special() -> BTreeMap<&'static str, String> {
        BTreeMap::from([("eos_token", "<|im_end|>".to_owned()), ("bos_token", "<|im_start|>".to_owned())])
    }

    #[test]
    fn renders_smollm2_as_transformers_does() {
        let t = ChatTemplate::new(SMOLLM2, special()).unwrap();
        // transformers 4.57 `apply_chat_template([...], tokenize=False, add_generation_prompt=True)`.
        assert_eq!(
            t.render(&[m("user", "What is 2+2?")], true).unwrap(),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
             <|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(
            t.render(&[m("system", "Be brief."), m("user", "hi")], false).unwrap(),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
        );
    }

    #[test]
    fn a_prompt_gets_the_generation_prompt_or_continues_the_assistant() {
        let t = ChatTemplate::new(SMOLLM2, special()).unwrap();
        let p = t.prompt(&[m("system", "S"), m("user", "Q")]).unwrap();
        assert_eq!(p, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n");
        let cont = t.prompt(&[m("user", "Q"), m("assistant", "The answer is")]).unwrap();
        assert!(cont.ends_with("<|im_start|>assistant\nThe answer is"), "{cont}");
        assert!(t.prompt(&[m("system", "S")]).unwrap_err().contains("`system` turn"));
        assert!(t.prompt(&[]).is_err());
    }

    #[test]
    fn trims_blocks_raises_and_writes_python_json() {
        let source = "{% for m in messages %}\n  {% if m.role == 'bad' %}{{ raise_exception('no ' + m.role) }}{% endif %}\n{{ m.content.strip() | tojson }}|{{ {'a': [1, 'é']} | tojson }}|{{ bos_token }}\n{% endfor %}";
        let t = ChatTemplate::new(source, special()).unwrap();
        assert_eq!(
            t.render(&[m("user", " <b>é</b> ")], false).unwrap(),
            "\"<b>é</b>\"|{\"a\": [1, \"é\"]}|<|im_start|>\n"
        );
        let e = t.render(&[m("bad", "x")], false).unwrap_err();
        assert!(e.contains("no bad") && e.contains("line 2"), "{e}");
        let e = ChatTemplate::new("{% generation %}x{% endgeneration %}", special()).unwrap_err();
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn tojson_indents_like_python() {
        let t = ChatTemplate::new("{{ {'b': 1, 'a': [2]} | tojson(indent=2, sort_keys=true) }}", special()).unwrap();
        assert_eq!(t.render(&[], false).unwrap(), "{\n  \"a\": [\n    2\n  ],\n  \"b\": 1\n}");
        // Without `sort_keys`, the template's own key order, as Python's dicts keep it.
        let t = ChatTemplate::new("{{ {'b': 1, 'a': []} | tojson }}", special()).unwrap();
        assert_eq!(t.render(&[], false).unwrap(), "{\"b\": 1, \"a\": []}");
    }

    #[test]
    fn messages_parse_from_their_canonical_json() {
        let ms = parse_messages(r#"[{"role":"user","content":"a\n\"b\""}]"#).unwrap();
        assert_eq!(ms, vec![m("user", "a\n\"b\"")]);
        assert!(parse_messages(r#"[{"role":"user"}]"#).is_err());
    }
}
