//! `CausalLm`: the Llama / Qwen2 decoder — parameters, forward pass, random init, building from a
//! [`ModelSpec`] (a Hugging Face folder is one), HF save.
//!
//! Parameters are `Var`s under their Hugging Face names (`model.layers.0.self_attn.q_proj.weight`
//! …), sorted by name. For speed the forward pass concatenates q‖k‖v and gate‖up weights into one
//! matrix each (one matmul instead of three / two; the concatenation's backward routes gradients
//! back to the named parameters), and keeps activations 2-D `[B·T, features]`.
//!
//! Invariant: `forward` is a pure function of the parameters and the ids: no dropout, no state.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Result as CResult, Tensor, Var};
use serde_json::json;

use super::config::LlamaConfig;
use super::cpu::{self, BlockIndex, Dims, GradSink, ParamIndex, Tokens, TrainPass};
use super::decode::CpuDecoder;
use super::ops::{self, AttnMask, HeadShape, RopeTables};
use super::spec::ModelSpec;
use super::tokenizer::Tokenizer;
use super::weights::{self, write_atomic};
use super::ModelError;
use crate::rng::Rng;

/// One decoder block's parameters.
#[derive(Clone)]
struct Block {
    input_norm: Var,
    qkv: [Var; 3],
    qkv_bias: Option<[Var; 3]>,
    o: Var,
    o_bias: Option<Var>,
    post_norm: Var,
    gate_up: [Var; 2],
    down: Var,
}

/// A block's weights as plain tensors for one forward pass (fused where that saves matmuls).
pub(crate) struct BlockWeights {
    input_norm: Tensor,
    qkv: Tensor,
    qkv_bias: Option<Tensor>,
    o: Tensor,
    o_bias: Option<Tensor>,
    post_norm: Tensor,
    gate_up: Tensor,
    down: Tensor,
}

/// The whole model's weights for a forward pass (or for a whole generation call).
pub(crate) struct Weights {
    embed: Tensor,
    blocks: Vec<BlockWeights>,
    norm: Tensor,
    lm_head: Tensor,
}

/// Where each row's tokens sit: rotary positions (one per token row) and the attention mask.
pub(crate) struct Positions {
    pub positions: Arc<Vec<u32>>,
    pub mask: AttnMask,
}

impl Positions {
    /// Rows of `time` tokens at positions `0..time`, plain causal attention.
    pub fn causal(batch: usize, time: usize) -> Positions {
        let positions = (0..batch).flat_map(|_| 0..time as u32).collect();
        Positions {
            positions: Arc::new(positions),
            mask: AttnMask { batch, queries: time, keys: time, offset: 0, key_valid: None },
        }
    }
}

/// Cached keys and values of one block: `[kv_heads, B, S, head_dim]` each.
#[derive(Clone)]
pub(crate) struct KvCache {
    pub k: Tensor,
    pub v: Tensor,
}

/// A decoder-only causal language model with its tokenizer.
pub struct CausalLm {
    cfg: LlamaConfig,
    params: Vec<(String, Var)>,
    embed: Var,
    blocks: Vec<Block>,
    norm: Var,
    /// `None` when the embeddings are tied.
    lm_head: Option<Var>,
    tokenizer: Tokenizer,
    device: Device,
    rope: RopeTables,
    /// Made by [`CausalLm::frozen`]: forward passes never record a graph.
    frozen: bool,
    /// Positions of the parameters by role, for the CPU training pass.
    index: Arc<ParamIndex>,
    /// Parameter gradients from CPU training passes, until [`CausalLm::take_grads`].
    sink: Arc<GradSink>,
    /// The argument of the CPU training pass's candle op: a constant that makes candle's
    /// backward visit the op (see `model::cpu`); never a parameter.
    placeholder: Var,
}

/// Every parameter name and shape the configuration implies, sorted by name.
fn param_shapes(cfg: &LlamaConfig) -> Vec<(String, Vec<usize>)> {
    let (h, i, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let hd = cfg.head_dim();
    let (q, kv) = (cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd);
    let mut out = vec![("model.embed_tokens.weight".to_string(), vec![v, h]), ("model.norm.weight".into(), vec![h])];
    if !cfg.tie_word_embeddings {
        out.push(("lm_head.weight".into(), vec![v, h]));
    }
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}");
        out.push((format!("{p}.input_layernorm.weight"), vec![h]));
        out.push((format!("{p}.post_attention_layernorm.weight"), vec![h]));
        for (name, rows) in [("q_proj", q), ("k_proj", kv), ("v_proj", kv)] {
            out.push((format!("{p}.self_attn.{name}.weight"), vec![rows, h]));
            if cfg.attention_bias {
                out.push((format!("{p}.self_attn.{name}.bias"), vec![rows]));
            }
        }
        out.push((format!("{p}.self_attn.o_proj.weight"), vec![h, q]));
        if cfg.o_bias() {
            out.push((format!("{p}.self_attn.o_proj.bias"), vec![h]));
        }
        out.push((format!("{p}.mlp.gate_proj.weight"), vec![i, h]));
        out.push((format!("{p}.mlp.up_proj.weight"), vec![i, h]));
        out.push((format!("{p}.mlp.down_proj.weight"), vec![h, i]));
    }
    out.sort();
    out
}

/// Checks a configuration and that its vocabulary holds the tokenizer's special ids; errors are
/// `Config` naming `path`.
fn check(cfg: &LlamaConfig, tokenizer: &Tokenizer, path: &Path) -> Result<(), ModelError> {
    cfg.validate()
        .and_then(|()| tokenizer.spec().validate(cfg.vocab_size))
        .map_err(|message| ModelError::Config { path: path.to_path_buf(), message })
}

fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> CResult<Tensor> {
    let y = x.matmul(&w.t()?)?;
    match b {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

impl CausalLm {
    /// Random init from a seeded stream: normal(0, 0.02) for every matrix (transformers'
    /// `initializer_range`), zeros for biases, ones for norms, a zero padding row in the
    /// embeddings; the embedded byte tokenizer ([`Tokenizer::bytes`]). Errors: `Config` when the
    /// configuration is invalid or its vocabulary cannot hold the tokenizer's special ids.
    pub fn tiny(cfg: LlamaConfig, rng: &mut Rng, device: &Device) -> Result<CausalLm, ModelError> {
        let tokenizer = Tokenizer::bytes();
        check(&cfg, &tokenizer, Path::new("<tiny>"))?;
        let mut tensors = HashMap::new();
        for (name, shape) in param_shapes(&cfg) {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = if name.ends_with("norm.weight") {
                vec![1.0; n]
            } else if name.ends_with(".bias") {
                vec![0.0; n]
            } else {
                let mut d: Vec<f32> = (0..n).map(|_| (rng.normal() * 0.02) as f32).collect();
                if name == "model.embed_tokens.weight" {
                    let h = shape[1];
                    let pad = tokenizer.pad_id() as usize;
                    d[pad * h..(pad + 1) * h].fill(0.0);
                }
                d
            };
            tensors.insert(name, Tensor::from_vec(data, shape, device)?);
        }
        CausalLm::from_tensors(cfg, tensors, tokenizer, device)
    }

    /// Opens a Hugging Face folder or a GGUF file: [`ModelSpec::open`] then [`CausalLm::from_spec`].
    pub fn load(path: &Path, device: &Device) -> Result<CausalLm, ModelError> {
        CausalLm::from_spec(ModelSpec::open(path)?, device)
    }

    /// Builds the model `spec` describes: every parameter the configuration implies is looked up
    /// in the weight source, its shape checked, then loaded as f32 on `device` (tensors the
    /// architecture does not use are ignored). Errors: `Config` for an invalid configuration or
    /// special ids outside the vocabulary, `MissingTensor`, `Shape` (a wrong shape or a non-float
    /// tensor), and the weight source's own errors; each names the source's file.
    pub fn from_spec(spec: ModelSpec, device: &Device) -> Result<CausalLm, ModelError> {
        let ModelSpec { config, tokenizer, weights } = spec;
        let path = weights.origin();
        check(&config, &tokenizer, path)?;
        let mut tensors = HashMap::new();
        for (name, shape) in param_shapes(&config) {
            let info = weights
                .info(&name)
                .ok_or_else(|| ModelError::MissingTensor { path: path.to_path_buf(), name: name.clone() })?;
            if info.shape != shape {
                return Err(ModelError::Shape {
                    path: path.to_path_buf(),
                    message: format!("expected shape {shape:?}, found {:?}", info.shape),
                    name,
                });
            }
            let t = weights.load_f32(&name, device)?;
            tensors.insert(name, t);
        }
        CausalLm::from_tensors(config, tensors, tokenizer, device)
    }

    /// The model of `tensors`, which hold exactly the parameters of `param_shapes(&cfg)` (the
    /// callers check or construct them so).
    fn from_tensors(
        cfg: LlamaConfig,
        mut tensors: HashMap<String, Tensor>,
        tokenizer: Tokenizer,
        device: &Device,
    ) -> Result<CausalLm, ModelError> {
        let mut params = Vec::new();
        for (name, _) in param_shapes(&cfg) {
            let t = tensors.remove(&name).expect("the caller supplies every parameter");
            params.push((name, Var::from_tensor(&t.to_device(device)?.contiguous()?)?));
        }
        let by_name: HashMap<&str, &Var> = params.iter().map(|(n, v)| (n.as_str(), v)).collect();
        let get = |n: &str| by_name[n].clone();
        let opt = |n: &str| by_name.get(n).map(|v| (*v).clone());
        let blocks = (0..cfg.num_hidden_layers)
            .map(|l| {
                let p = format!("model.layers.{l}");
                let attn = |w: &str, kind: &str| format!("{p}.self_attn.{w}_proj.{kind}");
                Block {
                    input_norm: get(&format!("{p}.input_layernorm.weight")),
                    qkv: ["q", "k", "v"].map(|w| get(&attn(w, "weight"))),
                    qkv_bias: cfg.attention_bias.then(|| ["q", "k", "v"].map(|w| get(&attn(w, "bias")))),
                    o: get(&attn("o", "weight")),
                    o_bias: opt(&attn("o", "bias")),
                    post_norm: get(&format!("{p}.post_attention_layernorm.weight")),
                    gate_up: ["gate", "up"].map(|w| get(&format!("{p}.mlp.{w}_proj.weight"))),
                    down: get(&format!("{p}.mlp.down_proj.weight")),
                }
            })
            .collect();
        let rope = RopeTables::new(cfg.head_dim(), cfg.rope_theta, cfg.max_position_embeddings);
        let at = |n: &str| params.iter().position(|(name, _)| name == n).expect("every role names a parameter");
        let embed = at("model.embed_tokens.weight");
        let index = ParamIndex {
            embed,
            norm: at("model.norm.weight"),
            lm_head: if cfg.tie_word_embeddings { embed } else { at("lm_head.weight") },
            blocks: (0..cfg.num_hidden_layers)
                .map(|l| {
                    let p = format!("model.layers.{l}");
                    let attn = |w: &str, kind: &str| at(&format!("{p}.self_attn.{w}_proj.{kind}"));
                    BlockIndex {
                        input_norm: at(&format!("{p}.input_layernorm.weight")),
                        q: attn("q", "weight"),
                        k: attn("k", "weight"),
                        v: attn("v", "weight"),
                        qkv_bias: cfg.attention_bias.then(|| ["q", "k", "v"].map(|w| attn(w, "bias"))),
                        o: attn("o", "weight"),
                        o_bias: cfg.o_bias().then(|| attn("o", "bias")),
                        post_norm: at(&format!("{p}.post_attention_layernorm.weight")),
                        gate: at(&format!("{p}.mlp.gate_proj.weight")),
                        up: at(&format!("{p}.mlp.up_proj.weight")),
                        down: at(&format!("{p}.mlp.down_proj.weight")),
                    }
                })
                .collect(),
        };
        Ok(CausalLm {
            index: Arc::new(index),
            sink: Arc::default(),
            placeholder: Var::zeros(1, DType::F32, device)?,
            embed: get("model.embed_tokens.weight"),
            norm: get("model.norm.weight"),
            lm_head: opt("lm_head.weight"),
            blocks,
            params,
            cfg,
            tokenizer,
            device: device.clone(),
            rope,
            frozen: false,
        })
    }

    /// Writes a Hugging Face folder (config.json, model.safetensors in F32, tokenizer.json,
    /// tokenizer_config.json, generation_config.json); each file atomically.
    pub fn save(&self, dir: &Path) -> Result<(), ModelError> {
        std::fs::create_dir_all(dir).map_err(|source| ModelError::Io { path: dir.into(), source })?;
        let tensors: Vec<(String, Tensor)> =
            self.params.iter().map(|(n, v)| (n.clone(), v.as_detached_tensor())).collect();
        weights::write_weights(dir, &tensors)?;
        let pretty = |v: &serde_json::Value| serde_json::to_vec_pretty(v).expect("json values serialise");
        let mut config = self.cfg.to_hf();
        self.tokenizer.spec().write_hf_ids(&mut config);
        write_atomic(&dir.join("config.json"), &pretty(&config))?;
        let mut generation = json!({"use_cache": true});
        self.tokenizer.spec().write_hf_ids(&mut generation);
        write_atomic(&dir.join("generation_config.json"), &pretty(&generation))?;
        write_atomic(&dir.join("tokenizer.json"), self.tokenizer.to_json().as_bytes())?;
        write_atomic(&dir.join("tokenizer_config.json"), &pretty(&self.tokenizer.config_json()))?;
        Ok(())
    }

    /// A copy with the same weights in new `Var`s, so training either leaves the other unchanged
    /// (a reference model, or the starting point of a next stage; the copy is trainable).
    pub fn snapshot(&self) -> Result<CausalLm, ModelError> {
        let tensors =
            self.params.iter().map(|(n, v)| Ok((n.clone(), v.as_tensor().copy()?))).collect::<CResult<_>>()?;
        CausalLm::from_tensors(self.cfg.clone(), tensors, self.tokenizer.clone(), &self.device)
    }

    /// A frozen copy for reference models: like [`CausalLm::snapshot`], but its forward passes
    /// are detached, so it never records a backward graph and never receives gradients.
    pub fn frozen(&self) -> Result<CausalLm, ModelError> {
        Ok(self.snapshot()?.into_frozen())
    }

    /// This model, frozen in place (no copy): for models that are only ever evaluated.
    pub fn into_frozen(mut self) -> CausalLm {
        self.frozen = true;
        self
    }

    /// Whether this model is a frozen copy (see [`CausalLm::frozen`]).
    pub fn is_frozen(&self) -> bool {
        self.frozen
    }

    /// Logits `[B, T, V]` (f32) of `[B, T]` u32 ids, positions `0..T`, causal attention.
    pub fn forward(&self, input_ids: &Tensor) -> CResult<Tensor> {
        let (b, t) = input_ids.dims2()?;
        let w = self.weights(true)?;
        let hidden = self.hidden(&w, input_ids, &Positions::causal(b, t), None)?;
        self.logits(&w, &hidden)?.reshape((b, t, self.cfg.vocab_size))
    }

    /// Per-token log-probs `[B, T]` of `tokens.targets` on the CPU: the hand-written training
    /// pass of `model::cpu`. Differentiable (through [`CausalLm::take_grads`]) unless frozen.
    pub(crate) fn cpu_token_logprobs(&self, tokens: Tokens) -> CResult<Tensor> {
        let dims = self.dims();
        if tokens.time > self.rope.max_positions {
            candle_core::bail!(
                "position {} is beyond max_position_embeddings {}",
                tokens.time - 1,
                self.rope.max_positions
            )
        }
        let params: Vec<Tensor> = self.params.iter().map(|(_, v)| v.as_detached_tensor()).collect();
        let shape = (tokens.batch, tokens.time);
        if self.frozen {
            let (lp, _) =
                cpu::with_slices(&params, |w| cpu::forward(w, &self.index, &dims, &self.rope, &tokens, false))?;
            return Tensor::from_vec(TrainPass::scatter(&tokens, &lp), shape, &self.device);
        }
        let pass = TrainPass {
            params,
            index: self.index.clone(),
            dims,
            rope: self.rope.clone(),
            tokens,
            sink: self.sink.clone(),
            saved: Default::default(),
        };
        self.placeholder.as_tensor().apply_op1(pass)
    }

    /// The sizes the hand-written CPU passes read.
    fn dims(&self) -> Dims {
        let cfg = &self.cfg;
        Dims {
            hidden: cfg.hidden_size,
            heads: cfg.num_attention_heads,
            kv_heads: cfg.num_key_value_heads,
            head_dim: cfg.head_dim(),
            intermediate: cfg.intermediate_size,
            vocab: cfg.vocab_size,
            eps: cfg.rms_norm_eps as f32,
        }
    }

    /// The hand-written CPU decoder of one generation call over rows with `offsets` pad slots
    /// first and at most `capacity` slots (`model::decode`); its passes fail unless the
    /// parameters are on the CPU.
    pub(crate) fn cpu_decoder(&self, offsets: Vec<usize>, capacity: usize) -> CpuDecoder {
        let params = self.params.iter().map(|(_, v)| v.as_detached_tensor()).collect();
        CpuDecoder::new(params, self.index.clone(), self.dims(), self.rope.clone(), offsets, capacity)
    }

    /// The gradients of a backward pass for every parameter, in [`CausalLm::params`] order:
    /// those candle's `store` holds plus those the CPU training passes deposited (which this
    /// takes, so the next backward starts from zero); zeros for parameters without any.
    pub fn take_grads(&self, store: &GradStore) -> CResult<Vec<Tensor>> {
        let mut deposited = self.sink.take().map(|g| g.into_iter());
        self.params
            .iter()
            .map(|(_, var)| {
                let cpu = deposited.as_mut().and_then(|g| g.next());
                let cpu = cpu.map(|g| Tensor::from_vec(g, var.shape(), var.device())).transpose()?;
                match (cpu, store.get(var.as_tensor())) {
                    (Some(a), Some(b)) => a + b.detach(),
                    (Some(a), None) => Ok(a),
                    (None, Some(b)) => Ok(b.detach()),
                    (None, None) => var.as_tensor().zeros_like(),
                }
            })
            .collect()
    }

    /// Trainable parameters under their Hugging Face names, sorted by name.
    pub fn params(&self) -> &[(String, Var)] {
        &self.params
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Total number of parameters.
    pub fn num_params(&self) -> usize {
        self.params.iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// The parameters as tensors for one pass; `grad == false` detaches them (generation,
    /// frozen references), which also keeps candle from recording a graph.
    pub(crate) fn weights(&self, grad: bool) -> CResult<Weights> {
        let grad = grad && !self.frozen;
        let t = |v: &Var| {
            if grad {
                v.as_tensor().clone()
            } else {
                v.as_detached_tensor()
            }
        };
        let cat = |vs: &[Var]| -> CResult<Tensor> { Tensor::cat(&vs.iter().map(t).collect::<Vec<_>>(), 0) };
        let blocks = self
            .blocks
            .iter()
            .map(|b| {
                Ok(BlockWeights {
                    input_norm: t(&b.input_norm),
                    qkv: cat(&b.qkv)?,
                    qkv_bias: b.qkv_bias.as_ref().map(|bs| cat(bs)).transpose()?,
                    o: t(&b.o),
                    o_bias: b.o_bias.as_ref().map(t),
                    post_norm: t(&b.post_norm),
                    gate_up: cat(&b.gate_up)?,
                    down: t(&b.down),
                })
            })
            .collect::<CResult<_>>()?;
        Ok(Weights {
            embed: t(&self.embed),
            blocks,
            norm: t(&self.norm),
            lm_head: t(self.lm_head.as_ref().unwrap_or(&self.embed)),
        })
    }

    /// Final normalised hidden states `[B·T, H]` of `[B, T]` ids. With `cache`, the keys and
    /// values of earlier tokens are prepended and the new ones appended to it.
    pub(crate) fn hidden(
        &self,
        w: &Weights,
        input_ids: &Tensor,
        pos: &Positions,
        mut cache: Option<&mut Vec<KvCache>>,
    ) -> CResult<Tensor> {
        let (batch, time) = input_ids.dims2()?;
        let cfg = &self.cfg;
        let (nh, nkv, hd) = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim());
        let shape = HeadShape { batch, time, heads: nh, kv_heads: nkv, head_dim: hd };
        let n = batch * time;
        let eps = cfg.rms_norm_eps;
        let scale = 1.0 / (hd as f64).sqrt();
        let mut x = w.embed.index_select(&input_ids.flatten_all()?, 0)?;
        for (l, bw) in w.blocks.iter().enumerate() {
            let h = ops::rms_norm(&x, &bw.input_norm, eps)?;
            let qkv = linear(&h, &bw.qkv, bw.qkv_bias.as_ref())?;
            let heads = ops::split_heads_rope(&qkv, shape, &pos.positions, &self.rope)?;
            let q = heads.narrow(0, 0, nh)?;
            let mut k = heads.narrow(0, nh, nkv)?;
            let mut v = heads.narrow(0, nh + nkv, nkv)?;
            if let Some(caches) = cache.as_deref_mut() {
                if let Some(c) = caches.get(l) {
                    k = Tensor::cat(&[&c.k, &k], 2)?;
                    v = Tensor::cat(&[&c.v, &v], 2)?;
                }
                let entry = KvCache { k: k.clone(), v: v.clone() };
                if l < caches.len() {
                    caches[l] = entry;
                } else {
                    caches.push(entry);
                }
            }
            let (k, v) = (repeat_kv(k, nh / nkv)?, repeat_kv(v, nh / nkv)?);
            let scores = q.matmul(&k.t()?)?;
            let p = ops::masked_softmax(&scores, scale, &pos.mask)?;
            let o = p.matmul(&v)?.permute((1, 2, 0, 3))?.reshape((n, nh * hd))?;
            x = (x + linear(&o, &bw.o, bw.o_bias.as_ref())?)?;
            let h = ops::rms_norm(&x, &bw.post_norm, eps)?;
            let m = ops::swiglu(&linear(&h, &bw.gate_up, None)?)?;
            x = (x + linear(&m, &bw.down, None)?)?;
        }
        ops::rms_norm(&x, &w.norm, eps)
    }

    /// Logits `[rows, V]` of hidden states `[rows, H]`.
    pub(crate) fn logits(&self, w: &Weights, hidden: &Tensor) -> CResult<Tensor> {
        linear(hidden, &w.lm_head, None)
    }

    pub(crate) fn max_positions(&self) -> usize {
        self.cfg.max_position_embeddings
    }
}

/// `[K, B, S, hd] -> [K·rep, B, S, hd]`, each kv head repeated `rep` times consecutively (as
/// transformers' `repeat_kv`).
fn repeat_kv(x: Tensor, rep: usize) -> CResult<Tensor> {
    if rep == 1 {
        return Ok(x);
    }
    let (k, b, s, hd) = x.dims4()?;
    x.unsqueeze(1)?.broadcast_as((k, rep, b, s, hd))?.contiguous()?.reshape((k * rep, b, s, hd))
}

impl std::fmt::Debug for CausalLm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CausalLm")
            .field("architecture", &self.cfg.architecture)
            .field("params", &self.num_params())
            .field("tokenizer", &self.tokenizer)
            .field("device", &self.device)
            .finish()
    }
}

/// Models are shared across rayon workers (scoring, rollouts).
#[allow(dead_code)]
fn assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<CausalLm>();
}
