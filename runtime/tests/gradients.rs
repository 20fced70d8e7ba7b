//! Gradients: every differentiable op against central finite differences (composed version, in
//! f64) and the fused CPU kernels against the composed ops (values and gradients, f32), and every
//! parameter of the model receiving a non-zero gradient — candle-nn's fused norm / softmax /
//! rope ops would silently stop gradients, which is what these tests exist to catch.

use std::sync::Arc;

use candle_core::{DType, Device, Result, Tensor, Var};
use recipe_runtime::model::ops::{self, AttnMask, HeadShape, RopeTables};
use recipe_runtime::model::{sft_loss, Arch, CausalLm, LlamaConfig, TokenBatch};
use recipe_runtime::rng::Rng;

type Op<'a> = dyn Fn(&[Tensor]) -> Result<Tensor> + 'a;

fn random(rng: &mut Rng, shape: &[usize], scale: f64) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.normal() * scale).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// `L(inputs) = Σ op(inputs) ⊙ r` for a fixed random `r`, and its gradients by backprop.
fn loss_and_grads(op: &Op, inputs: &[Tensor], r: &Tensor) -> (f64, Vec<Vec<f64>>) {
    let vars: Vec<Var> = inputs.iter().map(|t| Var::from_tensor(t).unwrap()).collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let out = op(&ts).unwrap();
    let loss = (out.to_dtype(DType::F64).unwrap() * r).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let g = vars
        .iter()
        .map(|v| {
            let g = grads.get(v).expect("input received a gradient");
            g.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1().unwrap()
        })
        .collect();
    (loss.to_scalar().unwrap(), g)
}

/// Checks the composed op's gradient against central differences in f64, then the fused op's
/// value and gradient (f32) against the composed op's.
fn check(name: &str, composed: &Op, fused: &Op, inputs: &[Tensor], out_shape: &[usize]) {
    let mut rng = Rng::derive(11, name);
    let r = random(&mut rng, out_shape, 1.0);
    let (_, analytic) = loss_and_grads(composed, inputs, &r);
    let h = 1e-6;
    for (k, input) in inputs.iter().enumerate() {
        let base: Vec<f64> = input.flatten_all().unwrap().to_vec1().unwrap();
        for i in 0..base.len() {
            let at = |delta: f64| {
                let mut v = base.clone();
                v[i] += delta;
                let mut args = inputs.to_vec();
                args[k] = Tensor::from_vec(v, input.shape(), &Device::Cpu).unwrap();
                (composed(&args).unwrap() * &r).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap()
            };
            let numeric = (at(h) - at(-h)) / (2.0 * h);
            let a = analytic[k][i];
            assert!(
                (numeric - a).abs() <= 1e-6 + 1e-5 * a.abs(),
                "{name}: input {k}[{i}]: backprop {a} vs finite difference {numeric}"
            );
        }
    }
    // Fused (f32) against composed (f64).
    let inputs32: Vec<Tensor> = inputs.iter().map(|t| t.to_dtype(DType::F32).unwrap()).collect();
    let want = composed(inputs).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let got = fused(&inputs32).unwrap().to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!((g - w).abs() <= 1e-5 + 1e-5 * w.abs(), "{name}: fused value [{i}] {g} vs {w}");
    }
    let (_, fused_grads) = loss_and_grads(fused, &inputs32, &r);
    for (k, (fg, ag)) in fused_grads.iter().zip(&analytic).enumerate() {
        for (i, (g, a)) in fg.iter().zip(ag).enumerate() {
            assert!((g - a).abs() <= 1e-4 + 1e-4 * a.abs(), "{name}: fused grad {k}[{i}] {g} vs {a}");
        }
    }
}

#[test]
fn rms_norm_gradients() {
    let mut rng = Rng::derive(1, "rms");
    let x = random(&mut rng, &[3, 8], 1.0);
    let w = random(&mut rng, &[8], 1.0);
    check(
        "rms_norm",
        &|t: &[Tensor]| ops::rms_norm_composed(&t[0], &t[1], 1e-6),
        &|t: &[Tensor]| ops::rms_norm(&t[0], &t[1], 1e-6),
        &[x, w],
        &[3, 8],
    );
}

#[test]
fn swiglu_gradients() {
    let mut rng = Rng::derive(1, "swiglu");
    let gu = random(&mut rng, &[4, 10], 2.0);
    check("swiglu", &|t: &[Tensor]| ops::swiglu_composed(&t[0]), &|t: &[Tensor]| ops::swiglu(&t[0]), &[gu], &[4, 5]);
}

#[test]
fn split_heads_rope_gradients() {
    let mut rng = Rng::derive(1, "rope");
    // Two rows of three tokens, 2 query heads sharing 1 kv head, head_dim 4.
    let shape = HeadShape { batch: 2, time: 3, heads: 2, kv_heads: 1, head_dim: 4 };
    let rope = RopeTables::new(4, 10_000.0, 16);
    let positions = Arc::new(vec![0u32, 1, 2, 5, 6, 7]);
    let qkv = random(&mut rng, &[6, 16], 1.0);
    let (p1, r1, p2, r2) = (positions.clone(), rope.clone(), positions, rope);
    check(
        "split_heads_rope",
        &move |t: &[Tensor]| ops::split_heads_rope_composed(&t[0], shape, &p1, &r1),
        &move |t: &[Tensor]| ops::split_heads_rope(&t[0], shape, &p2, &r2),
        &[qkv],
        &[4, 2, 3, 4],
    );
}

#[test]
fn masked_softmax_gradients() {
    let mut rng = Rng::derive(1, "softmax");
    // 2 heads, 2 rows, 3 queries after 2 cached keys; row 0's first key is padding.
    let valid: Vec<bool> = (0..2).flat_map(|b| (0..5).map(move |j| !(b == 0 && j == 0))).collect();
    let mask = AttnMask { batch: 2, queries: 3, keys: 5, offset: 2, key_valid: Some(Arc::new(valid)) };
    let scores = random(&mut rng, &[2, 2, 3, 5], 2.0);
    let (m1, m2) = (mask.clone(), mask);
    check(
        "masked_softmax",
        &move |t: &[Tensor]| ops::masked_softmax_composed(&t[0], 0.5, &m1),
        &move |t: &[Tensor]| ops::masked_softmax(&t[0], 0.5, &m2),
        &[scores],
        &[2, 2, 3, 5],
    );
}

#[test]
fn token_logprobs_gradients() {
    let mut rng = Rng::derive(1, "logprob");
    let logits = random(&mut rng, &[4, 7], 3.0);
    let targets = Arc::new(vec![3u32, u32::MAX, 0, 6]);
    let (t1, t2) = (targets.clone(), targets);
    check(
        "token_logprobs",
        &move |t: &[Tensor]| ops::token_logprobs_composed(&t[0], &t1),
        &move |t: &[Tensor]| ops::token_logprobs(&t[0], &t2),
        &[logits],
        &[4],
    );
}

#[test]
fn log_softmax_matches_its_definition() {
    let mut rng = Rng::derive(1, "log_softmax");
    let x = random(&mut rng, &[3, 6], 4.0);
    let a = ops::log_softmax_last_dim(&x).unwrap();
    let b = ops::softmax_last_dim(&x).unwrap().log().unwrap();
    let diff: f64 = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap();
    assert!(diff < 1e-12, "{diff}");
}

fn assert_every_parameter_learns(cfg: LlamaConfig) {
    let model = CausalLm::tiny(cfg, &mut Rng::derive(5, "init"), &Device::Cpu).unwrap();
    let tok = model.tokenizer().clone();
    let rows = [("12+34=", "46"), ("7+8=", "15"), ("99+1=", "100")];
    let batch = TokenBatch::collate(&tok, &rows, true, &Device::Cpu).unwrap();
    let loss = sft_loss(&model, &batch).unwrap();
    let grads = model.take_grads(&loss.backward().unwrap()).unwrap();
    for ((name, _), g) in model.params().iter().zip(&grads) {
        let norm: f32 = g.sqr().unwrap().sum_all().unwrap().to_scalar().unwrap();
        assert!(norm > 0.0 && norm.is_finite(), "{name}: gradient norm² {norm}");
    }
}

#[test]
fn every_llama_parameter_receives_a_gradient() {
    assert_every_parameter_learns(LlamaConfig {
        hidden_size: 32,
        intermediate_size: 48,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        attention_bias: true,
        ..LlamaConfig::default()
    });
}

#[test]
fn every_tied_qwen2_parameter_receives_a_gradient() {
    assert_every_parameter_learns(LlamaConfig {
        architecture: Arch::Qwen2,
        attention_bias: true,
        tie_word_embeddings: true,
        hidden_size: 32,
        intermediate_size: 48,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        num_key_value_heads: 1,
        ..LlamaConfig::default()
    });
}

#[test]
fn tiny_init_is_seeded_and_transformers_like() {
    let cfg = LlamaConfig::default();
    let a = CausalLm::tiny(cfg.clone(), &mut Rng::derive(7, "init"), &Device::Cpu).unwrap();
    let b = CausalLm::tiny(cfg.clone(), &mut Rng::derive(7, "init"), &Device::Cpu).unwrap();
    let c = CausalLm::tiny(cfg, &mut Rng::derive(8, "init"), &Device::Cpu).unwrap();
    let embed = |m: &CausalLm| m.params().iter().find(|(n, _)| n == "model.embed_tokens.weight").unwrap().1.clone();
    let (ea, eb, ec) = (embed(&a), embed(&b), embed(&c));
    let same: f32 = (ea.as_tensor() - eb.as_tensor()).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap();
    assert_eq!(same, 0.0);
    let differ: f32 = (ea.as_tensor() - ec.as_tensor()).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap();
    assert!(differ > 0.0);
    let pad_row: f32 = ea.as_tensor().get(0).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap();
    assert_eq!(pad_row, 0.0, "the padding row is zero");
    let rows: Vec<f32> = ea.as_tensor().narrow(0, 1, 255).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let std = (rows.iter().map(|v| v * v).sum::<f32>() / rows.len() as f32).sqrt();
    assert!((std - 0.02).abs() < 0.001, "init std {std}");
    let norm = a.params().iter().find(|(n, _)| n == "model.norm.weight").unwrap().1.clone();
    let ones: f32 = norm.as_tensor().min_all().unwrap().to_scalar().unwrap();
    assert_eq!(ones, 1.0);
}
