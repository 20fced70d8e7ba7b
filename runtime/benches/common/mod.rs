//! What the W-benches share: environment knobs, medians, peak memory and running a peer.

/// `name` from the environment as a count, else `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The median (NaN for none).
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    match xs.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

/// The process's peak resident set (VmHWM), MiB.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Runs the peer script `script` of `../shared/peers` with `args` and `--out FILE` under the
/// peer venv (PEER_PYTHON, default /work/peer-venv/bin/python), in the same process that reports
/// its own peak RSS: (the JSON it wrote, its peak RSS in MiB).
///
/// Errors: the script cannot start, fails, or writes no JSON (a message with its stderr).
#[allow(dead_code)] // not every bench runs a peer itself
pub fn run_peer(script: &str, args: &[String]) -> Result<(serde_json::Value, f64), String> {
    let python = std::env::var("PEER_PYTHON").unwrap_or_else(|_| "/work/peer-venv/bin/python".into());
    let peers = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/peers");
    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
    let out = scratch.path().join("peer.json");
    let mut argv = vec![script.to_string()];
    argv.extend(args.iter().cloned());
    argv.extend(["--out".to_string(), out.display().to_string()]);
    // The script under runpy, so the same process reports its own peak RSS (Linux: KiB).
    let program = format!(
        "import sys, runpy, resource\nsys.argv = {argv:?}\nrunpy.run_path({script:?}, run_name='__main__')\n\
         print('peer-maxrss-kib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    );
    let run = std::process::Command::new(&python)
        .arg("-c")
        .arg(program)
        .current_dir(&peers)
        .output()
        .map_err(|e| format!("{python}: {e}"))?;
    let stdout = String::from_utf8_lossy(&run.stdout);
    if !run.status.success() {
        return Err(format!("{python} failed: {}", String::from_utf8_lossy(&run.stderr)));
    }
    let result = std::fs::read_to_string(&out).map_err(|e| e.to_string())?;
    let result = serde_json::from_str(&result).map_err(|e| e.to_string())?;
    let rss_kib =
        stdout.lines().find_map(|l| l.strip_prefix("peer-maxrss-kib ")).and_then(|v| v.trim().parse::<f64>().ok());
    rss_kib.map(|k| (result, k / 1024.0)).ok_or_else(|| format!("no peak RSS in the peer's output: {stdout}"))
}
