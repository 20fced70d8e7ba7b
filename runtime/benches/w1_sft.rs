//! W1 benchmark: SFT of the fixture model's configuration (hidden 256, 4 layers, 4 heads,
//! vocab 256) on 2-digit addition, batch 16, completion-only mean NLL, AdamW (lr 1e-3, betas
//! 0.9/0.999, eps 1e-8, no weight decay) with grad-norm clipping at 1.0 — the plain loop of
//! `../shared/peers/w1_sft.py`. Prints tokens/s (real, non-pad tokens; median over the steps
//! after the warm-up, per-step wall time including collation) and peak RSS (VmHWM).
//!
//! Run: `cargo bench -p recipe-runtime --bench w1_sft` (env: W1_STEPS, default 50; W1_WARMUP,
//! default 5). It starts from `tiny-llama` when the fixtures are found (RECIPE_FIXTURES or
//! ../shared/fixtures), else from a seeded random init of the same configuration. The data
//! follow the peer's distribution (a, b uniform in 10..=99) from our seeded stream; Python's
//! Mersenne Twister sequence is not reproduced, so the sums differ but the lengths match in
//! distribution.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::Device;
use recipe_runtime::model::{sft_loss, CausalLm, LlamaConfig, TokenBatch};
use recipe_runtime::optim::{clip_grad_norm, AdamW, AdamWConfig};
use recipe_runtime::rng::Rng;

// The allocator the `recipe` command uses (the system one costs ~1.5x in training steps).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn main() {
    // The thread setup `recipe run` uses.
    recipe_runtime::threads::run_on_pool(None, train).expect("thread pool");
}

fn train() {
    let steps = env_usize("W1_STEPS", 50);
    let warmup = env_usize("W1_WARMUP", 5).min(steps.saturating_sub(1));
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

    let mut data_rng = Rng::derive(0, "w1/data");
    let examples: Vec<(String, String)> = (0..steps * batch)
        .map(|_| {
            let a = data_rng.range_inclusive(10, 99);
            let b = data_rng.range_inclusive(10, 99);
            (format!("{a}+{b}="), format!("{}", a + b))
        })
        .collect();

    let mut opt = AdamW::new(model.params(), AdamWConfig::default()).expect("optimiser");
    let (mut times, mut toks, mut padded, mut losses) = (vec![], vec![], vec![], vec![]);
    // Per-phase wall times (forward incl. collation, backward, clip, optimiser step).
    let mut phases: [Vec<f64>; 4] = Default::default();
    for step in 0..steps {
        let t0 = Instant::now();
        let rows: Vec<(&str, &str)> =
            examples[step * batch..(step + 1) * batch].iter().map(|(p, c)| (p.as_str(), c.as_str())).collect();
        let tb = TokenBatch::collate(model.tokenizer(), &rows, true, &device).expect("collate");
        let loss = sft_loss(&model, &tb).expect("loss");
        let t1 = Instant::now();
        let grads = loss.backward().expect("backward");
        let mut grads = model.take_grads(&grads).expect("grads");
        let t2 = Instant::now();
        clip_grad_norm(&mut grads, 1.0).expect("clip");
        let t3 = Instant::now();
        opt.step(&grads, 1e-3, 0.0).expect("adamw");
        let t4 = Instant::now();
        for (k, (a, b)) in [(t0, t1), (t1, t2), (t2, t3), (t3, t4)].into_iter().enumerate() {
            phases[k].push((b - a).as_secs_f64());
        }
        let loss: f32 = loss.to_scalar().expect("loss value");
        times.push(t0.elapsed().as_secs_f64());
        let (b, t) = tb.dims().expect("dims");
        let real: usize = rows.iter().map(|(p, c)| p.len() + c.len() + 1).sum();
        toks.push(real as f64);
        padded.push((b * t) as f64);
        losses.push(loss);
    }
    let w = warmup;
    let step_ms = median(times[w..].to_vec()) * 1000.0;
    let tps = median(toks[w..].iter().zip(&times[w..]).map(|(n, t)| n / t).collect());
    let ptps = median(padded[w..].iter().zip(&times[w..]).map(|(n, t)| n / t).collect());
    let min_ms = times[w..].iter().copied().fold(f64::INFINITY, f64::min) * 1000.0;
    let max_ms = times[w..].iter().copied().fold(0.0, f64::max) * 1000.0;
    println!("[w1] step time median {step_ms:.2} ms (min {min_ms:.2}, max {max_ms:.2}, n={})", steps - w);
    println!("[w1] tokens/s  median {tps:.0} (real tokens; {:.1}/step)", toks.iter().sum::<f64>() / toks.len() as f64);
    println!("[w1] padded tokens/s median {ptps:.0} ({:.1}/step)", padded.iter().sum::<f64>() / padded.len() as f64);
    let phase = |k: usize| median(phases[k][w..].to_vec()) * 1000.0;
    println!(
        "[w1] phases (median ms): forward {:.2}, backward {:.2}, clip {:.2}, adamw {:.2}",
        phase(0),
        phase(1),
        phase(2),
        phase(3)
    );
    let windows: Vec<String> =
        losses.chunks(10).filter(|c| c.len() == 10).map(|c| format!("{:.3}", c.iter().sum::<f32>() / 10.0)).collect();
    println!("[w1] loss (mean over each 10 steps) [{}]", windows.join(", "));
    match peak_rss_mib() {
        Some(m) => println!("[w1] peak RSS {m:.1} MiB"),
        None => println!("[w1] peak RSS unavailable"),
    }
}
