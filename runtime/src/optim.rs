//! AdamW as PyTorch's `torch.optim.AdamW` computes it, global-norm gradient clipping as
//! `torch.nn.utils.clip_grad_norm_`, and gradient accumulation over micro-batches.
//!
//! Invariants: gradients travel as one tensor per parameter in the optimiser's parameter order
//! (the model's `params()` order, sorted by name), a parameter that got no gradient contributes a
//! zero tensor; the optimiser state is exactly the step count plus the two moment tensors per
//! parameter, so saving and restoring them continues a run bit for bit.

use std::collections::HashMap;
use std::sync::Mutex;

use candle_core::{CpuStorage, DType, Layout, Storage, Tensor, Var};
use rayon::prelude::*;

use crate::model::kernels::{f32s, f32s_mut};

/// Hyper-parameters that stay fixed for a stage (the learning rate and weight decay are given per
/// step, since recipes schedule them).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl Default for AdamWConfig {
    /// PyTorch's defaults.
    fn default() -> Self {
        AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8 }
    }
}

/// AdamW over a fixed list of parameters.
pub struct AdamW {
    params: Vec<(String, Var)>,
    moments: Vec<Moments>,
    steps: u64,
    cfg: AdamWConfig,
}

/// The two Adam moments of one parameter. On the CPU they are plain vectors, updated in place
/// together with the parameter in one pass (the allocating tensor form cost as much as the
/// backward pass on the fixture model); elsewhere they are tensors.
#[derive(Clone)]
enum Moments {
    Host { exp_avg: Vec<f32>, exp_avg_sq: Vec<f32> },
    Device { exp_avg: Tensor, exp_avg_sq: Tensor },
}

impl Moments {
    fn zeros(var: &Var) -> candle_core::Result<Moments> {
        Moments::from_tensors(var.as_tensor().zeros_like()?, var.as_tensor().zeros_like()?, var)
    }

    fn from_tensors(exp_avg: Tensor, exp_avg_sq: Tensor, var: &Var) -> candle_core::Result<Moments> {
        if var.device().is_cpu() && var.dtype() == DType::F32 {
            let host = |t: Tensor| t.flatten_all()?.to_vec1::<f32>();
            Ok(Moments::Host { exp_avg: host(exp_avg)?, exp_avg_sq: host(exp_avg_sq)? })
        } else {
            Ok(Moments::Device { exp_avg, exp_avg_sq })
        }
    }

    fn tensors(&self, var: &Var) -> candle_core::Result<(Tensor, Tensor)> {
        match self {
            Moments::Host { exp_avg, exp_avg_sq } => Ok((
                Tensor::from_slice(exp_avg, var.shape(), var.device())?,
                Tensor::from_slice(exp_avg_sq, var.shape(), var.device())?,
            )),
            Moments::Device { exp_avg, exp_avg_sq } => Ok((exp_avg.clone(), exp_avg_sq.clone())),
        }
    }
}

/// A problem restoring optimiser state.
#[derive(Debug, thiserror::Error)]
pub enum OptimError {
    /// The saved state lacks a moment for a parameter (the model changed between save and load).
    #[error("optimiser state has no `{name}` moment; was it saved for another model?")]
    MissingMoment { name: String },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl AdamW {
    /// Fresh state (zero moments, step 0) for `params`.
    pub fn new(params: &[(String, Var)], cfg: AdamWConfig) -> candle_core::Result<AdamW> {
        Ok(AdamW {
            moments: params.iter().map(|(_, v)| Moments::zeros(v)).collect::<candle_core::Result<_>>()?,
            params: params.to_vec(),
            steps: 0,
            cfg,
        })
    }

    pub fn params(&self) -> &[(String, Var)] {
        &self.params
    }

    /// Optimiser steps taken so far (PyTorch's `state["step"]`).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    pub fn config(&self) -> AdamWConfig {
        self.cfg
    }

    /// Zeroes the moments and the step count (a stage boundary with `optimizer = reset`).
    pub fn reset(&mut self) -> candle_core::Result<()> {
        *self = AdamW::new(&self.params, self.cfg)?;
        Ok(())
    }

    /// One update with `grads` (parameter order): decoupled weight decay `p ← p(1 − lr·wd)`, then
    /// the bias-corrected Adam step `p ← p − lr/(1−β1ᵗ) · m / (√v / √(1−β2ᵗ) + eps)`.
    pub fn step(&mut self, grads: &[Tensor], lr: f64, weight_decay: f64) -> candle_core::Result<()> {
        if grads.len() != self.params.len() {
            return Err(candle_core::Error::Msg(format!(
                "AdamW got {} gradients for {} parameters",
                grads.len(),
                self.params.len()
            )));
        }
        self.steps += 1;
        let AdamWConfig { beta1, beta2, eps } = self.cfg;
        let t = self.steps as i32;
        let step_size = lr / (1.0 - beta1.powi(t));
        let bias_correction2_sqrt = (1.0 - beta2.powi(t)).sqrt();
        let update = Update { beta1, beta2, eps, lr, weight_decay, step_size, bias_correction2_sqrt };
        // Parameters are independent: update them in parallel (each one's arithmetic is fixed).
        self.params.par_iter().zip(self.moments.par_iter_mut()).zip(grads.par_iter()).try_for_each(
            |(((_, var), moments), g)| match moments {
                Moments::Host { exp_avg, exp_avg_sq } => {
                    let op = InPlaceUpdate {
                        update: &update,
                        exp_avg: Mutex::new(exp_avg),
                        exp_avg_sq: Mutex::new(exp_avg_sq),
                    };
                    var.as_tensor().inplace_op2(&g.detach().contiguous()?, &op)
                }
                Moments::Device { exp_avg, exp_avg_sq } => {
                    let (p, m, v) = update.composed(var.as_tensor(), &g.detach(), exp_avg, exp_avg_sq)?;
                    var.set(&p)?;
                    (*exp_avg, *exp_avg_sq) = (m, v);
                    Ok(())
                }
            },
        )
    }

    /// The moments as named tensors (`exp_avg.<param>`, `exp_avg_sq.<param>`), for a checkpoint.
    pub fn state_tensors(&self) -> candle_core::Result<Vec<(String, Tensor)>> {
        let mut out = Vec::with_capacity(2 * self.params.len());
        for ((name, var), moments) in self.params.iter().zip(&self.moments) {
            let (m, v) = moments.tensors(var)?;
            out.push((format!("exp_avg.{name}"), m));
            out.push((format!("exp_avg_sq.{name}"), v));
        }
        Ok(out)
    }

    /// Restores moments saved by `state_tensors` and the step count.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, steps: u64) -> Result<(), OptimError> {
        for ((name, var), slot) in self.params.iter().zip(self.moments.iter_mut()) {
            let moment = |prefix: &str| -> Result<Tensor, OptimError> {
                let key = format!("{prefix}.{name}");
                let t = tensors.get(&key).ok_or(OptimError::MissingMoment { name: key.clone() })?;
                if t.dims() != var.dims() {
                    return Err(candle_core::Error::ShapeMismatchBinaryOp {
                        lhs: t.shape().clone(),
                        rhs: var.shape().clone(),
                        op: "load optimiser moment",
                    }
                    .into());
                }
                Ok(t.to_dtype(var.dtype())?.to_device(var.device())?)
            };
            *slot = Moments::from_tensors(moment("exp_avg")?, moment("exp_avg_sq")?, var)?;
        }
        self.steps = steps;
        Ok(())
    }
}

/// One AdamW update's constants, applied per parameter.
struct Update {
    beta1: f64,
    beta2: f64,
    eps: f64,
    lr: f64,
    weight_decay: f64,
    step_size: f64,
    bias_correction2_sqrt: f64,
}

impl Update {
    /// With candle ops: any device (about ten allocating kernels per parameter).
    fn composed(
        &self,
        p: &Tensor,
        g: &Tensor,
        m: &Tensor,
        v: &Tensor,
    ) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
        let m = (m.affine(self.beta1, 0.0)? + g.affine(1.0 - self.beta1, 0.0)?)?;
        let v = (v.affine(self.beta2, 0.0)? + g.sqr()?.affine(1.0 - self.beta2, 0.0)?)?;
        let p = p.detach();
        let p = if self.weight_decay != 0.0 { p.affine(1.0 - self.lr * self.weight_decay, 0.0)? } else { p };
        let denom = v.sqrt()?.affine(1.0 / self.bias_correction2_sqrt, self.eps)?;
        let p = (p - (m.div(&denom)?.affine(self.step_size, 0.0))?)?;
        Ok((p, m, v))
    }

    /// The same arithmetic in one pass over f32 slices, in place.
    fn apply(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        let (b1, b2) = (self.beta1 as f32, self.beta2 as f32);
        let (one_b1, one_b2) = ((1.0 - self.beta1) as f32, (1.0 - self.beta2) as f32);
        let decay = (1.0 - self.lr * self.weight_decay) as f32;
        let inv_bc2 = (1.0 / self.bias_correction2_sqrt) as f32;
        let (eps, step_size) = (self.eps as f32, self.step_size as f32);
        for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            let mi = b1 * *m + one_b1 * g;
            let vi = b2 * *v + one_b2 * (g * g);
            let pi = if self.weight_decay != 0.0 { *p * decay } else { *p };
            *p = pi - (mi / (vi.sqrt() * inv_bc2 + eps)) * step_size;
            *m = mi;
            *v = vi;
        }
    }
}

/// [`Update::apply`] as a candle in-place op on the parameter's storage (what `Var::set` would
/// write, without the copies).
struct InPlaceUpdate<'a> {
    update: &'a Update,
    exp_avg: Mutex<&'a mut Vec<f32>>,
    exp_avg_sq: Mutex<&'a mut Vec<f32>>,
}

impl candle_core::InplaceOp2 for InPlaceUpdate<'_> {
    fn name(&self) -> &'static str {
        "recipe-adamw"
    }

    fn cpu_fwd(&self, p: &mut CpuStorage, lp: &Layout, g: &CpuStorage, lg: &Layout) -> candle_core::Result<()> {
        let (p, g) = (f32s_mut(p, lp, "AdamW")?, f32s(g, lg, "AdamW")?);
        let mut m = self.exp_avg.lock().unwrap_or_else(|e| e.into_inner());
        let mut v = self.exp_avg_sq.lock().unwrap_or_else(|e| e.into_inner());
        if p.len() != g.len() || m.len() != p.len() || v.len() != p.len() {
            candle_core::bail!("AdamW: parameter, gradient and moments differ in size")
        }
        self.update.apply(p, g, &mut m, &mut v);
        Ok(())
    }
}

/// The global L2 norm over all gradients (computed in f64 from per-tensor f32 sums of squares).
pub fn global_norm(grads: &[Tensor]) -> candle_core::Result<f64> {
    let mut total = 0.0f64;
    for g in grads {
        total += match host_slice(g, sum_of_squares) {
            Some(sum) => sum,
            None => g.to_dtype(DType::F32)?.sqr()?.sum_all()?.to_scalar::<f32>()?,
        } as f64;
    }
    Ok(total.sqrt())
}

/// Scales `grads` so their global norm is at most `max_norm`, as `clip_grad_norm_` does
/// (coefficient `max_norm / (norm + 1e-6)`, applied only when below 1). Returns the norm before
/// clipping. A non-finite norm is returned unchanged and nothing is scaled: the caller stops.
pub fn clip_grad_norm(grads: &mut [Tensor], max_norm: f64) -> candle_core::Result<f64> {
    let norm = global_norm(grads)?;
    let coef = max_norm / (norm + 1e-6);
    if norm.is_finite() && coef < 1.0 {
        for g in grads.iter_mut() {
            *g = g.affine(coef, 0.0)?;
        }
    }
    Ok(norm)
}

/// `f` of a contiguous f32 CPU tensor's elements; `None` for any other tensor.
fn host_slice<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(data) => f32s(data, layout, "").ok().map(f),
        _ => None,
    }
}

/// `Σ x²` in f32 over 16 interleaved partial sums: vectorisable, and the same order every run.
fn sum_of_squares(x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = x.chunks_exact(16);
    let rest: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    for chunk in chunks {
        for (a, v) in acc.iter_mut().zip(chunk) {
            *a += v * v;
        }
    }
    acc.iter().sum::<f32>() + rest
}

/// Sums gradients of micro-batches; each micro-batch loss is its share of the step's loss
/// (normalised by the whole step's token count, as TRL / transformers do with
/// `num_items_in_batch`), so the sum is the gradient of the step's loss.
#[derive(Default)]
pub struct GradAccumulator {
    sum: Option<Vec<Tensor>>,
}

impl GradAccumulator {
    pub fn add(&mut self, grads: Vec<Tensor>) -> candle_core::Result<()> {
        self.sum = Some(match self.sum.take() {
            None => grads,
            Some(sum) => sum.iter().zip(&grads).map(|(a, b)| a + b).collect::<candle_core::Result<_>>()?,
        });
        Ok(())
    }

    /// The accumulated gradients, leaving the accumulator empty.
    pub fn take(&mut self) -> Option<Vec<Tensor>> {
        self.sum.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Two AdamW steps on p = [1, -2] with gradients [0.5, -1] then [-0.25, 2], lr 0.1,
    /// wd 0.01, betas (0.9, 0.999), eps 1e-8, worked by hand from PyTorch's update:
    ///
    /// step 1: p ← 0.999 p = [0.999, -1.998]; m = 0.1 g = [0.05, -0.1]; v = 0.001 g² =
    ///         [0.00025, 0.001]; m̂ = g, √v̂ = |g|, so p ← p − 0.1·sign(g) = [0.899, -1.898].
    /// step 2: p ← 0.999 p = [0.898101, -1.896102]; m = [0.02, 0.11]; v = [0.00031225, 0.004999];
    ///         m̂ = m/0.19 = [0.105263, 0.578947]; √v̂ = √(v/0.001999) = [0.395225, 1.581376];
    ///         p ← p − 0.1 m̂/√v̂ = [0.898101 − 0.026634, −1.896102 − 0.036610]
    ///           = [0.871467, −1.932712].
    #[test]
    fn adamw_matches_hand_computed_two_steps() {
        let dev = Device::Cpu;
        let var = Var::from_slice(&[1.0f32, -2.0], 2, &dev).unwrap();
        let mut opt = AdamW::new(&[("w".into(), var.clone())], AdamWConfig::default()).unwrap();
        let step1 = [0.899f32, -1.898];
        let step2 = [0.871467f32, -1.932712];
        for (g, expected) in [([0.5f32, -1.0], step1), ([-0.25, 2.0], step2)] {
            opt.step(&[Tensor::from_slice(&g, 2, &dev).unwrap()], 0.1, 0.01).unwrap();
            let got = var.as_tensor().to_vec1::<f32>().unwrap();
            for i in 0..2 {
                assert!((got[i] - expected[i]).abs() < 2e-6, "param {i}: {} vs {}", got[i], expected[i]);
            }
        }
        assert_eq!(opt.steps(), 2);
    }

    #[test]
    fn state_round_trip_continues_identically() {
        let dev = Device::Cpu;
        let make = || Var::from_slice(&[0.3f32, -0.7, 1.1], 3, &dev).unwrap();
        let g = |k: f32| Tensor::from_slice(&[k, -2.0 * k, 0.5], 3, &dev).unwrap();
        let (a, b) = (make(), make());
        let mut oa = AdamW::new(&[("p".into(), a.clone())], AdamWConfig::default()).unwrap();
        for k in [1.0, -3.0, 0.5] {
            oa.step(&[g(k)], 0.01, 0.1).unwrap();
        }
        let mut ob = AdamW::new(&[("p".into(), b.clone())], AdamWConfig::default()).unwrap();
        ob.step(&[g(1.0)], 0.01, 0.1).unwrap();
        let saved: HashMap<String, Tensor> = ob.state_tensors().unwrap().into_iter().collect();
        let mut oc = AdamW::new(&[("p".into(), b.clone())], AdamWConfig::default()).unwrap();
        oc.load_state(&saved, ob.steps()).unwrap();
        for k in [-3.0, 0.5] {
            oc.step(&[g(k)], 0.01, 0.1).unwrap();
        }
        assert_eq!(a.as_tensor().to_vec1::<f32>().unwrap(), b.as_tensor().to_vec1::<f32>().unwrap());
        assert!(matches!(oc.load_state(&HashMap::new(), 0), Err(OptimError::MissingMoment { .. })));
    }

    #[test]
    fn clipping_returns_the_pre_clip_norm() {
        let dev = Device::Cpu;
        let mut grads =
            vec![Tensor::from_slice(&[3.0f32], 1, &dev).unwrap(), Tensor::from_slice(&[4.0f32], 1, &dev).unwrap()];
        let norm = clip_grad_norm(&mut grads, 1.0).unwrap();
        assert!((norm - 5.0).abs() < 1e-9);
        assert!((global_norm(&grads).unwrap() - 5.0 / (5.0 + 1e-6)).abs() < 1e-6);
        // Below the threshold nothing changes.
        let norm = clip_grad_norm(&mut grads, 10.0).unwrap();
        assert!(norm < 1.0 && (global_norm(&grads).unwrap() - norm).abs() < 1e-12);
    }

    #[test]
    fn host_norm_agrees_with_candle() {
        let dev = Device::Cpu;
        // 1000 elements: 62 chunks of 16 and a remainder of 8; a strided (non-contiguous)
        // view takes candle's path.
        let x: Vec<f32> = (0..1000).map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0).collect();
        let t = Tensor::from_vec(x.clone(), (40, 25), &dev).unwrap();
        let exact: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>().sqrt();
        for g in [t.clone(), t.t().unwrap()] {
            let norm = global_norm(&[g]).unwrap();
            assert!((norm - exact).abs() < 1e-5 * exact, "{norm} vs {exact}");
        }
    }

    #[test]
    fn accumulation_sums() {
        let dev = Device::Cpu;
        let mut acc = GradAccumulator::default();
        acc.add(vec![Tensor::from_slice(&[1.0f32, 2.0], 2, &dev).unwrap()]).unwrap();
        acc.add(vec![Tensor::from_slice(&[0.5f32, -1.0], 2, &dev).unwrap()]).unwrap();
        assert_eq!(acc.take().unwrap()[0].to_vec1::<f32>().unwrap(), vec![1.5, 1.0]);
        assert!(acc.take().is_none());
    }
}
