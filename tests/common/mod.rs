//! Helpers the end-to-end tests share: running the `recipe` binary, scratch folders, and reading
//! a run folder's metrics, generated data and TensorBoard events. Each test file uses some.
#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const RECIPE: &str = env!("CARGO_BIN_EXE_recipe");

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn recipe(args: &[&str]) -> Output {
    recipe_in(&root(), args)
}

/// `recipe ARGS` run from the working directory `cwd`.
pub fn recipe_in(cwd: &Path, args: &[&str]) -> Output {
    Command::new(RECIPE).args(args).current_dir(cwd).env("NO_COLOR", "1").output().expect("spawn recipe")
}

pub fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A fresh path in the temp folder, unique to this test binary, process and `name` (not created:
/// a run folder must not exist yet).
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("recipe-{}-{}-{name}", env!("CARGO_CRATE_NAME"), std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The metrics lines without their timing fields.
pub fn trace(run: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).expect("metrics.jsonl");
    text.lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).expect("metrics line is JSON");
            v.as_object_mut().expect("object").remove("timing");
            v
        })
        .collect()
}

/// Asserts that the run's TensorBoard event file holds its version record and then exactly one
/// whole record per metrics line, each the event of that line at its global step (wall times
/// aside): nothing lost, doubled or torn, also after a kill and `--resume`.
pub fn assert_events_mirror_metrics(run: &Path) {
    use recipe_runtime::tensorboard::{scalar_event, scalars, valid_records, GlobalStep, EVENTS_FILE};
    let bytes = std::fs::read(run.join(EVENTS_FILE)).expect("the TensorBoard event file");
    let records = valid_records(&bytes);
    assert_eq!(records.last().map(|r| r.end), Some(bytes.len()), "{}: a torn or corrupt record", run.display());
    let lines = recipe_runtime::artifact::read_metrics(run).expect("metrics.jsonl");
    assert_eq!(records.len(), 1 + lines.len(), "{}: one event per metrics line", run.display());
    let mut steps = GlobalStep::default();
    for (i, (line, r)) in lines.iter().zip(&records[1..]).enumerate() {
        let mut event = bytes[r.start + 12..r.end - 4].to_vec();
        event[1..9].fill(0); // wall_time, the first field
        assert_eq!(event, scalar_event(0.0, steps.next(line), &scalars(line)), "event of metrics line {}", i + 1);
    }
}

/// The rows of `data/NAME.jsonl` in a run folder.
pub fn data_rows(run: &Path, name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(run.join("data").join(format!("{name}.jsonl"))).expect("generated data");
    text.lines().map(|l| serde_json::from_str(l).expect("a data row is JSON")).collect()
}

/// [`scratch`], created: a folder to write files into.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = scratch(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    dir
}

/// A path as the `&str` a command line takes.
pub fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The metrics lines of stage `stage`.
pub fn lines_of(run: &Path, stage: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).expect("metrics.jsonl");
    text.lines().map(|l| serde_json::from_str::<Value>(l).expect("JSON")).filter(|l| l["stage"] == stage).collect()
}
