//! W2 benchmark: DPO (`dpo(beta = 0.1)`, TRL's `sigmoid`) on the fixture model (`tiny-llama`,
//! reference = a frozen copy of its initial weights), batch 16 pairs, addition pairs as
//! `../shared/peers/w2_dpo.py` defines them (prompt `a+b=`, chosen the sum, rejected the sum
//! plus d, d in ±1..10; EOS appended to each response), AdamW lr 1e-3 constant, betas
//! 0.9/0.999, eps 1e-8, no weight decay, clipping at 1.0 — through the stage loop `recipe run`
//! uses (`run_stage` with the preference objective and the stdlib loss), reference
//! log-probabilities included (each row is new, so every step runs the reference once).
//! Prints optimiser steps/s as the median over the steps after the warm-up (each step's wall
//! time, collation and the reference pass included, metrics writing not), and peak RSS.
//!
//! Run: `cargo bench -p recipe-runtime --bench w2_dpo` (env: W2_STEPS, default 50; W2_WARMUP,
//! default 5). The peer: `python ../shared/peers/w2_dpo.py --model-dir
//! ../shared/fixtures/tiny-llama --mode trl`, in the same sitting.

use std::path::PathBuf;
use std::sync::Arc;

use candle_core::Device;
use recipe_compiler::column::Column;
use recipe_runtime::artifact::{self, RunDir};
use recipe_runtime::data::Dataset;
use recipe_runtime::exec::args::Functions;
use recipe_runtime::exec::loss::{compile_loss, LossKind};
use recipe_runtime::model::CausalLm;
use recipe_runtime::optim::AdamW;
use recipe_runtime::progress::Silent;
use recipe_runtime::rng::Rng;
use recipe_runtime::train::preference::{Pairs, PreferenceObjective};
use recipe_runtime::train::{run_stage, LoopConfig, Models, RunContext, Schedule, StageParts, Uniform};

// The allocator the `recipe` command uses.
mod common;
use common::{env_usize, median, peak_rss_mib};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `count` pairs of the peer's distribution from our seeded stream.
fn pairs(count: usize) -> Dataset {
    let mut rng = Rng::derive(0, "w2/pairs");
    let (mut prompt, mut chosen, mut rejected) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..count {
        let (a, b) = (10 + rng.below(90) as i64, 10 + rng.below(90) as i64);
        let d = (1 + rng.below(10) as i64) * if rng.below(2) == 0 { 1 } else { -1 };
        prompt.push(Arc::from(format!("{a}+{b}=")));
        chosen.push(Arc::from((a + b).to_string()));
        rejected.push(Arc::from((a + b + d).to_string()));
    }
    let columns = vec![
        ("prompt".to_string(), Column::Str(prompt)),
        ("chosen".to_string(), Column::Str(chosen)),
        ("rejected".to_string(), Column::Str(rejected)),
    ];
    Dataset::new("w2 pairs", (0..count as u64).collect(), columns).expect("dataset")
}

fn main() {
    recipe_runtime::threads::run_on_pool(None, train).expect("thread pool");
}

fn train() {
    let steps = env_usize("W2_STEPS", 50) as u64;
    let warmup = env_usize("W2_WARMUP", 5).min(steps.saturating_sub(1) as usize);
    let batch = 16;
    let fixture = std::env::var_os("RECIPE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"))
        .join("tiny-llama");
    let policy = CausalLm::load(&fixture, &Device::Cpu).expect("the fixture model (set RECIPE_FIXTURES)");
    let reference = policy.frozen().expect("a frozen reference");
    println!(
        "[w2] model {} ({} parameters), {} threads",
        fixture.display(),
        policy.num_params(),
        rayon::current_num_threads()
    );

    let data = pairs(steps as usize * batch);
    let pairs =
        Arc::new(Pairs::tokenize(&data, policy.tokenizer(), policy.config().max_position_embeddings).expect("pairs"));
    let loss = compile_loss("dpo(beta = 0.1)", &LossKind::Pairs, None).unwrap_or_else(|_| panic!("the loss compiles"));
    let scalars = Functions::numeric(&loss.functions);
    let objective = PreferenceObjective::new("dpo", pairs, loss.terms, scalars).expect("objective");
    let mut cfg = LoopConfig::new("dpo", steps, batch, Schedule::constant(1e-3));
    cfg.checkpoint_at_end = false;
    // One epoch in a fixed order: each step's 16 pairs are new, as in the peer.
    let curriculum = Box::new(Uniform::new("dpo", data.len(), 0).expect("curriculum"));
    let mut parts = StageParts::offline(curriculum, &data, Box::new(objective));
    let mut optim = AdamW::new(policy.params(), cfg.adam).expect("optimiser");
    let scratch = tempfile::tempdir().expect("scratch folder");
    let mut run = RunDir::create_at(&scratch.path().join("run")).expect("run folder");
    let mut ctx = RunContext { run: &mut run, progress: &mut Silent };
    let models = Models { policy: &policy, reference: Some(&reference) };
    run_stage(&models, &mut optim, &mut parts, &cfg, &mut [], &mut ctx, None).expect("training");

    let lines = artifact::read_metrics(&scratch.path().join("run")).expect("metrics");
    let number = |line: &serde_json::Value, path: &[&str]| {
        path.iter().try_fold(line, |v, k| v.get(k)).and_then(|v| v.as_f64()).expect("metrics field")
    };
    let after = &lines[warmup..];
    let step_s =
        median(after.iter().map(|l| number(l, &["tokens"]) / number(l, &["timing", "tokens_per_s"])).collect());
    println!("[w2] step time median {:.2} ms (n={})", step_s * 1000.0, after.len());
    println!("[w2] steps/s  median {:.2}", 1.0 / step_s);
    let losses: Vec<String> = lines.iter().step_by(10).map(|l| format!("{:.4}", number(l, &["loss"]))).collect();
    println!("[w2] loss every 10 steps [{}]", losses.join(", "));
    match peak_rss_mib() {
        Some(m) => println!("[w2] peak RSS {m:.1} MiB"),
        None => println!("[w2] peak RSS unavailable"),
    }
}
