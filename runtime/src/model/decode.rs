//! The model side of one generation call: a KV cache and the forward pass over the new slots of
//! each row, returning each row's next-token logits. [`generate`](super::generate) samples from
//! them.
//!
//! Two implementations of [`Decoder`]: [`CandleDecoder`] composes `CausalLm::hidden` with tensor
//! caches (any device), and [`CpuDecoder`] runs a hand-written pass on f32 slices with `gemm`
//! and the cache in plain vectors (the CPU). Why a second path: at generation shapes (one token
//! per row, a few dozen rows) candle's `x · Wᵀ` makes gemm repack every weight matrix on every
//! step (its kernel wants the weight column-major), which cost half of W4's decode time, and the
//! tensor cache is copied whole on every step (`Tensor::cat`). [`CpuDecoder`] computes each
//! linear as `W · xᵀ`, the orientation in which gemm reads the weights where they are (see
//! [`linear`]), and writes new keys and values in place into a cache sized for the whole call.
//! Measured on W4 (`benches/w4_generate.rs`, 16 rows): 2.1× the candle path's tokens/s.
//!
//! Meaning: both compute `CausalLm::hidden` on left-padded rows (each row's pad slots masked out
//! of attention, rotary positions counted from its first real token) followed by the LM head on
//! each row's last slot; the tests below hold their logits together.

use std::sync::Arc;

use candle_core::{Result, Tensor};

use super::cpu::{self, matmul, Dims, Mat, MatMut, ParamIndex};
use super::kernels;
use super::llama::{CausalLm, KvCache, Positions, Weights};
use super::ops::{AttnMask, RopeTables};

/// The model state of one generation call over a batch of left-padded rows.
pub(crate) trait Decoder {
    /// Appends `time` slots to every row — `ids` and rotary `positions` are `[B, time]` — and
    /// returns the logits `[B, V]` of each row's last new slot.
    fn forward(&mut self, ids: &[u32], time: usize, positions: &[u32]) -> Result<Vec<f32>>;

    /// Makes the batch `rows` of the current one, in that order (repeats allowed): row `i`
    /// continues from what row `rows[i]` holds so far.
    fn select_rows(&mut self, rows: &[usize]) -> Result<()>;
}

/// The decoder for `model`'s device: [`CpuDecoder`] on the CPU, [`CandleDecoder`] elsewhere.
/// Row `b` has `offsets[b]` pad slots first; `capacity` bounds the slots of the call.
pub(crate) fn for_model<'m>(
    model: &'m CausalLm,
    offsets: Vec<usize>,
    capacity: usize,
) -> Result<Box<dyn Decoder + 'm>> {
    Ok(if model.device().is_cpu() {
        Box::new(model.cpu_decoder(offsets, capacity))
    } else {
        Box::new(CandleDecoder::new(model, offsets)?)
    })
}

// ---------------------------------------------------------------------------------------------
// The candle path

/// `CausalLm::hidden` with tensor caches, on any device.
pub(crate) struct CandleDecoder<'m> {
    model: &'m CausalLm,
    w: Weights,
    cache: Vec<KvCache>,
    offsets: Vec<usize>,
    /// Slots per row so far.
    len: usize,
}

impl<'m> CandleDecoder<'m> {
    pub(crate) fn new(model: &'m CausalLm, offsets: Vec<usize>) -> Result<CandleDecoder<'m>> {
        Ok(CandleDecoder { model, w: model.weights(false)?, cache: Vec::new(), offsets, len: 0 })
    }
}

impl Decoder for CandleDecoder<'_> {
    fn forward(&mut self, ids: &[u32], time: usize, positions: &[u32]) -> Result<Vec<f32>> {
        let (batch, keys) = (self.offsets.len(), self.len + time);
        let offsets = &self.offsets;
        let valid = (0..batch).flat_map(|b| (0..keys).map(move |j| j >= offsets[b])).collect();
        let pos = Positions {
            positions: Arc::new(positions.to_vec()),
            mask: AttnMask { batch, queries: time, keys, offset: self.len, key_valid: Some(Arc::new(valid)) },
        };
        let device = self.model.device();
        let input = Tensor::from_vec(ids.to_vec(), (batch, time), device)?;
        let hidden = self.model.hidden(&self.w, &input, &pos, Some(&mut self.cache))?;
        let last: Vec<u32> = (0..batch).map(|b| (b * time + time - 1) as u32).collect();
        let hidden = hidden.index_select(&Tensor::from_vec(last, batch, device)?, 0)?;
        self.len = keys;
        self.model.logits(&self.w, &hidden)?.flatten_all()?.to_vec1()
    }

    fn select_rows(&mut self, rows: &[usize]) -> Result<()> {
        let index = Tensor::from_vec(rows.iter().map(|&r| r as u32).collect(), rows.len(), self.model.device())?;
        for c in &mut self.cache {
            *c = KvCache { k: c.k.index_select(&index, 1)?, v: c.v.index_select(&index, 1)? };
        }
        self.offsets = rows.iter().map(|&r| self.offsets[r]).collect();
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The CPU path

/// Keys and values of one block, `[B, kv_heads, capacity, head_dim]` each.
struct LayerCache {
    k: Vec<f32>,
    v: Vec<f32>,
}

/// The hand-written CPU decoder: the model's parameters (read in place) and a preallocated cache.
pub(crate) struct CpuDecoder {
    params: Vec<Tensor>,
    index: Arc<ParamIndex>,
    dims: Dims,
    rope: RopeTables,
    /// Pad slots before each row's first token.
    offsets: Vec<usize>,
    /// Slots per row the cache holds.
    capacity: usize,
    /// Slots per row filled so far.
    len: usize,
    cache: Vec<LayerCache>,
}

/// `x · Wᵀ` of row-major `x` `[rows, in]` and weights `W_i` `[out_i, in]` as stored, stacked
/// along the output: `[rows, Σ out_i]`. Computed as `W_i · xᵀ` into `[Σ out_i, rows]` and
/// transposed back: in that orientation gemm packs only the few rows of `x` and streams each
/// weight row once from where it is, where `x · Wᵀ` repacks the whole matrix on every call
/// (measured with gemm 0.19 on 16 rows × a 768×256 weight: 77 µs against 155 µs).
fn linear(x: &[f32], rows: usize, weights: &[&[f32]], out: &mut [f32]) {
    let inputs = x.len() / rows.max(1);
    let width: usize = weights.iter().map(|w| w.len() / inputs).sum();
    let mut t = vec![0f32; width * rows];
    let mut at = 0;
    for w in weights {
        let n = w.len() / inputs;
        let dst = MatMut::new(&mut t[at * rows..(at + n) * rows], n, rows);
        matmul(dst, Mat::new(w, n, inputs), Mat::new(x, rows, inputs).t(), false, true);
        at += n;
    }
    for (r, row) in out.chunks_mut(width).enumerate() {
        row.iter_mut().enumerate().for_each(|(c, y)| *y = t[c * rows + r]);
    }
}

/// [`linear`] added into `x` (a residual connection).
fn add_linear(acc: &mut [f32], x: &[f32], rows: usize, w: &[f32]) {
    let mut y = vec![0f32; acc.len()];
    linear(x, rows, &[w], &mut y);
    acc.iter_mut().zip(&y).for_each(|(a, y)| *a += y);
}

/// `Σ a·b`, eight lanes at a time (so it vectorises).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            lanes[k] += x[k] * y[k];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

impl CpuDecoder {
    /// The decoder of rows with `offsets[b]` pad slots first and at most `capacity` slots.
    pub(crate) fn new(
        params: Vec<Tensor>,
        index: Arc<ParamIndex>,
        dims: Dims,
        rope: RopeTables,
        offsets: Vec<usize>,
        capacity: usize,
    ) -> CpuDecoder {
        let per_layer = offsets.len() * dims.kv_heads * capacity * dims.head_dim;
        let cache =
            index.blocks.iter().map(|_| LayerCache { k: vec![0f32; per_layer], v: vec![0f32; per_layer] }).collect();
        CpuDecoder { params, index, dims, rope, offsets, capacity, len: 0, cache }
    }

    /// Rotates the q and k heads of each `[B·T, (H+2K)·hd]` row by its position, in place.
    fn rope_rows(&self, qkv: &mut [f32], positions: &[u32]) {
        let Dims { heads, kv_heads, head_dim: hd, .. } = self.dims;
        let half = hd / 2;
        let width = (heads + 2 * kv_heads) * hd;
        for (row, &p) in qkv.chunks_mut(width).zip(positions) {
            let (cos, sin) = (&self.rope.cos[p as usize * half..][..half], &self.rope.sin[p as usize * half..][..half]);
            for x in row[..(heads + kv_heads) * hd].chunks_mut(hd) {
                for k in 0..half {
                    let (a, b) = (x[k], x[k + half]);
                    x[k] = a * cos[k] - b * sin[k];
                    x[k + half] = b * cos[k] + a * sin[k];
                }
            }
        }
    }

    /// Attention of the `time` new slots of every row over its cache, heads merged:
    /// `[B·time, H·hd]`. Query slot `s` of row `b` sees keys `offsets[b]..=s`; a pad query
    /// (no key visible) gets zeros.
    fn attend(&self, layer: &LayerCache, qkv: &[f32], time: usize) -> Vec<f32> {
        let Dims { heads, kv_heads, head_dim: hd, .. } = self.dims;
        let (q_width, qkv_width, rep) = (heads * hd, (heads + 2 * kv_heads) * hd, heads / kv_heads);
        let scale = 1.0 / (hd as f32).sqrt();
        let mut out = vec![0f32; self.offsets.len() * time * q_width];
        kernels::for_rows(&mut out, time * q_width, |b, out| {
            let mut probs = Vec::with_capacity(self.len + time);
            for t in 0..time {
                let (first, slot) = (self.offsets[b], self.len + t);
                if first > slot {
                    continue;
                }
                for head in 0..heads {
                    let q = &qkv[(b * time + t) * qkv_width + head * hd..][..hd];
                    let at = |j: usize| ((b * kv_heads + head / rep) * self.capacity + j) * hd;
                    probs.clear();
                    probs.extend((first..=slot).map(|j| dot(q, &layer.k[at(j)..][..hd]) * scale));
                    let m = probs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let mut sum = 0f32;
                    for p in probs.iter_mut() {
                        *p = (*p - m).exp();
                        sum += *p;
                    }
                    let inv = 1.0 / sum;
                    let o = &mut out[t * q_width + head * hd..][..hd];
                    for (j, p) in (first..=slot).zip(&probs) {
                        let p = p * inv;
                        o.iter_mut().zip(&layer.v[at(j)..][..hd]).for_each(|(o, v)| *o += p * v);
                    }
                }
            }
        });
        out
    }
}

impl Decoder for CpuDecoder {
    fn forward(&mut self, ids: &[u32], time: usize, positions: &[u32]) -> Result<Vec<f32>> {
        let batch = self.offsets.len();
        if self.len + time > self.capacity {
            candle_core::bail!("the decoder's cache holds {} slots, {} asked", self.capacity, self.len + time)
        }
        let Dims { hidden: h, heads, kv_heads, head_dim: hd, intermediate: inter, vocab, eps } = self.dims;
        let (q_width, kv_width) = (heads * hd, kv_heads * hd);
        let qkv_width = q_width + 2 * kv_width;
        let n = batch * time;
        let params = self.params.clone();
        let logits = cpu::with_slices(&params, |w| {
            let mut x = vec![0f32; n * h];
            for (row, &id) in x.chunks_mut(h).zip(ids) {
                row.copy_from_slice(&w[self.index.embed][id as usize * h..][..h]);
            }
            let mut normed = vec![0f32; n * h];
            for (l, bi) in self.index.blocks.iter().enumerate() {
                kernels::rms_norm_rows(&x, w[bi.input_norm], eps, &mut normed);
                let mut qkv = vec![0f32; n * qkv_width];
                linear(&normed, n, &[w[bi.q], w[bi.k], w[bi.v]], &mut qkv);
                if let Some([q, k, v]) = bi.qkv_bias {
                    let bias = [w[q], w[k], w[v]].concat();
                    qkv.chunks_mut(qkv_width).for_each(|r| r.iter_mut().zip(&bias).for_each(|(y, b)| *y += b));
                }
                self.rope_rows(&mut qkv, positions);
                let layer = &mut self.cache[l];
                for (r, row) in qkv.chunks(qkv_width).enumerate() {
                    let (b, slot) = (r / time, self.len + r % time);
                    for g in 0..kv_heads {
                        let at = ((b * kv_heads + g) * self.capacity + slot) * hd;
                        layer.k[at..at + hd].copy_from_slice(&row[q_width + g * hd..][..hd]);
                        layer.v[at..at + hd].copy_from_slice(&row[q_width + kv_width + g * hd..][..hd]);
                    }
                }
                let attn = self.attend(&self.cache[l], &qkv, time);
                add_linear(&mut x, &attn, n, w[bi.o]);
                if let Some(p) = bi.o_bias {
                    x.chunks_mut(h).for_each(|r| r.iter_mut().zip(w[p]).for_each(|(y, b)| *y += b));
                }
                kernels::rms_norm_rows(&x, w[bi.post_norm], eps, &mut normed);
                let mut gate_up = vec![0f32; n * 2 * inter];
                linear(&normed, n, &[w[bi.gate], w[bi.up]], &mut gate_up);
                let mut mlp = vec![0f32; n * inter];
                kernels::swiglu_rows(&gate_up, inter, &mut mlp);
                add_linear(&mut x, &mlp, n, w[bi.down]);
            }
            // The head runs on each row's last slot only.
            let mut last = Vec::with_capacity(batch * h);
            (0..batch).for_each(|b| last.extend_from_slice(&x[((b + 1) * time - 1) * h..][..h]));
            let mut normed = vec![0f32; batch * h];
            kernels::rms_norm_rows(&last, w[self.index.norm], eps, &mut normed);
            let mut logits = vec![0f32; batch * vocab];
            linear(&normed, batch, &[w[self.index.lm_head]], &mut logits);
            logits
        })?;
        self.len += time;
        Ok(logits)
    }

    fn select_rows(&mut self, rows: &[usize]) -> Result<()> {
        let row = self.dims.kv_heads * self.capacity * self.dims.head_dim;
        for layer in &mut self.cache {
            for buf in [&mut layer.k, &mut layer.v] {
                let mut picked = Vec::with_capacity(rows.len() * row);
                rows.iter().for_each(|&r| picked.extend_from_slice(&buf[r * row..(r + 1) * row]));
                *buf = picked;
            }
        }
        self.offsets = rows.iter().map(|&r| self.offsets[r]).collect();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use candle_core::Device;

    use super::*;
    use crate::model::LlamaConfig;
    use crate::rng::Rng;

    /// Feeds both decoders the same left-padded prompts, then the candle path's argmax tokens for
    /// a few steps, and holds every step's logits together.
    fn cpu_logits_match_candle(model: &CausalLm) {
        let prompts: [&[u32]; 3] = [&[49, 50, 43, 51, 52, 61], &[55, 43, 56, 61], &[57]];
        let longest = prompts.iter().map(|p| p.len()).max().unwrap();
        let offsets: Vec<usize> = prompts.iter().map(|p| longest - p.len()).collect();
        let (steps, vocab) = (6, model.config().vocab_size);
        let mut candle = CandleDecoder::new(model, offsets.clone()).unwrap();
        let mut cpu = model.cpu_decoder(offsets.clone(), longest + steps - 1);
        let pad = model.tokenizer().pad_id();
        let ids: Vec<u32> = prompts
            .iter()
            .zip(&offsets)
            .flat_map(|(p, &o)| std::iter::repeat_n(pad, o).chain(p.iter().copied()))
            .collect();
        let positions: Vec<u32> =
            offsets.iter().flat_map(|&o| (0..longest).map(move |j| j.saturating_sub(o) as u32)).collect();
        let mut slow = candle.forward(&ids, longest, &positions).unwrap();
        let mut fast = cpu.forward(&ids, longest, &positions).unwrap();
        // Continue with the rows reordered and repeated, as a prefill shared by a group is.
        let rows = [2, 0, 1, 0];
        candle.select_rows(&rows).unwrap();
        cpu.select_rows(&rows).unwrap();
        let pick =
            |logits: &[f32]| -> Vec<f32> { rows.iter().flat_map(|&r| logits[r * vocab..][..vocab].to_vec()).collect() };
        (slow, fast) = (pick(&slow), pick(&fast));
        let prompts: Vec<&[u32]> = rows.iter().map(|&r| prompts[r]).collect();
        for step in 0..steps {
            assert_eq!(slow.len(), prompts.len() * vocab);
            let diff = slow.iter().zip(&fast).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(diff < 1e-4, "step {step}: logits differ by {diff}");
            if step + 1 == steps {
                break;
            }
            let next: Vec<u32> = slow.chunks(vocab).map(crate::model::generate::argmax).collect();
            let positions: Vec<u32> = prompts.iter().map(|p| (p.len() + step) as u32).collect();
            slow = candle.forward(&next, 1, &positions).unwrap();
            fast = cpu.forward(&next, 1, &positions).unwrap();
        }
        assert!(cpu.forward(&[pad; 4], 1, &[0; 4]).is_err(), "a slot beyond the capacity is refused");
    }

    /// `tiny-llama` from `$RECIPE_FIXTURES` or `../shared/fixtures`.
    fn fixture() -> CausalLm {
        let fixtures = std::env::var_os("RECIPE_FIXTURES")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"));
        CausalLm::load(&fixtures.join("tiny-llama"), &Device::Cpu).expect("the fixture (RECIPE_FIXTURES)")
    }

    #[test]
    fn cpu_decoder_matches_candle_on_the_fixture() {
        cpu_logits_match_candle(&fixture());
    }

    #[test]
    fn thread_count_changes_no_logit() {
        let model = fixture();
        // 16 rows of 6 tokens: large enough for gemm to split the projections across threads.
        let ids: Vec<u32> = (0..16 * 6).map(|i| 48 + (i * 7 % 10) as u32).collect();
        let positions: Vec<u32> = (0..16).flat_map(|_| 0..6).collect();
        let logits_on = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let mut decoder = model.cpu_decoder(vec![0; 16], 7);
                let first = decoder.forward(&ids, 6, &positions).unwrap();
                let next: Vec<u32> =
                    first.chunks(model.config().vocab_size).map(crate::model::generate::argmax).collect();
                (first, decoder.forward(&next, 1, &[6; 16]).unwrap())
            })
        };
        assert!(logits_on(1) == logits_on(3), "logits depend on the thread count");
    }

    #[test]
    fn cpu_decoder_matches_candle_with_grouped_query_attention_and_biases() {
        let cfg = LlamaConfig {
            hidden_size: 64,
            intermediate_size: 96,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            attention_bias: true,
            ..LlamaConfig::default()
        };
        let model = CausalLm::tiny(cfg, &mut Rng::derive(7, "decode"), &Device::Cpu).unwrap();
        cpu_logits_match_candle(&model);
    }

    #[test]
    fn cpu_decoder_matches_candle_with_tied_embeddings_and_one_kv_head() {
        let cfg = LlamaConfig {
            hidden_size: 32,
            intermediate_size: 48,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 1,
            tie_word_embeddings: true,
            ..LlamaConfig::default()
        };
        let model = CausalLm::tiny(cfg, &mut Rng::derive(8, "decode"), &Device::Cpu).unwrap();
        cpu_logits_match_candle(&model);
    }
}
