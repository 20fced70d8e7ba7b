//! `recipe compare RUN...`: prints the comparison the runtime builds (`recipe_runtime::compare`)
//! as a table, or as JSON, and writes its page.

use crate::exit::{self, Failure};
use crate::render;
use recipe_runtime::compare::{self, Arm, CompareError, Comparison};
use std::path::{Path, PathBuf};

/// Reads every path as a run or a group of seed runs. Errors: `Input` (exit 3) for a path that
/// is neither.
pub fn load(paths: &[PathBuf]) -> Result<Vec<Arm>, Failure> {
    paths
        .iter()
        .map(|p| {
            compare::load(p).map_err(|e| match e {
                CompareError::NotARun { .. } => Failure::Input(e.to_string()),
                CompareError::Artifact(a) => Failure::Input(a.to_string()),
            })
        })
        .collect()
}

/// The comparison of `arms`. Errors: `Usage` when `--metric` names no shared metric.
pub fn build(arms: &[Arm], metric: Option<&str>) -> Result<Comparison, Failure> {
    compare::compare(arms, metric).map_err(|e| Failure::Usage(e.to_string()))
}

/// Writes the page to `out`.
pub fn write_html(comparison: &Comparison, out: &Path) -> Result<(), Failure> {
    recipe_runtime::artifact::write_atomic(out, comparison.html().as_bytes())
        .map_err(|e| Failure::Input(format!("cannot write {}: {e}", out.display())))
}

/// `recipe compare`.
pub fn run(paths: &[PathBuf], metric: Option<&str>, out: Option<&Path>, json: bool) -> Result<u8, Failure> {
    // One path is a comparison only when it is a group (a folder of runs, not a run).
    let one_run = paths.first().is_none_or(|p| p.join(recipe_runtime::artifact::LOCK_FILE).is_file());
    if paths.len() < 2 && one_run {
        return Err(Failure::Usage("`recipe compare` needs two or more runs, or a folder of seed runs".into()));
    }
    let arms = load(paths)?;
    let comparison = build(&arms, metric)?;
    if let Some(out) = out {
        write_html(&comparison, out)?;
    }
    if json {
        render::out_line(comparison.to_json());
    } else {
        eprint!("{}", text(&comparison));
        if let Some(out) = out {
            eprintln!("wrote {}", out.display());
        }
    }
    Ok(exit::OK)
}

/// The comparison as terminal text: the lock differences (equal-compute breakers marked `!`),
/// then final and best per metric.
pub fn text(c: &Comparison) -> String {
    let labels: Vec<&str> = c.runs.iter().map(|r| r.label.as_str()).collect();
    let mut out = String::new();
    if c.diff.is_empty() {
        out.push_str("the locks do not differ\n");
    } else {
        out.push_str("differences (! breaks equal compute):\n");
        for e in &c.diff {
            let mark = if e.breaks_equal_compute { "!" } else { " " };
            out.push_str(&format!("{mark} {}: {}\n", e.path, e.values.join(" vs ")));
        }
    }
    if !c.equal_compute.is_empty() {
        out.push_str(&format!("NOT equal compute: {} difference(s) marked !\n", c.equal_compute.len()));
    }
    out.push_str(&format!("\nmetric (final | best) — {}\n", labels.join(" vs ")));
    for m in &c.metrics {
        let cells: Vec<String> = m
            .arms
            .iter()
            .map(|a| match (a.best, m.best_is) {
                (Some(b), Some(word)) => format!("{} | {} ({word})", a.last.text(), b.text()),
                _ => a.last.text(),
            })
            .collect();
        out.push_str(&format!("  {}: {}\n", m.name, cells.join("  vs  ")));
    }
    out
}
