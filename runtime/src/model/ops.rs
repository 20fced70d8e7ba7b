//! Differentiable building blocks of the decoder.
//!
//! candle-nn's fused `rms_norm`, `softmax_last_dim` and `rope` have no backward pass: gradients
//! stop at them silently. Every op here is differentiable. Each has two implementations with the
//! same meaning:
//! - a *composed* one built from candle primitives (runs on any device; it is the reference),
//! - a fused CPU kernel ([`super::kernels`]) with a hand-written backward, used on the CPU because
//!   it runs one kernel where the composed version runs five to ten.
//!
//! The public functions dispatch on the device. `tests/gradients.rs` checks both against finite
//! differences and against each other.
//!
//! Layout conventions: activations are 2-D `[N, features]` with `N = batch × time` (row-major,
//! row `b * T + t`); attention tensors are `[heads, B, T, head_dim]`, so the q, k and v blocks
//! of one `[heads_q + 2·heads_kv, B, T, hd]` tensor are contiguous slices of it.

use std::sync::Arc;

use candle_core::{DType, Device, Result, Tensor, D};

use super::kernels;

/// Rotary-embedding tables `cos`/`sin` of shape `[max_positions, head_dim / 2]`, computed in
/// f32 exactly as transformers' default rope does (`inv_freq = 1 / theta^(2i/d)`, then
/// `pos * inv_freq`, then cos/sin), so logits match transformers' to the last few ulps.
#[derive(Clone, Debug)]
pub struct RopeTables {
    pub(crate) cos: Arc<Vec<f32>>,
    pub(crate) sin: Arc<Vec<f32>>,
    pub(crate) half: usize,
    pub(crate) max_positions: usize,
}

impl RopeTables {
    pub fn new(head_dim: usize, theta: f64, max_positions: usize) -> RopeTables {
        let half = head_dim / 2;
        let inv_freq: Vec<f32> =
            (0..half).map(|i| 1.0f32 / (theta as f32).powf((2 * i) as f32 / head_dim as f32)).collect();
        let mut cos = Vec::with_capacity(max_positions * half);
        let mut sin = Vec::with_capacity(max_positions * half);
        for p in 0..max_positions {
            for &f in &inv_freq {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        RopeTables { cos: Arc::new(cos), sin: Arc::new(sin), half, max_positions }
    }

    /// `[len, head_dim]` cos and sin for the given positions, halves duplicated (HF layout).
    fn gathered(&self, positions: &[u32], device: &Device) -> Result<(Tensor, Tensor)> {
        let mut c = Vec::with_capacity(positions.len() * self.half * 2);
        let mut s = Vec::with_capacity(positions.len() * self.half * 2);
        for &p in positions {
            let row = p as usize * self.half..(p as usize + 1) * self.half;
            for _ in 0..2 {
                c.extend_from_slice(&self.cos[row.clone()]);
                s.extend_from_slice(&self.sin[row.clone()]);
            }
        }
        let shape = (positions.len(), self.half * 2);
        Ok((Tensor::from_vec(c, shape, device)?, Tensor::from_vec(s, shape, device)?))
    }
}

/// Head counts and sizes of one attention call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadShape {
    pub batch: usize,
    pub time: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// Which keys each query may attend to: key `j` is visible to query `i` (of row `b`) iff
/// `j <= i + offset` (causal, with `offset` cached keys before the queries) and, when
/// `key_valid` is given, `key_valid[b * keys + j]` (left padding during generation).
/// A query with no visible key gets all-zero weights.
#[derive(Clone, Debug)]
pub struct AttnMask {
    pub batch: usize,
    pub queries: usize,
    pub keys: usize,
    pub offset: usize,
    pub key_valid: Option<Arc<Vec<bool>>>,
}

impl AttnMask {
    pub(crate) fn visible(&self, b: usize, i: usize, j: usize) -> bool {
        j <= i + self.offset && self.key_valid.as_ref().is_none_or(|v| v[b * self.keys + j])
    }
}

/// RMSNorm over the last dimension: `w * x / sqrt(mean(x²) + eps)`.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        let h = x.dim(D::Minus1)?;
        let shape = x.shape().clone();
        let x2 = x.reshape(((), h))?.contiguous()?;
        return x2.apply_op2(&w.contiguous()?, kernels::RmsNorm { eps: eps as f32 })?.reshape(shape);
    }
    rms_norm_composed(x, w, eps)
}

/// [`rms_norm`] from candle primitives.
pub fn rms_norm_composed(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let inv = (x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()?;
    x.broadcast_mul(&inv)?.broadcast_mul(w)
}

/// Softmax over the last dimension (max-subtracted; the max is a constant for the gradient).
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let m = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&m)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// Log-softmax over the last dimension.
pub fn log_softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let m = x.max_keepdim(D::Minus1)?.detach();
    let shifted = x.broadcast_sub(&m)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&lse)
}

/// SwiGLU on a fused `[N, 2I]` gate‖up projection: `silu(gate) * up`, `[N, I]`.
pub fn swiglu(gate_up: &Tensor) -> Result<Tensor> {
    if gate_up.device().is_cpu() && gate_up.dtype() == DType::F32 {
        return gate_up.contiguous()?.apply_op1(kernels::SwiGlu);
    }
    swiglu_composed(gate_up)
}

/// [`swiglu`] from candle primitives.
pub fn swiglu_composed(gate_up: &Tensor) -> Result<Tensor> {
    let i = gate_up.dim(D::Minus1)? / 2;
    gate_up.narrow(D::Minus1, 0, i)?.silu()? * gate_up.narrow(D::Minus1, i, i)?
}

/// Splits a fused `[N, (H + 2K)·hd]` q‖k‖v projection into heads, `[H + 2K, B, T, hd]`
/// (q heads, then k, then v), applying rotary embeddings at `positions` (one per row of N)
/// to q and k (HF's rotate-half convention).
pub fn split_heads_rope(
    qkv: &Tensor,
    shape: HeadShape,
    positions: &Arc<Vec<u32>>,
    rope: &RopeTables,
) -> Result<Tensor> {
    if let Some(&p) = positions.iter().find(|&&p| p as usize >= rope.max_positions) {
        candle_core::bail!("position {p} is beyond max_position_embeddings {}", rope.max_positions)
    }
    if qkv.device().is_cpu() && qkv.dtype() == DType::F32 {
        let op = kernels::SplitRope { shape, positions: positions.clone(), rope: rope.clone() };
        return qkv.contiguous()?.apply_op1(op);
    }
    split_heads_rope_composed(qkv, shape, positions, rope)
}

/// [`split_heads_rope`] from candle primitives.
pub fn split_heads_rope_composed(
    qkv: &Tensor,
    shape: HeadShape,
    positions: &[u32],
    rope: &RopeTables,
) -> Result<Tensor> {
    let HeadShape { batch, time, heads, kv_heads, head_dim } = shape;
    let (cos, sin) = rope.gathered(positions, qkv.device())?;
    let cos = cos.reshape((1, batch, time, head_dim))?.to_dtype(qkv.dtype())?;
    let sin = sin.reshape((1, batch, time, head_dim))?.to_dtype(qkv.dtype())?;
    let part = |start: usize, n: usize| -> Result<Tensor> {
        qkv.narrow(1, start * head_dim, n * head_dim)?.reshape((batch, time, n, head_dim))?.permute((2, 0, 1, 3))
    };
    let rotate = |x: Tensor| -> Result<Tensor> {
        let half = head_dim / 2;
        let x1 = x.narrow(D::Minus1, 0, half)?;
        let x2 = x.narrow(D::Minus1, half, half)?;
        let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
        x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?
    };
    let q = rotate(part(0, heads)?)?;
    let k = rotate(part(heads, kv_heads)?)?;
    let v = part(heads + kv_heads, kv_heads)?;
    Tensor::cat(&[&q, &k, &v], 0)?.contiguous()
}

/// Attention weights: softmax over keys of `scale * scores` restricted to the keys `mask`
/// allows. `scores` is `[heads, B, queries, keys]`.
pub fn masked_softmax(scores: &Tensor, scale: f64, mask: &AttnMask) -> Result<Tensor> {
    if scores.device().is_cpu() && scores.dtype() == DType::F32 {
        return scores.contiguous()?.apply_op1(kernels::MaskedSoftmax { scale: scale as f32, mask: mask.clone() });
    }
    masked_softmax_composed(scores, scale, mask)
}

/// [`masked_softmax`] from candle primitives.
pub fn masked_softmax_composed(scores: &Tensor, scale: f64, mask: &AttnMask) -> Result<Tensor> {
    let AttnMask { batch, queries, keys, .. } = *mask;
    let mut keep = Vec::with_capacity(batch * queries * keys);
    for b in 0..batch {
        for i in 0..queries {
            keep.extend((0..keys).map(|j| if mask.visible(b, i, j) { 1f32 } else { 0f32 }));
        }
    }
    let keep = Tensor::from_vec(keep, (1, batch, queries, keys), scores.device())?.to_dtype(scores.dtype())?;
    // Hidden keys get a large negative score, then an exact zero weight (so a query with no
    // visible key gets zeros rather than a uniform distribution).
    let bias = keep.affine(1e30, -1e30)?;
    let p = softmax_last_dim(&scores.affine(scale, 0.0)?.broadcast_add(&bias)?)?;
    p.broadcast_mul(&keep)
}

/// Per-row log-probability of `targets[n]` under `log_softmax(logits[n])`, `[N]`. A target of
/// `u32::MAX` marks a row to skip: its value and gradient are 0.
pub fn token_logprobs(logits: &Tensor, targets: &Arc<Vec<u32>>) -> Result<Tensor> {
    let (n, v) = logits.dims2()?;
    if targets.len() != n {
        candle_core::bail!("token_logprobs: {} targets for {n} rows", targets.len())
    }
    if let Some(&t) = targets.iter().find(|&&t| t != u32::MAX && t as usize >= v) {
        candle_core::bail!("token_logprobs: target {t} outside the vocabulary of {v}")
    }
    if logits.device().is_cpu() && logits.dtype() == DType::F32 {
        return logits.contiguous()?.apply_op1(kernels::TokenLogprob { targets: targets.clone() });
    }
    token_logprobs_composed(logits, targets)
}

/// [`token_logprobs`] from candle primitives.
pub fn token_logprobs_composed(logits: &Tensor, targets: &[u32]) -> Result<Tensor> {
    let n = targets.len();
    let idx: Vec<u32> = targets.iter().map(|&t| if t == u32::MAX { 0 } else { t }).collect();
    let keep: Vec<f32> = targets.iter().map(|&t| if t == u32::MAX { 0.0 } else { 1.0 }).collect();
    let idx = Tensor::from_vec(idx, (n, 1), logits.device())?;
    let keep = Tensor::from_vec(keep, n, logits.device())?.to_dtype(logits.dtype())?;
    log_softmax_last_dim(logits)?.gather(&idx, 1)?.squeeze(1)? * keep
}
