//! `recipe compare`: runs and groups of runs (a folder of seed runs, as `recipe run --seeds`
//! writes) side by side — every shared metric's curves overlaid (a group: its mean with a min–max
//! band), final and best values (a group: mean ± std over its runs, and n), and the semantic
//! difference of their locks ([`diff`]), differences that break equal compute flagged.
//!
//! The runtime reads the folders and builds the comparison, its JSON and its page; the command
//! prints.

pub mod diff;

use crate::artifact::{self, ArtifactError, RecipeLock};
use crate::report::page::{self, escape, short, Line, Panel, Section};
use crate::report::series::{self, Better, Family, Trace};
use diff::DiffEntry;
use serde::Serialize;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// One run folder, read.
#[derive(Clone, Debug)]
pub struct Run {
    pub dir: PathBuf,
    pub lock: RecipeLock,
    /// Its curves, a stage's rounds joined ([`series::join_rounds`]).
    pub traces: Vec<Trace>,
    /// Optimiser steps each stage took, as its metrics lines say (its rounds' summed).
    pub steps: Vec<(String, u64)>,
}

/// What `compare` puts side by side: one run, or a group of runs of one recipe over seeds.
#[derive(Clone, Debug)]
pub struct Arm {
    /// The path as given.
    pub label: String,
    pub runs: Vec<Run>,
}

/// Why a path cannot be compared.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("`{}` is not a run folder ({why})", path.display())]
    NotARun { path: PathBuf, why: &'static str },
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
}

/// The run in `path` (it has a `recipe.lock`), or the group of the runs in its sub-folders.
/// Errors: `NotARun` for a missing folder or one with neither; `Artifact` for an unreadable lock
/// or metrics file.
pub fn load(path: &Path) -> Result<Arm, CompareError> {
    let label = path.display().to_string();
    if path.join(artifact::LOCK_FILE).is_file() {
        return Ok(Arm { label, runs: vec![read_run(path)?] });
    }
    if !path.is_dir() {
        return Err(CompareError::NotARun { path: path.into(), why: "no such folder" });
    }
    let entries = std::fs::read_dir(path).map_err(|source| ArtifactError::Io { path: path.into(), source })?;
    let mut dirs: Vec<PathBuf> =
        entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.join(artifact::LOCK_FILE).is_file()).collect();
    if dirs.is_empty() {
        return Err(CompareError::NotARun {
            path: path.into(),
            why: "it has no recipe.lock, nor sub-folders with one",
        });
    }
    dirs.sort();
    let mut runs = dirs.iter().map(|d| read_run(d)).collect::<Result<Vec<_>, _>>()?;
    runs.sort_by_key(|r| r.lock.seed);
    Ok(Arm { label, runs })
}

fn read_run(dir: &Path) -> Result<Run, CompareError> {
    let lock = artifact::read_lock(dir)?;
    let all = series::traces(&artifact::read_metrics(dir)?);
    let mut steps: Vec<(String, u64)> = Vec::new();
    for (stage, n) in &all.stages {
        let stage = stage.split_once(" round ").map_or(stage.as_str(), |(s, _)| s);
        match steps.iter_mut().find(|(s, _)| s == stage) {
            Some((_, total)) => *total += n,
            None => steps.push((stage.to_string(), *n)),
        }
    }
    Ok(Run { dir: dir.to_path_buf(), lock, traces: series::join_rounds(all.traces), steps })
}

/// Mean, sample standard deviation and count of a metric's final or best values over a group.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Stat {
    pub mean: f64,
    pub std: f64,
    pub n: usize,
}

impl Stat {
    fn of(values: &[f64]) -> Stat {
        let n = values.len();
        let mean = values.iter().sum::<f64>() / n as f64;
        // Equal values have no spread (the mean's rounding would show one).
        let equal = values.iter().all(|v| *v == values[0]);
        let var =
            if n > 1 && !equal { values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64 } else { 0.0 };
        Stat { mean, std: var.sqrt(), n }
    }

    /// `0.512 ± 0.031 (n = 3)`, or the value alone for one run.
    pub fn text(&self) -> String {
        if self.n > 1 {
            format!("{} ± {} (n = {})", short(self.mean), short(self.std), self.n)
        } else {
            short(self.mean)
        }
    }
}

/// One shared metric: per arm, its final value and (when the metric has a direction) its best.
#[derive(Clone, Debug, Serialize)]
pub struct MetricRow {
    /// `STAGE/METRIC` (`sft/eval.held_acc.accuracy`).
    pub name: String,
    /// `min` or `max`: what "best" means for it; absent when the name gives no direction.
    pub best_is: Option<&'static str>,
    pub arms: Vec<MetricStat>,
}

#[derive(Clone, Debug, Serialize)]
pub struct MetricStat {
    #[serde(rename = "final")]
    pub last: Stat,
    pub best: Option<Stat>,
}

/// The comparison of some arms.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub runs: Vec<ArmInfo>,
    pub metrics: Vec<MetricRow>,
    pub diff: Vec<DiffEntry>,
    /// The diff entries that break equal compute; empty when the arms spent equal compute.
    pub equal_compute: Vec<DiffEntry>,
    #[serde(skip)]
    panels: Vec<Panel>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ArmInfo {
    pub label: String,
    pub runs: Vec<PathBuf>,
    pub seeds: Vec<u64>,
}

/// Errors: `NoSuchMetric` when `metric` names no metric every arm has.
#[derive(Debug, thiserror::Error)]
#[error("no metric every run has is named `{metric}`; shared metrics: {shared}")]
pub struct NoSuchMetric {
    pub metric: String,
    pub shared: String,
}

/// Compares `arms`: every metric all their runs have (`STAGE/METRIC` tags), or those `metric`
/// names (a tag, or a metric name in any stage).
pub fn compare(arms: &[Arm], metric: Option<&str>) -> Result<Comparison, NoSuchMetric> {
    let first = arms.first().and_then(|a| a.runs.first()).map_or(&[][..], |r| &r.traces[..]);
    let shared: Vec<&Trace> = first
        .iter()
        .filter(|t| arms.iter().flat_map(|a| &a.runs).all(|r| r.traces.iter().any(|u| u.tag() == t.tag())))
        .collect();
    let chosen: Vec<&Trace> = match metric {
        None => shared.clone(),
        Some(m) => shared.iter().copied().filter(|t| t.tag() == m || t.metric == m).collect(),
    };
    if let (Some(m), true) = (metric, chosen.is_empty()) {
        let names: Vec<String> = shared.iter().map(|t| t.tag()).collect();
        return Err(NoSuchMetric { metric: m.into(), shared: names.join(", ") });
    }
    let mut metrics = Vec::new();
    let mut panels = Vec::new();
    for t in &chosen {
        let tag = t.tag();
        let better = Better::of(&t.metric);
        // A metric constant and equal in every run says nothing about the difference.
        let all: Vec<&Trace> = arms.iter().flat_map(|a| curves(a, &tag)).collect();
        let constant = series::constant(&all).is_some();
        let stats = arms
            .iter()
            .map(|a| {
                let members = curves(a, &tag);
                let last: Vec<f64> = members.iter().filter_map(|u| u.points.last().map(|p| p.1)).collect();
                let best: Option<Vec<f64>> =
                    better.map(|b| members.iter().filter_map(|u| b.best(u.points.iter().map(|p| p.1))).collect());
                MetricStat { last: Stat::of(&last), best: best.map(|b| Stat::of(&b)) }
            })
            .collect();
        metrics.push(MetricRow { name: tag.clone(), best_is: better.map(Better::word), arms: stats });
        if !constant || metric.is_some() {
            let series = arms.iter().map(|a| band(&a.label, &curves(a, &tag))).collect();
            let log = Family::of(&t.metric) == Family::Loss;
            let smooth = Family::of(&t.metric) != Family::Eval;
            let ylabel = t.metric.clone();
            panels.push(Panel { title: tag, ylabel, log, stacked: false, smooth, series, marks: Vec::new() });
        }
    }
    // The steps each stage took are compared beside the locks: they can differ where the locks'
    // settings agree (`--max-steps` caps each round of a stage in rounds).
    let flat = |r: &Run| {
        let mut flat = diff::flatten(&r.lock);
        flat.extend(r.steps.iter().map(|(stage, n)| (format!("{}{stage}", diff::STEPS_TAKEN), n.to_string())));
        flat
    };
    let locks: Vec<Vec<Vec<(String, String)>>> = arms.iter().map(|a| a.runs.iter().map(flat).collect()).collect();
    let entries = diff::diff(&locks);
    Ok(Comparison {
        runs: arms
            .iter()
            .map(|a| ArmInfo {
                label: a.label.clone(),
                runs: a.runs.iter().map(|r| r.dir.clone()).collect(),
                seeds: a.runs.iter().map(|r| r.lock.seed).collect(),
            })
            .collect(),
        metrics,
        equal_compute: entries.iter().filter(|e| e.breaks_equal_compute).cloned().collect(),
        diff: entries,
        panels,
    })
}

/// Each run's curve `tag` in `arm`.
fn curves<'a>(arm: &'a Arm, tag: &str) -> Vec<&'a Trace> {
    arm.runs.iter().filter_map(|r| r.traces.iter().find(|t| t.tag() == tag)).collect()
}

/// A run's curve, or a group's mean with its min–max band at the steps every member logged.
fn band(label: &str, members: &[&Trace]) -> Line {
    if members.len() == 1 {
        return Line { name: label.into(), points: members[0].points.clone(), band: Vec::new() };
    }
    let mut points = Vec::new();
    let mut band = Vec::new();
    for &(x, _) in &members[0].points {
        let ys: Vec<f64> = members.iter().filter_map(|m| m.points.iter().find(|p| p.0 == x).map(|p| p.1)).collect();
        if ys.len() == members.len() {
            points.push((x, ys.iter().sum::<f64>() / ys.len() as f64));
            band.push((
                x,
                ys.iter().copied().fold(f64::INFINITY, f64::min),
                ys.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            ));
        }
    }
    Line { name: format!("{label} (mean of {}, min–max band)", members.len()), points, band }
}

impl Comparison {
    /// The comparison as the JSON `recipe compare --json` prints.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The self-contained `compare.html`.
    pub fn html(&self) -> String {
        let labels: Vec<&str> = self.runs.iter().map(|r| r.label.as_str()).collect();
        let mut head = String::new();
        let runs: Vec<Vec<String>> = self
            .runs
            .iter()
            .map(|r| {
                let seeds: Vec<String> = r.seeds.iter().map(u64::to_string).collect();
                vec![format!("<code>{}</code>", escape(&r.label)), r.runs.len().to_string(), seeds.join(", ")]
            })
            .collect();
        head.push_str(&page::table(&["run or group", "runs", "seeds"], &runs));
        head.push_str("<h2>Differences between the locks</h2>");
        if self.equal_compute.is_empty() {
            head.push_str(
                "<p>Equal compute: no difference in steps, batch, generated tokens or optimiser settings.</p>",
            );
        } else {
            head.push_str("<p class=\"bad\">Not equal compute: the rows in red differ in steps, batch, generated tokens or optimiser settings.</p>");
        }
        let mut header = vec!["what"];
        header.extend(&labels);
        let rows: Vec<Vec<String>> = self
            .diff
            .iter()
            .map(|e| {
                let class = if e.breaks_equal_compute { " class=\"bad\"" } else { "" };
                let mut row = vec![format!("<span{class}>{}</span>", escape(&e.path))];
                row.extend(e.values.iter().map(|v| format!("<code{class}>{}</code>", escape(v))));
                row
            })
            .collect();
        head.push_str(&if rows.is_empty() {
            "<p>The locks do not differ.</p>".into()
        } else {
            page::table(&header, &rows)
        });
        head.push_str("<h2>Final and best</h2><p class=\"note\">best: the minimum for losses, the maximum for accuracies and rewards; a group shows mean ± std over its runs and n.</p>");
        let mut table_header: Vec<String> = vec!["metric".into()];
        for l in &labels {
            table_header.push(format!("{l}: final"));
            table_header.push(format!("{l}: best"));
        }
        let rows: Vec<Vec<String>> = self
            .metrics
            .iter()
            .map(|m| {
                let mut row = vec![format!("<code>{}</code>", escape(&m.name))];
                for a in &m.arms {
                    row.push(a.last.text());
                    row.push(a.best.map_or("—".into(), |b| format!("{} ({})", b.text(), m.best_is.unwrap_or(""))));
                }
                row
            })
            .collect();
        let table_header: Vec<&str> = table_header.iter().map(String::as_str).collect();
        head.push_str(&page::table(&table_header, &rows));
        let mut sections: Vec<Section> = Vec::new();
        for family in
            [Family::Loss, Family::Rewards, Family::Eval, Family::Curriculum, Family::Optimiser, Family::Other]
        {
            let panels = self.panels.iter().filter(|p| Family::of(&p.ylabel) == family).cloned().collect();
            sections.push(Section { title: family.title().into(), panels, note: String::new() });
        }
        page::render(&format!("compare: {}", labels.join(" vs ")), &head, &sections)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_is_its_mean_with_a_min_max_band_and_mean_std_n() {
        let trace = |ys: &[f64]| Trace {
            stage: "sft".into(),
            metric: "loss".into(),
            points: ys.iter().enumerate().map(|(i, &y)| (i as f64, y)).collect(),
        };
        let (a, b) = (trace(&[3.0, 1.0]), trace(&[5.0, 2.0, 1.0]));
        let line = band("g", &[&a, &b]);
        assert_eq!(line.points, [(0.0, 4.0), (1.0, 1.5)], "only the steps every member logged");
        assert_eq!(line.band, [(0.0, 3.0, 5.0), (1.0, 1.0, 2.0)]);
        let s = Stat::of(&[1.0, 2.0, 3.0]);
        assert_eq!((s.mean, s.std, s.n), (2.0, 1.0, 3));
        assert_eq!(s.text(), "2 ± 1 (n = 3)");
        assert_eq!(Stat::of(&[0.5]).text(), "0.5");
    }

    #[test]
    fn the_steps_a_stage_took_break_equal_compute_where_the_locks_agree() {
        let arm = |label: &str, steps: u64| Arm {
            label: label.into(),
            runs: vec![Run {
                dir: label.into(),
                lock: RecipeLock::new(String::new(), serde_json::json!({}), 1, vec![], "cpu".into()),
                traces: vec![Trace { stage: "dpo".into(), metric: "loss".into(), points: vec![(1.0, 0.5)] }],
                steps: vec![("dpo".into(), steps)],
            }],
        };
        let c = compare(&[arm("method", 120), arm("control", 40)], None).unwrap();
        assert_eq!(c.diff.len(), 1);
        assert_eq!(c.equal_compute[0].path, "steps taken: stage dpo");
        assert_eq!(c.equal_compute[0].values, ["120", "40"]);
        assert!(compare(&[arm("a", 40), arm("b", 40)], None).unwrap().equal_compute.is_empty());
        assert!(compare(&[arm("a", 40), arm("b", 40)], Some("nope")).is_err());
    }
}
