//! Causal language models: a Llama / Qwen2 decoder written on candle (no candle-transformers),
//! Hugging Face folder load/save, tokenizers, completion log-probabilities and KV-cached
//! generation.
//!
//! Code map:
//! - [`config`]: `LlamaConfig`, read from / written to HF `config.json`;
//! - [`ops`] and `kernels`: differentiable RMSNorm, rotary embeddings, masked softmax, SwiGLU
//!   and token log-probs (composed reference versions plus fused CPU kernels with backward);
//! - [`llama`]: `CausalLm` — parameters, forward pass, `tiny` init, `load`, `save`, `snapshot`;
//! - [`weights`]: safetensors reading (single file or shards) and atomic writing;
//! - [`tokenizer`]: byte-level or `tokenizers`-backed `Tokenizer`;
//! - `cpu`: the hand-written forward and backward used for training on the CPU (candle's
//!   autograd cost as much as the arithmetic there); checked against the candle path;
//! - [`logprob`]: `TokenBatch` collation, `completion_logprobs`, `sft_loss`;
//! - [`generate`]: batched KV-cached greedy / temperature / top-p generation.
//!
//! Invariants: weights and activations are f32; parameters are `Var`s named with their Hugging
//! Face tensor names and kept sorted by name; all randomness comes from [`crate::rng::Rng`].

pub mod config;
mod cpu;
pub mod generate;
pub(crate) mod kernels;
pub mod llama;
pub mod logprob;
pub mod ops;
pub mod tokenizer;
pub mod weights;

use std::path::PathBuf;

pub use candle_core::{DType, Device, Tensor, Var};
pub use config::{Arch, LlamaConfig};
pub use generate::{generate, GenerateOptions};
pub use llama::CausalLm;
pub use logprob::{completion_logprobs, completion_token_logprobs, sft_loss, training_positions, TokenBatch};
pub use tokenizer::Tokenizer;

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
    /// A tensor operation failed (shape mismatch inside the model, out-of-range ids, ...).
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
}
