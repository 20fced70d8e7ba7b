//! The decoder's training pass on the CPU, written out by hand: a forward pass that keeps what
//! its backward needs, and that backward, on f32 slices with `gemm`.
//!
//! Why not candle's autograd here: at post-training shapes (a few hundred token rows) it costs
//! as much as the arithmetic. Every gradient starts as a zero-filled tensor that is then added
//! to, transposed weights and fused q‖k‖v / gate‖up weights are copied on every step, and each
//! small op runs on its own. Here each weight gradient is one `gemm` accumulating straight into
//! the parameter's gradient buffer, and the big matmuls run on all threads.
//!
//! How it meets candle: [`TrainPass`] is a candle custom op, so the per-token log-probs it
//! produces enter a loss expression like any tensor. Its backward receives d(log-probs), runs
//! [`backward`], and deposits the parameter gradients in the model's [`GradSink`]: candle's
//! `GradStore` only holds gradients of an op's own arguments, and the op's one argument is a
//! placeholder that exists so candle's backward visits it. `CausalLm::take_grads` merges the
//! two stores.
//!
//! Meaning: exactly `CausalLm::hidden`, the LM head and `ops::token_logprobs` on causal,
//! right-padded rows. The unit tests below check values and every parameter's gradient against
//! that candle path.

use std::sync::{Arc, Mutex};

use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Storage, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

use super::kernels::{self, for_rows, SplitRope};
use super::ops::{HeadShape, RopeTables};

/// Where each parameter sits in `CausalLm::params` (sorted by name).
#[derive(Clone, Debug)]
pub(crate) struct ParamIndex {
    pub embed: usize,
    pub norm: usize,
    /// Equal to `embed` when the embeddings are tied.
    pub lm_head: usize,
    pub blocks: Vec<BlockIndex>,
}

/// One decoder block's parameter positions.
#[derive(Clone, Debug)]
pub(crate) struct BlockIndex {
    pub input_norm: usize,
    pub q: usize,
    pub k: usize,
    pub v: usize,
    pub qkv_bias: Option<[usize; 3]>,
    pub o: usize,
    pub o_bias: Option<usize>,
    pub post_norm: usize,
    pub gate: usize,
    pub up: usize,
    pub down: usize,
}

/// The sizes one pass needs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dims {
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub intermediate: usize,
    pub vocab: usize,
    pub eps: f32,
}

/// A right-padded `[batch, time]` block of ids and the positions whose next token is scored.
#[derive(Clone, Debug)]
pub(crate) struct Tokens {
    pub ids: Vec<u32>,
    pub batch: usize,
    pub time: usize,
    /// Flattened positions `n = b·T + s` that predict a scored token (at `n + 1`).
    pub rows: Vec<usize>,
    /// The scored token of each row.
    pub targets: Vec<u32>,
}

impl Tokens {
    fn shape(&self, d: &Dims) -> HeadShape {
        HeadShape { batch: self.batch, time: self.time, heads: d.heads, kv_heads: d.kv_heads, head_dim: d.head_dim }
    }
}

/// Parameter gradients deposited by [`TrainPass`] backwards, summed until taken.
#[derive(Debug, Default)]
pub(crate) struct GradSink(Mutex<Option<Vec<Vec<f32>>>>);

impl GradSink {
    fn deposit(&self, grads: Vec<Vec<f32>>) {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match slot.as_mut() {
            None => *slot = Some(grads),
            Some(sum) => {
                for (s, g) in sum.iter_mut().zip(grads) {
                    s.iter_mut().zip(g).for_each(|(s, g)| *s += g);
                }
            }
        }
    }

    /// The summed gradients since the last call, in parameter order.
    pub fn take(&self) -> Option<Vec<Vec<f32>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Everything the backward pass reads, per block and for the head.
pub(crate) struct Saved {
    blocks: Vec<BlockActs>,
    /// Final hidden states of the scored rows, before and after the last norm, and their logits.
    last_sel: Vec<f32>,
    normed_sel: Vec<f32>,
    logits: Vec<f32>,
}

struct BlockActs {
    x: Vec<f32>,
    h1: Vec<f32>,
    /// Rotated q, k and v heads, `[H + 2K, B, T, hd]`.
    heads: Vec<f32>,
    /// Attention weights, `[H, B, T, T]`.
    probs: Vec<f32>,
    /// Attention output with heads merged, `[N, H·hd]`.
    attn: Vec<f32>,
    x_mid: Vec<f32>,
    h2: Vec<f32>,
    gate_up: Vec<f32>,
    mlp: Vec<f32>,
}

// ---------------------------------------------------------------------------------------------
// Matrix products

/// A strided view of an f32 matrix: element `(r, c)` is `data[r·rs + c·cs]`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> Mat<'a> {
    /// A row-major `rows × cols` matrix.
    pub(crate) fn new(data: &'a [f32], rows: usize, cols: usize) -> Mat<'a> {
        Mat { data, rows, cols, rs: cols, cs: 1 }
    }

    pub(crate) fn t(self) -> Mat<'a> {
        Mat { rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs, ..self }
    }

    /// Columns `start..start + n`.
    fn cols(self, start: usize, n: usize) -> Mat<'a> {
        Mat { data: &self.data[start * self.cs..], cols: n, ..self }
    }
}

/// A mutable row-major matrix, possibly a column range of a wider one.
pub(crate) struct MatMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
    rs: usize,
}

impl<'a> MatMut<'a> {
    pub(crate) fn new(data: &'a mut [f32], rows: usize, cols: usize) -> MatMut<'a> {
        MatMut { data, rows, cols, rs: cols }
    }

    /// Columns `start..start + n`.
    fn cols(self, start: usize, n: usize) -> MatMut<'a> {
        MatMut { data: &mut self.data[start..], cols: n, ..self }
    }
}

/// Whether the last element of a strided matrix lies inside `len`.
fn fits(len: usize, rows: usize, cols: usize, rs: usize, cs: usize) -> bool {
    rows == 0 || cols == 0 || (rows - 1) * rs + (cols - 1) * cs < len
}

/// `dst = a·b`, or `dst += a·b` when `accumulate`. `threads` lets gemm split the product across
/// rayon's pool (it still runs small products on one thread).
pub(crate) fn matmul(dst: MatMut<'_>, a: Mat<'_>, b: Mat<'_>, accumulate: bool, threads: bool) {
    assert!(a.rows == dst.rows && b.cols == dst.cols && a.cols == b.rows, "matmul shapes");
    assert!(fits(dst.data.len(), dst.rows, dst.cols, dst.rs, 1), "matmul dst bounds");
    assert!(fits(a.data.len(), a.rows, a.cols, a.rs, a.cs) && fits(b.data.len(), b.rows, b.cols, b.rs, b.cs));
    if dst.rows == 0 || dst.cols == 0 {
        return;
    }
    if a.cols == 0 {
        if !accumulate {
            for r in 0..dst.rows {
                dst.data[r * dst.rs..r * dst.rs + dst.cols].fill(0.0);
            }
        }
        return;
    }
    let parallelism = if threads { Parallelism::Rayon(0) } else { Parallelism::None };
    // SAFETY: the asserts above keep every element gemm reads or writes inside the slices, and
    // `dst` is exclusively borrowed, so it does not alias `a` or `b`.
    unsafe {
        gemm::gemm(
            dst.rows,
            dst.cols,
            a.cols,
            dst.data.as_mut_ptr(),
            1,
            dst.rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// Adds `bias` to each `width`-wide row of `x`, at column `offset`.
fn add_bias(x: &mut [f32], width: usize, offset: usize, bias: &[f32]) {
    for row in x.chunks_mut(width) {
        row[offset..offset + bias.len()].iter_mut().zip(bias).for_each(|(y, b)| *y += b);
    }
}

/// Adds the column sums of columns `offset..offset + out.len()` of `x` (rows of `width`) into
/// `out`, row by row in order.
fn add_col_sums(out: &mut [f32], x: &[f32], width: usize, offset: usize) {
    for row in x.chunks(width) {
        out.iter_mut().zip(&row[offset..]).for_each(|(o, v)| *o += v);
    }
}

/// Sizes and tables derived from the model dims and the batch, shared by both passes.
struct Geometry {
    /// Token rows `B·T`.
    n: usize,
    q_width: usize,
    qkv_width: usize,
    shape: HeadShape,
    rope_op: SplitRope,
    scale: f32,
}

impl Geometry {
    fn new(d: &Dims, tok: &Tokens, rope: &RopeTables) -> Geometry {
        let shape = tok.shape(d);
        let positions: Arc<Vec<u32>> = Arc::new((0..tok.batch).flat_map(|_| 0..tok.time as u32).collect());
        Geometry {
            n: tok.batch * tok.time,
            q_width: d.heads * d.head_dim,
            qkv_width: (d.heads + 2 * d.kv_heads) * d.head_dim,
            shape,
            rope_op: SplitRope { shape, positions, rope: rope.clone() },
            scale: 1.0 / (d.head_dim as f32).sqrt(),
        }
    }
}

impl BlockIndex {
    /// `(parameter, column offset, width)` of q, k and v in the fused `[N, q‖k‖v]` projection.
    fn qkv_parts(&self, d: &Dims) -> [(usize, usize, usize); 3] {
        let (q, kv) = (d.heads * d.head_dim, d.kv_heads * d.head_dim);
        [(self.q, 0, q), (self.k, q, kv), (self.v, q + kv, kv)]
    }
}

// ---------------------------------------------------------------------------------------------
// Forward

/// Per-target log-probs, and what the backward needs when `keep`.
pub(crate) fn forward(
    w: &[&[f32]],
    ix: &ParamIndex,
    d: &Dims,
    rope: &RopeTables,
    tok: &Tokens,
    keep: bool,
) -> (Vec<f32>, Option<Saved>) {
    let Geometry { n, q_width, qkv_width, shape, ref rope_op, scale } = Geometry::new(d, tok, rope);
    let Dims { hidden: h, intermediate: inter, vocab, eps, .. } = *d;

    let mut x = vec![0f32; n * h];
    for (row, &id) in x.chunks_mut(h).zip(&tok.ids) {
        row.copy_from_slice(&w[ix.embed][id as usize * h..(id as usize + 1) * h]);
    }
    let mut blocks = Vec::new();
    for bi in &ix.blocks {
        let mut h1 = vec![0f32; n * h];
        kernels::rms_norm_rows(&x, w[bi.input_norm], eps, &mut h1);
        let mut qkv = vec![0f32; n * qkv_width];
        for (p, offset, width) in bi.qkv_parts(d) {
            let dst = MatMut::new(&mut qkv, n, qkv_width).cols(offset, width);
            matmul(dst, Mat::new(&h1, n, h), Mat::new(w[p], width, h).t(), false, true);
        }
        if let Some(bias) = bi.qkv_bias {
            for (p, offset) in bias.into_iter().zip(bi.qkv_parts(d).map(|(_, offset, _)| offset)) {
                add_bias(&mut qkv, qkv_width, offset, w[p]);
            }
        }
        let heads = rope_op.run(&qkv, true);
        let (probs, attn) = attention(&heads, shape, scale);
        let mut x_mid = x.clone();
        matmul(
            MatMut::new(&mut x_mid, n, h),
            Mat::new(&attn, n, q_width),
            Mat::new(w[bi.o], h, q_width).t(),
            true,
            true,
        );
        if let Some(p) = bi.o_bias {
            add_bias(&mut x_mid, h, 0, w[p]);
        }
        let mut h2 = vec![0f32; n * h];
        kernels::rms_norm_rows(&x_mid, w[bi.post_norm], eps, &mut h2);
        let mut gate_up = vec![0f32; n * 2 * inter];
        for (p, offset) in [(bi.gate, 0), (bi.up, inter)] {
            let dst = MatMut::new(&mut gate_up, n, 2 * inter).cols(offset, inter);
            matmul(dst, Mat::new(&h2, n, h), Mat::new(w[p], inter, h).t(), false, true);
        }
        let mut mlp = vec![0f32; n * inter];
        kernels::swiglu_rows(&gate_up, inter, &mut mlp);
        let mut x_out = x_mid.clone();
        matmul(MatMut::new(&mut x_out, n, h), Mat::new(&mlp, n, inter), Mat::new(w[bi.down], h, inter).t(), true, true);
        let done = std::mem::replace(&mut x, x_out);
        if keep {
            blocks.push(BlockActs { x: done, h1, heads, probs, attn, x_mid, h2, gate_up, mlp });
        }
    }

    // The head runs only on the scored rows.
    let r = tok.rows.len();
    let mut last_sel = vec![0f32; r * h];
    for (dst, &row) in last_sel.chunks_mut(h).zip(&tok.rows) {
        dst.copy_from_slice(&x[row * h..(row + 1) * h]);
    }
    let mut normed_sel = vec![0f32; r * h];
    kernels::rms_norm_rows(&last_sel, w[ix.norm], eps, &mut normed_sel);
    let mut logits = vec![0f32; r * vocab];
    matmul(
        MatMut::new(&mut logits, r, vocab),
        Mat::new(&normed_sel, r, h),
        Mat::new(w[ix.lm_head], vocab, h).t(),
        false,
        true,
    );
    let lp = logits.chunks(vocab.max(1)).zip(&tok.targets).map(|(row, &t)| kernels::token_logprob(row, t)).collect();
    let saved = keep.then_some(Saved { blocks, last_sel, normed_sel, logits });
    (lp, saved)
}

/// The `[T, hd]` block of head `head`, row `b` in a `[heads, B, T, hd]` buffer.
fn head_block(buf: &[f32], s: HeadShape, head: usize, b: usize) -> &[f32] {
    let len = s.time * s.head_dim;
    &buf[(head * s.batch + b) * len..][..len]
}

/// Causal attention of rotated heads: the weights `[H, B, T, T]` and the output with heads
/// merged, `[N, H·hd]`.
fn attention(heads: &[f32], s: HeadShape, scale: f32) -> (Vec<f32>, Vec<f32>) {
    let HeadShape { batch, time: t, heads: nh, kv_heads: nkv, head_dim: hd } = s;
    let rep = nh / nkv;
    let mut probs = vec![0f32; nh * batch * t * t];
    let mut out = vec![0f32; nh * batch * t * hd];
    probs.par_chunks_mut(t * t).zip(out.par_chunks_mut(t * hd)).enumerate().for_each(|(i, (p, o))| {
        let (head, b) = (i / batch, i % batch);
        let q = head_block(heads, s, head, b);
        let k = head_block(heads, s, nh + head / rep, b);
        let v = head_block(heads, s, nh + nkv + head / rep, b);
        matmul(MatMut::new(p, t, t), Mat::new(q, t, hd), Mat::new(k, t, hd).t(), false, false);
        causal_softmax(p, t, scale);
        matmul(MatMut::new(o, t, hd), Mat::new(p, t, t), Mat::new(v, t, hd), false, false);
    });
    (probs, merge_heads(&out, s))
}

/// Softmax of `scale · scores` over keys `0..=i` of each query row `i` of a `[T, T]` block;
/// later keys get weight 0 (as the `MaskedSoftmax` kernel computes it).
fn causal_softmax(p: &mut [f32], t: usize, scale: f32) {
    for (i, row) in p.chunks_mut(t).enumerate() {
        let (visible, hidden) = row.split_at_mut(i + 1);
        let m = visible.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x * scale));
        let mut sum = 0f32;
        for x in visible.iter_mut() {
            *x = (*x * scale - m).exp();
            sum += *x;
        }
        let inv = 1.0 / sum;
        visible.iter_mut().for_each(|x| *x *= inv);
        hidden.fill(0.0);
    }
}

/// `[H, B, T, hd] -> [B·T, H·hd]`.
fn merge_heads(x: &[f32], s: HeadShape) -> Vec<f32> {
    let (n, hd, width) = (s.batch * s.time, s.head_dim, s.heads * s.head_dim);
    let mut out = vec![0f32; n * width];
    for head in 0..s.heads {
        for row in 0..n {
            out[row * width + head * hd..][..hd].copy_from_slice(&x[(head * n + row) * hd..][..hd]);
        }
    }
    out
}

/// `[B·T, H·hd] -> [H, B, T, hd]`.
fn split_heads(x: &[f32], s: HeadShape) -> Vec<f32> {
    let (n, hd, width) = (s.batch * s.time, s.head_dim, s.heads * s.head_dim);
    let mut out = vec![0f32; n * width];
    for head in 0..s.heads {
        for row in 0..n {
            out[(head * n + row) * hd..][..hd].copy_from_slice(&x[row * width + head * hd..][..hd]);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Backward

/// Gradients of `Σ dlp · log-probs` for every parameter (in `w`'s order), from `forward`'s saved
/// activations.
pub(crate) fn backward(
    w: &[&[f32]],
    ix: &ParamIndex,
    d: &Dims,
    rope: &RopeTables,
    tok: &Tokens,
    saved: &Saved,
    dlp: &[f32],
) -> Vec<Vec<f32>> {
    let Geometry { n, q_width, qkv_width, shape, ref rope_op, scale } = Geometry::new(d, tok, rope);
    let Dims { hidden: h, intermediate: inter, vocab, eps, .. } = *d;
    let mut grads: Vec<Vec<f32>> = w.iter().map(|p| vec![0f32; p.len()]).collect();

    // Head: log-prob -> logits -> final norm, scattered back to the scored rows.
    let r = tok.rows.len();
    let mut dlogits = vec![0f32; r * vocab];
    for_rows(&mut dlogits, vocab, |i, out| {
        kernels::token_logprob_bwd(&saved.logits[i * vocab..(i + 1) * vocab], tok.targets[i], dlp[i], out)
    });
    matmul(
        MatMut::new(&mut grads[ix.lm_head], vocab, h),
        Mat::new(&dlogits, r, vocab).t(),
        Mat::new(&saved.normed_sel, r, h),
        true,
        true,
    );
    let mut dnormed = vec![0f32; r * h];
    matmul(
        MatMut::new(&mut dnormed, r, h),
        Mat::new(&dlogits, r, vocab),
        Mat::new(w[ix.lm_head], vocab, h),
        false,
        true,
    );
    let mut dlast = vec![0f32; r * h];
    kernels::rms_norm_bwd_rows(&saved.last_sel, w[ix.norm], &dnormed, eps, &mut dlast, &mut grads[ix.norm]);
    let mut dx = vec![0f32; n * h];
    for (src, &row) in dlast.chunks(h).zip(&tok.rows) {
        dx[row * h..(row + 1) * h].iter_mut().zip(src).for_each(|(d, s)| *d += s);
    }

    for (bi, acts) in ix.blocks.iter().zip(&saved.blocks).rev() {
        // MLP: x_out = x_mid + swiglu(h2 · [gate; up]ᵀ) · downᵀ.
        let mut dmlp = vec![0f32; n * inter];
        matmul(MatMut::new(&mut dmlp, n, inter), Mat::new(&dx, n, h), Mat::new(w[bi.down], h, inter), false, true);
        matmul(
            MatMut::new(&mut grads[bi.down], h, inter),
            Mat::new(&dx, n, h).t(),
            Mat::new(&acts.mlp, n, inter),
            true,
            true,
        );
        let mut dgate_up = vec![0f32; n * 2 * inter];
        kernels::swiglu_bwd_rows(&acts.gate_up, &dmlp, inter, &mut dgate_up);
        let mut dh2 = vec![0f32; n * h];
        for (p, offset) in [(bi.gate, 0), (bi.up, inter)] {
            let dpart = Mat::new(&dgate_up, n, 2 * inter).cols(offset, inter);
            matmul(MatMut::new(&mut grads[p], inter, h), dpart.t(), Mat::new(&acts.h2, n, h), true, true);
            matmul(MatMut::new(&mut dh2, n, h), dpart, Mat::new(w[p], inter, h), offset != 0, true);
        }
        kernels::rms_norm_bwd_rows(&acts.x_mid, w[bi.post_norm], &dh2, eps, &mut dx, &mut grads[bi.post_norm]);

        // Attention: x_mid = x + attn · oᵀ.
        let mut dattn = vec![0f32; n * q_width];
        matmul(MatMut::new(&mut dattn, n, q_width), Mat::new(&dx, n, h), Mat::new(w[bi.o], h, q_width), false, true);
        matmul(
            MatMut::new(&mut grads[bi.o], h, q_width),
            Mat::new(&dx, n, h).t(),
            Mat::new(&acts.attn, n, q_width),
            true,
            true,
        );
        if let Some(p) = bi.o_bias {
            add_col_sums(&mut grads[p], &dx, h, 0);
        }
        let dheads = attention_bwd(&acts.heads, &acts.probs, &split_heads(&dattn, shape), shape, scale);
        let dqkv = rope_op.run(&dheads, false);
        let mut dh1 = vec![0f32; n * h];
        for (p, offset, width) in bi.qkv_parts(d) {
            let dpart = Mat::new(&dqkv, n, qkv_width).cols(offset, width);
            matmul(MatMut::new(&mut grads[p], width, h), dpart.t(), Mat::new(&acts.h1, n, h), true, true);
            matmul(MatMut::new(&mut dh1, n, h), dpart, Mat::new(w[p], width, h), offset != 0, true);
        }
        if let Some(bias) = bi.qkv_bias {
            for (p, offset) in bias.into_iter().zip(bi.qkv_parts(d).map(|(_, offset, _)| offset)) {
                add_col_sums(&mut grads[p], &dqkv, qkv_width, offset);
            }
        }
        kernels::rms_norm_bwd_rows(&acts.x, w[bi.input_norm], &dh1, eps, &mut dx, &mut grads[bi.input_norm]);
    }

    // Embedding rows, in token order.
    let embed = &mut grads[ix.embed];
    for (row, &id) in dx.chunks(h).zip(&tok.ids) {
        embed[id as usize * h..(id as usize + 1) * h].iter_mut().zip(row).for_each(|(g, d)| *g += d);
    }
    grads
}

/// Gradients of the rotated heads `[H + 2K, B, T, hd]` from the output gradient `[H, B, T, hd]`.
/// One task per (kv head, row): it owns its query heads' blocks and its key and value blocks.
fn attention_bwd(heads: &[f32], probs: &[f32], dout: &[f32], s: HeadShape, scale: f32) -> Vec<f32> {
    let HeadShape { batch, time: t, heads: nh, kv_heads: nkv, head_dim: hd } = s;
    let rep = nh / nkv;
    let mut dheads = vec![0f32; (nh + 2 * nkv) * batch * t * hd];
    let mut blocks: Vec<Option<&mut [f32]>> = dheads.chunks_mut(t * hd).map(Some).collect();
    let mut take = |head: usize, b: usize| blocks[head * batch + b].take().expect("each block has one owner");
    let mut tasks = Vec::with_capacity(nkv * batch);
    for g in 0..nkv {
        for b in 0..batch {
            let dq: Vec<&mut [f32]> = (0..rep).map(|j| take(g * rep + j, b)).collect();
            tasks.push((g, b, dq, take(nh + g, b), take(nh + nkv + g, b)));
        }
    }
    tasks.into_par_iter().for_each(|(g, b, mut dq, dk, dv)| {
        let (k, v) = (head_block(heads, s, nh + g, b), head_block(heads, s, nh + nkv + g, b));
        let mut ds = vec![0f32; t * t];
        for (j, dq) in dq.iter_mut().enumerate() {
            let head = g * rep + j;
            let p = head_block_probs(probs, s, head, b);
            let (q, dout) = (head_block(heads, s, head, b), head_block(dout, s, head, b));
            matmul(MatMut::new(&mut ds, t, t), Mat::new(dout, t, hd), Mat::new(v, t, hd).t(), false, false);
            matmul(MatMut::new(dv, t, hd), Mat::new(p, t, t).t(), Mat::new(dout, t, hd), true, false);
            for (drow, prow) in ds.chunks_mut(t).zip(p.chunks(t)) {
                let dot: f32 = drow.iter().zip(prow).map(|(a, b)| a * b).sum();
                drow.iter_mut().zip(prow).for_each(|(d, &p)| *d = scale * p * (*d - dot));
            }
            matmul(MatMut::new(dq, t, hd), Mat::new(&ds, t, t), Mat::new(k, t, hd), false, false);
            matmul(MatMut::new(dk, t, hd), Mat::new(&ds, t, t).t(), Mat::new(q, t, hd), true, false);
        }
    });
    dheads
}

/// The `[T, T]` attention weights of head `head`, row `b`.
fn head_block_probs(probs: &[f32], s: HeadShape, head: usize, b: usize) -> &[f32] {
    let len = s.time * s.time;
    &probs[(head * s.batch + b) * len..][..len]
}

// ---------------------------------------------------------------------------------------------
// The candle op

/// Reads the f32 contents of CPU tensors and hands them to `f` as slices.
pub(crate) fn with_slices<R>(tensors: &[Tensor], f: impl FnOnce(&[&[f32]]) -> R) -> Result<R> {
    let guards: Vec<_> = tensors.iter().map(|t| t.storage_and_layout()).collect();
    let mut slices = Vec::with_capacity(guards.len());
    for (storage, layout) in &guards {
        let Storage::Cpu(data) = &**storage else { bail!("the CPU training pass needs CPU tensors") };
        slices.push(kernels::f32s(data, layout, "the CPU training pass")?);
    }
    Ok(f(&slices))
}

/// The model's per-token log-probs as a candle op: output `[B, T]` with the log-prob of token
/// `n + 1` at `n + 1` for each scored row `n`, 0 elsewhere.
pub(crate) struct TrainPass {
    pub params: Vec<Tensor>,
    pub index: Arc<ParamIndex>,
    pub dims: Dims,
    pub rope: RopeTables,
    pub tokens: Tokens,
    pub sink: Arc<GradSink>,
    pub saved: Mutex<Option<Saved>>,
}

impl TrainPass {
    /// Log-probs scattered to their `[B·T]` positions.
    pub fn scatter(tokens: &Tokens, lp: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; tokens.batch * tokens.time];
        for (&row, &v) in tokens.rows.iter().zip(lp) {
            out[row + 1] = v;
        }
        out
    }
}

impl CustomOp1 for TrainPass {
    fn name(&self) -> &'static str {
        "recipe-cpu-train-pass"
    }

    fn cpu_fwd(&self, _placeholder: &CpuStorage, _layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (lp, saved) =
            with_slices(&self.params, |w| forward(w, &self.index, &self.dims, &self.rope, &self.tokens, true))?;
        *self.saved.lock().unwrap_or_else(|e| e.into_inner()) = saved;
        let out = TrainPass::scatter(&self.tokens, &lp);
        Ok((CpuStorage::F32(out), Shape::from((self.tokens.batch, self.tokens.time))))
    }

    fn bwd(&self, _placeholder: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad: Vec<f32> = grad.flatten_all()?.to_vec1()?;
        let dlp: Vec<f32> = self.tokens.rows.iter().map(|&r| grad[r + 1]).collect();
        let saved = self.saved.lock().unwrap_or_else(|e| e.into_inner());
        let Some(saved) = saved.as_ref() else { bail!("the CPU training pass kept no activations") };
        let grads =
            with_slices(&self.params, |w| backward(w, &self.index, &self.dims, &self.rope, &self.tokens, saved, &dlp))?;
        self.sink.deposit(grads);
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::super::logprob::{candle_token_logprobs, scored_tokens};
    use super::super::{CausalLm, LlamaConfig, TokenBatch};
    use crate::rng::Rng;

    fn max_abs(t: &Tensor) -> f32 {
        t.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
    }

    /// Values and every parameter's gradient of the CPU pass against the candle path, under an
    /// uneven upstream gradient (so each scored position weighs differently).
    fn matches_candle_path(cfg: LlamaConfig) {
        let device = Device::Cpu;
        let model = CausalLm::tiny(cfg, &mut Rng::derive(3, "cpu-pass"), &device).unwrap();
        let rows = [("12+34=", "46"), ("7+8=", "15"), ("99+1=", "100"), ("5=", "5")];
        let batch = TokenBatch::collate(model.tokenizer(), &rows, true, &device).unwrap();
        let tokens = scored_tokens(&batch).unwrap();
        let (b, t) = (tokens.batch, tokens.time);
        let upstream: Vec<f32> = (0..b * t).map(|i| 1.0 - (i % 7) as f32 * 0.3).collect();
        let upstream = Tensor::from_vec(upstream, (b, t), &device).unwrap();

        let fast = model.cpu_token_logprobs(tokens.clone()).unwrap();
        let slow = candle_token_logprobs(&model, &batch, &tokens).unwrap();
        let diff = max_abs(&(&fast - &slow).unwrap());
        assert!(diff < 1e-5, "log-probs differ by {diff}");

        let grads =
            |lp: &Tensor| model.take_grads(&(lp * &upstream).unwrap().sum_all().unwrap().backward().unwrap()).unwrap();
        let (fast_grads, slow_grads) = (grads(&fast), grads(&slow));
        for ((name, _), (f, s)) in model.params().iter().zip(fast_grads.iter().zip(&slow_grads)) {
            let scale = max_abs(s);
            assert!(scale > 0.0 && max_abs(f) > 0.0, "{name}: no gradient");
            let err = max_abs(&(f - s).unwrap()) / scale;
            assert!(err < 1e-4, "{name}: relative gradient error {err}");
        }
    }

    fn small() -> LlamaConfig {
        LlamaConfig {
            hidden_size: 32,
            intermediate_size: 48,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 4,
            ..LlamaConfig::default()
        }
    }

    #[test]
    fn multi_head_attention_matches_candle() {
        matches_candle_path(small());
    }

    #[test]
    fn grouped_query_attention_with_biases_matches_candle() {
        matches_candle_path(LlamaConfig { num_key_value_heads: 2, attention_bias: true, ..small() });
    }

    #[test]
    fn tied_embeddings_match_candle() {
        matches_candle_path(LlamaConfig { tie_word_embeddings: true, num_key_value_heads: 1, ..small() });
    }

    #[test]
    fn thread_count_changes_no_bit() {
        let cfg = LlamaConfig { hidden_size: 64, intermediate_size: 160, ..small() };
        let device = Device::Cpu;
        let model = CausalLm::tiny(cfg, &mut Rng::derive(5, "cpu-pass"), &device).unwrap();
        let rows: Vec<(String, String)> =
            (0..8).map(|i| (format!("{i}{i}+{}=", 17 * i), format!("{}", 11 * i + 17 * i))).collect();
        let rows: Vec<(&str, &str)> = rows.iter().map(|(p, c)| (p.as_str(), c.as_str())).collect();
        let batch = TokenBatch::collate(model.tokenizer(), &rows, true, &device).unwrap();
        let grads_on = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let lp = model.cpu_token_logprobs(scored_tokens(&batch).unwrap()).unwrap();
                let grads = model.take_grads(&lp.sum_all().unwrap().backward().unwrap()).unwrap();
                grads.iter().map(|g| g.flatten_all().unwrap().to_vec1::<f32>().unwrap()).collect::<Vec<_>>()
            })
        };
        assert!(grads_on(1) == grads_on(3), "gradients depend on the thread count");
    }

    #[test]
    fn frozen_models_score_alike_and_deposit_nothing() {
        let device = Device::Cpu;
        let model = CausalLm::tiny(small(), &mut Rng::derive(4, "cpu-pass"), &device).unwrap();
        let frozen = model.frozen().unwrap();
        let batch = TokenBatch::collate(model.tokenizer(), &[("1+2=", "3"), ("40+2=", "42")], true, &device).unwrap();
        let tokens = scored_tokens(&batch).unwrap();
        let live = model.cpu_token_logprobs(tokens.clone()).unwrap();
        let cold = frozen.cpu_token_logprobs(tokens).unwrap();
        assert_eq!(live.to_vec2::<f32>().unwrap(), cold.to_vec2::<f32>().unwrap());
        let store = cold.sum_all().unwrap().backward().unwrap();
        assert!(frozen.take_grads(&store).unwrap().iter().all(|g| max_abs(g) == 0.0));
    }
}
