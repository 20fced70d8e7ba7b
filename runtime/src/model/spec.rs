//! What a model is made of, apart from where it comes from: a [`ModelSpec`] is the decoder's
//! configuration, its tokenizer (vocabulary and [`TokenizerSpec`]) and a [`WeightSource`].
//! `CausalLm::from_spec` builds a model from any spec; a Hugging Face folder is one way to get a
//! spec ([`ModelSpec::from_hf_dir`]), a GGUF file another ([`super::gguf::read_spec`]);
//! [`ModelSpec::open`] takes either.

use std::path::Path;

use serde_json::Value;

use super::config::LlamaConfig;
use super::tokenizer::{Tokenizer, TokenizerSpec, Vocab, BYTES_EOS};
use super::weights::{MmapSafetensors, WeightSource};
use super::ModelError;

/// A model before it is built: configuration, tokenizer and where its tensors are.
pub struct ModelSpec {
    pub config: LlamaConfig,
    /// The vocabulary with the special tokens and chat template of the model.
    pub tokenizer: Tokenizer,
    pub weights: Box<dyn WeightSource>,
}

impl ModelSpec {
    /// The spec of a model path: a file is read as GGUF ([`super::gguf::read_spec`]), anything
    /// else as a Hugging Face folder ([`ModelSpec::from_hf_dir`]). Errors: `Io` naming `path`
    /// when nothing is there, else theirs (a file that is not GGUF is a `Config` error saying so).
    pub fn open(path: &Path) -> Result<ModelSpec, ModelError> {
        if !path.exists() {
            let source = std::io::Error::new(std::io::ErrorKind::NotFound, "no model folder or GGUF file here");
            return Err(ModelError::Io { path: path.to_path_buf(), source });
        }
        if path.is_file() {
            super::gguf::read_spec(path)
        } else {
            ModelSpec::from_hf_dir(path)
        }
    }

    /// Reads a Hugging Face folder: config.json (required), generation_config.json and
    /// tokenizer_config.json (when present; see [`TokenizerSpec::from_hf`]), the chat template
    /// of `chat_template.jinja` when tokenizer_config.json has none, tokenizer.json (the byte
    /// vocabulary when absent and the vocabulary has 256 or 257 entries: the bytes, then EOS),
    /// and the safetensors weights, memory-mapped ([`MmapSafetensors::in_dir`]); no tensor is
    /// read yet.
    ///
    /// Errors: `Io` for a missing or unreadable file, `Config` for a malformed or unsupported
    /// config.json or special-token declaration (the message names the file), `Tokenizer` for
    /// an unparsable tokenizer.json, `Shape` for an unreadable safetensors header.
    pub fn from_hf_dir(dir: &Path) -> Result<ModelSpec, ModelError> {
        let config_path = dir.join("config.json");
        let config_json = read_json(&config_path)?;
        let config = LlamaConfig::from_hf(&config_json)
            .map_err(|message| ModelError::Config { path: config_path.clone(), message })?;
        let generation = read_optional_json(&dir.join("generation_config.json"))?;
        let tokenizer_config = read_optional_json(&dir.join("tokenizer_config.json"))?;
        let tok_path = dir.join("tokenizer.json");
        let vocab = if tok_path.is_file() {
            Vocab::from_file(&tok_path)?
        } else if config.vocab_size == 256 || config.vocab_size == BYTES_EOS as usize + 1 {
            Vocab::bytes()
        } else {
            return Err(ModelError::Io {
                path: tok_path,
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no tokenizer.json and the vocabulary is not byte-level",
                ),
            });
        };
        let mut spec =
            TokenizerSpec::from_hf(&config_json, generation.as_ref(), tokenizer_config.as_ref(), |t| vocab.token_id(t))
                .map_err(|message| ModelError::Config { path: dir.to_path_buf(), message })?;
        // transformers 4.43+ saves the template in its own file instead of tokenizer_config.json.
        let template_path = dir.join("chat_template.jinja");
        if spec.chat_template.is_none() && template_path.is_file() {
            let text = std::fs::read_to_string(&template_path)
                .map_err(|source| ModelError::Io { path: template_path, source })?;
            spec.chat_template = Some(text);
        }
        Ok(ModelSpec {
            config,
            tokenizer: Tokenizer::new(vocab, spec),
            weights: Box::new(MmapSafetensors::in_dir(dir)?),
        })
    }
}

fn read_json(path: &Path) -> Result<Value, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io { path: path.into(), source })?;
    serde_json::from_str(&text).map_err(|e| ModelError::Config { path: path.into(), message: e.to_string() })
}

fn read_optional_json(path: &Path) -> Result<Option<Value>, ModelError> {
    if path.is_file() {
        read_json(path).map(Some)
    } else {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A folder with a list-valued `eos_token_id`, a chat template file and no weights yet.
    fn folder(dir: &Path, weights: bool) {
        let mut config = LlamaConfig::default().to_hf();
        config["eos_token_id"] = json!([10, 3]);
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        std::fs::write(dir.join("generation_config.json"), json!({"eos_token_id": [10, 3, 4]}).to_string()).unwrap();
        std::fs::write(dir.join("tokenizer_config.json"), json!({"bos_token": "Ā", "add_bos_token": true}).to_string())
            .unwrap();
        std::fs::write(dir.join("chat_template.jinja"), "{{ messages }}").unwrap();
        if weights {
            crate::model::weights::write_weights(dir, &[]).unwrap();
        }
    }

    #[test]
    fn a_folder_spec_carries_every_stop_id_the_bos_policy_and_the_template() {
        let dir = tempfile::tempdir().unwrap();
        folder(dir.path(), true);
        let spec = ModelSpec::from_hf_dir(dir.path()).unwrap();
        let tok = spec.tokenizer.spec();
        assert_eq!(tok.stop_ids().collect::<Vec<_>>(), vec![10, 3, 4]);
        assert_eq!((tok.bos_id, tok.add_bos), (Some(0), true), "`Ā` is byte 0 of the byte vocabulary");
        assert_eq!(tok.chat_template.as_deref(), Some("{{ messages }}"));
        assert!(spec.tokenizer.is_bytes() && spec.weights.names().is_empty());
    }

    #[test]
    fn a_folder_without_weights_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        folder(dir.path(), false);
        let err = ModelSpec::from_hf_dir(dir.path()).err().expect("no weights");
        assert!(matches!(err, ModelError::Io { .. }), "{err}");
    }
}
