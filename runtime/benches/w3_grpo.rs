//! W3 benchmark: GRPO-family RL on the fixture model (`tiny-llama`) as
//! `../shared/peers/w3_grpo.py` defines a step: 2 prompts × 8 completions (TRL's
//! `num_generations`), sampled at temperature 1 up to 8 tokens or EOS, the reward 1 when the
//! digits of the completion equal the sum, TRL's defaults otherwise (`loss = dapo()`, no KL and
//! no reference, `group_relative(scale = group)`, one iteration), AdamW lr 1e-3 constant, clip
//! 1.0 — through the stage loop `recipe run` uses (`run_stage` with the rollout source and the
//! RL objective). Prints optimiser steps/s as the median over the steps after the warm-up (each
//! step's wall time: sampling, reward, forward, backward and AdamW), the share of it spent
//! sampling, and peak RSS.
//!
//! Run: `cargo bench -p recipe-runtime --bench w3_grpo --profile dev --offline` (env: W3_STEPS,
//! default 10; W3_WARMUP, default 2 — the peer's). The peer, in the same sitting:
//! `python ../shared/peers/w3_grpo.py --model-dir ../shared/fixtures/tiny-llama`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;
use recipe_runtime::artifact::{self, RunDir};
use recipe_runtime::exec::args::Functions;
use recipe_runtime::exec::loss::{compile_loss, LossKind};
use recipe_runtime::model::{CausalLm, GenerateOptions};
use recipe_runtime::optim::AdamW;
use recipe_runtime::progress::Silent;
use recipe_runtime::rng::Rng;
use recipe_runtime::train::rl::advantages::AdvantageFn;
use recipe_runtime::train::rl::rollouts::{RewardFn, RewardQuery, RolloutSettings, RolloutSource};
use recipe_runtime::train::{run_stage, LoopConfig, Models, RlObjective, RunContext, Schedule, StageParts, Uniform};

mod common;
use common::{env_usize, median, peak_rss_mib};

// The allocator the `recipe` command uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const GROUP: usize = 8;
const PROMPTS: usize = 2;

fn main() {
    recipe_runtime::threads::run_on_pool(None, train).expect("thread pool");
}

fn train() {
    let steps = env_usize("W3_STEPS", 10) as u64;
    let warmup = env_usize("W3_WARMUP", 2).min(steps.saturating_sub(1) as usize);
    let fixture = std::env::var_os("RECIPE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"))
        .join("tiny-llama");
    let policy = CausalLm::load(&fixture, &Device::Cpu).expect("the fixture model (set RECIPE_FIXTURES)");
    println!(
        "[w3] model {} ({} parameters), {} threads",
        fixture.display(),
        policy.num_params(),
        rayon::current_num_threads()
    );

    // The peer's prompts: 2-digit additions.
    let mut rng = Rng::derive(0, "w3/prompts");
    let sums: Vec<(String, i64)> = (0..steps as usize * PROMPTS)
        .map(|_| {
            let (a, b) = (10 + rng.below(90) as i64, 10 + rng.below(90) as i64);
            (format!("{a}+{b}="), a + b)
        })
        .collect();
    let prompts: Vec<Vec<u32>> = sums.iter().map(|(p, _)| policy.tokenizer().encode(p).expect("encodes")).collect();
    let answers: Arc<Vec<i64>> = Arc::new(sums.iter().map(|s| s.1).collect());
    // The peer's reward: the digits of the text before the first newline equal the sum.
    let reward: RewardFn = Arc::new(move |q: &RewardQuery<'_>| {
        Ok(q.rows
            .iter()
            .zip(q.completions)
            .map(|(&row, text)| {
                let first = text.split('\n').next().unwrap_or("");
                let digits: String = first.chars().filter(char::is_ascii_digit).collect();
                f64::from(u8::from(digits == answers[row].to_string()))
            })
            .collect())
    });
    let kind = LossKind::Rollouts { advantages: "group_relative()".into() };
    let loss = compile_loss("dapo()", &kind, None).unwrap_or_else(|_| panic!("the loss compiles"));
    let scalars = Functions::numeric(&loss.functions);
    let advantages =
        AdvantageFn::new(loss.advantages.clone().expect("an estimator"), scalars.clone()).expect("estimator");
    let settings = RolloutSettings {
        group: GROUP,
        iterations: 1,
        sampling: GenerateOptions { max_new_tokens: 8, temperature: 1.0, top_p: 1.0, stop_at_eos: true },
    };
    let ids = (0..prompts.len() as u64).collect();
    let source = RolloutSource::new("rl", "stage/rl".into(), 0, Arc::new(prompts), ids, settings, reward, advantages);
    let objective = RlObjective::new("rl", loss.terms, scalars, 8, false).expect("objective");
    let mut cfg = LoopConfig::new("rl", steps, PROMPTS, Schedule::constant(1e-3));
    cfg.checkpoint_at_end = false;
    let curriculum = Box::new(Uniform::new("rl", sums.len(), 0).expect("curriculum"));
    let mut parts = StageParts { curriculum, experience: Box::new(source), objective: Box::new(objective) };
    let mut optim = AdamW::new(policy.params(), cfg.adam).expect("optimiser");
    let scratch = tempfile::tempdir().expect("scratch folder");
    let mut run = RunDir::create_at(&scratch.path().join("run")).expect("run folder");
    let mut ctx = RunContext { run: &mut run, progress: &mut Silent };
    let models = Models { policy: &policy, reference: None };
    run_stage(&models, &mut optim, &mut parts, &cfg, &mut [], &mut ctx, None).expect("training");

    let lines = artifact::read_metrics(&scratch.path().join("run")).expect("metrics");
    let number = |line: &serde_json::Value, path: &[&str]| {
        path.iter().try_fold(line, |v, k| v.get(k)).and_then(|v| v.as_f64()).expect("metrics field")
    };
    let after = &lines[warmup..];
    let step_s =
        median(after.iter().map(|l| number(l, &["tokens"]) / number(l, &["timing", "tokens_per_s"])).collect());
    println!("[w3] step time median {:.2} ms (n={})", step_s * 1000.0, after.len());
    println!("[w3] steps/s  median {:.2}", 1.0 / step_s);

    // Sampling alone, the same shape: 16 rows × 8 tokens at temperature 1.
    let shape: Vec<Vec<u32>> =
        (0..PROMPTS * GROUP).map(|i| policy.tokenizer().encode(&sums[i / GROUP].0).unwrap()).collect();
    let opts = GenerateOptions { max_new_tokens: 8, temperature: 1.0, top_p: 1.0, stop_at_eos: true };
    let times: Vec<f64> = (0..10)
        .map(|k| {
            let mut streams: Vec<Rng> = (0..shape.len()).map(|i| Rng::derive(k, &format!("w3/{i}"))).collect();
            let t = Instant::now();
            recipe_runtime::model::generate_streams(&policy, &shape, &opts, &mut streams).expect("samples");
            t.elapsed().as_secs_f64()
        })
        .collect();
    let sampling = median(times[2..].to_vec());
    println!(
        "[w3] sampling 16 x 8 tokens median {:.2} ms ({:.0}% of a step)",
        sampling * 1000.0,
        100.0 * sampling / step_s
    );
    let rewards: Vec<String> = lines.iter().map(|l| format!("{:.3}", number(l, &["reward"]))).collect();
    println!("[w3] reward per step [{}]", rewards.join(", "));
    match peak_rss_mib() {
        Some(m) => println!("[w3] peak RSS {m:.1} MiB"),
        None => println!("[w3] peak RSS unavailable"),
    }
}
