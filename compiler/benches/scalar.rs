//! Scalar-code benchmark (a bench binary, not a timed test): `cargo bench -p recipe-compiler
//! --bench scalar`. Prints medians and ratios for
//! - a realistic difficulty expression over 10 million rows (`digits: Int`, `carries: Int`,
//!   `prompt: String`, `margin: Float`; branches, log1p/exp/tanh/sigmoid, a string length and
//!   arithmetic): JIT vs interpreter vs a hand-written Rust closure, single-threaded and through
//!   `eval_batch` with rayon;
//! - the time to JIT-compile a module of 50 functions, and the scalar functions of every recipe in
//!   `recipes/` (compiled by the front end).
//!
//! Targets: JIT ≥ 10× the interpreter, within 2× of the closure; compile < 5 ms.
//! Set `SCALAR_BENCH_ROWS` to use fewer rows for a quick look.

use rayon::prelude::*;
use recipe_compiler::ast::BinOp as B;
use recipe_compiler::batch::{eval_batch, Backend, Compiled};
use recipe_compiler::column::Column;
use recipe_compiler::interp::ops;
use recipe_compiler::ir::{self, Expr, Function, Module, Param, Ty};
use recipe_compiler::jit::JitModule;
use std::sync::Arc;
use std::time::{Duration, Instant};

const RUNS: usize = 5;

/// The difficulty measure, as the lowering would produce it from
/// ```text
/// |r| let base = 1.5 * r.digits + 0.75 * r.carries * exp(-0.1 * r.carries);
///     let m = if is_nan(r.margin) { 0.0 } else { clamp(r.margin, -5.0, 5.0) };
///     if r.digits > 3 && r.carries > 0 { base + log1p(len(r.prompt)) - 0.5 * tanh(m) }
///     else { base * sigmoid(-m) + len(r.prompt) / 40 }
/// ```
fn difficulty(m: &mut Module, name: &str) -> Function {
    let bin = |op, a, b| ir::binary(op, a, b).unwrap();
    let digits = Expr::param(0, Ty::Int);
    let carries = Expr::param(1, Ty::Int);
    let prompt = Expr::param(2, Ty::Str);
    let margin = Expr::param(3, Ty::Float);
    let decay = m.call("exp", vec![bin(B::Mul, Expr::float(-0.1), carries.clone())]).unwrap();
    let base = bin(
        B::Add,
        bin(B::Mul, Expr::float(1.5), digits.clone()),
        bin(B::Mul, bin(B::Mul, Expr::float(0.75), carries.clone()), decay),
    );
    let nan = m.call("is_nan", vec![margin.clone()]).unwrap();
    let clamped = m.call("clamp", vec![margin, Expr::float(-5.0), Expr::float(5.0)]).unwrap();
    let mval = Expr::if_(nan, Expr::float(0.0), clamped);
    let (b, mm) = (Expr::local(0, Ty::Float), Expr::local(1, Ty::Float));
    let len = m.call("len", vec![prompt]).unwrap();
    let hard = bin(B::And, bin(B::Gt, digits, Expr::int(3)), bin(B::Gt, carries, Expr::int(0)));
    let then = bin(
        B::Sub,
        bin(B::Add, b.clone(), m.call("log1p", vec![len.clone()]).unwrap()),
        bin(B::Mul, Expr::float(0.5), m.call("tanh", vec![mm.clone()]).unwrap()),
    );
    let neg = ir::unary(recipe_compiler::ast::UnOp::Neg, mm).unwrap();
    let otherwise = bin(B::Add, bin(B::Mul, b, m.call("sigmoid", vec![neg]).unwrap()), bin(B::Div, len, Expr::int(40)));
    let body = Expr::let_(0, base, Expr::let_(1, mval, Expr::if_(hard, then, otherwise)));
    let params = [("digits", Ty::Int), ("carries", Ty::Int), ("prompt", Ty::Str), ("margin", Ty::Float)]
        .iter()
        .map(|(n, t)| Param { name: (*n).into(), ty: *t })
        .collect();
    Function { name: name.into(), params, ret: Ty::Float, body }
}

/// The same measure written by hand in Rust.
fn closure(digits: i64, carries: i64, prompt: &str, margin: f64) -> f64 {
    let base = 1.5 * digits as f64 + 0.75 * carries as f64 * (-0.1 * carries as f64).exp();
    let m = if margin.is_nan() { 0.0 } else { margin.clamp(-5.0, 5.0) };
    let len = prompt.chars().count() as f64;
    if digits > 3 && carries > 0 {
        base + len.ln_1p() - 0.5 * m.tanh()
    } else {
        base * ops::sigmoid(-m) + len / 40.0
    }
}

struct Data {
    digits: Column,
    carries: Column,
    prompt: Column,
    margin: Column,
}

fn data(rows: usize) -> Data {
    // A fixed pseudo-random sequence (splitmix64), so every run sees the same rows.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let prompts: Vec<Arc<str>> =
        (0..4096).map(|i| Arc::from(format!("What is {} + {}? Answer briefly.", i * 37 % 1000, i % 97))).collect();
    let (mut d, mut c, mut p, mut m) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rows {
        let r = next();
        let digits = 1 + (r % 6) as i64;
        d.push(digits);
        c.push(((r >> 8) % (digits as u64 + 1)) as i64);
        p.push(prompts[((r >> 16) % 4096) as usize].clone());
        m.push(if r % 1000 == 0 { f64::NAN } else { ((r >> 32) as f64 / 4.3e9) * 12.0 - 6.0 });
    }
    Data { digits: Column::Int(d), carries: Column::Int(c), prompt: Column::Str(p), margin: Column::Float(m) }
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut out = None;
    let times = (0..runs)
        .map(|_| {
            let start = Instant::now();
            out = Some(std::hint::black_box(f()));
            start.elapsed()
        })
        .collect();
    (median(times), out.unwrap_or_else(|| unreachable!("runs > 0")))
}

fn run_closure(d: &Data, parallel: bool) -> Vec<f64> {
    let (Column::Int(dg), Column::Int(ca), Column::Str(pr), Column::Float(ma)) =
        (&d.digits, &d.carries, &d.prompt, &d.margin)
    else {
        unreachable!("columns built above")
    };
    let row = |i: usize| closure(dg[i], ca[i], &pr[i], ma[i]);
    if parallel {
        (0..dg.len()).into_par_iter().map(row).collect()
    } else {
        (0..dg.len()).map(row).collect()
    }
}

fn floats(c: &Column) -> &[f64] {
    match c {
        Column::Float(v) => v,
        _ => unreachable!("the measure returns Float"),
    }
}

fn per_row(t: Duration, rows: usize) -> f64 {
    t.as_secs_f64() * 1e9 / rows as f64
}

fn main() {
    let rows = std::env::var("SCALAR_BENCH_ROWS").ok().and_then(|s| s.parse().ok()).unwrap_or(10_000_000);
    let threads = rayon::current_num_threads();
    println!("scalar benchmark: {rows} rows, median of {RUNS} runs, {threads} rayon threads");
    let d = data(rows);
    let mut m = Module::new();
    let f = difficulty(&mut m, "difficulty");
    m.push(f);
    let jit = Compiled::new(&m, Backend::Jit).expect("the benchmark module compiles");
    let interp = Compiled::new(&m, Backend::Interp).expect("the benchmark module is valid");
    let cols = [("digits", &d.digits), ("carries", &d.carries), ("prompt", &d.prompt), ("margin", &d.margin)];
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("a thread pool");

    let mut results = Vec::new();
    for parallel in [false, true] {
        let label = if parallel { "parallel" } else { "1 thread" };
        let eval = |p: &Compiled| {
            let f = p.func("difficulty").expect("defined above");
            if parallel {
                eval_batch(f, &cols).expect("columns match")
            } else {
                one.install(|| eval_batch(f, &cols).expect("columns match"))
            }
        };
        let (t_closure, by_hand) = time(RUNS, || run_closure(&d, parallel));
        let (t_jit, by_jit) = time(RUNS, || eval(&jit));
        let (t_interp, by_interp) = time(RUNS, || eval(&interp));
        let same = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same(floats(&by_jit), floats(&by_interp)), "JIT and interpreter disagree");
        let agree = same(floats(&by_jit), &by_hand);
        println!(
            "[{label}] closure {:7.2} ns/row | JIT {:7.2} ns/row | interpreter {:7.2} ns/row",
            per_row(t_closure, rows),
            per_row(t_jit, rows),
            per_row(t_interp, rows),
        );
        let speedup = t_interp.as_secs_f64() / t_jit.as_secs_f64();
        let vs_closure = t_jit.as_secs_f64() / t_closure.as_secs_f64();
        println!(
            "[{label}] JIT is {speedup:.1}x the interpreter (target >= 10x), {vs_closure:.2}x the closure's time (target <= 2x); closure results {}",
            if agree { "bit-identical" } else { "differ (see docs: clamp/NaN)" }
        );
        results.push((speedup, vs_closure));
    }

    // Compile time: 50 functions (variants of the measure), verifier off as in production.
    let mut big = Module::new();
    for i in 0..50 {
        let f = difficulty(&mut big, &format!("f{i}"));
        big.push(f);
    }
    let (t, _) = time(RUNS.max(11), || JitModule::compile(&big).expect("compiles"));
    println!("compile 50 functions: {:.2} ms (target < 5 ms)", t.as_secs_f64() * 1e3);
    recipes();
}

/// JIT-compiles the scalar functions of every recipe in `recipes/`.
fn recipes() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../recipes");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        println!("recipes: {} not found", dir.display());
        return;
    };
    let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    let mut largest = (0, String::new(), Duration::ZERO);
    for path in paths.iter().filter(|p| p.extension().is_some_and(|e| e == "recipe")) {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        let source = recipe_compiler::diag::Source::new(path.display().to_string(), text);
        let program = match recipe_compiler::compile(&source, &[]) {
            Ok(p) => p,
            Err(diags) => {
                println!("recipes: {} does not compile ({} diagnostics)", path.display(), diags.len());
                continue;
            }
        };
        let n = program.scalar.functions.len();
        let (t, _) = time(RUNS.max(11), || JitModule::compile(&program.scalar).expect("lowered IR compiles"));
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        println!("compile {name}: {n} scalar functions in {:.3} ms", t.as_secs_f64() * 1e3);
        if n >= largest.0 {
            largest = (n, name, t);
        }
    }
    println!(
        "largest recipe: {} ({} functions) JIT-compiles in {:.3} ms (target < 5 ms)",
        largest.1,
        largest.0,
        largest.2.as_secs_f64() * 1e3
    );
}
