//! Fused CPU kernels behind [`super::ops`], as candle custom ops with hand-written backward
//! passes. Each backward is itself a custom op applied without a backward (second derivatives
//! are out of scope), so one op costs one kernel forward and one backward.
//!
//! Invariants: inputs are contiguous f32 (the callers in `ops` make them so); row loops are
//! split across rayon only when a call is large enough to repay the fork.

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::ops::{AttnMask, HeadShape, RopeTables};
use std::sync::Arc;

/// Below this many output floats a kernel runs on the calling thread.
const PAR_MIN: usize = 1 << 16;

/// The contiguous f32 slice of a storage.
pub(crate) fn f32s<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else { bail!("{op}: expects f32") };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => bail!("{op}: expects a contiguous input"),
    }
}

/// [`f32s`], mutable (for in-place ops).
pub(crate) fn f32s_mut<'a>(s: &'a mut CpuStorage, l: &Layout, op: &str) -> Result<&'a mut [f32]> {
    let CpuStorage::F32(v) = s else { bail!("{op}: expects f32") };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&mut v[a..b]),
        None => bail!("{op}: expects a contiguous input"),
    }
}

/// Runs `f(row_index, out_row)` over the rows of `out`, in parallel when it is large.
pub(crate) fn for_rows(out: &mut [f32], row_len: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    if row_len == 0 {
        return;
    }
    if out.len() >= PAR_MIN {
        let rows_per_task = (PAR_MIN / 4 / row_len).max(1);
        out.par_chunks_mut(row_len * rows_per_task).enumerate().for_each(|(c, chunk)| {
            for (k, row) in chunk.chunks_mut(row_len).enumerate() {
                f(c * rows_per_task + k, row);
            }
        });
    } else {
        for (r, row) in out.chunks_mut(row_len).enumerate() {
            f(r, row);
        }
    }
}

fn storage(v: Vec<f32>, shape: impl Into<Shape>) -> Result<(CpuStorage, Shape)> {
    Ok((CpuStorage::F32(v), shape.into()))
}

// ---------------------------------------------------------------------------------------------
// RMSNorm

/// `y = w * x * rsqrt(mean(x²) + eps)` over rows of `x: [N, H]`, `w: [H]`.
#[derive(Clone, Copy)]
pub(crate) struct RmsNorm {
    pub eps: f32,
}

fn inv_rms(x: &[f32], eps: f32) -> f32 {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    1.0 / (ms + eps).sqrt()
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "recipe-rms-norm"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, w) = (f32s(s1, l1, "rms_norm")?, f32s(s2, l2, "rms_norm")?);
        let mut out = vec![0f32; x.len()];
        rms_norm_rows(x, w, self.eps, &mut out);
        storage(out, l1.shape().clone())
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (n, h) = x.dims2()?;
        let both = x.apply_op3_no_bwd(w, &grad.contiguous()?, &RmsNormBwd { eps: self.eps })?;
        let dx = both.narrow(0, 0, n * h)?.reshape((n, h))?;
        let dw = both.narrow(0, n * h, h)?;
        Ok((Some(dx), Some(dw)))
    }
}

/// Backward of [`RmsNorm`]: `(x, w, dy) -> [dx (N·H) ‖ dw (H)]` flattened.
struct RmsNormBwd {
    eps: f32,
}

impl candle_core::CustomOp3 for RmsNormBwd {
    fn name(&self) -> &'static str {
        "recipe-rms-norm-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, dy) = (f32s(s1, l1, "rms_norm_bwd")?, f32s(s2, l2, "rms_norm_bwd")?, f32s(s3, l3, "rms_norm_bwd")?);
        let n = x.len() / w.len();
        let mut out = vec![0f32; x.len() + w.len()];
        let (dx, dw) = out.split_at_mut(x.len());
        rms_norm_bwd_rows(x, w, dy, self.eps, dx, dw);
        storage(out, n * w.len() + w.len())
    }
}

/// RMSNorm of each `w.len()`-wide row of `x` into `out`.
pub(crate) fn rms_norm_rows(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let h = w.len();
    for_rows(out, h, |r, y| {
        let xr = &x[r * h..(r + 1) * h];
        let inv = inv_rms(xr, eps);
        for ((y, &xv), &wv) in y.iter_mut().zip(xr).zip(w) {
            *y = wv * (xv * inv);
        }
    });
}

/// Backward of [`rms_norm_rows`]: adds the input gradient into `dx` and the weight gradient
/// into `dw`.
pub(crate) fn rms_norm_bwd_rows(x: &[f32], w: &[f32], dy: &[f32], eps: f32, dx: &mut [f32], dw: &mut [f32]) {
    let h = w.len();
    let n = x.len() / h;
    for_rows(dx, h, |r, dxr| {
        let (xr, dyr) = (&x[r * h..(r + 1) * h], &dy[r * h..(r + 1) * h]);
        let inv = inv_rms(xr, eps);
        let dot = xr.iter().zip(dyr).zip(w).map(|((&xv, &g), &wv)| g * wv * xv * inv).sum::<f32>() / h as f32;
        for (((d, &xv), &g), &wv) in dxr.iter_mut().zip(xr).zip(dyr).zip(w) {
            *d += inv * (g * wv - xv * inv * dot);
        }
    });
    // dw = Σ_rows dy · x̂ (sequential over rows, so the sum's order never depends on threads).
    for r in 0..n {
        let (xr, dyr) = (&x[r * h..(r + 1) * h], &dy[r * h..(r + 1) * h]);
        let inv = inv_rms(xr, eps);
        for ((d, &xv), &g) in dw.iter_mut().zip(xr).zip(dyr) {
            *d += g * xv * inv;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// SwiGLU

/// `[N, 2I] gate‖up -> [N, I]`, `silu(gate) * up`.
#[derive(Clone, Copy)]
pub(crate) struct SwiGlu;

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

impl CustomOp1 for SwiGlu {
    fn name(&self) -> &'static str {
        "recipe-swiglu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let gu = f32s(s, l, "swiglu")?;
        let dims = l.dims();
        let i = dims[dims.len() - 1] / 2;
        let mut out = vec![0f32; gu.len() / 2];
        swiglu_rows(gu, i, &mut out);
        let mut shape = dims.to_vec();
        *shape.last_mut().expect("swiglu input has a last dim") = i;
        storage(out, shape)
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.apply_op2_no_bwd(&grad.contiguous()?, &SwiGluBwd)?))
    }
}

/// Backward of [`SwiGlu`]: `(gate‖up, dy) -> d(gate‖up)`.
struct SwiGluBwd;

impl CustomOp2 for SwiGluBwd {
    fn name(&self) -> &'static str {
        "recipe-swiglu-bwd"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (gu, dy) = (f32s(s1, l1, "swiglu_bwd")?, f32s(s2, l2, "swiglu_bwd")?);
        let i = l1.dims()[l1.dims().len() - 1] / 2;
        let mut out = vec![0f32; gu.len()];
        swiglu_bwd_rows(gu, dy, i, &mut out);
        storage(out, l1.shape().clone())
    }
}

/// `silu(gate) * up` of each `2i`-wide gate‖up row into an `i`-wide row of `out`.
pub(crate) fn swiglu_rows(gu: &[f32], i: usize, out: &mut [f32]) {
    for_rows(out, i, |r, y| {
        let (g, u) = gu[r * 2 * i..(r + 1) * 2 * i].split_at(i);
        for ((y, &g), &u) in y.iter_mut().zip(g).zip(u) {
            *y = g / (1.0 + (-g).exp()) * u;
        }
    });
}

/// Backward of [`swiglu_rows`]: writes d(gate‖up) of `dy` into `out`.
pub(crate) fn swiglu_bwd_rows(gu: &[f32], dy: &[f32], i: usize, out: &mut [f32]) {
    for_rows(out, 2 * i, |r, d| {
        let (g, u) = gu[r * 2 * i..(r + 1) * 2 * i].split_at(i);
        let dyr = &dy[r * i..(r + 1) * i];
        let (dg, du) = d.split_at_mut(i);
        for k in 0..i {
            let s = sigmoid(g[k]);
            let silu = g[k] * s;
            dg[k] = dyr[k] * u[k] * (s * (1.0 + g[k] * (1.0 - s)));
            du[k] = dyr[k] * silu;
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Head split + rotary embeddings

/// `[N, (H+2K)·hd] -> [H+2K, B, T, hd]`, rotating the q and k heads.
#[derive(Clone)]
pub(crate) struct SplitRope {
    pub shape: HeadShape,
    pub positions: Arc<Vec<u32>>,
    pub rope: RopeTables,
}

impl SplitRope {
    pub(crate) fn heads(&self) -> usize {
        self.shape.heads + 2 * self.shape.kv_heads
    }

    /// Maps between the two layouts: `fwd` rotates by +θ from qkv rows into heads, otherwise
    /// by −θ from heads back into qkv rows (the transpose of the rotation).
    pub(crate) fn run(&self, src: &[f32], fwd: bool) -> Vec<f32> {
        let HeadShape { batch, time, heads, kv_heads, head_dim: hd } = self.shape;
        let all = self.heads();
        let width = all * hd;
        let half = hd / 2;
        let n = batch * time;
        let mut out = vec![0f32; n * width];
        let sign = if fwd { 1.0f32 } else { -1.0 };
        // One task per token row n = b·T + t: it touches every head of that token.
        let work = |row: usize, chunk: &mut [f32]| {
            let pos = self.positions[row] as usize;
            let cos = &self.rope.cos[pos * half..(pos + 1) * half];
            let sin = &self.rope.sin[pos * half..(pos + 1) * half];
            for head in 0..all {
                let qkv_at = row * width + head * hd;
                let heads_at = (head * n + row) * hd;
                let from = if fwd { qkv_at } else { heads_at };
                let x = &src[from..from + hd];
                let y = &mut chunk[head * hd..(head + 1) * hd];
                if head < heads + kv_heads {
                    for k in 0..half {
                        let (c, s) = (cos[k], sign * sin[k]);
                        y[k] = x[k] * c - x[k + half] * s;
                        y[k + half] = x[k + half] * c + x[k] * s;
                    }
                } else {
                    y.copy_from_slice(x);
                }
            }
        };
        // Compute per-token rows into a scratch laid out like qkv, then scatter if forward.
        let mut rows = vec![0f32; n * width];
        for_rows(&mut rows, width, work);
        if fwd {
            for row in 0..n {
                for head in 0..all {
                    let s = row * width + head * hd;
                    let d = (head * n + row) * hd;
                    out[d..d + hd].copy_from_slice(&rows[s..s + hd]);
                }
            }
            out
        } else {
            rows
        }
    }
}

impl CustomOp1 for SplitRope {
    fn name(&self) -> &'static str {
        "recipe-split-rope"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let qkv = f32s(s, l, "split_rope")?;
        let HeadShape { batch, time, head_dim, .. } = self.shape;
        if l.dims() != [batch * time, self.heads() * head_dim] {
            bail!("split_rope: input {:?} does not match {:?}", l.dims(), self.shape)
        }
        storage(self.run(qkv, true), (self.heads(), batch, time, head_dim))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&SplitRopeBwd(self.clone()))?))
    }
}

/// Backward of [`SplitRope`]: heads back into qkv rows, rotated by −θ.
struct SplitRopeBwd(SplitRope);

impl CustomOp1 for SplitRopeBwd {
    fn name(&self) -> &'static str {
        "recipe-split-rope-bwd"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = f32s(s, l, "split_rope_bwd")?;
        let HeadShape { batch, time, head_dim, .. } = self.0.shape;
        storage(self.0.run(g, false), (batch * time, self.0.heads() * head_dim))
    }
}

// ---------------------------------------------------------------------------------------------
// Masked softmax

/// Softmax over keys of `scale * scores` with a causal / padding mask; `[heads, B, Tq, Tk]`.
#[derive(Clone)]
pub(crate) struct MaskedSoftmax {
    pub scale: f32,
    pub mask: AttnMask,
}

impl CustomOp1 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "recipe-masked-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32s(s, l, "masked_softmax")?;
        let AttnMask { batch, queries, keys, .. } = self.mask;
        let dims = l.dims();
        if dims.len() != 4 || dims[1] != batch || dims[2] != queries || dims[3] != keys {
            bail!("masked_softmax: scores {dims:?} do not match the mask {batch}×{queries}×{keys}")
        }
        let mut out = vec![0f32; x.len()];
        for_rows(&mut out, keys, |r, y| {
            let (b, i) = ((r / queries) % batch, r % queries);
            let xr = &x[r * keys..(r + 1) * keys];
            let mut m = f32::NEG_INFINITY;
            for j in 0..keys {
                if self.mask.visible(b, i, j) {
                    m = m.max(xr[j] * self.scale);
                }
            }
            if m == f32::NEG_INFINITY {
                return; // no visible key: zeros
            }
            let mut sum = 0f32;
            for j in 0..keys {
                if self.mask.visible(b, i, j) {
                    let e = (xr[j] * self.scale - m).exp();
                    y[j] = e;
                    sum += e;
                }
            }
            let inv = 1.0 / sum;
            y.iter_mut().for_each(|v| *v *= inv);
        });
        storage(out, l.shape().clone())
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(res.apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxBwd { scale: self.scale })?))
    }
}

/// Backward of a scaled softmax: `(y, dy) -> scale · y ⊙ (dy − Σ dy⊙y)`.
struct SoftmaxBwd {
    scale: f32,
}

impl CustomOp2 for SoftmaxBwd {
    fn name(&self) -> &'static str {
        "recipe-softmax-bwd"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (y, dy) = (f32s(s1, l1, "softmax_bwd")?, f32s(s2, l2, "softmax_bwd")?);
        let keys = l1.dims()[l1.dims().len() - 1];
        let mut out = vec![0f32; y.len()];
        for_rows(&mut out, keys, |r, d| {
            let (yr, gr) = (&y[r * keys..(r + 1) * keys], &dy[r * keys..(r + 1) * keys]);
            let dot: f32 = yr.iter().zip(gr).map(|(a, b)| a * b).sum();
            for ((d, &yv), &g) in d.iter_mut().zip(yr).zip(gr) {
                *d = self.scale * yv * (g - dot);
            }
        });
        storage(out, l1.shape().clone())
    }
}

// ---------------------------------------------------------------------------------------------
// Token log-probabilities

/// `[N, V] logits -> [N]`, `log_softmax(logits[n])[targets[n]]` (0 where the target is u32::MAX).
#[derive(Clone)]
pub(crate) struct TokenLogprob {
    pub targets: Arc<Vec<u32>>,
}

fn log_sum_exp(x: &[f32]) -> f32 {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    m + sum_exp(x, m).ln()
}

/// `Σ exp(x − m)`, accumulated in f64 (in order, so the result never depends on the thread
/// count): over a 49 152-token vocabulary an f32 running sum drops every term below half an ulp
/// of the sum, which made SmolLM2's log-probabilities ~1e-4 a token too high against
/// transformers (whose reduction is pairwise).
fn sum_exp(x: &[f32], m: f32) -> f32 {
    x.iter().map(|v| f64::from((v - m).exp())).sum::<f64>() as f32
}

impl CustomOp1 for TokenLogprob {
    fn name(&self) -> &'static str {
        "recipe-token-logprob"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32s(s, l, "token_logprob")?;
        let v = l.dims()[1];
        let out: Vec<f32> = self
            .targets
            .iter()
            .enumerate()
            .map(|(n, &t)| {
                if t == u32::MAX {
                    return 0.0;
                }
                token_logprob(&x[n * v..(n + 1) * v], t)
            })
            .collect();
        storage(out, self.targets.len())
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.apply_op2_no_bwd(&grad.contiguous()?, &TokenLogprobBwd(self.targets.clone()))?))
    }
}

/// Backward of [`TokenLogprob`]: `(logits, dy) -> dy[n] · (onehot(t) − softmax(logits[n]))`.
struct TokenLogprobBwd(Arc<Vec<u32>>);

impl CustomOp2 for TokenLogprobBwd {
    fn name(&self) -> &'static str {
        "recipe-token-logprob-bwd"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, dy) = (f32s(s1, l1, "token_logprob_bwd")?, f32s(s2, l2, "token_logprob_bwd")?);
        let v = l1.dims()[1];
        let mut out = vec![0f32; x.len()];
        for_rows(&mut out, v, |n, d| {
            let t = self.0[n];
            if t == u32::MAX || dy[n] == 0.0 {
                return;
            }
            token_logprob_bwd(&x[n * v..(n + 1) * v], t, dy[n], d);
        });
        storage(out, l1.shape().clone())
    }
}

/// `log_softmax(logits)[target]`, as `(x_t − m) − ln Σ exp(x − m)` (the order torch uses).
pub(crate) fn token_logprob(logits: &[f32], target: u32) -> f32 {
    let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    (logits[target as usize] - m) - sum_exp(logits, m).ln()
}

/// Backward of [`token_logprob`] scaled by `dy`: writes `dy · (onehot(target) − softmax)`.
pub(crate) fn token_logprob_bwd(logits: &[f32], target: u32, dy: f32, out: &mut [f32]) {
    let lse = log_sum_exp(logits);
    for (d, &xv) in out.iter_mut().zip(logits) {
        *d = -dy * (xv - lse).exp();
    }
    out[target as usize] += dy;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One logit of 20 and 49 151 of 0 (SmolLM2's vocabulary): each small term, e⁻²⁰ ≈ 2e-9 of
    /// the sum, is below half an ulp of an f32 running sum, which drops them all and gives
    /// log p = 0; the true value is −ln(1 + 49 151·e⁻²⁰) ≈ −1.0e-4.
    #[test]
    fn token_logprob_keeps_the_mass_of_a_large_vocabulary() {
        let mut logits = vec![0f32; 49_152];
        logits[0] = 20.0;
        let truth = -(1.0 + 49_151.0 * (-20f64).exp()).ln();
        assert!((f64::from(token_logprob(&logits, 0)) - truth).abs() < 1e-7, "{}", token_logprob(&logits, 0));
        let mut grad = vec![0f32; logits.len()];
        token_logprob_bwd(&logits, 0, 1.0, &mut grad);
        // The backward goes through m + ln Σ, an f32 near 20 (ulp 2e-6): 1 − p ≈ 1.0e-4, not 0.
        assert!((f64::from(grad[0]) - (1.0 - truth.exp())).abs() < 4e-6, "{}", grad[0]);
    }
}
