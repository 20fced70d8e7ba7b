//! Progress for people (indicatif bars on a terminal), for machines (`--json`: one JSON object
//! per event on stdout), or nothing (`--quiet`, or stderr is not a terminal).

use crate::render;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use recipe_runtime::progress::Progress;
use serde_json::json;
use std::io::IsTerminal;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Bars,
    Json,
    Quiet,
}

impl Mode {
    pub fn choose(quiet: bool, json: bool) -> Mode {
        if json {
            Mode::Json
        } else if quiet || !std::io::stderr().is_terminal() {
            Mode::Quiet
        } else {
            Mode::Bars
        }
    }
}

pub struct Reporter {
    mode: Mode,
    bar: Option<ProgressBar>,
}

impl Reporter {
    pub fn new(mode: Mode) -> Reporter {
        Reporter { mode, bar: None }
    }

    fn emit(&self, event: serde_json::Value) {
        if self.mode == Mode::Json {
            render::out_line(event);
        }
    }

    /// A line above the bar (or on stderr without one).
    fn say(&self, text: &str) {
        match (&self.bar, self.mode) {
            (Some(bar), _) => bar.println(text),
            (None, Mode::Bars) => eprintln!("{text}"),
            _ => {}
        }
    }
}

impl Progress for Reporter {
    fn stage_started(&mut self, stage: &str, total_steps: u64, start_step: u64) {
        self.emit(
            json!({"event": "stage_started", "stage": stage, "total_steps": total_steps, "start_step": start_step}),
        );
        if self.mode != Mode::Bars {
            return;
        }
        let bar = ProgressBar::with_draw_target(Some(total_steps), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {msg} ({elapsed} < {eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(stage.to_string());
        bar.set_position(start_step);
        self.bar = Some(bar);
    }

    fn step_done(&mut self, stage: &str, step: u64, total_steps: u64, loss: f64) {
        if let Some(bar) = &self.bar {
            bar.set_position(step);
            bar.set_message(format!("loss {loss:.4}"));
        }
        self.emit(json!({"event": "step", "stage": stage, "step": step, "total_steps": total_steps, "loss": loss}));
    }

    fn evaluated(&mut self, stage: &str, step: u64, name: &str, metrics: &[(String, f64)]) {
        let shown: Vec<String> = metrics.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
        self.say(&format!("{stage:>10} step {step}: {name}: {}", shown.join(", ")));
        let metrics: serde_json::Map<_, _> = metrics.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        self.emit(json!({"event": "eval", "stage": stage, "step": step, "name": name, "metrics": metrics}));
    }

    fn checkpointed(&mut self, stage: &str, step: u64, path: &Path) {
        self.emit(json!({"event": "checkpoint", "stage": stage, "step": step, "path": path}));
    }

    fn stage_finished(&mut self, stage: &str, steps: u64) {
        if let Some(bar) = self.bar.take() {
            bar.finish();
        }
        self.emit(json!({"event": "stage_finished", "stage": stage, "steps": steps}));
    }

    fn note(&mut self, message: &str) {
        self.say(message);
        self.emit(json!({"event": "note", "message": message}));
    }
}
