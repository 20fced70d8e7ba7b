//! Progress callbacks. The runtime does no terminal I/O: the step loop reports through this trait
//! and the `recipe` command renders it (indicatif bars, `--json` lines, or nothing with
//! `--quiet`). Every method has an empty default, so a sink implements only what it shows.

/// Receives progress events from long-running work (stages, evaluation, data loading).
pub trait Progress {
    /// A stage begins; `start_step` is above 0 when it resumes from a checkpoint.
    fn stage_started(&mut self, _stage: &str, _total_steps: u64, _start_step: u64) {}
    /// An optimiser step finished (`step` counts completed steps, 1-based).
    fn step_done(&mut self, _stage: &str, _step: u64, _total_steps: u64, _loss: f64) {}
    /// An evaluation finished with `metrics` (name → value) for evaluator `name`.
    fn evaluated(&mut self, _stage: &str, _step: u64, _name: &str, _metrics: &[(String, f64)]) {}
    /// A checkpoint was written to `path`.
    fn checkpointed(&mut self, _stage: &str, _step: u64, _path: &std::path::Path) {}
    /// The stage ended (normally; errors are returned, not reported here).
    fn stage_finished(&mut self, _stage: &str, _steps: u64) {}
    /// A free-form note worth showing a user (e.g. "skipped 3 malformed rows in data.jsonl").
    fn note(&mut self, _message: &str) {}
}

/// Shows nothing (`--quiet`, tests).
#[derive(Clone, Copy, Debug, Default)]
pub struct Silent;

impl Progress for Silent {}

/// Records events as text lines; for tests and for callers that want a plain log.
#[derive(Clone, Debug, Default)]
pub struct Recorder {
    pub events: Vec<String>,
}

impl Progress for Recorder {
    fn stage_started(&mut self, stage: &str, total_steps: u64, start_step: u64) {
        self.events.push(format!("start {stage} {start_step}/{total_steps}"));
    }
    fn step_done(&mut self, stage: &str, step: u64, total_steps: u64, loss: f64) {
        self.events.push(format!("step {stage} {step}/{total_steps} loss {loss:.4}"));
    }
    fn evaluated(&mut self, stage: &str, step: u64, name: &str, metrics: &[(String, f64)]) {
        let shown: Vec<String> = metrics.iter().map(|(k, v)| format!("{k}={v}")).collect();
        self.events.push(format!("eval {stage} {step} {name} {}", shown.join(" ")));
    }
    fn checkpointed(&mut self, stage: &str, step: u64, path: &std::path::Path) {
        self.events.push(format!("checkpoint {stage} {step} {}", path.display()));
    }
    fn stage_finished(&mut self, stage: &str, steps: u64) {
        self.events.push(format!("finish {stage} {steps}"));
    }
    fn note(&mut self, message: &str) {
        self.events.push(format!("note {message}"));
    }
}
