//! W1 benchmark: SFT of the fixture model's configuration (hidden 256, 4 layers, 4 heads,
//! vocab 256) on 2-digit addition, batch 16, completion-only mean NLL, AdamW (lr 1e-3, betas
//! 0.9/0.999, eps 1e-8, no weight decay) with grad-norm clipping at 1.0 — the plain loop of
//! `../shared/peers/w1_sft.py`, run through the stage loop `recipe run` uses (`run_stage` with
//! the SFT objective, on the command's thread setup). Prints real (non-pad) tokens/s as the
//! median over the steps after the warm-up of each step's tokens over its wall time (batch
//! collation included, metrics writing not), and peak RSS (VmHWM).
//!
//! Run: `cargo bench -p recipe-runtime --bench w1_sft` (env: W1_STEPS, default 50; W1_WARMUP,
//! default 5). It starts from `tiny-llama` when the fixtures are found (RECIPE_FIXTURES or
//! ../shared/fixtures), else from a seeded random init of the same configuration. The data
//! follow the peer's distribution (a, b uniform in 10..=99) from our seeded stream; Python's
//! Mersenne Twister sequence is not reproduced, so the sums differ but the lengths match in
//! distribution.

use std::path::PathBuf;

use candle_core::Device;
use recipe_runtime::artifact::{self, RunDir};
use recipe_runtime::data::synth;
use recipe_runtime::model::{CausalLm, LlamaConfig};
use recipe_runtime::optim::AdamW;
use recipe_runtime::progress::Silent;
use recipe_runtime::rng::Rng;
use recipe_runtime::train::{run_stage, LoopConfig, Models, RunContext, Schedule, SftObjective, StageParts, Uniform};

// The allocator the `recipe` command uses (the system one costs ~1.5x in training steps).
mod common;
use common::{env_usize, median, peak_rss_mib};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // The thread setup `recipe run` uses.
    recipe_runtime::threads::run_on_pool(None, train).expect("thread pool");
}

fn train() {
    let steps = env_usize("W1_STEPS", 50) as u64;
    let warmup = env_usize("W1_WARMUP", 5).min(steps.saturating_sub(1) as usize);
    let batch = 16;
    let device = Device::Cpu;
    let fixture = std::env::var_os("RECIPE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"))
        .join("tiny-llama");
    let model = if fixture.join("config.json").is_file() {
        println!("[w1] model: {}", fixture.display());
        CausalLm::load(&fixture, &device).expect("fixture loads")
    } else {
        println!("[w1] model: seeded random init (fixture not found)");
        CausalLm::tiny(LlamaConfig::default(), &mut Rng::derive(0, "w1/init"), &device).expect("tiny init")
    };
    println!("[w1] {} parameters, {} threads", model.num_params(), rayon::current_num_threads());

    // One epoch of exactly `steps` batches.
    let data = synth::addition(2..=2, steps as usize * batch, 0).expect("data");
    let mut loop_cfg = LoopConfig::new("sft", steps, batch, Schedule::constant(1e-3));
    loop_cfg.checkpoint_at_end = false;
    let curriculum = Box::new(Uniform::new("sft", data.len(), 0).expect("curriculum"));
    let objective = Box::new(SftObjective::new(&data).expect("objective"));
    let mut parts = StageParts::offline(curriculum, &data, objective);
    let mut optim = AdamW::new(model.params(), loop_cfg.adam).expect("optimiser");
    let scratch = tempfile::tempdir().expect("scratch folder");
    let mut run = RunDir::create_at(&scratch.path().join("run")).expect("run folder");
    let mut ctx = RunContext { run: &mut run, progress: &mut Silent };
    let models = Models { policy: &model, reference: None };
    run_stage(&models, &mut optim, &mut parts, &loop_cfg, &mut [], &mut ctx, None).expect("training");

    let lines = artifact::read_metrics(&scratch.path().join("run")).expect("metrics");
    let number = |line: &serde_json::Value, path: &[&str]| {
        path.iter().try_fold(line, |v, k| v.get(k)).and_then(|v| v.as_f64()).expect("metrics field")
    };
    let after_warmup = &lines[warmup..];
    let tps = median(after_warmup.iter().map(|l| number(l, &["timing", "tokens_per_s"])).collect());
    let step_ms =
        median(after_warmup.iter().map(|l| number(l, &["tokens"]) / number(l, &["timing", "tokens_per_s"])).collect())
            * 1000.0;
    let tokens = lines.iter().map(|l| number(l, &["tokens"])).sum::<f64>() / lines.len() as f64;
    println!("[w1] step time median {step_ms:.2} ms (n={})", after_warmup.len());
    println!("[w1] tokens/s  median {tps:.0} (real tokens; {tokens:.1}/step)");
    let losses: Vec<f64> = lines.iter().map(|l| number(l, &["loss"])).collect();
    let windows: Vec<String> =
        losses.chunks(10).filter(|c| c.len() == 10).map(|c| format!("{:.3}", c.iter().sum::<f64>() / 10.0)).collect();
    println!("[w1] loss (mean over each 10 steps) [{}]", windows.join(", "));
    match peak_rss_mib() {
        Some(m) => println!("[w1] peak RSS {m:.1} MiB"),
        None => println!("[w1] peak RSS unavailable"),
    }
}
