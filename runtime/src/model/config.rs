//! Model configuration: the subset of a Hugging Face `config.json` that a Llama / Qwen2 decoder
//! needs, read from and written back to the Hugging Face field names. The special token ids in
//! the same file belong to the tokenizer (`TokenizerSpec`), not here.
//!
//! Invariants: `hidden_size == num_attention_heads * head_dim` and `num_attention_heads` is a
//! multiple of `num_key_value_heads` (checked by [`LlamaConfig::validate`], which `load` and `tiny`
//! call). Fields that transformers writes but this decoder does not use are ignored on read; the
//! fields it does use are always written, so a saved folder opens in transformers unchanged.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The two supported Hugging Face architectures. They differ only in defaults: Qwen2 has biases
/// on the q/k/v projections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Arch {
    Llama,
    Qwen2,
}

impl Arch {
    /// The `architectures[0]` string of config.json.
    pub fn hf_class(self) -> &'static str {
        match self {
            Arch::Llama => "LlamaForCausalLM",
            Arch::Qwen2 => "Qwen2ForCausalLM",
        }
    }

    /// The `model_type` string of config.json.
    pub fn model_type(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
        }
    }
}

/// Decoder hyper-parameters, (de)serialised as a Hugging Face config.json.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Value", into = "Value")]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub tie_word_embeddings: bool,
    /// Bias on the q/k/v projections (Qwen2 always; Llama when `attention_bias` is set, where
    /// the output projection has one too — see [`LlamaConfig::o_bias`]).
    pub attention_bias: bool,
    pub architecture: Arch,
}

impl Default for LlamaConfig {
    /// The configuration of the shared `tiny-llama` fixture and of the peer benchmarks, with the
    /// embedded byte tokenizer's vocabulary (257: the fixture's 256 bytes and EOS 256).
    fn default() -> Self {
        LlamaConfig {
            vocab_size: crate::model::tokenizer::BYTES_EOS as usize + 1,
            hidden_size: 256,
            intermediate_size: 688,
            num_hidden_layers: 4,
            num_attention_heads: 4,
            num_key_value_heads: 4,
            max_position_embeddings: 512,
            rms_norm_eps: 1e-6,
            rope_theta: 10_000.0,
            tie_word_embeddings: false,
            attention_bias: false,
            architecture: Arch::Llama,
        }
    }
}

impl LlamaConfig {
    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    /// Llama's `attention_bias` also puts a bias on `o_proj`; Qwen2 never does.
    pub fn o_bias(&self) -> bool {
        self.attention_bias && self.architecture == Arch::Llama
    }

    /// Checks the shape invariants; the message names the offending fields.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("`{name}` must be positive"));
        }
        if self.hidden_size % self.num_attention_heads != 0 {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.head_dim() % 2 != 0 {
            return Err(format!("head dimension {} must be even for rotary embeddings", self.head_dim()));
        }
        if self.num_attention_heads % self.num_key_value_heads != 0 {
            return Err(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if !(self.rms_norm_eps > 0.0 && self.rope_theta > 0.0) {
            return Err("rms_norm_eps and rope_theta must be positive".into());
        }
        Ok(())
    }

    /// Parses a Hugging Face config.json value.
    pub fn from_hf(v: &Value) -> Result<LlamaConfig, String> {
        let arch_name = v
            .get("architectures")
            .and_then(|a| a.get(0))
            .and_then(Value::as_str)
            .or_else(|| v.get("model_type").and_then(Value::as_str))
            .ok_or("missing `architectures` (and `model_type`)")?;
        let architecture = match arch_name {
            "LlamaForCausalLM" | "llama" => Arch::Llama,
            "Qwen2ForCausalLM" | "qwen2" => Arch::Qwen2,
            other => {
                return Err(format!(
                    "unsupported architecture `{other}` (supported: LlamaForCausalLM, Qwen2ForCausalLM)"
                ))
            }
        };
        let usize_field = |name: &str| -> Result<usize, String> {
            v.get(name)
                .and_then(Value::as_u64)
                .map(|x| x as usize)
                .ok_or_else(|| format!("missing or non-integer `{name}`"))
        };
        let num_attention_heads = usize_field("num_attention_heads")?;
        let hidden_size = usize_field("hidden_size")?;
        // Newer transformers nest rope_theta in `rope_parameters`; older ones keep it at the top.
        let rope_theta = v
            .get("rope_theta")
            .and_then(Value::as_f64)
            .or_else(|| v.pointer("/rope_parameters/rope_theta").and_then(Value::as_f64))
            .unwrap_or(10_000.0);
        let rope_type = v
            .pointer("/rope_parameters/rope_type")
            .or_else(|| v.pointer("/rope_scaling/rope_type"))
            .or_else(|| v.pointer("/rope_scaling/type"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        if rope_type != "default" {
            return Err(format!("rope scaling `{rope_type}` is not supported (only the default rotary embedding)"));
        }
        if let Some(hd) = v.get("head_dim").and_then(Value::as_u64) {
            if hd as usize * num_attention_heads != hidden_size {
                return Err(format!(
                    "head_dim {hd} × num_attention_heads {num_attention_heads} != hidden_size {hidden_size}"
                ));
            }
        }
        if v.get("mlp_bias").and_then(Value::as_bool) == Some(true) {
            return Err("`mlp_bias: true` is not supported".into());
        }
        if let Some(act) = v.get("hidden_act").and_then(Value::as_str) {
            if act != "silu" {
                return Err(format!("hidden_act `{act}` is not supported (only silu)"));
            }
        }
        let cfg = LlamaConfig {
            vocab_size: usize_field("vocab_size")?,
            hidden_size,
            intermediate_size: usize_field("intermediate_size")?,
            num_hidden_layers: usize_field("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads: v
                .get("num_key_value_heads")
                .and_then(Value::as_u64)
                .map_or(num_attention_heads, |x| x as usize),
            max_position_embeddings: v
                .get("max_position_embeddings")
                .and_then(Value::as_u64)
                .map_or(2048, |x| x as usize),
            rms_norm_eps: v.get("rms_norm_eps").and_then(Value::as_f64).unwrap_or(1e-6),
            rope_theta,
            tie_word_embeddings: v.get("tie_word_embeddings").and_then(Value::as_bool).unwrap_or(false),
            attention_bias: match architecture {
                Arch::Qwen2 => true,
                Arch::Llama => v.get("attention_bias").and_then(Value::as_bool).unwrap_or(false),
            },
            architecture,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The Hugging Face config.json value (float32 weights), without the special token ids
    /// (`TokenizerSpec::write_hf_ids` adds them).
    pub fn to_hf(&self) -> Value {
        let mut v = json!({
            "architectures": [self.architecture.hf_class()],
            "model_type": self.architecture.model_type(),
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim(),
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_parameters": {"rope_theta": self.rope_theta, "rope_type": "default"},
            "tie_word_embeddings": self.tie_word_embeddings,
            "hidden_act": "silu",
            "initializer_range": 0.02,
            "attention_dropout": 0.0,
            "torch_dtype": "float32",
            "dtype": "float32",
            "use_cache": true,
        });
        if self.architecture == Arch::Llama {
            v["attention_bias"] = json!(self.attention_bias);
            v["mlp_bias"] = json!(false);
        }
        v
    }
}

impl TryFrom<Value> for LlamaConfig {
    type Error = String;
    fn try_from(v: Value) -> Result<Self, String> {
        LlamaConfig::from_hf(&v)
    }
}

impl From<LlamaConfig> for Value {
    fn from(c: LlamaConfig) -> Value {
        c.to_hf()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_hf_json() {
        let cfg = LlamaConfig { architecture: Arch::Qwen2, attention_bias: true, ..LlamaConfig::default() };
        let text = serde_json::to_string(&cfg).unwrap();
        let back: LlamaConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(cfg, back);
    }

    #[test]
    fn reads_nested_rope_theta_and_rejects_bad_heads() {
        let mut v = LlamaConfig::default().to_hf();
        v.as_object_mut().unwrap().remove("rope_theta");
        v["rope_parameters"]["rope_theta"] = json!(5e5);
        assert_eq!(LlamaConfig::from_hf(&v).unwrap().rope_theta, 5e5);
        v["num_key_value_heads"] = json!(3);
        v.as_object_mut().unwrap().remove("head_dim");
        assert!(LlamaConfig::from_hf(&v).unwrap_err().contains("num_key_value_heads"));
    }
}
