//! The process's CPU threads: one rayon pool does all parallel work, and the caller's own work
//! runs on it.
//!
//! Two measured reasons (W1 benchmark, `cargo bench -p recipe-runtime --bench w1_sft`):
//! - candle's CPU backend keeps a second pool of workers that spin after each elementwise op;
//!   next to rayon's workers they oversubscribe the cores while the matmuls run. Our kernels
//!   parallelise with rayon, so candle's pool is limited to the calling thread.
//! - A matmul started from a thread outside rayon's pool hands its work over and sleeps; started
//!   on a worker it takes a share itself.

/// Runs `f` on a pool of `threads` workers (all cores when `None`). Call it before the
/// process's first tensor operation: candle reads its thread settings once.
pub fn run_on_pool<R: Send>(
    threads: Option<usize>,
    f: impl FnOnce() -> R + Send,
) -> Result<R, rayon::ThreadPoolBuildError> {
    let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    // candle sizes its matmuls' thread split from this; keep it equal to the pool.
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build()?;
    Ok(pool.install(f))
}
