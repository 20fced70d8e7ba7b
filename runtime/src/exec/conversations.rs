//! TRL's conversational rows, made text with a model's chat template before a stage or an
//! evaluation reads them: `messages`; `prompt` (+ `completion`); `prompt` + `chosen` +
//! `rejected` — each a `Messages` field, a list of `{role, content}` turns. What each becomes
//! follows TRL 1.16's `apply_chat_template` (`trl/data_utils.py`, rendered by
//! [`ChatTemplate`]):
//! - a prompt: rendered with the generation prompt (or continuing a final assistant turn);
//! - a response (`completion`, `chosen`, `rejected`): what rendering prompt + response adds after
//!   the longest common prefix of the prompt and every prompt + response of the row;
//! - `messages` (a conversation ending with the assistant's turn): its earlier turns are the
//!   prompt and its last turn the completion, so the loss is on the assistant's turn only.
//!
//! A response ends where the template ends the turn, with the EOS token's text when the
//! template writes it (`…<|im_end|>\n`); stages append the EOS id to every response, so that
//! text and what follows it are cut here, and the trained tokens are the response's and EOS
//! once (TRL trains on the template's end of turn as it is, which adds the newline after it).

use crate::data::{Dataset, FieldType};
use crate::model::chat::{parse_messages, ChatTemplate, Message};
use crate::model::Tokenizer;
use recipe_compiler::column::Column;
use std::sync::Arc;

/// The fields of TRL's conversational formats, in the order they are read.
const CONVERSATIONAL: [&str; 5] = ["messages", "prompt", "completion", "chosen", "rejected"];

/// Whether `data` has any field of TRL's conversational formats as `Messages`.
pub(super) fn is_conversational(data: &Dataset) -> bool {
    let schema = data.schema();
    CONVERSATIONAL.iter().any(|f| schema.get(f) == Some(FieldType::Messages))
}

/// `data` with its conversational fields rendered by `tok`'s chat template into `prompt` and
/// `completion` / `chosen` / `rejected` text (`messages` gives `prompt` and `completion` and is
/// dropped); other fields, ids and sources unchanged. Data with no such field is returned as it
/// is.
///
/// Errors (messages naming the row): the model has no chat template; a conversational field
/// beside a String one of the same format (TRL takes both or neither); a conversation that does
/// not end with the assistant's turn; the template's own errors.
pub(super) fn render(data: &Dataset, tok: &Tokenizer) -> Result<Dataset, String> {
    if !is_conversational(data) {
        return Ok(data.clone());
    }
    let template = ChatTemplate::of(tok)?.ok_or_else(|| {
        format!("its data ({}) is conversational (`Messages` fields) but the model has no chat template", data.origin)
    })?;
    let eos = tok.token(tok.eos_id()).unwrap_or_default();
    let schema = data.schema();
    let present: Vec<&str> = CONVERSATIONAL.iter().copied().filter(|f| schema.get(f).is_some()).collect();
    if let Some(text) = present.iter().find(|f| schema.get(f) != Some(FieldType::Messages)) {
        return Err(format!(
            "its data ({}) mixes conversational fields with `{text}: String`; TRL's formats take every one of \
             `{}` as `Messages` or none",
            data.origin,
            present.join("`, `")
        ));
    }
    let turns = |field: &str, row: usize| -> Result<Vec<Message>, String> {
        parse_messages(&data.conversations(field).map_err(|e| e.to_string())?[row])
            .map_err(|e| format!("{}: `{field}`: {e}", data.row_name(row)))
    };
    let responses: Vec<&str> =
        ["completion", "chosen", "rejected"].into_iter().filter(|f| present.contains(f)).collect();
    let whole_conversation = present.contains(&"messages") && !present.contains(&"prompt");
    let outputs: Vec<&str> =
        if whole_conversation { vec!["prompt", "completion"] } else { [&["prompt"][..], &responses].concat() };
    let mut texts: Vec<Vec<Arc<str>>> = vec![Vec::with_capacity(data.len()); outputs.len()];
    for row in 0..data.len() {
        let at_row = |e: String| format!("{}: {e}", data.row_name(row));
        let (prompt, responses) = if whole_conversation {
            let mut conversation = turns("messages", row)?;
            match conversation.last() {
                Some(last) if last.role == "assistant" => {}
                _ => {
                    return Err(at_row("`messages` does not end with the assistant's turn, the one trained on".into()))
                }
            }
            let last = conversation.pop().expect("checked above");
            (conversation, vec![vec![last]])
        } else {
            (turns("prompt", row)?, responses.iter().map(|f| turns(f, row)).collect::<Result<Vec<_>, _>>()?)
        };
        let alone = template.prompt(&prompt).map_err(at_row)?;
        let full: Vec<String> = responses
            .iter()
            .map(|r| template.render(&[&prompt[..], r].concat(), false))
            .collect::<Result<_, _>>()
            .map_err(at_row)?;
        let common = full.iter().fold(alone.len(), |n, f| n.min(common_prefix(&alone, f)));
        texts[0].push(Arc::from(&alone[..common]));
        for (k, f) in full.iter().enumerate() {
            texts[k + 1].push(Arc::from(without_final_eos(&f[common..], &eos)));
        }
    }
    let mut columns: Vec<(String, Column)> =
        data.columns.iter().filter(|(n, _)| !CONVERSATIONAL.contains(&n.as_str())).cloned().collect();
    columns.extend(outputs.iter().zip(texts).map(|(name, col)| (name.to_string(), Column::Str(col))));
    // Conversations under other names stay conversations (nothing reads them as text).
    let kept: Vec<&str> = data.messages.iter().map(String::as_str).filter(|m| !CONVERSATIONAL.contains(m)).collect();
    let mut rendered = Dataset::new(data.origin.clone(), data.ids.clone(), columns)
        .and_then(|d| d.with_messages(&kept))
        .map_err(|e| e.to_string())?;
    rendered.sources = data.sources.clone();
    Ok(rendered)
}

/// The length in bytes of the longest common prefix of `a` and `b`, on a character boundary.
fn common_prefix(a: &str, b: &str) -> usize {
    a.char_indices()
        .zip(b.chars())
        .take_while(|((_, x), y)| x == y)
        .map(|((i, x), _)| i + x.len_utf8())
        .last()
        .unwrap_or(0)
}

/// `text` without a final EOS token text and whatever whitespace follows it.
fn without_final_eos<'a>(text: &'a str, eos: &str) -> &'a str {
    let trimmed = text.trim_end();
    match trimmed.strip_suffix(eos) {
        Some(rest) if !eos.is_empty() => rest,
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{TokenizerSpec, Vocab};

    /// The byte tokenizer with a ChatML-like template: EOS is `<|endoftext|>`.
    fn chat_tokenizer() -> Tokenizer {
        let template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{{ eos_token }}\n{% endfor %}\
                        {% if add_generation_prompt %}<assistant>{% endif %}";
        Tokenizer::new(Vocab::bytes(), TokenizerSpec { chat_template: Some(template.into()), ..TokenizerSpec::bytes() })
    }

    fn turn(role: &str, content: &str) -> String {
        recipe_compiler::messages::turn(role, content)
    }

    fn data(fields: &[(&str, Vec<String>)], conversations: &[&str]) -> Dataset {
        let rows = fields[0].1.len();
        let columns = fields
            .iter()
            .map(|(n, v)| (n.to_string(), Column::Str(v.iter().map(|s| Arc::from(s.as_str())).collect())))
            .collect();
        let ids = (1..=rows as u64).collect();
        Dataset::new("chat.jsonl", ids, columns).unwrap().with_messages(conversations).unwrap()
    }

    fn texts(data: &Dataset, field: &str) -> Vec<String> {
        data.strings(field).unwrap().iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn prompt_and_completion_render_as_trl_splits_them() {
        let prompt = recipe_compiler::messages::concat(&turn("system", "S"), &turn("user", "Q"));
        let d = data(
            &[("prompt", vec![prompt]), ("completion", vec![turn("assistant", "A")]), ("answer", vec!["4".into()])],
            &["prompt", "completion"],
        );
        let r = render(&d, &chat_tokenizer()).unwrap();
        assert_eq!(texts(&r, "prompt"), ["<system>S<|endoftext|>\n<user>Q<|endoftext|>\n<assistant>"]);
        // The template's end of turn is the EOS the stage appends: cut with what follows it.
        assert_eq!(texts(&r, "completion"), ["A"]);
        assert_eq!(texts(&r, "answer"), ["4"]);
        assert!(r.messages.is_empty() && r.ids == d.ids);
    }

    #[test]
    fn a_conversation_trains_on_its_last_assistant_turn() {
        let conversation =
            [turn("user", "hi"), turn("assistant", "hello"), turn("user", "2+2?"), turn("assistant", "4")]
                .iter()
                .fold("[]".to_owned(), |all, t| recipe_compiler::messages::concat(&all, t));
        let d = data(&[("messages", vec![conversation])], &["messages"]);
        let r = render(&d, &chat_tokenizer()).unwrap();
        assert!(r.column("messages").is_none());
        assert_eq!(
            texts(&r, "prompt"),
            ["<user>hi<|endoftext|>\n<assistant>hello<|endoftext|>\n<user>2+2?<|endoftext|>\n<assistant>"]
        );
        assert_eq!(texts(&r, "completion"), ["4"]);
        let d = data(&[("messages", vec![turn("user", "hi")])], &["messages"]);
        let e = render(&d, &chat_tokenizer()).unwrap_err();
        assert!(e.contains("row 1 of chat.jsonl") && e.contains("assistant's turn"), "{e}");
    }

    #[test]
    fn preference_pairs_share_one_prompt() {
        let d = data(
            &[
                ("prompt", vec![turn("user", "Q")]),
                ("chosen", vec![turn("assistant", "good")]),
                ("rejected", vec![turn("assistant", "bad")]),
            ],
            &["prompt", "chosen", "rejected"],
        );
        let r = render(&d, &chat_tokenizer()).unwrap();
        assert_eq!(texts(&r, "prompt"), ["<user>Q<|endoftext|>\n<assistant>"]);
        assert_eq!((texts(&r, "chosen"), texts(&r, "rejected")), (vec!["good".into()], vec!["bad".into()]));
    }

    #[test]
    fn mixed_rows_and_models_without_a_template_are_refused() {
        let mixed = data(&[("prompt", vec![turn("user", "Q")]), ("completion", vec!["A".into()])], &["prompt"]);
        let e = render(&mixed, &chat_tokenizer()).unwrap_err();
        assert!(e.contains("`completion: String`"), "{e}");
        let chat = data(&[("prompt", vec![turn("user", "Q")])], &["prompt"]);
        let e = render(&chat, &Tokenizer::bytes()).unwrap_err();
        assert!(e.contains("no chat template"), "{e}");
        // Text rows pass through untouched, whatever the model.
        let text = data(&[("prompt", vec!["Q".into()])], &[]);
        assert_eq!(render(&text, &Tokenizer::bytes()).unwrap(), text);
    }
}
