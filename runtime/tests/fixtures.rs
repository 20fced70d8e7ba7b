//! The model against an independent reference: the `tiny-llama` checkpoint written by
//! transformers, and the log-probabilities, DPO gradient norm and greedy continuations that
//! PyTorch / TRL computed from it (`../shared/fixtures`, see its README).
//!
//! The fixtures are found at `$RECIPE_FIXTURES` or `$CARGO_MANIFEST_DIR/../../shared/fixtures`.
//! A missing fixture folder fails the tests (it is part of CI's checkout).

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use recipe_runtime::artifact::FileDigest;
use recipe_runtime::model::generate::greedy_uncached;
use recipe_runtime::model::{
    completion_logprobs, generate, Arch, CausalLm, GenerateOptions, LlamaConfig, MmapSafetensors, TensorInfo,
    TokenBatch, TokenizerSpec, WeightSource,
};
use recipe_runtime::rng::Rng;
use serde_json::Value;

fn fixtures() -> PathBuf {
    let dir = std::env::var_os("RECIPE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"));
    assert!(
        dir.join("tiny-llama/config.json").is_file(),
        "fixtures not found at {} (set RECIPE_FIXTURES)",
        dir.display()
    );
    dir
}

fn tiny_llama() -> CausalLm {
    CausalLm::load(&fixtures().join("tiny-llama"), &Device::Cpu).expect("tiny-llama loads")
}

fn json(name: &str) -> Value {
    let path = fixtures().join("tiny-llama").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

/// The DPO batch of the reference: `[chosen_0..15, rejected_0..15]`.
fn dpo_batch(reference: &Value) -> TokenBatch {
    let pairs = reference["pairs"].as_array().unwrap();
    let mut rows: Vec<(Vec<u32>, Vec<u32>)> =
        pairs.iter().map(|p| (ids(&p["prompt_ids"]), ids(&p["chosen_ids"]))).collect();
    rows.extend(pairs.iter().map(|p| (ids(&p["prompt_ids"]), ids(&p["rejected_ids"]))));
    TokenBatch::from_ids(&rows, 0, &Device::Cpu).unwrap()
}

#[test]
fn loads_the_transformers_checkpoint() {
    let model = tiny_llama();
    let cfg = model.config();
    assert_eq!(cfg.architecture, Arch::Llama);
    assert_eq!((cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size), (256, 256, 688));
    assert_eq!((cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads), (4, 4, 4));
    assert_eq!(cfg.rope_theta, 10_000.0);
    assert!(model.tokenizer().is_bytes(), "the fixture's byte-level tokenizer.json is detected");
    // The folder keeps its own ids: EOS 10 (its config.json's), not the embedded tokenizer's 256.
    let expected = TokenizerSpec { eos_id: 10, ..TokenizerSpec::bytes() };
    assert_eq!(model.tokenizer().spec(), &expected);
    assert_eq!(model.num_params(), 3_295_488);
    let names: Vec<&str> = model.params().iter().map(|(n, _)| n.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert!(names.contains(&"lm_head.weight") && names.contains(&"model.layers.3.mlp.down_proj.weight"));
}

#[test]
fn completion_logprobs_match_pytorch() {
    let reference = json("dpo_step0_reference.json");
    let model = tiny_llama();
    let batch = dpo_batch(&reference);
    assert_eq!(batch.dims().unwrap().1, reference["all16"]["plain_f32"]["seq_len"].as_u64().unwrap() as usize);
    let (sum, count) = completion_logprobs(&model, &batch).unwrap();
    let sum: Vec<f32> = sum.to_vec1().unwrap();
    let count: Vec<f32> = count.to_vec1().unwrap();
    let f32_ref = &reference["all16"]["plain_f32"];
    let mut expected = floats(&f32_ref["policy_chosen_logps"]);
    expected.extend(floats(&f32_ref["policy_rejected_logps"]));
    let mut worst = 0f32;
    for (i, (got, want)) in sum.iter().zip(&expected).enumerate() {
        let diff = (got - want).abs();
        worst = worst.max(diff);
        assert!(diff < 1e-4, "row {i}: {got} vs {want} (diff {diff})");
    }
    assert!(count.iter().zip(&batch.completion_lens).all(|(&c, &l)| c as usize == l));
    eprintln!("max |logp - torch f32| = {worst:e}");
}

#[test]
fn dpo_step0_loss_is_ln2_and_grad_norm_matches() {
    let reference = json("dpo_step0_reference.json");
    let beta = reference["beta"].as_f64().unwrap();
    let policy = tiny_llama();
    let frozen = policy.frozen().unwrap();
    assert!(frozen.is_frozen() && !policy.snapshot().unwrap().is_frozen());
    let batch = dpo_batch(&reference);
    let n = batch.completion_lens.len() / 2;
    let (policy_lp, _) = completion_logprobs(&policy, &batch).unwrap();
    let (ref_lp, _) = completion_logprobs(&frozen, &batch).unwrap();
    let ref_lp = ref_lp.detach();
    let (pc, pr) = (policy_lp.narrow(0, 0, n).unwrap(), policy_lp.narrow(0, n, n).unwrap());
    let (rc, rr) = (ref_lp.narrow(0, 0, n).unwrap(), ref_lp.narrow(0, n, n).unwrap());
    // -log σ(z) = log(1 + exp(-z)), z = β((pc − rc) − (pr − rr)).
    let z = ((pc - rc).unwrap() - (pr - rr).unwrap()).unwrap().affine(beta, 0.0).unwrap();
    let loss = (z.neg().unwrap().exp().unwrap() + 1.0).unwrap().log().unwrap().mean_all().unwrap();
    let loss_value: f32 = loss.to_scalar().unwrap();
    assert!((loss_value - std::f32::consts::LN_2).abs() < 1e-6, "loss {loss_value}");
    let grads = loss.backward().unwrap();
    let mut sq = 0f64;
    for g in policy.take_grads(&grads).unwrap() {
        sq +=
            g.sqr().unwrap().sum_all().unwrap().to_dtype(candle_core::DType::F64).unwrap().to_scalar::<f64>().unwrap();
    }
    for g in frozen.take_grads(&grads).unwrap() {
        let norm: f32 = g.abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
        assert_eq!(norm, 0.0, "the frozen reference got a gradient");
    }
    let norm = sq.sqrt();
    let want = 1.112_165_4;
    assert!(((norm - want) / want).abs() < 1e-4, "grad norm {norm} vs {want}");
    eprintln!("grad norm {norm} (reference {want})");
}

#[test]
fn batched_greedy_generation_matches_transformers() {
    let reference = json("greedy_reference.json");
    let model = tiny_llama();
    let prompts: Vec<Vec<u32>> = reference["prompt_ids"].as_array().unwrap().iter().map(ids).collect();
    let expected: Vec<Vec<u32>> = reference["new_token_ids"].as_array().unwrap().iter().map(ids).collect();
    let opts = GenerateOptions { max_new_tokens: 64, temperature: 0.0, top_p: 1.0, stop_at_eos: false };
    let got = generate(&model, &prompts, &opts, &mut Rng::derive(0, "test")).unwrap();
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(g, e, "prompt {i}");
    }
    // Unequal prompt lengths exercise the left padding: each row alone equals the batch.
    let mixed = vec![prompts[0][2..].to_vec(), prompts[1].clone(), prompts[2][..3].to_vec()];
    let opts = GenerateOptions { max_new_tokens: 24, ..opts };
    let batched = generate(&model, &mixed, &opts, &mut Rng::derive(0, "test")).unwrap();
    for (p, b) in mixed.iter().zip(&batched) {
        let alone = generate(&model, std::slice::from_ref(p), &opts, &mut Rng::derive(0, "test")).unwrap();
        assert_eq!(&alone[0], b);
    }
}

#[test]
fn cached_greedy_equals_the_uncached_argmax_loop() {
    let model = tiny_llama();
    let prompt = model.tokenizer().encode("27+22=").unwrap();
    let opts = GenerateOptions { max_new_tokens: 20, temperature: 0.0, top_p: 1.0, stop_at_eos: false };
    let cached = generate(&model, std::slice::from_ref(&prompt), &opts, &mut Rng::derive(0, "g")).unwrap();
    assert_eq!(cached[0], greedy_uncached(&model, &prompt, 20).unwrap());
}

#[test]
fn saved_folder_round_trips_and_keeps_hf_layout() {
    let model = tiny_llama();
    let dir = tempfile::tempdir().unwrap();
    model.save(dir.path()).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json", "generation_config.json"] {
        assert!(dir.path().join(f).is_file(), "{f} written");
    }
    let cfg: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["architectures"][0], "LlamaForCausalLM");
    assert_eq!(cfg["model_type"], "llama");
    assert_eq!(cfg["torch_dtype"], "float32");
    let back = CausalLm::load(dir.path(), &Device::Cpu).unwrap();
    assert_eq!(back.config(), model.config());
    assert!(back.tokenizer().is_bytes());
    assert_eq!(back.tokenizer().spec(), model.tokenizer().spec());
    for ((n1, v1), (n2, v2)) in model.params().iter().zip(back.params()) {
        assert_eq!(n1, n2);
        let diff: f32 =
            (v1.as_tensor() - v2.as_tensor()).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap();
        assert_eq!(diff, 0.0, "{n1} changed in the round trip");
    }
    // The original safetensors and ours hold the same tensors under the same names.
    let theirs = candle_core::safetensors::load(fixtures().join("tiny-llama/model.safetensors"), &Device::Cpu).unwrap();
    let ours = candle_core::safetensors::load(dir.path().join("model.safetensors"), &Device::Cpu).unwrap();
    let mut names: Vec<_> = theirs.keys().collect();
    let mut our_names: Vec<_> = ours.keys().collect();
    names.sort();
    our_names.sort();
    assert_eq!(names, our_names);
}

#[test]
fn mapped_weights_equal_a_whole_file_read_bit_for_bit() {
    let file = fixtures().join("tiny-llama/model.safetensors");
    let whole = candle_core::safetensors::load(&file, &Device::Cpu).unwrap();
    let mapped = MmapSafetensors::in_dir(file.parent().unwrap()).unwrap();
    assert_eq!(mapped.origin(), file);
    let names = mapped.names();
    let mut expected: Vec<&String> = whole.keys().collect();
    expected.sort();
    assert_eq!(names.iter().collect::<Vec<_>>(), expected);
    for name in &names {
        let t = mapped.load_f32(name, &Device::Cpu).unwrap();
        assert_eq!(mapped.info(name), Some(TensorInfo { shape: whole[name].dims().to_vec(), dtype: "F32".into() }));
        let bits = |t: &Tensor| {
            t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        };
        assert!(bits(&t) == bits(&whole[name]), "{name} differs");
    }
    assert!(mapped.info("lm_head.bias").is_none());
}

#[test]
fn streamed_digest_of_the_weights_matches_the_published_sha256() {
    let digest = FileDigest::of_file(&fixtures().join("tiny-llama/model.safetensors")).unwrap();
    assert_eq!(digest.sha256, "04d5039357c867d9808a4d0915489117149b9fde4ebaf2bc1e7c8e4faf9d238d");
    assert_eq!(digest.bytes, 13_186_104);
}

#[test]
fn sharded_weights_load_like_a_single_file() {
    let src = fixtures().join("tiny-llama");
    let all = candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let mut names: Vec<&String> = all.keys().collect();
    names.sort();
    let mut weight_map = serde_json::Map::new();
    for (k, chunk) in names.chunks(names.len().div_ceil(2)).enumerate() {
        let file = format!("model-{:05}-of-00002.safetensors", k + 1);
        let part: std::collections::HashMap<String, Tensor> =
            chunk.iter().map(|n| ((*n).clone(), all[*n].clone())).collect();
        candle_core::safetensors::save(&part, dir.path().join(&file)).unwrap();
        for n in chunk {
            weight_map.insert((*n).clone(), Value::String(file.clone()));
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(dir.path().join("model.safetensors.index.json"), index.to_string()).unwrap();
    let sharded = CausalLm::load(dir.path(), &Device::Cpu).unwrap();
    let single = tiny_llama();
    let ids = Tensor::new(&[[53u32, 57, 43, 54, 51, 61]], &Device::Cpu).unwrap();
    let diff: f32 = (sharded.forward(&ids).unwrap() - single.forward(&ids).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    assert_eq!(diff, 0.0);
}

#[test]
fn qwen2_with_biases_and_gqa_round_trips() {
    let cfg = LlamaConfig {
        architecture: Arch::Qwen2,
        attention_bias: true,
        tie_word_embeddings: true,
        hidden_size: 64,
        intermediate_size: 96,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        ..LlamaConfig::default()
    };
    let model = CausalLm::tiny(cfg, &mut Rng::derive(1, "init"), &Device::Cpu).unwrap();
    assert!(model.params().iter().any(|(n, _)| n == "model.layers.0.self_attn.q_proj.bias"));
    assert!(!model.params().iter().any(|(n, _)| n == "lm_head.weight"), "tied embeddings have no lm_head");
    let dir = tempfile::tempdir().unwrap();
    model.save(dir.path()).unwrap();
    let cfg_json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg_json["architectures"][0], "Qwen2ForCausalLM");
    let back = CausalLm::load(dir.path(), &Device::Cpu).unwrap();
    let ids = Tensor::new(&[[1u32, 2, 3, 4], [5, 6, 7, 8]], &Device::Cpu).unwrap();
    let (a, b) = (model.forward(&ids).unwrap(), back.forward(&ids).unwrap());
    assert_eq!(a.dims(), &[2, 4, 257], "the 256 bytes and the embedded EOS");
    assert!(back.tokenizer().is_bytes(), "the saved tokenizer.json with its EOS token reads as the byte tokenizer");
    assert_eq!(back.tokenizer().spec(), model.tokenizer().spec());
    let diff: f32 = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap();
    assert_eq!(diff, 0.0);
    let prompt = vec![1u32, 2, 3];
    let opts = GenerateOptions { max_new_tokens: 12, temperature: 0.0, top_p: 1.0, stop_at_eos: false };
    let cached = generate(&back, std::slice::from_ref(&prompt), &opts, &mut Rng::derive(0, "g")).unwrap();
    assert_eq!(cached[0], greedy_uncached(&back, &prompt, 12).unwrap());
}

#[test]
fn sampling_is_seeded_and_stops_at_eos() {
    let model = tiny_llama();
    let prompts = vec![model.tokenizer().encode("12+34=").unwrap(), model.tokenizer().encode("5+6=").unwrap()];
    let opts = GenerateOptions { max_new_tokens: 40, temperature: 1.0, top_p: 0.9, stop_at_eos: true };
    let a = generate(&model, &prompts, &opts, &mut Rng::derive(3, "sample")).unwrap();
    let b = generate(&model, &prompts, &opts, &mut Rng::derive(3, "sample")).unwrap();
    assert_eq!(a, b);
    for row in &a {
        assert!(!row.is_empty() && row.len() <= 40);
        // EOS, if present, is the last token.
        if let Some(i) = row.iter().position(|&t| t == 10) {
            assert_eq!(i, row.len() - 1);
        }
    }
    let c = generate(&model, &prompts, &opts, &mut Rng::derive(4, "sample")).unwrap();
    assert_ne!(a, c, "a different seed samples differently");
}
