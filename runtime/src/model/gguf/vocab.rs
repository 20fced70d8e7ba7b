//! The tokenizer a GGUF file describes in its metadata (`tokenizer.ggml.*`, `tokenizer.chat_template`),
//! rebuilt as the `tokenizer.json` transformers builds from it, so ids agree with
//! `AutoTokenizer.from_pretrained(folder, gguf_file=…)`.
//!
//! Source: transformers 5.24 `integrations/gguf/gguf_tokenizer_mapping.py`: `byte_level_tokenizer`
//! (a GPT-2 tokenizer over the file's tokens and merges: ByteLevel pre-tokenizer with GPT-2's
//! split regex, no prefix space, ByteLevel decoder), `add_gguf_special_tokens` (token type 3,
//! control, becomes a special added token; type 4, user-defined, a plain added token; neither is
//! normalised) and `set_split_regex` (the `tokenizer.ggml.pre` values of its
//! `GGUF_PRE_TOKENIZER_SPLITS` replace GPT-2's split with their own; those are refused here rather
//! than tokenised differently; any other value keeps GPT-2's, as there).

use serde_json::{json, Value};

use super::Meta;
use crate::model::tokenizer::{byte_to_char, TokenizerSpec};

/// llama.cpp's token types (`llama_token_type`) that become added tokens.
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;

/// `tokenizer.ggml.pre` values for which transformers splits text with its own regex instead of
/// GPT-2's (the keys of its `GGUF_PRE_TOKENIZER_SPLITS`): refused.
const OTHER_SPLITS: &[&str] = &[
    "llama3",
    "llama-v3",
    "llama-bpe",
    "falcon3",
    "falcon-h1",
    "pixtral",
    "midm-2.0",
    "lfm2",
    "jina-v5-nano",
    "dbrx",
    "smaug-bpe",
    "tekken",
    "qwen2",
    "deepseek-r1-qwen",
    "kormo",
    "f2llmv2",
    "megrez",
    "qwen35",
    "gpt-4o",
    "llama4",
    "kanana2",
    "talkie",
    "minimax-m2",
];

/// The `tokenizer.json` text and the special-token spec of a GGUF file's tokenizer.
///
/// Errors (the message names the metadata key): a tokenizer model other than `gpt2` (byte-level
/// BPE), a split transformers does not treat as GPT-2's, missing or ill-typed tokens, merges or
/// token types, a merge that is not two tokens, a missing EOS id.
pub(super) fn tokenizer(meta: &Meta) -> Result<(String, TokenizerSpec), String> {
    let model = meta.str("tokenizer.ggml.model")?;
    if model != "gpt2" {
        return Err(format!(
            "GGUF tokenizer model `{model}` (`tokenizer.ggml.model`) is not supported (only `gpt2`, byte-level BPE)"
        ));
    }
    if let Some(pre) = meta.opt_str("tokenizer.ggml.pre")? {
        if OTHER_SPLITS.contains(&pre) {
            return Err(format!(
                "GGUF pre-tokenizer `{pre}` (`tokenizer.ggml.pre`) is not supported (only GPT-2's split)"
            ));
        }
    }
    let tokens = meta.strings("tokenizer.ggml.tokens")?;
    let types = match meta.get("tokenizer.ggml.token_type") {
        Some(_) => meta.ints("tokenizer.ggml.token_type")?,
        None => Vec::new(),
    };
    let merges = meta
        .strings("tokenizer.ggml.merges")?
        .iter()
        .map(|m| match m.split(' ').collect::<Vec<_>>()[..] {
            [a, b] => Ok(json!([a, b])),
            _ => Err(format!("GGUF `tokenizer.ggml.merges`: {m:?} is not two tokens separated by a space")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let spec = special_tokens(meta, tokens.len())?;
    Ok((tokenizer_json(&tokens, &types, merges).to_string(), spec))
}

/// The special ids: `tokenizer.ggml.bos_token_id`, `eos_token_id` (required),
/// `padding_token_id` (else the EOS), `add_bos_token` (false when absent, transformers' default
/// for `gpt2`) and `tokenizer.chat_template`.
fn special_tokens(meta: &Meta, vocab: usize) -> Result<TokenizerSpec, String> {
    let id = |key: &str| -> Result<Option<u32>, String> {
        meta.opt_usize(key)?
            .map(|id| u32::try_from(id).ok().filter(|&id| (id as usize) < vocab))
            .map(|id| id.ok_or_else(|| format!("GGUF `{key}` is outside the vocabulary of {vocab}")))
            .transpose()
    };
    let eos_id = id("tokenizer.ggml.eos_token_id")?.ok_or("GGUF metadata has no `tokenizer.ggml.eos_token_id`")?;
    let bos_id = id("tokenizer.ggml.bos_token_id")?;
    let add_bos = meta.opt_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(false);
    if add_bos && bos_id.is_none() {
        return Err("GGUF `tokenizer.ggml.add_bos_token` is true but there is no `tokenizer.ggml.bos_token_id`".into());
    }
    Ok(TokenizerSpec {
        bos_id,
        add_bos,
        eos_id,
        extra_stop_ids: Vec::new(),
        pad_id: id("tokenizer.ggml.padding_token_id")?.unwrap_or(eos_id),
        chat_template: meta.opt_str("tokenizer.chat_template")?.map(str::to_owned),
    })
}

/// transformers' `byte_level_tokenizer` + `add_gguf_special_tokens` as a `tokenizer.json` value.
/// A token written outside GPT-2's byte alphabet is respelled byte by byte (as transformers does);
/// a control token outside the alphabet is not added (transformers: a llama.cpp mislabel), and a
/// user-defined token is added only when its spelling is in the vocabulary.
fn tokenizer_json(tokens: &[String], types: &[i64], merges: Vec<Value>) -> Value {
    let alphabet = byte_to_char();
    let in_alphabet = |t: &str| t.chars().all(|c| alphabet.contains(&c));
    let spelled: Vec<String> = tokens
        .iter()
        .map(|t| if in_alphabet(t) { t.clone() } else { t.bytes().map(|b| alphabet[b as usize]).collect() })
        .collect();
    let vocab: serde_json::Map<String, Value> =
        spelled.iter().enumerate().map(|(id, t)| (t.clone(), json!(id))).collect();
    let added = |id: usize, content: &str, special: bool| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
               "normalized": false, "special": special})
    };
    let mut added_tokens = Vec::new();
    for (id, (token, &kind)) in tokens.iter().zip(types).enumerate() {
        if kind == CONTROL && in_alphabet(token) {
            added_tokens.push(added(id, token, true));
        } else if kind == USER_DEFINED && vocab.contains_key(token.as_str()) {
            added_tokens.push(added(id, token, false));
        }
    }
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": added_tokens,
        "normalizer": null,
        "pre_tokenizer": byte_level,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {}
        },
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges}
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::meta;
    use super::*;
    use candle_core::quantized::gguf_file::Value as G;

    fn strings(items: &[&str]) -> G {
        G::Array(items.iter().map(|s| G::String(s.to_string())).collect())
    }

    /// A byte-level vocabulary: every byte's character, "Ġt", "he", a control token, a
    /// user-defined token and a control token outside the byte alphabet.
    fn files() -> Vec<(&'static str, G)> {
        let mut tokens: Vec<String> = byte_to_char().iter().map(char::to_string).collect();
        tokens.extend(["Ġt", "he", "<|im_start|>", "<think>", "✓bad"].map(str::to_owned));
        let mut types = vec![G::I32(1); 256];
        types.extend([G::I32(1), G::I32(1), G::I32(CONTROL as i32), G::I32(USER_DEFINED as i32), G::I32(3)]);
        vec![
            ("tokenizer.ggml.model", G::String("gpt2".into())),
            ("tokenizer.ggml.pre", G::String("smollm".into())),
            ("tokenizer.ggml.tokens", G::Array(tokens.into_iter().map(G::String).collect())),
            ("tokenizer.ggml.token_type", G::Array(types)),
            ("tokenizer.ggml.merges", strings(&["Ġ t", "h e"])),
            ("tokenizer.ggml.eos_token_id", G::U32(258)),
            ("tokenizer.chat_template", G::String("{{ x }}".into())),
        ]
    }

    #[test]
    fn builds_a_byte_level_bpe_whose_control_tokens_match_in_text() {
        let m = meta(files());
        let (json, spec) = tokenizer(&m).unwrap();
        let tok = tokenizers::Tokenizer::from_bytes(json.as_bytes()).unwrap();
        // "he" merges, " t" merges to "Ġt", and the control token written in the text is one id.
        let ids = tok.encode("<|im_start|>he t<think>", false).unwrap().get_ids().to_vec();
        assert_eq!(ids, vec![258, 257, 256, 259]);
        assert_eq!(tok.decode(&[257, 256], false).unwrap(), "he t");
        // The mislabelled control token is respelled into bytes, and not added.
        let respelled: String = "✓bad".bytes().map(|b| byte_to_char()[b as usize]).collect();
        assert_eq!(tok.token_to_id(&respelled), Some(260));
        let v: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["added_tokens"].as_array().unwrap().len(), 2);
        assert_eq!(v["added_tokens"][1]["special"], false, "user-defined tokens are not special");
        assert_eq!((spec.eos_id, spec.pad_id, spec.bos_id, spec.add_bos), (258, 258, None, false));
        assert_eq!(spec.chat_template.as_deref(), Some("{{ x }}"));
    }

    #[test]
    fn refuses_what_it_would_tokenise_differently() {
        let with = |key: &str, value: G| {
            let mut f = files();
            f.retain(|(k, _)| *k != key);
            f.push((Box::leak(key.to_string().into_boxed_str()), value));
            tokenizer(&meta(f)).unwrap_err()
        };
        assert!(with("tokenizer.ggml.model", G::String("llama".into())).contains("`llama`"));
        assert!(with("tokenizer.ggml.pre", G::String("qwen2".into())).contains("`qwen2`"));
        assert!(with("tokenizer.ggml.merges", strings(&["a b c"])).contains("two tokens"));
        assert!(with("tokenizer.ggml.eos_token_id", G::U32(9999)).contains("outside the vocabulary"));
        assert!(with("tokenizer.ggml.add_bos_token", G::Bool(true)).contains("no `tokenizer.ggml.bos_token_id`"));
    }
}
