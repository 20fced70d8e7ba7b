//! W5 benchmark: a real pretrained model on real data, as `../shared/peers/w5_real_model.py`
//! defines it — SmolLM2-135M-Instruct from its GGUF file (dequantised to f32) on GSM8K, CPU:
//! (a) SFT tokens/s: batch 4 of GSM8K `question` → `answer` rows, the question rendered with the
//!     model's chat template (generation prompt added), the answer plus EOS the completion,
//!     rows over 256 tokens left out, completion-only mean NLL, AdamW lr 1e-5, clipping at 1.0,
//!     through the stage loop `recipe run` uses; tokens = every non-pad token of the step; the
//!     median over the steps after the first (warm-up);
//! (b) greedy batched generation: 8 chat prompts × 64 new tokens, EOS not stopping, KV-cached,
//!     through `model::generate`; the median of 3 calls after a warm-up.
//! It then runs the peer in the same sitting and prints both, the ratios and both peak RSS.
//!
//! Run: `scripts/fetch_smollm2.sh`, then
//! `cargo bench -p recipe-runtime --bench w5_real_model --profile dev --offline` (env: W5_GGUF,
//! default models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf; W5_STEPS, default 6; W5_PEER=0 skips
//! the peer; PEER_PYTHON, default /work/peer-venv/bin/python). Without the model file it says
//! so and exits.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;
use recipe_compiler::column::Column;
use recipe_runtime::artifact::{self, RunDir};
use recipe_runtime::data::Dataset;
use recipe_runtime::model::chat::{ChatTemplate, Message};
use recipe_runtime::model::{generate, training_positions, CausalLm, GenerateOptions};
use recipe_runtime::optim::AdamW;
use recipe_runtime::progress::Silent;
use recipe_runtime::rng::Rng;
use recipe_runtime::train::{run_stage, LoopConfig, Models, Ordered, RunContext, Schedule, SftObjective, StageParts};
use serde_json::Value;

mod common;
use common::{env_usize, median, peak_rss_mib, run_peer};

// The allocator the `recipe` command uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH: usize = 4;
const MAX_LEN: usize = 256;
const GEN_PROMPTS: usize = 8;
const NEW_TOKENS: usize = 64;

fn main() {
    recipe_runtime::threads::run_on_pool(None, bench).expect("thread pool");
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn bench() {
    let gguf = std::env::var_os("W5_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"));
    if !gguf.is_file() {
        println!("[w5] skipped: {} not found (run scripts/fetch_smollm2.sh)", gguf.display());
        return;
    }
    let gsm8k = repo().join("../shared/data/gsm8k/train.jsonl");
    let steps = env_usize("W5_STEPS", 6) as u64;
    let t0 = Instant::now();
    let model = CausalLm::load(&gguf, &Device::Cpu).expect("the GGUF model loads");
    println!(
        "[w5] model {} ({} parameters) loaded in {:.1} s, {} threads",
        gguf.display(),
        model.num_params(),
        t0.elapsed().as_secs_f64(),
        rayon::current_num_threads()
    );
    let tok = model.tokenizer().clone();
    let template = ChatTemplate::of(&tok).expect("template compiles").expect("the model has a chat template");
    let rows: Vec<Value> = std::fs::read_to_string(&gsm8k)
        .expect("GSM8K train.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON row"))
        .collect();
    let prompt_of = |row: &Value| {
        let question = row["question"].as_str().expect("question").to_owned();
        template.prompt(&[Message { role: "user".into(), content: question }]).expect("template renders")
    };

    // (a) SFT: the peer's rows, in its order, those that fit.
    let wanted = BATCH * (steps as usize + 1);
    let (mut prompts, mut completions) = (Vec::new(), Vec::new());
    for row in rows.iter().take(BATCH * (steps as usize + 2) * 2) {
        let (p, c) = (prompt_of(row), row["answer"].as_str().expect("answer").to_owned());
        if training_positions(&tok, &p, &c).expect("encodes") <= MAX_LEN && prompts.len() < wanted {
            prompts.push(Arc::<str>::from(p));
            completions.push(Arc::<str>::from(c));
        }
    }
    let ids = (1..=prompts.len() as u64).collect();
    let data = Dataset::new(
        "gsm8k/train.jsonl",
        ids,
        vec![("prompt".into(), Column::Str(prompts)), ("completion".into(), Column::Str(completions))],
    )
    .expect("dataset");
    let mut cfg = LoopConfig::new("sft", steps + 1, BATCH, Schedule::constant(1e-5));
    cfg.checkpoint_at_end = false;
    // The rows in file order, one pass, as the peer takes them.
    let curriculum = Box::new(Ordered::new("sft", (0..data.len()).collect()).expect("curriculum"));
    let mut parts = StageParts::offline(curriculum, &data, Box::new(SftObjective::new(&data).expect("objective")));
    let mut optim = AdamW::new(model.params(), cfg.adam).expect("optimiser");
    let scratch = tempfile::tempdir().expect("scratch folder");
    let mut run = RunDir::create_at(&scratch.path().join("run")).expect("run folder");
    let mut ctx = RunContext { run: &mut run, progress: &mut Silent };
    let models = Models { policy: &model, reference: None };
    run_stage(&models, &mut optim, &mut parts, &cfg, &mut [], &mut ctx, None).expect("training");
    let lines = artifact::read_metrics(&scratch.path().join("run")).expect("metrics");
    let number = |line: &Value, path: &[&str]| path.iter().try_fold(line, |v, k| v.get(k)).and_then(Value::as_f64);
    let sft_tps = median(lines[1..].iter().filter_map(|l| number(l, &["timing", "tokens_per_s"])).collect());
    let losses: Vec<String> = lines.iter().filter_map(|l| number(l, &["loss"])).map(|x| format!("{x:.3}")).collect();
    println!("[w5] SFT tokens/s median {sft_tps:.0} (n={}); losses [{}]", lines.len() - 1, losses.join(", "));

    // (b) greedy generation of the last 8 rows' prompts.
    let gen_prompts: Vec<Vec<u32>> =
        rows[rows.len() - GEN_PROMPTS..].iter().map(|r| tok.encode(&prompt_of(r)).expect("encodes")).collect();
    let opts = GenerateOptions { max_new_tokens: NEW_TOKENS, temperature: 0.0, top_p: 1.0, stop_at_eos: false };
    let frozen = model.into_frozen();
    let call = || generate(&frozen, &gen_prompts, &opts, &mut Rng::derive(0, "w5")).expect("generation");
    call();
    let seconds: Vec<f64> = (0..3)
        .map(|_| {
            let t = Instant::now();
            call();
            t.elapsed().as_secs_f64()
        })
        .collect();
    let gen_tps = median(seconds.iter().map(|s| (GEN_PROMPTS * NEW_TOKENS) as f64 / s).collect());
    println!("[w5] greedy {GEN_PROMPTS}x{NEW_TOKENS} tokens/s median {gen_tps:.0}");
    let ours_rss = peak_rss_mib();
    println!("[w5] peak RSS {}", ours_rss.map_or("unavailable".into(), |m| format!("{m:.0} MiB")));

    if std::env::var("W5_PEER").is_ok_and(|v| v == "0") {
        return;
    }
    match peer(&gguf, &gsm8k, steps) {
        Ok((p_sft, p_gen, p_rss)) => {
            println!(
                "[w5] peer SFT tokens/s median {p_sft:.0}; greedy tokens/s median {p_gen:.0}; peak RSS {p_rss:.0} MiB"
            );
            println!("[w5] ratio ours / PyTorch: SFT {:.2}x, generation {:.2}x", sft_tps / p_sft, gen_tps / p_gen);
        }
        Err(e) => println!("[w5] peer not run: {e}"),
    }
}

/// Runs the peer: (SFT tokens/s, generation tokens/s, peak RSS MiB).
fn peer(gguf: &Path, gsm8k: &Path, steps: u64) -> Result<(f64, f64, f64), String> {
    let args =
        ["--gguf", &gguf.display().to_string(), "--gsm8k", &gsm8k.display().to_string(), "--steps", &steps.to_string()]
            .map(String::from);
    let (result, rss) = run_peer("w5_real_model.py", &args)?;
    match (result["sft_tokens_per_s_median"].as_f64(), result["gen_tokens_per_s_median"].as_f64()) {
        (Some(s), Some(g)) => Ok((s, g, rss)),
        _ => Err(format!("unexpected peer output: {result}")),
    }
}
