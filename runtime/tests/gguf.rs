//! A real pretrained model read from a GGUF file (SmolLM2-135M-Instruct, Q4_1) against
//! transformers' own GGUF loader: the figures of `tests/fixtures/smollm2_reference.json`
//! (written by `scripts/smollm2_reference.py`) — token ids of texts with accents, emoji, CJK and
//! special tokens, summed completion log-probabilities (within 1e-3) and greedy tokens (identical)
//! — and the Hugging Face folder `save` writes from it reads back with the same figures (what
//! `recipe convert` does).
//!
//! The model file is not in the repository: fetch it with `scripts/fetch_smollm2.sh` (or point
//! `$RECIPE_SMOLLM2` at the .gguf). Without it the test prints why and returns. Run:
//!     scripts/fetch_smollm2.sh && cargo test --offline -p recipe-runtime --test gguf -- --nocapture

use std::path::{Path, PathBuf};

use recipe_runtime::model::chat::{ChatTemplate, Message};
use recipe_runtime::model::{self, CausalLm, Device, GenerateOptions, TokenBatch};
use recipe_runtime::rng::Rng;
use serde_json::Value;

/// Summed log-probabilities agree within this. The issue asks for 1e-3; the import is within
/// 2e-5 of the fixture, and 1e-4 still catches a biased reduction (an f32 running sum over the
/// 49 152 logits was 1.2e-3 off on the longest completion).
const LOGPROB_TOL: f64 = 1e-4;

fn model_file() -> Option<PathBuf> {
    let path = std::env::var_os("RECIPE_SMOLLM2").map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    });
    if path.is_file() {
        Some(path)
    } else {
        eprintln!("skipped: {} is absent (run scripts/fetch_smollm2.sh)", path.display());
        None
    }
}

fn reference() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/smollm2_reference.json");
    serde_json::from_str(&std::fs::read_to_string(&path).expect("the committed fixture")).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

/// The summed completion log-probability of each fixture pair under `model`, after checking that
/// the model's tokenizer gives the fixture's prompt and completion ids.
fn logprobs(model: &CausalLm, pairs: &[Value]) -> Vec<f64> {
    let tok = model.tokenizer();
    let rows: Vec<(&str, &str)> =
        pairs.iter().map(|p| (p["prompt"].as_str().unwrap(), p["completion"].as_str().unwrap())).collect();
    for ((prompt, completion), p) in rows.iter().zip(pairs) {
        assert_eq!(tok.encode(prompt).unwrap(), ids(&p["prompt_ids"]), "prompt {prompt:?}");
        let mut c = tok.encode(completion).unwrap();
        c.push(tok.eos_id());
        assert_eq!(c, ids(&p["completion_ids"]), "completion {completion:?}");
    }
    let batch = TokenBatch::collate(tok, &rows, true, model.device()).unwrap();
    let (sum, _) = model::completion_logprobs(model, &batch).unwrap();
    sum.to_vec1::<f32>().unwrap().into_iter().map(f64::from).collect()
}

fn assert_logprobs(model: &CausalLm, pairs: &[Value], what: &str) {
    for (got, p) in logprobs(model, pairs).into_iter().zip(pairs) {
        let want = p["logprob_sum"].as_f64().unwrap();
        assert!((got - want).abs() < LOGPROB_TOL, "{what}: {:?}: {got} vs transformers {want}", p["completion"]);
    }
}

#[test]
fn smollm2_gguf_matches_transformers_and_converts_to_a_folder() {
    let Some(file) = model_file() else { return };
    let reference = reference();
    let model = CausalLm::load(&file, &Device::Cpu).unwrap().into_frozen();
    let tok = model.tokenizer();
    let special = &reference["special"];
    assert_eq!(
        (tok.spec().bos_id, tok.eos_id(), tok.pad_id()),
        (Some(special["bos"].as_u64().unwrap() as u32), special["eos"].as_u64().unwrap() as u32, 2)
    );
    assert!(tok.spec().chat_template.as_deref().is_some_and(|t| t.contains("<|im_start|>")));

    for e in reference["encodings"].as_array().unwrap() {
        let text = e["text"].as_str().unwrap();
        assert_eq!(tok.encode(text).unwrap(), ids(&e["ids"]), "ids of {text:?}");
        assert_eq!(tok.decode(&ids(&e["ids"])), text, "decoding {text:?}");
    }

    let pairs = reference["logprobs"].as_array().unwrap();
    assert_logprobs(&model, pairs, "GGUF");

    let options = GenerateOptions { max_new_tokens: 16, temperature: 0.0, top_p: 1.0, stop_at_eos: true };
    for g in reference["greedy"].as_array().unwrap() {
        let prompt = tok.encode(g["prompt"].as_str().unwrap()).unwrap();
        let out = model::generate(&model, &[prompt], &options, &mut Rng::derive(0, "greedy")).unwrap();
        assert_eq!(out[0], ids(&g["ids"]), "greedy continuation of {:?}", g["prompt"]);
    }

    // The chat template renders as transformers' `apply_chat_template`, to the same ids.
    let template = ChatTemplate::of(tok).unwrap().expect("SmolLM2 has a chat template");
    for chat in reference["chats"].as_array().unwrap() {
        let messages: Vec<Message> = serde_json::from_value(chat["messages"].clone()).unwrap();
        for (generation, key) in [(false, "ids"), (true, "generation_ids")] {
            let text = template.render(&messages, generation).unwrap();
            assert_eq!(tok.encode(&text).unwrap(), ids(&chat[key]), "{key} of {:?}", chat["messages"]);
        }
    }

    // `recipe convert`: the saved folder reads back with the same tokenizer and log-probabilities.
    let dir = tempfile::tempdir().unwrap();
    model.save(dir.path()).unwrap();
    let folder = CausalLm::load(dir.path(), &Device::Cpu).unwrap().into_frozen();
    assert_eq!(folder.tokenizer().spec(), tok.spec());
    assert_logprobs(&folder, pairs, "converted folder");
}
