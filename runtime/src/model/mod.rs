//! Causal language models: a Llama / Qwen2 decoder written on candle (no candle-transformers),
//! built from a model spec (configuration + tokenizer + weight source; a Hugging Face folder is
//! one), saved as a Hugging Face folder; tokenizers, completion log-probabilities and KV-cached
//! generation.
//!
//! Code map:
//! - [`config`]: `LlamaConfig`, read from / written to HF `config.json`;
//! - [`ops`] and `kernels`: differentiable RMSNorm, rotary embeddings, masked softmax, SwiGLU
//!   and token log-probs (composed reference versions plus fused CPU kernels with backward);
//! - [`spec`]: `ModelSpec` (configuration, tokenizer, weight source) and reading one from a
//!   Hugging Face folder or (through [`gguf`]) a GGUF file;
//! - [`gguf`]: GGUF files (llama.cpp's format) as a weight source, dequantised to f32, with the
//!   configuration and tokenizer their metadata describe;
//! - [`llama`]: `CausalLm` — parameters, forward pass, `tiny` init, `from_spec`, `load` (a
//!   folder or a GGUF file), `save`, `snapshot`;
//! - [`weights`]: the `WeightSource` trait, memory-mapped safetensors (single file or shards),
//!   atomic writing;
//! - [`tokenizer`]: `Vocab` (byte-level or `tokenizers`-backed), `TokenizerSpec` (BOS policy,
//!   stop ids, PAD, chat template) and the `Tokenizer` that pairs them;
//! - `cpu`: the hand-written forward and backward used for training on the CPU (candle's
//!   autograd cost as much as the arithmetic there); checked against the candle path;
//! - [`logprob`]: `TokenBatch` collation, `completion_logprobs`, `sft_loss`;
//! - `decode`: the model side of a generation call (KV cache, next-token logits): the candle
//!   path on any device, a hand-written one on the CPU; checked against each other;
//! - [`generate`]: batched KV-cached greedy / temperature / top-p generation.
//!
//! Invariants: weights and activations are f32; parameters are `Var`s named with their Hugging
//! Face tensor names and kept sorted by name; all randomness comes from [`crate::rng::Rng`].

pub mod chat;
pub mod config;
mod cpu;
pub(crate) mod decode;
pub mod generate;
pub mod gguf;
pub(crate) mod kernels;
pub mod llama;
pub mod logprob;
pub mod ops;
pub mod spec;
pub mod tokenizer;
pub mod weights;

use std::path::PathBuf;

pub use candle_core::{DType, Device, Tensor, Var};
pub use config::{Arch, LlamaConfig};
pub use generate::{generate, generate_streams, sample_streams, GenerateOptions, Sampled};
pub use llama::CausalLm;
pub use logprob::{
    completion_log_sum_sq_probs, completion_logprobs, completion_token_logprobs, sft_loss, training_positions,
    TokenBatch,
};
pub use spec::ModelSpec;
pub use tokenizer::{Tokenizer, TokenizerSpec, Vocab};
pub use weights::{MmapSafetensors, TensorInfo, WeightSource};

/// Errors of loading, saving and running a model. Each names the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// config.json (or an index / generation config) is malformed or unsupported.
    #[error("{}: {message}", path.display())]
    Config { path: PathBuf, message: String },
    /// A tensor the architecture needs is absent from the weights.
    #[error("{}: missing tensor `{name}`", path.display())]
    MissingTensor { path: PathBuf, name: String },
    /// A tensor has the wrong shape or an unreadable encoding.
    #[error("{}: tensor `{name}`: {message}", path.display())]
    Shape { path: PathBuf, name: String, message: String },
    /// tokenizer.json could not be parsed.
    #[error("{}: tokenizer: {message}", path.display())]
    Tokenizer { path: PathBuf, message: String },
    /// The tokenizer failed on a text (`text` is its start, at most 60 characters).
    #[error("the tokenizer cannot encode {text:?}: {message}")]
    Encode { text: String, message: String },
    /// A tensor operation failed (shape mismatch inside the model, out-of-range ids, ...).
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
}
