//! W4 benchmark: greedy batched generation as `../shared/peers/w4_generate.py` defines it — the
//! 16 addition prompts of the fixture's `greedy_reference.json` (6 bytes each, no padding), 64
//! new tokens each by argmax with EOS not stopping, KV-cached, on the fixture model
//! (`tiny-llama`) — through `model::generate`, the function `recipe run` uses. tokens/s =
//! 16·64 / the wall time of one whole call; prints the median (and the minimum, steadier on a
//! busy machine) over the repeats after one warm-up, checks the tokens against the reference, and runs the peer (transformers'
//! `model.generate` and its plain KV-cache loop) in the same sitting for the ratio.
//!
//! It also times the RL shape: 8 prompts × a group of 8 = 64 rows, 8 new tokens each, sampled at
//! temperature 1.0 from one stream per row (`generate_streams`, as rollouts draw), EOS not
//! stopping so every call does the same work.
//!
//! Run: `cargo bench -p recipe-runtime --bench w4_generate --profile dev --offline` (env:
//! W4_REPEATS, default 5; W4_THREADS, default all cores; W4_PEER=0 skips the peer; PEER_PYTHON,
//! default /work/peer-venv/bin/python). Peak RSS is ours (VmHWM) and the peer's (its `ru_maxrss`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use recipe_runtime::model::{generate, generate_streams, CausalLm, GenerateOptions};
use recipe_runtime::rng::Rng;
use serde_json::Value;

// The allocator the `recipe` command uses.
mod common;
use common::{env_usize, median, peak_rss_mib, run_peer};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let threads = std::env::var("W4_THREADS").ok().and_then(|v| v.parse().ok());
    recipe_runtime::threads::run_on_pool(threads, bench).expect("thread pool");
}

fn ids(v: &Value) -> Vec<Vec<u32>> {
    let rows = v.as_array().expect("a list of rows");
    rows.iter()
        .map(|r| r.as_array().expect("a row").iter().map(|x| x.as_u64().expect("an id") as u32).collect())
        .collect()
}

/// Seconds of each call after the warm-up, and the last call's output.
fn time_calls(repeats: usize, mut call: impl FnMut() -> Vec<Vec<u32>>) -> (Vec<f64>, Vec<Vec<u32>>) {
    let mut out = call();
    let mut seconds = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let t0 = Instant::now();
        out = call();
        seconds.push(t0.elapsed().as_secs_f64());
    }
    (seconds, out)
}

fn bench() {
    let repeats = env_usize("W4_REPEATS", 5).max(1);
    let fixtures = std::env::var_os("RECIPE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"));
    let model_dir = fixtures.join("tiny-llama");
    let model = CausalLm::load(&model_dir, &Device::Cpu).expect("the fixture model (set RECIPE_FIXTURES)");
    println!(
        "[w4] model {} ({} parameters), {} threads",
        model_dir.display(),
        model.num_params(),
        rayon::current_num_threads()
    );

    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(model_dir.join("greedy_reference.json")).expect("reference"))
            .expect("reference json");
    let prompts = ids(&reference["prompt_ids"]);
    let expected = ids(&reference["new_token_ids"]);
    let new_tokens = expected[0].len();
    let greedy = GenerateOptions { max_new_tokens: new_tokens, temperature: 0.0, top_p: 1.0, stop_at_eos: false };
    let (seconds, got) =
        time_calls(repeats, || generate(&model, &prompts, &greedy, &mut Rng::derive(0, "w4")).expect("generation"));
    assert_eq!(got, expected, "greedy tokens differ from transformers'");
    let tokens = (prompts.len() * new_tokens) as f64;
    let ours = median(seconds.iter().map(|s| tokens / s).collect());
    println!(
        "[w4] greedy {}x{new_tokens}: tokens/s median {ours:.0}; one generation median {:.1} ms, min {:.1} ms (n={repeats}); tokens match the reference",
        prompts.len(),
        median(seconds.clone()) * 1000.0,
        seconds.iter().copied().fold(f64::INFINITY, f64::min) * 1000.0
    );

    // RL shape: each of 8 prompts 8 times, one stream per row.
    let rl_prompts: Vec<Vec<u32>> = prompts.iter().take(8).flat_map(|p| std::iter::repeat_n(p.clone(), 8)).collect();
    let sampled = GenerateOptions { max_new_tokens: 8, temperature: 1.0, top_p: 1.0, stop_at_eos: false };
    let (rl_seconds, _) = time_calls(repeats, || {
        let mut streams: Vec<Rng> = (0..rl_prompts.len()).map(|i| Rng::derive(0, &format!("w4/row{i}"))).collect();
        generate_streams(&model, &rl_prompts, &sampled, &mut streams).expect("sampling")
    });
    let rl_min = rl_seconds.iter().copied().fold(f64::INFINITY, f64::min);
    let rl_s = median(rl_seconds);
    println!(
        "[w4] sampled 64x8 (T=1.0, per-row streams): one batch median {:.1} ms, min {:.1} ms; tokens/s {:.0}",
        rl_s * 1000.0,
        rl_min * 1000.0,
        (rl_prompts.len() * 8) as f64 / rl_s
    );
    match peak_rss_mib() {
        Some(m) => println!("[w4] peak RSS {m:.1} MiB"),
        None => println!("[w4] peak RSS unavailable"),
    }

    if std::env::var("W4_PEER").is_ok_and(|v| v == "0") {
        return;
    }
    match peer(&model_dir, repeats) {
        Ok((peer_tps, plain_tps, peer_rss, contention)) => {
            println!("[w4] peer transformers generate tokens/s median {peer_tps:.0}; plain KV loop {plain_tps:.0}");
            println!(
                "[w4] peer peak RSS {peer_rss:.1} MiB; other processes used {:.0}% of the CPUs",
                contention * 100.0
            );
            println!("[w4] ratio ours / generate {:.2}x; ours / plain loop {:.2}x", ours / peer_tps, ours / plain_tps);
        }
        Err(e) => println!("[w4] peer not run: {e}"),
    }
}

/// Runs the peer from `../shared/peers`: (generate tokens/s, plain-loop tokens/s, peak RSS MiB,
/// the fraction of CPU other processes used meanwhile).
fn peer(model_dir: &Path, repeats: usize) -> Result<(f64, f64, f64, f64), String> {
    let args = ["--model-dir", &model_dir.display().to_string(), "--repeats", &repeats.to_string()].map(String::from);
    let (result, rss) = run_peer("w4_generate.py", &args)?;
    let number = |path: &[&str]| path.iter().try_fold(&result, |v, k| v.get(k)).and_then(Value::as_f64);
    match (
        number(&["generate", "tokens_per_s", "median"]),
        number(&["plain_kv_loop", "tokens_per_s", "median"]),
        number(&["contention", "other_procs_cpu_frac"]),
    ) {
        (Some(g), Some(p), Some(c)) => Ok((g, p, rss, c)),
        _ => Err(format!("unexpected peer output: {result}")),
    }
}
