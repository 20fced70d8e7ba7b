//! Tokenizers: the embedded byte-level one (token id == byte value) and any Hugging Face
//! `tokenizer.json` through the `tokenizers` crate.
//!
//! A folder whose tokenizer.json is exactly the GPT-2 byte-level alphabet with id == byte and no
//! merges (what the peer scripts and `tiny` write) is read as the byte tokenizer: same ids, no
//! dependency on the `tokenizers` runtime, and `decode` returns the raw bytes (lossy UTF-8).

use std::path::Path;

use serde_json::{json, Value};

use super::ModelError;

/// Either the byte tokenizer or a `tokenizers::Tokenizer`; carries the special ids.
#[derive(Clone)]
pub struct Tokenizer {
    kind: Kind,
    eos: u32,
    pad: u32,
}

#[derive(Clone)]
enum Kind {
    Bytes,
    /// The parsed tokenizer and the original JSON text, written back verbatim by `save`.
    Hf(Box<tokenizers::Tokenizer>, String),
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            Kind::Bytes => "bytes",
            Kind::Hf(..) => "tokenizer.json",
        };
        f.debug_struct("Tokenizer").field("kind", &kind).field("eos", &self.eos).field("pad", &self.pad).finish()
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
    /// The byte tokenizer (vocabulary 256) with the given special ids.
    pub fn bytes(eos: u32, pad: u32) -> Tokenizer {
        Tokenizer { kind: Kind::Bytes, eos, pad }
    }

    /// Whether this is the byte tokenizer (id == byte).
    pub fn is_bytes(&self) -> bool {
        matches!(self.kind, Kind::Bytes)
    }

    /// Reads `tokenizer.json`, recognising the byte-level alphabet.
    pub fn from_file(path: &Path, eos: u32, pad: u32) -> Result<Tokenizer, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io { path: path.into(), source })?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| ModelError::Tokenizer { path: path.into(), message: e.to_string() })?;
        if is_byte_level(&value) {
            return Ok(Tokenizer::bytes(eos, pad));
        }
        let tok = tokenizers::Tokenizer::from_bytes(text.as_bytes())
            .map_err(|e| ModelError::Tokenizer { path: path.into(), message: e.to_string() })?;
        Ok(Tokenizer { kind: Kind::Hf(Box::new(tok), text), eos, pad })
    }

    /// Token ids of `text`, without special tokens.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        match &self.kind {
            Kind::Bytes => text.bytes().map(u32::from).collect(),
            // Encoding a &str with no added special tokens cannot fail for a loaded tokenizer
            // except on pathological normalisers; fall back to an empty encoding rather than panic.
            Kind::Hf(t, _) => t.encode(text, false).map(|e| e.get_ids().to_vec()).unwrap_or_default(),
        }
    }

    /// Text of `ids` (invalid UTF-8 is replaced).
    pub fn decode(&self, ids: &[u32]) -> String {
        match &self.kind {
            Kind::Bytes => {
                let bytes: Vec<u8> = ids.iter().filter(|&&i| i < 256).map(|&i| i as u8).collect();
                String::from_utf8_lossy(&bytes).into_owned()
            }
            Kind::Hf(t, _) => t.decode(ids, false).unwrap_or_default(),
        }
    }

    pub fn eos_id(&self) -> u32 {
        self.eos
    }

    pub fn pad_id(&self) -> u32 {
        self.pad
    }

    /// The tokenizer.json text to save: the original for loaded tokenizers, the byte-level
    /// alphabet otherwise (the same file transformers' peer scripts build).
    pub fn to_json(&self) -> String {
        match &self.kind {
            Kind::Hf(_, text) => text.clone(),
            Kind::Bytes => {
                let chars = byte_to_char();
                let vocab: serde_json::Map<String, Value> =
                    (0..256).map(|b| (chars[b].to_string(), json!(b))).collect();
                let special = |id: u32| {
                    json!({"id": id, "content": chars[id as usize % 256].to_string(), "single_word": false,
                           "lstrip": false, "rstrip": false, "normalized": false, "special": true})
                };
                let mut added = vec![special(self.pad)];
                if self.eos != self.pad {
                    added.push(special(self.eos));
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

    /// The tokenizer_config.json transformers' `AutoTokenizer` reads beside tokenizer.json.
    pub fn config_json(&self) -> Value {
        let name = |id: u32| match &self.kind {
            Kind::Bytes => Some(byte_to_char()[id as usize % 256].to_string()),
            Kind::Hf(t, _) => t.id_to_token(id),
        };
        json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "clean_up_tokenization_spaces": false,
            "eos_token": name(self.eos),
            "pad_token": name(self.pad),
        })
    }
}

/// True when `tokenizer.json` is a BPE with no merges whose vocabulary maps the byte-level
/// character of every byte b to id b, with a ByteLevel pre-tokenizer and no normaliser.
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
    // Added tokens must not change the ids either (they are the same characters here).
    let added_ok = v["added_tokens"].as_array().is_none_or(|a| {
        a.iter().all(|t| {
            let id = t["id"].as_u64().unwrap_or(u64::MAX);
            id < 256 && t["content"].as_str() == Some(chars[id as usize].to_string().as_str())
        })
    });
    added_ok && (0..256).all(|b| vocab.get(&chars[b].to_string()).and_then(Value::as_u64) == Some(b as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_tokenizer_round_trips_and_its_json_is_recognised() {
        let tok = Tokenizer::bytes(10, 0);
        let ids = tok.encode("12+34=46\n");
        assert_eq!(ids, b"12+34=46\n".iter().map(|&b| u32::from(b)).collect::<Vec<_>>());
        assert_eq!(tok.decode(&ids), "12+34=46\n");
        let v: Value = serde_json::from_str(&tok.to_json()).unwrap();
        assert!(is_byte_level(&v));
        let hf = tokenizers::Tokenizer::from_bytes(tok.to_json().as_bytes()).unwrap();
        assert_eq!(hf.encode("a+b= é", false).unwrap().get_ids(), Tokenizer::bytes(10, 0).encode("a+b= é"));
    }
}
