//! Tokenizers: a [`Vocab`] (text ↔ ids: the embedded byte-level one, or any Hugging Face
//! `tokenizer.json` through the `tokenizers` crate) with the [`TokenizerSpec`] a model declares
//! beside it (BOS policy, stop ids, PAD, chat template).
//!
//! A folder whose tokenizer.json is exactly the GPT-2 byte-level alphabet with id == byte and no
//! merges (what the peer scripts and `tiny` write) is read as the byte tokenizer: same ids, no
//! dependency on the `tokenizers` runtime, and `decode` returns the raw bytes (lossy UTF-8).

use std::path::Path;

use serde_json::{json, Value};

use super::ModelError;

/// The embedded byte tokenizer's EOS id: the one id after the 256 byte ids, so a `tiny_lm`'s
/// vocabulary is 257. Hugging Face folders keep their own ids (a byte-level folder whose
/// config.json says EOS 10 keeps EOS 10).
pub const BYTES_EOS: u32 = 256;

/// The token string of [`BYTES_EOS`] in a saved tokenizer.json (GPT-2's EOS spelling).
pub const BYTES_EOS_TOKEN: &str = "<|endoftext|>";

/// The special tokens and the chat template of a model, wherever they were declared (Hugging
/// Face config.json / generation_config.json / tokenizer_config.json, or the embedded byte
/// tokenizer). Every id is below the model's vocabulary size ([`TokenizerSpec::validate`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenizerSpec {
    /// The beginning-of-sequence id, when the model has one.
    pub bos_id: Option<u32>,
    /// Whether text for this model starts with BOS (tokenizer_config.json `add_bos_token`, false
    /// when absent). Only true with a `bos_id`. Carried, not yet applied: log-probabilities and
    /// generation add no BOS (the definition `model::logprob` matches TRL with).
    pub add_bos: bool,
    /// The end-of-sequence id: appended to completions; generation stops on it.
    pub eos_id: u32,
    /// Further ids generation stops on (the rest of a list-valued `eos_token_id`, as in
    /// Llama-3-Instruct), without `eos_id` and without repeats.
    pub extra_stop_ids: Vec<u32>,
    /// The padding id of collated batches and of generation's left padding.
    pub pad_id: u32,
    /// The Jinja chat template, as written (not rendered here).
    pub chat_template: Option<String>,
}

impl TokenizerSpec {
    /// The embedded byte tokenizer's (`tiny_lm`): EOS [`BYTES_EOS`] (a token of its own, outside
    /// the 256 byte ids, so any text, newlines included, round-trips), PAD 0, no BOS, no template.
    pub fn bytes() -> TokenizerSpec {
        TokenizerSpec {
            bos_id: None,
            add_bos: false,
            eos_id: BYTES_EOS,
            extra_stop_ids: Vec::new(),
            pad_id: 0,
            chat_template: None,
        }
    }

    /// Reads the spec from a Hugging Face folder's files: `config` (config.json), and when present
    /// `generation` (generation_config.json) and `tokenizer_config` (tokenizer_config.json);
    /// `token_id` looks up the token strings tokenizer_config.json names.
    ///
    /// - stop ids: config.json's `eos_token_id` then generation_config.json's (each an integer or
    ///   a list), in order without repeats; the first is the EOS;
    /// - PAD: config.json's `pad_token_id`, else generation_config.json's, else the EOS;
    /// - BOS: tokenizer_config.json's `bos_token` (a string or `{"content": …}`), else
    ///   config.json's `bos_token_id`; `add_bos_token` says whether to prepend it;
    /// - the chat template: tokenizer_config.json's `chat_template` (a string, or the entry named
    ///   `default` of a list of named templates).
    ///
    /// Errors (the message names the file and field): no `eos_token_id` in either file, an id
    /// that is not a non-negative integer, a token string outside the vocabulary,
    /// `add_bos_token` without a BOS.
    pub fn from_hf(
        config: &Value,
        generation: Option<&Value>,
        tokenizer_config: Option<&Value>,
        token_id: impl Fn(&str) -> Option<u32>,
    ) -> Result<TokenizerSpec, String> {
        let null = Value::Null;
        let generation = generation.unwrap_or(&null);
        let tokenizer_config = tokenizer_config.unwrap_or(&null);
        let mut stops = ids(config, "config.json", "eos_token_id")?;
        stops.extend(ids(generation, "generation_config.json", "eos_token_id")?);
        let mut unique = Vec::with_capacity(stops.len());
        for id in stops {
            if !unique.contains(&id) {
                unique.push(id);
            }
        }
        let Some((&eos_id, extra)) = unique.split_first() else {
            return Err("config.json: missing `eos_token_id` (and generation_config.json has none)".into());
        };
        let pad_id = single_id(config, "config.json", "pad_token_id")?
            .or(single_id(generation, "generation_config.json", "pad_token_id")?)
            .unwrap_or(eos_id);
        let bos_token = match &tokenizer_config["bos_token"] {
            Value::Null => None,
            v => Some(v.as_str().or_else(|| v["content"].as_str()).ok_or_else(|| {
                "tokenizer_config.json: `bos_token` is neither a string nor {\"content\": string}".to_string()
            })?),
        };
        let bos_id = match bos_token {
            Some(token) => Some(
                token_id(token)
                    .ok_or_else(|| format!("tokenizer_config.json: `bos_token` {token:?} is not in the vocabulary"))?,
            ),
            None => single_id(config, "config.json", "bos_token_id")?,
        };
        let add_bos = tokenizer_config["add_bos_token"].as_bool().unwrap_or(false);
        if add_bos && bos_id.is_none() {
            return Err("tokenizer_config.json: `add_bos_token` is true but the model has no BOS token".into());
        }
        let chat_template = match &tokenizer_config["chat_template"] {
            Value::String(text) => Some(text.clone()),
            Value::Array(named) => {
                named.iter().find(|t| t["name"] == "default").and_then(|t| t["template"].as_str()).map(str::to_owned)
            }
            _ => None,
        };
        Ok(TokenizerSpec { bos_id, add_bos, eos_id, extra_stop_ids: extra.to_vec(), pad_id, chat_template })
    }

    /// Every id generation stops on: the EOS first, then the extra stop ids.
    pub fn stop_ids(&self) -> impl Iterator<Item = u32> + '_ {
        std::iter::once(self.eos_id).chain(self.extra_stop_ids.iter().copied())
    }

    /// Whether generation stops on `id`.
    pub fn is_stop(&self, id: u32) -> bool {
        self.stop_ids().any(|s| s == id)
    }

    /// Checks that every id is below `vocab_size`; the message names the offending id.
    pub fn validate(&self, vocab_size: usize) -> Result<(), String> {
        let named = self
            .stop_ids()
            .map(|id| ("eos", id))
            .chain([("pad", self.pad_id)])
            .chain(self.bos_id.map(|id| ("bos", id)));
        for (name, id) in named {
            if id as usize >= vocab_size {
                return Err(format!("the {name} token id {id} is outside the vocabulary of {vocab_size}"));
            }
        }
        Ok(())
    }

    /// Sets `bos_token_id` (null without BOS), `eos_token_id` (an integer, or the list of every
    /// stop id when there are several) and `pad_token_id` of a config.json or
    /// generation_config.json value, so [`TokenizerSpec::from_hf`] reads this spec back.
    pub fn write_hf_ids(&self, v: &mut Value) {
        v["bos_token_id"] = json!(self.bos_id);
        v["eos_token_id"] = if self.extra_stop_ids.is_empty() {
            json!(self.eos_id)
        } else {
            json!(self.stop_ids().collect::<Vec<_>>())
        };
        v["pad_token_id"] = json!(self.pad_id);
    }
}

/// The ids of `key` in `v` (an integer, a list of them, or absent / null: none).
fn ids(v: &Value, file: &str, key: &str) -> Result<Vec<u32>, String> {
    let id = |x: &Value| {
        x.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| format!("{file}: `{key}` holds {x}, not a token id"))
    };
    match &v[key] {
        Value::Null => Ok(Vec::new()),
        Value::Array(list) => list.iter().map(id).collect(),
        x => Ok(vec![id(x)?]),
    }
}

/// The one id of `key` in `v`, if any (a list is refused: the field takes one id).
fn single_id(v: &Value, file: &str, key: &str) -> Result<Option<u32>, String> {
    if v[key].is_array() {
        return Err(format!("{file}: `{key}` must be one token id, not a list"));
    }
    Ok(ids(v, file, key)?.first().copied())
}

/// The text ↔ ids mapping of a tokenizer, without any special-token policy.
#[derive(Clone)]
pub struct Vocab(Kind);

#[derive(Clone)]
enum Kind {
    Bytes,
    /// The parsed tokenizer and the original JSON text, written back verbatim by `save`.
    Hf(Box<tokenizers::Tokenizer>, String),
}

impl Vocab {
    /// The byte vocabulary: id == byte for the 256 bytes, and [`BYTES_EOS`].
    pub fn bytes() -> Vocab {
        Vocab(Kind::Bytes)
    }

    /// Reads `tokenizer.json`, recognising the byte-level alphabet. Errors: `Io` when unreadable,
    /// `Tokenizer` when it does not parse.
    pub fn from_file(path: &Path) -> Result<Vocab, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io { path: path.into(), source })?;
        Vocab::from_json(text, path)
    }

    /// Parses the text of a `tokenizer.json` (read from a file, or built from a GGUF file's
    /// metadata), recognising the byte-level alphabet; `origin` names the source in errors.
    /// Errors: `Tokenizer` when it does not parse.
    pub fn from_json(text: String, origin: &Path) -> Result<Vocab, ModelError> {
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| ModelError::Tokenizer { path: origin.into(), message: e.to_string() })?;
        if is_byte_level(&value) {
            return Ok(Vocab::bytes());
        }
        let tok = tokenizers::Tokenizer::from_bytes(text.as_bytes())
            .map_err(|e| ModelError::Tokenizer { path: origin.into(), message: e.to_string() })?;
        Ok(Vocab(Kind::Hf(Box::new(tok), text)))
    }

    /// The id of one token string (for the byte vocabulary, a byte's GPT-2 character).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        match &self.0 {
            Kind::Bytes if token == BYTES_EOS_TOKEN => Some(BYTES_EOS),
            Kind::Bytes => {
                let mut chars = token.chars();
                let (Some(c), None) = (chars.next(), chars.next()) else { return None };
                byte_to_char().iter().position(|&b| b == c).map(|b| b as u32)
            }
            Kind::Hf(t, _) => t.token_to_id(token),
        }
    }

    /// The token string of `id` (the inverse of [`Vocab::token_id`]).
    fn token(&self, id: u32) -> Option<String> {
        match &self.0 {
            Kind::Bytes if id == BYTES_EOS => Some(BYTES_EOS_TOKEN.to_string()),
            Kind::Bytes => byte_to_char().get(id as usize).map(char::to_string),
            Kind::Hf(t, _) => t.id_to_token(id),
        }
    }
}

/// A vocabulary with the special tokens of its model.
#[derive(Clone)]
pub struct Tokenizer {
    vocab: Vocab,
    spec: TokenizerSpec,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.vocab.0 {
            Kind::Bytes => "bytes",
            Kind::Hf(..) => "tokenizer.json",
        };
        f.debug_struct("Tokenizer").field("kind", &kind).field("spec", &self.spec).finish()
    }
}

/// GPT-2's reversible byte → printable character table (`bytes_to_unicode`).
pub(crate) fn byte_to_char() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut extra = 0u32;
    for b in 0..256u32 {
        let printable = (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
        let c = if printable {
            b
        } else {
            extra += 1;
            255 + extra
        };
        table[b as usize] = char::from_u32(c).expect("byte table stays in the BMP");
    }
    table
}

impl Tokenizer {
    pub fn new(vocab: Vocab, spec: TokenizerSpec) -> Tokenizer {
        Tokenizer { vocab, spec }
    }

    /// The embedded byte tokenizer (the 256 bytes and EOS [`BYTES_EOS`], [`TokenizerSpec::bytes`]).
    pub fn bytes() -> Tokenizer {
        Tokenizer::new(Vocab::bytes(), TokenizerSpec::bytes())
    }

    /// Whether this is the byte tokenizer (id == byte).
    pub fn is_bytes(&self) -> bool {
        matches!(self.vocab.0, Kind::Bytes)
    }

    pub fn spec(&self) -> &TokenizerSpec {
        &self.spec
    }

    /// Token ids of `text`, without special tokens (no BOS). Errors: `Encode` when the
    /// `tokenizers` pipeline fails (e.g. a word-level vocabulary without its unknown token).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        match &self.vocab.0 {
            Kind::Bytes => Ok(text.bytes().map(u32::from).collect()),
            Kind::Hf(t, _) => t
                .encode(text, false)
                .map(|e| e.get_ids().to_vec())
                .map_err(|e| ModelError::Encode { text: excerpt(text), message: e.to_string() }),
        }
    }

    /// Text of `ids` (invalid UTF-8 is replaced; the byte tokenizer drops ids that are not bytes).
    pub fn decode(&self, ids: &[u32]) -> String {
        match &self.vocab.0 {
            Kind::Bytes => {
                let bytes: Vec<u8> = ids.iter().filter(|&&i| i < 256).map(|&i| i as u8).collect();
                String::from_utf8_lossy(&bytes).into_owned()
            }
            Kind::Hf(t, _) => t.decode(ids, false).unwrap_or_default(),
        }
    }

    /// The token string of `id` (`<|im_end|>`), as the vocabulary writes it.
    pub fn token(&self, id: u32) -> Option<String> {
        self.vocab.token(id)
    }

    /// The EOS id ([`TokenizerSpec::eos_id`]).
    pub fn eos_id(&self) -> u32 {
        self.spec.eos_id
    }

    /// Whether generation stops on `id` ([`TokenizerSpec::is_stop`]).
    pub fn is_stop(&self, id: u32) -> bool {
        self.spec.is_stop(id)
    }

    pub fn pad_id(&self) -> u32 {
        self.spec.pad_id
    }

    /// The tokenizer.json text to save: the original for loaded tokenizers, the byte-level
    /// alphabet otherwise (the same file transformers' peer scripts build), with [`BYTES_EOS`] as
    /// an added special token `<|endoftext|>` when the spec names it.
    pub fn to_json(&self) -> String {
        match &self.vocab.0 {
            Kind::Hf(_, text) => text.clone(),
            Kind::Bytes => {
                let chars = byte_to_char();
                let vocab: serde_json::Map<String, Value> =
                    (0..256).map(|b| (chars[b].to_string(), json!(b))).collect();
                let special = |id: u32| {
                    json!({"id": id, "content": self.vocab.token(id), "single_word": false,
                           "lstrip": false, "rstrip": false, "normalized": false, "special": true})
                };
                let mut added = vec![special(self.spec.pad_id)];
                for id in self.spec.stop_ids().chain(self.spec.bos_id) {
                    if added.iter().all(|a| a["id"] != id) {
                        added.push(special(id));
                    }
                }
                let v = json!({
                    "version": "1.0", "truncation": null, "padding": null,
                    "added_tokens": added,
                    "normalizer": null,
                    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
                    "post_processor": null,
                    "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
                    "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                              "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                              "ignore_merges": false, "vocab": vocab, "merges": []}
                });
                serde_json::to_string_pretty(&v).expect("json values serialise")
            }
        }
    }

    /// The tokenizer_config.json transformers' `AutoTokenizer` reads beside tokenizer.json, with
    /// this spec's special tokens and chat template (`add_bos_token` only when set: absent reads
    /// as false, and an explicit false would change how some transformers classes encode).
    pub fn config_json(&self) -> Value {
        let name = |id: u32| self.vocab.token(id);
        let mut v = json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "clean_up_tokenization_spaces": false,
            "eos_token": name(self.spec.eos_id),
            "pad_token": name(self.spec.pad_id),
        });
        if let Some(bos) = self.spec.bos_id {
            v["bos_token"] = json!(name(bos));
        }
        if self.spec.add_bos {
            v["add_bos_token"] = json!(true);
        }
        if let Some(template) = &self.spec.chat_template {
            v["chat_template"] = json!(template);
        }
        v
    }
}

/// The start of `text` for an error message (at most 60 characters).
fn excerpt(text: &str) -> String {
    const SHOWN: usize = 60;
    match text.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// True when `tokenizer.json` is a BPE with no merges whose vocabulary maps the byte-level
/// character of every byte b to id b, with a ByteLevel pre-tokenizer and no normaliser, and whose
/// only added token beyond the bytes is the embedded EOS ([`BYTES_EOS_TOKEN`] at [`BYTES_EOS`]).
fn is_byte_level(v: &Value) -> bool {
    let model = &v["model"];
    if model["type"] != "BPE" || !v["normalizer"].is_null() {
        return false;
    }
    if model.get("merges").and_then(Value::as_array).is_some_and(|m| !m.is_empty()) {
        return false;
    }
    let pre = &v["pre_tokenizer"];
    let byte_pre = pre["type"] == "ByteLevel" && pre["add_prefix_space"] != true;
    if !byte_pre {
        return false;
    }
    let Some(vocab) = model["vocab"].as_object() else { return false };
    if vocab.len() != 256 {
        return false;
    }
    let chars = byte_to_char();
    // Added tokens must not change the ids either: they are the same characters here, or the
    // embedded EOS after them.
    let added_ok = v["added_tokens"].as_array().is_none_or(|a| {
        a.iter().all(|t| {
            let content = t["content"].as_str();
            match t["id"].as_u64() {
                Some(id) if id < 256 => content == Some(chars[id as usize].to_string().as_str()),
                Some(id) => id == u64::from(BYTES_EOS) && content == Some(BYTES_EOS_TOKEN),
                None => false,
            }
        })
    });
    added_ok && (0..256).all(|b| vocab.get(&chars[b].to_string()).and_then(Value::as_u64) == Some(b as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_tokenizer_round_trips_and_its_json_is_recognised() {
        let tok = Tokenizer::bytes();
        let ids = tok.encode("12+34=46\n").unwrap();
        assert_eq!(ids, b"12+34=46\n".iter().map(|&b| u32::from(b)).collect::<Vec<_>>());
        assert_eq!(tok.decode(&ids), "12+34=46\n");
        let v: Value = serde_json::from_str(&tok.to_json()).unwrap();
        assert!(is_byte_level(&v));
        let hf = tokenizers::Tokenizer::from_bytes(tok.to_json().as_bytes()).unwrap();
        assert_eq!(hf.encode("a+b= é", false).unwrap().get_ids(), tok.encode("a+b= é").unwrap());
        assert_eq!(Vocab::bytes().token_id("Ċ"), Some(10));
        assert_eq!(Vocab::bytes().token_id("ab"), None);
    }

    /// A newline is text, not the end: EOS is its own id after the bytes, in memory and in the
    /// saved tokenizer.json that `tokenizers` (and so transformers) reads.
    #[test]
    fn byte_tokenizer_eos_is_not_a_byte() {
        let tok = Tokenizer::bytes();
        assert_eq!(tok.eos_id(), BYTES_EOS);
        let ids = tok.encode("a3\nb3").unwrap();
        assert!(ids.iter().all(|&id| !tok.is_stop(id)), "no byte of {ids:?} stops generation");
        let mut with_eos = ids.clone();
        with_eos.push(tok.eos_id());
        assert_eq!(tok.decode(&with_eos), "a3\nb3");
        let hf = tokenizers::Tokenizer::from_bytes(tok.to_json().as_bytes()).unwrap();
        assert_eq!(hf.token_to_id(BYTES_EOS_TOKEN), Some(BYTES_EOS));
        assert_eq!(hf.get_vocab_size(true), 257);
        assert_eq!(tok.config_json()["eos_token"], BYTES_EOS_TOKEN);
        assert_eq!(Vocab::bytes().token_id(BYTES_EOS_TOKEN), Some(BYTES_EOS));
    }

    /// Llama-3-Instruct's layout: a list-valued `eos_token_id`, a BOS named in tokenizer_config.json.
    fn llama3_files() -> (Value, Value, Value) {
        let config = json!({"bos_token_id": 1, "eos_token_id": [5, 7], "pad_token_id": null});
        let generation = json!({"eos_token_id": [7, 9, 5]});
        let tokenizer_config = json!({
            "bos_token": {"content": "<s>", "special": true},
            "add_bos_token": true,
            "chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}",
        });
        (config, generation, tokenizer_config)
    }

    fn lookup(token: &str) -> Option<u32> {
        (token == "<s>").then_some(2)
    }

    #[test]
    fn hf_spec_keeps_every_stop_id_the_bos_policy_and_the_chat_template() {
        let (config, generation, tokenizer_config) = llama3_files();
        let spec = TokenizerSpec::from_hf(&config, Some(&generation), Some(&tokenizer_config), lookup).unwrap();
        assert_eq!(spec.stop_ids().collect::<Vec<_>>(), vec![5, 7, 9]);
        assert!(spec.is_stop(9) && !spec.is_stop(1));
        assert_eq!(spec.pad_id, 5, "no pad id anywhere: the EOS pads");
        // The tokenizer's own BOS wins over config.json's `bos_token_id`.
        assert_eq!((spec.bos_id, spec.add_bos), (Some(2), true));
        assert_eq!(spec.chat_template.as_deref(), Some("{% for m in messages %}{{ m.content }}{% endfor %}"));
        assert_eq!(spec.validate(10), Ok(()));
        assert!(spec.validate(9).unwrap_err().contains("eos token id 9"));

        // What `save` writes reads back the same.
        let mut written = json!({});
        spec.write_hf_ids(&mut written);
        assert_eq!(written["eos_token_id"], json!([5, 7, 9]));
        let back = TokenizerSpec::from_hf(&written, None, Some(&tokenizer_config), lookup).unwrap();
        assert_eq!(back, spec);

        // Without tokenizer_config.json: config.json's BOS, not prepended, no template.
        let plain = TokenizerSpec::from_hf(&config, None, None, lookup).unwrap();
        assert_eq!(plain.stop_ids().collect::<Vec<_>>(), vec![5, 7]);
        assert_eq!((plain.bos_id, plain.add_bos, plain.chat_template), (Some(1), false, None));
    }

    #[test]
    fn hf_spec_refuses_what_it_cannot_honour() {
        let (config, generation, tokenizer_config) = llama3_files();
        let err = |c: &Value, g: Option<&Value>, t: &Value| TokenizerSpec::from_hf(c, g, Some(t), lookup).unwrap_err();
        assert!(err(&json!({}), None, &tokenizer_config).contains("missing `eos_token_id`"));
        assert!(err(&json!({"eos_token_id": "x"}), None, &tokenizer_config).contains("not a token id"));
        assert!(err(&config, Some(&json!({"pad_token_id": [1]})), &tokenizer_config).contains("not a list"));
        assert!(err(&config, None, &json!({"bos_token": "<bos>"})).contains("not in the vocabulary"));
        let no_bos = json!({"eos_token_id": 5});
        assert!(err(&no_bos, Some(&generation), &json!({"add_bos_token": true})).contains("no BOS"));
    }

    #[test]
    fn a_failing_encode_is_an_error() {
        // A word-level vocabulary whose unknown token is missing cannot encode an unknown word.
        let json = json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": null,
            "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
            "model": {"type": "WordLevel", "vocab": {"a": 0, "b": 1}, "unk_token": "[UNK]"}
        });
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        std::fs::write(&path, json.to_string()).unwrap();
        let tok = Tokenizer::new(Vocab::from_file(&path).unwrap(), TokenizerSpec::bytes());
        assert!(!tok.is_bytes());
        assert_eq!(tok.encode("a b a").unwrap(), vec![0, 1, 0]);
        match tok.encode("a zebra") {
            Err(ModelError::Encode { text, message }) => {
                assert_eq!(text, "a zebra");
                assert!(message.contains("UNK"), "{message}");
            }
            other => panic!("expected an encode error, got {other:?}"),
        }
    }
}
