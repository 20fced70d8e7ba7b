//! GGUF files (llama.cpp's single-file format) as a model source: [`read_spec`] fills a
//! [`ModelSpec`] from one — the configuration from the `llama.*` metadata, the tokenizer from the
//! `tokenizer.*` metadata ([`vocab`]), and [`GgufWeights`], which dequantises each tensor to f32
//! (candle's `quantized` module), gives it its Hugging Face name and undoes llama.cpp's rotary
//! row permutation of the query and key projections.
//!
//! The reference is transformers' own GGUF loader (`from_pretrained(folder, gguf_file=…)`,
//! transformers 5.24: `modeling_gguf_pytorch_utils.py` and `integrations/gguf/`); the committed
//! figures of `tests/fixtures/smollm2_reference.json` hold the two to the same ids, log-probabilities
//! and greedy tokens. Only the Llama architecture is read.

mod vocab;

use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor};

use super::config::{Arch, LlamaConfig};
use super::spec::ModelSpec;
use super::tokenizer::{Tokenizer, Vocab};
use super::weights::{TensorInfo, WeightSource};
use super::ModelError;

/// The four bytes a GGUF file starts with.
const MAGIC: &[u8; 4] = b"GGUF";

/// The element types whose dequantisation is supported (candle's, minus the two it only uses as
/// matmul intermediates, Q8_1 and Q8_K).
const SUPPORTED: &[GgmlDType] = &[
    GgmlDType::F32,
    GgmlDType::F16,
    GgmlDType::BF16,
    GgmlDType::Q4_0,
    GgmlDType::Q4_1,
    GgmlDType::Q5_0,
    GgmlDType::Q5_1,
    GgmlDType::Q8_0,
    GgmlDType::Q2K,
    GgmlDType::Q3K,
    GgmlDType::Q4K,
    GgmlDType::Q5K,
    GgmlDType::Q6K,
];

/// Whether `path` is a file that starts with the GGUF magic (false for folders and unreadable
/// files: the caller reports those).
pub fn is_gguf(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    path.is_file() && std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && &magic == MAGIC
}

/// Reads the header of the GGUF file `path` (metadata and tensor directory; no tensor data yet)
/// into a model spec: configuration, tokenizer and a [`GgufWeights`] source.
///
/// Errors: `Io` when the file cannot be read, `Config` when it is not a GGUF file, its
/// architecture is not `llama`, or its metadata lacks or mistypes a field the model needs (the
/// message names the key), `Tokenizer` when the tokenizer it describes is not supported.
pub fn read_spec(path: &Path) -> Result<ModelSpec, ModelError> {
    let config_err = |message: String| ModelError::Config { path: path.to_path_buf(), message };
    let file = std::fs::File::open(path).map_err(|source| ModelError::Io { path: path.into(), source })?;
    if !is_gguf(path) {
        return Err(config_err("not a GGUF file (it does not start with `GGUF`) and not a model folder".into()));
    }
    let content = Content::read(&mut BufReader::new(file)).map_err(|e| config_err(format!("unreadable GGUF: {e}")))?;
    let meta = Meta(&content.metadata);
    let tied = !content.tensor_infos.contains_key("output.weight");
    let has_bias = content.tensor_infos.contains_key("blk.0.attn_q.bias");
    let config = config(&meta, tied, has_bias).map_err(config_err)?;
    let (json, spec) =
        vocab::tokenizer(&meta).map_err(|message| ModelError::Tokenizer { path: path.into(), message })?;
    let tokenizer = Tokenizer::new(Vocab::from_json(json, path)?, spec);
    let weights = GgufWeights::new(path, content, &config);
    Ok(ModelSpec { config, tokenizer, weights: Box::new(weights) })
}

/// The decoder configuration of a Llama GGUF file, as transformers maps it (`GGUF_CONFIG_MAPPING`
/// for `llama`): `block_count` → layers, `embedding_length` → hidden size,
/// `feed_forward_length` → intermediate size, `attention.head_count(_kv)` → heads,
/// `context_length` → positions (2048 when absent), `rope.freq_base` → θ (10 000 when absent),
/// `attention.layer_norm_rms_epsilon` → ε (1e-6 when absent); the vocabulary is the token list's
/// length; embeddings are tied when there is no `output.weight`. Errors name the key.
fn config(meta: &Meta, tied: bool, attention_bias: bool) -> Result<LlamaConfig, String> {
    let arch = meta.str("general.architecture")?;
    if arch != "llama" {
        return Err(format!("GGUF architecture `{arch}` is not supported (only `llama`)"));
    }
    let heads = meta.usize("llama.attention.head_count")?;
    let hidden = meta.usize("llama.embedding_length")?;
    if let Some(kind) = meta.opt_str("llama.rope.scaling.type")? {
        if kind != "none" {
            return Err(format!(
                "GGUF `llama.rope.scaling.type` `{kind}` is not supported (only the default rotary embedding)"
            ));
        }
    }
    if let Some(dims) = meta.opt_usize("llama.rope.dimension_count")? {
        if dims * heads != hidden {
            return Err(format!(
                "GGUF `llama.rope.dimension_count` {dims} is not embedding_length {hidden} / head_count {heads}"
            ));
        }
    }
    let cfg = LlamaConfig {
        vocab_size: meta.strings("tokenizer.ggml.tokens")?.len(),
        hidden_size: hidden,
        intermediate_size: meta.usize("llama.feed_forward_length")?,
        num_hidden_layers: meta.usize("llama.block_count")?,
        num_attention_heads: heads,
        num_key_value_heads: meta.opt_usize("llama.attention.head_count_kv")?.unwrap_or(heads),
        max_position_embeddings: meta.opt_usize("llama.context_length")?.unwrap_or(2048),
        rms_norm_eps: meta.opt_f64("llama.attention.layer_norm_rms_epsilon")?.unwrap_or(1e-6),
        rope_theta: meta.opt_f64("llama.rope.freq_base")?.unwrap_or(10_000.0),
        tie_word_embeddings: tied,
        attention_bias,
        architecture: Arch::Llama,
    };
    cfg.validate().map_err(|e| format!("GGUF metadata: {e}"))?;
    Ok(cfg)
}

/// The Hugging Face name of a llama.cpp tensor name (`blk.3.attn_q.weight` →
/// `model.layers.3.self_attn.q_proj.weight`), `None` for tensors a Llama decoder does not use.
pub fn hf_name(gguf: &str) -> Option<String> {
    let (stem, kind) = gguf.rsplit_once('.')?;
    if kind != "weight" && kind != "bias" {
        return None;
    }
    let top = match stem {
        "token_embd" => Some("model.embed_tokens"),
        "output_norm" => Some("model.norm"),
        "output" => Some("lm_head"),
        _ => None,
    };
    if let Some(top) = top {
        return Some(format!("{top}.{kind}"));
    }
    let rest = stem.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    layer.parse::<usize>().ok()?;
    let hf = match part {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{kind}"))
}

/// Undoes llama.cpp's permutation of a query or key projection (weight `[heads·d, in]` or bias
/// `[heads·d]`): llama.cpp's converter interleaves each head's two rotary halves
/// (`reshape(heads, 2, d/2, …).swapaxes(1, 2)`) for its rotary kernel; the inverse is
/// transformers' `_reverse_permute_weights`: `reshape(heads, d/2, 2, …).swapaxes(1, 2)`, so row
/// `(h, i, j)` of the GGUF tensor becomes row `(h, j, i)`. Errors when the rows are not a multiple
/// of `2 · heads`.
pub fn unpermute_rotary(t: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let dims = t.dims();
    let rows = dims[0];
    if heads == 0 || rows % (2 * heads) != 0 {
        candle_core::bail!("{rows} rows cannot be split into {heads} heads of two rotary halves")
    }
    let mut split = vec![heads, rows / heads / 2, 2];
    split.extend_from_slice(&dims[1..]);
    t.reshape(split)?.transpose(1, 2)?.contiguous()?.reshape(dims)
}

/// The tensors of a GGUF file under their Hugging Face names. Each [`WeightSource::load_f32`]
/// reads one tensor's bytes from the file, dequantises it to f32 and, for `q_proj` / `k_proj`,
/// undoes the rotary permutation ([`unpermute_rotary`]).
pub struct GgufWeights {
    origin: PathBuf,
    content: Content,
    /// Hugging Face name → (GGUF name, heads to un-permute over, for q and k).
    names: HashMap<String, (String, Option<usize>)>,
}

impl GgufWeights {
    fn new(origin: &Path, content: Content, cfg: &LlamaConfig) -> GgufWeights {
        let names = content
            .tensor_infos
            .keys()
            .filter_map(|gguf| {
                let hf = hf_name(gguf)?;
                let heads = if hf.contains(".self_attn.q_proj.") {
                    Some(cfg.num_attention_heads)
                } else if hf.contains(".self_attn.k_proj.") {
                    Some(cfg.num_key_value_heads)
                } else {
                    None
                };
                Some((hf, (gguf.clone(), heads)))
            })
            .collect();
        GgufWeights { origin: origin.to_path_buf(), content, names }
    }
}

impl WeightSource for GgufWeights {
    fn origin(&self) -> &Path {
        &self.origin
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.names.keys().cloned().collect();
        names.sort();
        names
    }

    /// The shape in the Hugging Face layout (GGUF lists dimensions innermost first; candle's
    /// reader already reverses them) and the GGML type's name (`Q4_1`, `F32`, …).
    fn info(&self, name: &str) -> Option<TensorInfo> {
        let (gguf, _) = self.names.get(name)?;
        let info = &self.content.tensor_infos[gguf];
        Some(TensorInfo { shape: info.shape.dims().to_vec(), dtype: format!("{:?}", info.ggml_dtype) })
    }

    /// Errors: `MissingTensor`, `Shape` for an element type whose dequantisation is not supported
    /// (naming the tensor and the type), `Io` when the file cannot be read, `Candle` otherwise.
    fn load_f32(&self, name: &str, device: &Device) -> Result<Tensor, ModelError> {
        let (gguf, heads) = self
            .names
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor { path: self.origin.clone(), name: name.to_string() })?;
        let dtype = self.content.tensor_infos[gguf].ggml_dtype;
        if !SUPPORTED.contains(&dtype) {
            return Err(ModelError::Shape {
                path: self.origin.clone(),
                name: format!("{gguf} ({name})"),
                message: format!("GGML type {dtype:?} is not supported (supported: {SUPPORTED:?})"),
            });
        }
        let file =
            std::fs::File::open(&self.origin).map_err(|source| ModelError::Io { path: self.origin.clone(), source })?;
        let shape_err = |e: candle_core::Error| ModelError::Shape {
            path: self.origin.clone(),
            name: format!("{gguf} ({name})"),
            message: e.to_string(),
        };
        let q = self.content.tensor(&mut BufReader::new(file), gguf, &Device::Cpu).map_err(shape_err)?;
        let t = q.dequantize(&Device::Cpu)?;
        let t = match heads {
            Some(h) => unpermute_rotary(&t, *h).map_err(shape_err)?,
            None => t,
        };
        Ok(t.to_device(device)?)
    }
}

/// Typed access to GGUF metadata; every error names the key.
pub(crate) struct Meta<'a>(&'a HashMap<String, Value>);

impl Meta<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    fn missing(key: &str) -> String {
        format!("GGUF metadata has no `{key}`")
    }

    fn mistyped(key: &str, want: &str, v: &Value) -> String {
        format!("GGUF metadata `{key}` is {:?}, not {want}", v.value_type())
    }

    fn str(&self, key: &str) -> Result<&str, String> {
        self.opt_str(key)?.ok_or_else(|| Meta::missing(key))
    }

    fn opt_str(&self, key: &str) -> Result<Option<&str>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(Meta::mistyped(key, "a string", v)),
        }
    }

    fn usize(&self, key: &str) -> Result<usize, String> {
        self.opt_usize(key)?.ok_or_else(|| Meta::missing(key))
    }

    fn opt_usize(&self, key: &str) -> Result<Option<usize>, String> {
        self.get(key)
            .map(|v| int(v).and_then(|i| usize::try_from(i).ok()).ok_or_else(|| Meta::mistyped(key, "a count", v)))
            .transpose()
    }

    fn opt_f64(&self, key: &str) -> Result<Option<f64>, String> {
        match self.get(key) {
            None => Ok(None),
            // Widened as Python widens a float32 (transformers reads it so: 1e-5 is 9.99999974e-6).
            Some(Value::F32(x)) => Ok(Some(f64::from(*x))),
            Some(Value::F64(x)) => Ok(Some(*x)),
            Some(v) => Err(Meta::mistyped(key, "a float", v)),
        }
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(Meta::mistyped(key, "a bool", v)),
        }
    }

    fn array(&self, key: &str) -> Result<&[Value], String> {
        match self.get(key) {
            None => Err(Meta::missing(key)),
            Some(Value::Array(items)) => Ok(items),
            Some(v) => Err(Meta::mistyped(key, "an array", v)),
        }
    }

    fn strings(&self, key: &str) -> Result<Vec<String>, String> {
        self.array(key)?
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                v => Err(Meta::mistyped(key, "an array of strings", v)),
            })
            .collect()
    }

    fn ints(&self, key: &str) -> Result<Vec<i64>, String> {
        self.array(key)?.iter().map(|v| int(v).ok_or_else(|| Meta::mistyped(key, "an array of integers", v))).collect()
    }
}

/// An integer metadata value of any width.
fn int(v: &Value) -> Option<i64> {
    match *v {
        Value::U8(x) => Some(x.into()),
        Value::I8(x) => Some(x.into()),
        Value::U16(x) => Some(x.into()),
        Value::I16(x) => Some(x.into()),
        Value::U32(x) => Some(x.into()),
        Value::I32(x) => Some(x.into()),
        Value::U64(x) => i64::try_from(x).ok(),
        Value::I64(x) => Some(x),
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Metadata from `(key, value)` pairs, leaked so tests can borrow it for any lifetime.
    pub(crate) fn meta(pairs: Vec<(&str, Value)>) -> Meta<'static> {
        let map: HashMap<String, Value> = pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        Meta(Box::leak(Box::new(map)))
    }

    fn smollm2_metadata() -> Vec<(&'static str, Value)> {
        vec![
            ("general.architecture", Value::String("llama".into())),
            ("llama.block_count", Value::U32(30)),
            ("llama.context_length", Value::U32(8192)),
            ("llama.embedding_length", Value::U32(576)),
            ("llama.feed_forward_length", Value::U32(1536)),
            ("llama.attention.head_count", Value::U32(9)),
            ("llama.attention.head_count_kv", Value::U32(3)),
            ("llama.rope.freq_base", Value::F32(100_000.0)),
            ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
            ("llama.rope.dimension_count", Value::U32(64)),
            ("tokenizer.ggml.tokens", Value::Array(vec![Value::String("a".into()); 49152])),
        ]
    }

    #[test]
    fn llama_metadata_gives_the_hf_config() {
        let cfg = config(&meta(smollm2_metadata()), true, false).unwrap();
        let expected = LlamaConfig {
            vocab_size: 49152,
            hidden_size: 576,
            intermediate_size: 1536,
            num_hidden_layers: 30,
            num_attention_heads: 9,
            num_key_value_heads: 3,
            max_position_embeddings: 8192,
            rms_norm_eps: 9.999999747378752e-6,
            rope_theta: 100_000.0,
            tie_word_embeddings: true,
            attention_bias: false,
            architecture: Arch::Llama,
        };
        assert_eq!(cfg, expected);
    }

    #[test]
    fn metadata_errors_name_the_key() {
        let with = |key: &str, value: Option<Value>| {
            let mut m = smollm2_metadata();
            m.retain(|(k, _)| *k != key);
            if let Some(v) = value {
                m.push((Box::leak(key.to_string().into_boxed_str()), v));
            }
            config(&meta(m), true, false).unwrap_err()
        };
        assert!(with("general.architecture", Some(Value::String("gemma".into()))).contains("`gemma` is not supported"));
        assert!(with("llama.block_count", None).contains("no `llama.block_count`"));
        assert!(with("llama.embedding_length", Some(Value::String("x".into()))).contains("`llama.embedding_length`"));
        assert!(with("llama.attention.head_count_kv", Some(Value::U32(2))).contains("num_key_value_heads"));
        assert!(with("llama.rope.dimension_count", Some(Value::U32(32))).contains("rope.dimension_count"));
        assert!(with("llama.rope.scaling.type", Some(Value::String("yarn".into()))).contains("`yarn`"));
        assert!(with("tokenizer.ggml.tokens", None).contains("no `tokenizer.ggml.tokens`"));
    }

    #[test]
    fn llama_cpp_names_map_to_hf_names() {
        let cases = [
            ("token_embd.weight", Some("model.embed_tokens.weight")),
            ("output_norm.weight", Some("model.norm.weight")),
            ("output.weight", Some("lm_head.weight")),
            ("blk.0.attn_norm.weight", Some("model.layers.0.input_layernorm.weight")),
            ("blk.12.ffn_norm.weight", Some("model.layers.12.post_attention_layernorm.weight")),
            ("blk.3.attn_q.weight", Some("model.layers.3.self_attn.q_proj.weight")),
            ("blk.3.attn_k.bias", Some("model.layers.3.self_attn.k_proj.bias")),
            ("blk.3.attn_v.weight", Some("model.layers.3.self_attn.v_proj.weight")),
            ("blk.3.attn_output.weight", Some("model.layers.3.self_attn.o_proj.weight")),
            ("blk.3.ffn_gate.weight", Some("model.layers.3.mlp.gate_proj.weight")),
            ("blk.3.ffn_up.weight", Some("model.layers.3.mlp.up_proj.weight")),
            ("blk.3.ffn_down.weight", Some("model.layers.3.mlp.down_proj.weight")),
            ("rope_freqs.weight", None),
            ("blk.x.attn_q.weight", None),
            ("blk.0.attn_q.scale", None),
        ];
        for (gguf, hf) in cases {
            assert_eq!(hf_name(gguf).as_deref(), hf, "{gguf}");
        }
    }

    /// Two heads of width 4 (two rotary halves of 2) and one input column: llama.cpp stores the
    /// rows of head h as (h,0,0) (h,1,0) (h,0,1) (h,1,1) — halves interleaved — and the Hugging
    /// Face order is (h,0,0) (h,0,1) (h,1,0) (h,1,1): rows 0 2 1 3 of each head.
    #[test]
    fn the_rotary_permutation_is_undone_per_head() {
        let gguf = Tensor::new(&[[0f32], [1.], [2.], [3.], [4.], [5.], [6.], [7.]], &Device::Cpu).unwrap();
        let hf = unpermute_rotary(&gguf, 2).unwrap();
        assert_eq!(hf.flatten_all().unwrap().to_vec1::<f32>().unwrap(), vec![0., 2., 1., 3., 4., 6., 5., 7.]);
        // A bias un-permutes the same way, and a width of three halves per head too.
        let bias = Tensor::new(&[0f32, 1., 2., 3., 4., 5.], &Device::Cpu).unwrap();
        assert_eq!(unpermute_rotary(&bias, 1).unwrap().to_vec1::<f32>().unwrap(), vec![0., 2., 4., 1., 3., 5.]);
        assert!(unpermute_rotary(&bias, 2).is_err(), "6 rows are not 2 heads of two halves");
    }

    /// The llama.cpp name of a Hugging Face tensor name (the inverse of [`hf_name`]).
    fn gguf_name(hf: &str) -> String {
        let pairs = [
            ("model.embed_tokens", "token_embd"),
            ("model.norm", "output_norm"),
            ("lm_head", "output"),
            ("model.layers.", "blk."),
            ("input_layernorm", "attn_norm"),
            ("post_attention_layernorm", "ffn_norm"),
            ("self_attn.q_proj", "attn_q"),
            ("self_attn.k_proj", "attn_k"),
            ("self_attn.v_proj", "attn_v"),
            ("self_attn.o_proj", "attn_output"),
            ("mlp.gate_proj", "ffn_gate"),
            ("mlp.up_proj", "ffn_up"),
            ("mlp.down_proj", "ffn_down"),
        ];
        pairs.iter().fold(hf.to_string(), |name, (from, to)| name.replace(from, to))
    }

    /// llama.cpp's converter's permutation (`convert_hf_to_gguf.py`, `LlamaModel.permute`):
    /// `reshape(heads, 2, d/2, in).swapaxes(1, 2)`, written here independently of its inverse.
    fn permute_like_llama_cpp(t: &Tensor, heads: usize) -> Tensor {
        let (rows, cols) = t.dims2().unwrap();
        t.reshape((heads, 2, rows / heads / 2, cols))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
            .reshape((rows, cols))
            .unwrap()
    }

    /// A small random Llama (grouped-query attention, untied head) written as a GGUF file the way
    /// llama.cpp writes one — permuted q/k, llama.cpp names, F32 and F16 tensors, a byte-level
    /// tokenizer in the metadata — reads back as the same model: every parameter (the F16 one
    /// within its rounding), the configuration and the special ids.
    #[test]
    fn a_llama_written_as_gguf_reads_back_as_the_same_model() {
        use crate::model::tokenizer::{byte_to_char, BYTES_EOS, BYTES_EOS_TOKEN};
        use crate::model::CausalLm;
        use candle_core::quantized::{gguf_file, QTensor};

        let cfg = LlamaConfig {
            hidden_size: 64,
            intermediate_size: 96,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            max_position_embeddings: 32,
            ..LlamaConfig::default()
        };
        let original = CausalLm::tiny(cfg.clone(), &mut crate::rng::Rng::derive(5, "gguf"), &Device::Cpu).unwrap();
        let mut tensors = Vec::new();
        for (hf, var) in original.params() {
            let t = var.as_tensor();
            let t = if hf.contains("q_proj") {
                permute_like_llama_cpp(t, cfg.num_attention_heads)
            } else if hf.contains("k_proj") {
                permute_like_llama_cpp(t, cfg.num_key_value_heads)
            } else {
                t.clone()
            };
            let dtype = if hf.contains("down_proj") { GgmlDType::F16 } else { GgmlDType::F32 };
            tensors.push((gguf_name(hf), QTensor::quantize(&t, dtype).unwrap()));
        }
        let mut tokens: Vec<Value> = byte_to_char().iter().map(|c| Value::String(c.to_string())).collect();
        tokens.push(Value::String(BYTES_EOS_TOKEN.into()));
        let mut types = vec![Value::I32(1); 256];
        types.push(Value::I32(3));
        let metadata = [
            ("general.architecture", Value::String("llama".into())),
            ("llama.block_count", Value::U32(2)),
            ("llama.context_length", Value::U32(32)),
            ("llama.embedding_length", Value::U32(64)),
            ("llama.feed_forward_length", Value::U32(96)),
            ("llama.attention.head_count", Value::U32(4)),
            ("llama.attention.head_count_kv", Value::U32(2)),
            ("llama.rope.freq_base", Value::F32(10_000.0)),
            ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-6)),
            ("tokenizer.ggml.model", Value::String("gpt2".into())),
            ("tokenizer.ggml.tokens", Value::Array(tokens)),
            ("tokenizer.ggml.token_type", Value::Array(types)),
            ("tokenizer.ggml.merges", Value::Array(Vec::new())),
            ("tokenizer.ggml.eos_token_id", Value::U32(BYTES_EOS)),
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.gguf");
        let mut file = std::fs::File::create(&path).unwrap();
        let meta_refs: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
        let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        gguf_file::write(&mut file, &meta_refs, &tensor_refs).unwrap();
        drop(file);

        let read = CausalLm::load(&path, &Device::Cpu).unwrap();
        let expected = LlamaConfig { rms_norm_eps: f64::from(1e-6f32), ..cfg };
        assert_eq!(read.config(), &expected);
        assert_eq!((read.tokenizer().eos_id(), read.tokenizer().pad_id()), (BYTES_EOS, BYTES_EOS));
        assert_eq!(read.tokenizer().encode("hi<|endoftext|>").unwrap(), vec![104, 105, BYTES_EOS]);
        for ((name, a), (_, b)) in original.params().iter().zip(read.params()) {
            let diff = (a.as_tensor() - b.as_tensor()).unwrap().abs().unwrap().max_all().unwrap();
            let tol = if name.contains("down_proj") { 1e-3 } else { 0.0 };
            assert!(diff.to_scalar::<f32>().unwrap() <= tol, "{name}");
        }
    }

    #[test]
    fn a_file_that_is_not_gguf_is_a_config_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.gguf");
        std::fs::write(&path, b"not a model").unwrap();
        let err = read_spec(&path).err().expect("not GGUF");
        assert!(matches!(err, ModelError::Config { .. }) && err.to_string().contains("not a GGUF file"), "{err}");
        let err = read_spec(&dir.path().join("absent.gguf")).err().expect("absent");
        assert!(matches!(err, ModelError::Io { .. }), "{err}");
    }
}
