//! A run's `metrics.jsonl` as curves: one [`Trace`] per (stage run, metric), on the global step
//! TensorBoard plots ([`GlobalStep`]: a run's stages one after another), with the metric families
//! the pages group them by and the direction in which a metric is better.

use crate::tensorboard::GlobalStep;
use serde_json::Value;
use std::collections::BTreeMap;

/// Keys of a metrics line that are bookkeeping, not curves (`timing` varies run to run).
const NOT_PLOTTED: &[&str] = &["stage", "step", "round", "timing", "event"];

/// Count fields an evaluation logs beside the rate it computes from them: `correct` and `total`
/// beside `accuracy` are left out of the curves (the rate says it; `total` is a constant).
const COUNTS_OF_RATE: &[(&str, &[&str])] = &[("accuracy", &["correct", "total"])];

/// One metric of one stage run: `points` are (global step, value), in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Trace {
    /// The stage, with ` round R` for a round of a stage in rounds.
    pub stage: String,
    /// The metric's name: a key of the line, nested keys joined by `.` (`eval.held_acc.accuracy`).
    pub metric: String,
    pub points: Vec<(f64, f64)>,
}

impl Trace {
    /// `STAGE/METRIC`, the name the comparison matches runs' curves by (TensorBoard's tag).
    pub fn tag(&self) -> String {
        format!("{}/{}", self.stage, self.metric)
    }
}

/// The one value of `traces` when they hold two or more points and all of them are that value:
/// a constant (`eval.held_acc.total`), not worth a plot. A metric that is constant within each
/// stage but differs between them (`curriculum/bucket` over rounds) is no constant.
pub fn constant(traces: &[&Trace]) -> Option<f64> {
    let first = traces.first()?.points.first()?.1;
    let points = traces.iter().map(|t| t.points.len()).sum::<usize>();
    (points > 1 && traces.iter().all(|t| t.points.iter().all(|p| p.1 == first))).then_some(first)
}

/// Every curve of a run, in the order its metrics first appear, and where its stages start.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Traces {
    pub traces: Vec<Trace>,
    /// (global step where a stage run starts, its label), for every stage run after the first.
    pub marks: Vec<(f64, String)>,
    /// The stage runs in order, each with its last step (completed optimiser steps).
    pub stages: Vec<(String, u64)>,
}

/// The curves of `metrics` (the lines of `metrics.jsonl`). Event lines are no points of a curve;
/// non-finite values are skipped.
pub fn traces(metrics: &[Value]) -> Traces {
    let mut out = Traces::default();
    let mut index: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut steps = GlobalStep::default();
    for line in metrics {
        let Some(fields) = line.as_object().filter(|f| !f.contains_key("event")) else { continue };
        let x = steps.next(line) as f64;
        let mut stage = fields.get("stage").and_then(Value::as_str).unwrap_or("run").to_string();
        if let Some(round) = fields.get("round").and_then(Value::as_u64) {
            stage = format!("{stage} round {round}");
        }
        let step = fields.get("step").and_then(Value::as_u64).unwrap_or(0);
        match out.stages.last_mut() {
            Some((last, s)) if *last == stage => *s = step,
            _ => {
                if !out.stages.is_empty() {
                    out.marks.push((x - step as f64, stage.clone()));
                }
                out.stages.push((stage.clone(), step));
            }
        }
        let mut points = Vec::new();
        for (key, value) in fields.iter().filter(|(k, _)| !NOT_PLOTTED.contains(&k.as_str())) {
            flatten(key, value, &mut points);
        }
        for (metric, y) in points {
            let i = *index.entry((stage.clone(), metric.clone())).or_insert_with(|| {
                out.traces.push(Trace { stage: stage.clone(), metric, points: Vec::new() });
                out.traces.len() - 1
            });
            out.traces[i].points.push((x, y));
        }
    }
    out
}

/// `traces` with the rounds of a stage in rounds joined into one curve per (stage, metric),
/// labelled with the stage's name: how runs whose stage runs in rounds in one and not in the
/// other (an exclusive `buckets` curriculum against `uniform()`) still share its curves.
pub fn join_rounds(traces: Vec<Trace>) -> Vec<Trace> {
    let mut out: Vec<Trace> = Vec::new();
    for mut t in traces {
        if let Some((stage, _)) = t.stage.split_once(" round ") {
            t.stage = stage.to_string();
        }
        match out.iter_mut().find(|u| u.stage == t.stage && u.metric == t.metric) {
            Some(u) => u.points.extend(t.points),
            None => out.push(t),
        }
    }
    out
}

/// Finite numbers under `key`, nested objects flattened into dotted names, counts beside their
/// rate left out ([`COUNTS_OF_RATE`]).
fn flatten(key: &str, value: &Value, out: &mut Vec<(String, f64)>) {
    match value {
        Value::Object(inner) => {
            let left_out: Vec<&str> = COUNTS_OF_RATE
                .iter()
                .filter(|(rate, _)| inner.contains_key(*rate))
                .flat_map(|(_, counts)| counts.iter().copied())
                .collect();
            for (k, v) in inner.iter().filter(|(k, _)| !left_out.contains(&k.as_str())) {
                flatten(&format!("{key}.{k}"), v, out);
            }
        }
        _ => out.extend(value.as_f64().filter(|y| y.is_finite()).map(|y| (key.to_string(), y))),
    }
}

/// The groups a page shows metrics in, in page order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    Loss,
    Rewards,
    Eval,
    Curriculum,
    Optimiser,
    Other,
}

impl Family {
    /// The family of a metric name.
    pub fn of(metric: &str) -> Family {
        let head = metric.split(['/', '.']).next().unwrap_or(metric);
        match head {
            "loss" => Family::Loss,
            "eval" => Family::Eval,
            "curriculum" => Family::Curriculum,
            "lr" | "grad_norm" | "tokens" => Family::Optimiser,
            h if h.starts_with("reward") || h.starts_with("advantage") => Family::Rewards,
            _ => Family::Other,
        }
    }

    /// The heading of its section.
    pub fn title(self) -> &'static str {
        match self {
            Family::Loss => "Loss terms",
            Family::Rewards => "Rewards",
            Family::Eval => "Evaluations",
            Family::Curriculum => "Curriculum state",
            Family::Optimiser => "Optimisation",
            Family::Other => "Other metrics",
        }
    }
}

/// The panel a metric is drawn in within a run's report: every loss term in one panel, an
/// evaluation's metrics in one panel, a bandit's arm probabilities (`curriculum/p/*`) in one
/// stacked panel, any other metric alone.
pub fn panel_key(metric: &str) -> String {
    match Family::of(metric) {
        Family::Loss => "loss".into(),
        Family::Eval => metric.rsplit_once('.').map_or(metric, |(head, _)| head).to_string(),
        Family::Curriculum if metric.starts_with("curriculum/p/") => "curriculum/p".into(),
        _ => metric.to_string(),
    }
}

/// Which way a metric improves, when its name says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    /// Loss-like (`loss`, `nll`, `perplexity`): best is the minimum.
    Lower,
    /// Accuracy- or reward-like: best is the maximum.
    Higher,
}

impl Better {
    /// From the metric's name: losses lower; accuracies, rewards, margins and pass rates
    /// higher, except the rejected responses' (TRL's `rewards/rejected`, better lower but only
    /// beside `rewards/chosen`); `None` for the rest (`lr`, `grad_norm`, `kl`, `logps/*`).
    pub fn of(metric: &str) -> Option<Better> {
        let leaf = metric.rsplit(['/', '.']).next().unwrap_or(metric);
        let any = |words: &[&str]| words.iter().any(|w| leaf.contains(w) || metric.starts_with(w));
        if leaf.contains("rejected") {
            None
        } else if any(&["loss", "nll", "perplexity"]) {
            Some(Better::Lower)
        } else if any(&["acc", "reward", "margin", "pass", "correct"]) {
            Some(Better::Higher)
        } else {
            None
        }
    }

    /// `min` or `max`, as the pages and JSON say it.
    pub fn word(self) -> &'static str {
        match self {
            Better::Lower => "min",
            Better::Higher => "max",
        }
    }

    /// The best of `values` (NaN-free).
    pub fn best(self, values: impl Iterator<Item = f64>) -> Option<f64> {
        values.reduce(|a, b| match self {
            Better::Lower => a.min(b),
            Better::Higher => a.max(b),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn traces_follow_the_global_step_and_leave_out_counts_beside_their_rate() {
        let lines = vec![
            json!({"event": "skipped_rows", "count": 2}),
            json!({"stage": "sft", "step": 0, "eval": {"held": {"accuracy": 0.1, "correct": 3, "total": 30}}}),
            json!({"stage": "sft", "step": 1, "loss": 2.0, "timing": {"tokens_per_s": 9.0}}),
            json!({"stage": "sft", "step": 2, "loss": 1.0, "eval": {"held": {"accuracy": 0.5, "correct": 15, "total": 30}}}),
            json!({"stage": "dpo", "step": 1, "loss": 0.7, "curriculum/p/1": 0.5}),
            json!({"stage": "dpo", "round": 2, "step": 1, "loss": 0.6}),
        ];
        let t = traces(&lines);
        let names: Vec<String> = t.traces.iter().map(Trace::tag).collect();
        assert_eq!(
            names,
            ["sft/eval.held.accuracy", "sft/loss", "dpo/curriculum/p/1", "dpo/loss", "dpo round 2/loss"],
            "no counts, no timing, no events"
        );
        assert_eq!(t.traces[1].points, [(1.0, 2.0), (2.0, 1.0)]);
        assert_eq!(t.traces[3].points, [(3.0, 0.7)], "dpo's step 1 follows sft's last step 2");
        assert_eq!(t.marks, [(2.0, "dpo".to_string()), (3.0, "dpo round 2".to_string())]);
        assert_eq!(t.stages, [("sft".to_string(), 2), ("dpo".to_string(), 1), ("dpo round 2".to_string(), 1)]);
        let joined = join_rounds(t.traces);
        assert_eq!(
            joined.iter().map(Trace::tag).collect::<Vec<_>>(),
            ["sft/eval.held.accuracy", "sft/loss", "dpo/curriculum/p/1", "dpo/loss"]
        );
        assert_eq!(joined[3].points, [(3.0, 0.7), (4.0, 0.6)]);
    }

    #[test]
    fn families_panels_and_directions() {
        assert_eq!(Family::of("loss/dpo"), Family::Loss);
        assert_eq!(Family::of("rewards/margins"), Family::Rewards);
        assert_eq!(Family::of("eval.held.accuracy"), Family::Eval);
        assert_eq!(Family::of("curriculum/bucket"), Family::Curriculum);
        assert_eq!(Family::of("grad_norm"), Family::Optimiser);
        assert_eq!(Family::of("kl"), Family::Other);
        assert_eq!(panel_key("loss/sft"), "loss");
        assert_eq!(panel_key("eval.held.accuracy"), "eval.held");
        assert_eq!(panel_key("curriculum/p/3"), "curriculum/p");
        assert_eq!(Better::of("eval.val.loss"), Some(Better::Lower));
        assert_eq!(Better::of("eval.held.accuracy"), Some(Better::Higher));
        assert_eq!(Better::of("rewards/margins"), Some(Better::Higher));
        assert_eq!(Better::of("lr"), None);
        assert_eq!(Better::of("rewards/rejected"), None);
        assert_eq!(Better::Lower.best([3.0, 1.0, 2.0].into_iter()), Some(1.0));
        let trace = |ys: &[f64]| Trace {
            stage: "s".into(),
            metric: "m".into(),
            points: ys.iter().enumerate().map(|(i, &y)| (i as f64, y)).collect(),
        };
        let (a, b, c) = (trace(&[3.0, 3.0]), trace(&[3.0]), trace(&[4.0]));
        assert_eq!(constant(&[&a, &b]), Some(3.0));
        assert_eq!(constant(&[&a, &c]), None, "constant in each stage, not across them");
        assert_eq!(constant(&[&b]), None, "one point is no evidence of a constant");
    }
}
