//! The run report, `report.html`: a summary of the run (stages, steps, wall time, tokens/s, final
//! and best metrics, whether it finished) above one panel per metric family — loss terms on a log
//! scale, rewards, evaluations, curriculum state (arm probabilities as stacked areas),
//! optimisation — with stage boundaries marked, TensorBoard's EMA smoothing and hover values.
//! Constants and counts beside their rate are listed, not plotted.
//!
//! Invariant: the report is derived from `metrics.jsonl` and `recipe.lock` alone, so
//! `recipe report RUN` can rebuild it for any run folder, including one that stopped early.
//! `page` draws it and `compare.html` alike; `series` reads the curves both plot.

pub mod page;
pub mod series;

use crate::artifact::RecipeLock;
use page::{escape, short, Line, Panel, Section};
use serde_json::Value;
use series::{panel_key, Better, Family, Trace};
use std::collections::BTreeMap;

/// The report of a run: its `metrics.jsonl` lines and, when readable, its lock.
pub fn render(title: &str, lock: Option<&RecipeLock>, metrics: &[Value]) -> String {
    let all = series::traces(metrics);
    // Metrics whose every point, in every stage, is one value are listed, not plotted.
    let mut constants: Vec<(&str, f64)> = Vec::new();
    for t in &all.traces {
        let same: Vec<&Trace> = all.traces.iter().filter(|u| u.metric == t.metric).collect();
        if let Some(v) = series::constant(&same).filter(|_| !constants.iter().any(|(m, _)| *m == t.metric)) {
            constants.push((&t.metric, v));
        }
    }
    let traces: Vec<&Trace> = all.traces.iter().filter(|t| !constants.iter().any(|(m, _)| *m == t.metric)).collect();
    let mut head = summary(lock, metrics, &all.stages);
    head.push_str(&metrics_table(&traces));
    let multi_stage = all.stages.len() > 1;
    let mut sections = Vec::new();
    for family in [Family::Loss, Family::Rewards, Family::Eval, Family::Curriculum, Family::Optimiser, Family::Other] {
        // Panels in the order their first metric appears.
        let mut panels: Vec<(String, Vec<&Trace>)> = Vec::new();
        for t in traces.iter().filter(|t| Family::of(&t.metric) == family) {
            let key = panel_key(&t.metric);
            match panels.iter_mut().find(|(k, _)| *k == key) {
                Some((_, members)) => members.push(t),
                None => panels.push((key, vec![t])),
            }
        }
        let panels = panels.into_iter().map(|(key, members)| panel(&key, &members, multi_stage, &all.marks)).collect();
        let left_out: Vec<String> = constants
            .iter()
            .filter(|(m, _)| Family::of(m) == family)
            .map(|(m, v)| format!("<code>{}</code> = {}", escape(m), short(*v)))
            .collect();
        let note =
            if left_out.is_empty() { String::new() } else { format!("Constant, not plotted: {}", left_out.join(", ")) };
        sections.push(Section { title: family.title().into(), panels, note });
    }
    page::render(title, &head, &sections)
}

fn panel(key: &str, members: &[&Trace], multi_stage: bool, marks: &[(f64, String)]) -> Panel {
    let family = Family::of(key);
    let many_metrics = members.iter().any(|t| t.metric != members[0].metric);
    let series = members
        .iter()
        .map(|t| {
            let mut name = if many_metrics {
                t.metric.rsplit(['.']).next().unwrap_or(&t.metric).to_string()
            } else {
                String::new()
            };
            if family == Family::Loss || key == "curriculum/p" {
                name = t.metric.clone();
            }
            if multi_stage {
                name = if name.is_empty() { t.stage.clone() } else { format!("{name} · {}", t.stage) };
            }
            if name.is_empty() {
                name = t.metric.clone();
            }
            Line { name, points: t.points.clone(), band: Vec::new() }
        })
        .collect();
    Panel {
        title: key.to_string(),
        ylabel: if family == Family::Eval && !many_metrics {
            members[0].metric.rsplit('.').next().unwrap_or(key).into()
        } else {
            key.into()
        },
        log: family == Family::Loss || key == "grad_norm",
        stacked: key == "curriculum/p",
        smooth: family != Family::Eval,
        series,
        marks: marks.to_vec(),
    }
}

/// The run's header table and its per-stage table.
fn summary(lock: Option<&RecipeLock>, metrics: &[Value], stages: &[(String, u64)]) -> String {
    let mut rows: Vec<Vec<String>> = Vec::new();
    if let Some(lock) = lock {
        let plan_run = lock
            .plan
            .get("run")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" → "));
        let status = match &lock.final_model {
            Some(model) => format!("finished (final model <code>{}</code>)", escape(model)),
            None => "<span class=\"bad\">unfinished</span> (no final model: stopped or still running)".into(),
        };
        rows.push(vec!["status".into(), status]);
        rows.push(vec!["stages".into(), escape(&plan_run.unwrap_or_default())]);
        rows.push(vec!["seed".into(), lock.seed.to_string()]);
        if let Some(n) = lock.max_steps {
            rows.push(vec!["--max-steps".into(), n.to_string()]);
        }
        rows.push(vec!["device".into(), escape(&lock.device)]);
        rows.push(vec![
            "recipe sha256".into(),
            format!("<code>{}</code>", &lock.recipe_sha256[..12.min(lock.recipe_sha256.len())]),
        ]);
    }
    let mut html = String::from("<div class=\"summary\">");
    html.push_str(&page::table(&["run", ""], &rows));
    // Per stage run: steps, its wall clock (`timing.elapsed_s` is the stage's clock) and the mean
    // of its logged throughputs.
    let mut per_stage: BTreeMap<String, (f64, f64, usize)> = BTreeMap::new();
    for line in metrics.iter().filter(|l| l.get("event").is_none()) {
        let mut stage = line.get("stage").and_then(Value::as_str).unwrap_or("run").to_string();
        if let Some(round) = line.get("round").and_then(Value::as_u64) {
            stage = format!("{stage} round {round}");
        }
        let entry = per_stage.entry(stage).or_default();
        let timing = line.get("timing");
        if let Some(s) = timing.and_then(|t| t.get("elapsed_s")).and_then(Value::as_f64) {
            entry.0 = entry.0.max(s);
        }
        if let Some(r) = timing.and_then(|t| t.get("tokens_per_s")).and_then(Value::as_f64) {
            entry.1 += r;
            entry.2 += 1;
        }
    }
    let rows: Vec<Vec<String>> = stages
        .iter()
        .map(|(stage, steps)| {
            let (wall, rate, n) = per_stage.get(stage).copied().unwrap_or_default();
            let rate = if n > 0 { short(rate / n as f64) } else { "—".into() };
            vec![escape(stage), steps.to_string(), format!("{} s", short(wall)), rate]
        })
        .collect();
    html.push_str(&page::table(&["stage", "steps", "wall time", "tokens/s (mean)"], &rows));
    html.push_str("</div>");
    html
}

/// Final and best value of every plotted metric (best: min for loss-like, max for accuracy- and
/// reward-like metrics, none where the name gives no direction).
fn metrics_table(traces: &[&Trace]) -> String {
    let rows: Vec<Vec<String>> = traces
        .iter()
        .filter(|t| matches!(Family::of(&t.metric), Family::Loss | Family::Rewards | Family::Eval))
        .map(|t| {
            let last = t.points.last().map_or(f64::NAN, |p| p.1);
            let best = Better::of(&t.metric).and_then(|b| {
                let v = b.best(t.points.iter().map(|p| p.1))?;
                let at = t.points.iter().find(|p| p.1 == v).map_or(0.0, |p| p.0);
                Some(format!("{} ({}, step {})", short(v), b.word(), short(at)))
            });
            vec![format!("<code>{}</code>", escape(&t.tag())), short(last), best.unwrap_or_else(|| "—".into())]
        })
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    format!(
        "<h2>Final and best</h2>{}",
        page::table(&["metric", "final", "best (min for losses, max for accuracies and rewards)"], &rows)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn report_groups_metrics_into_panels_and_leaves_out_constants() {
        let lines = vec![
            json!({"stage": "sft", "step": 0, "eval": {"held": {"accuracy": 0.0, "correct": 0, "total": 30}}}),
            json!({"stage": "sft", "step": 1, "loss": 2.0, "lr": 1e-3, "grad_norm": 3.0}),
            json!({"stage": "sft", "step": 2, "loss": 1.5, "lr": 1e-3, "grad_norm": 2.0,
                   "eval": {"held": {"accuracy": 0.5, "correct": 15, "total": 30}}}),
            json!({"stage": "dpo", "step": 1, "loss": 0.7, "loss/dpo": 0.7, "curriculum/p/1": 0.4, "curriculum/p/2": 0.6,
                   "timing": {"tokens_per_s": 10.0, "elapsed_s": 2.0}}),
            json!({"stage": "dpo", "step": 2, "loss": 0.6, "loss/dpo": 0.6, "curriculum/p/1": 0.3, "curriculum/p/2": 0.7}),
        ];
        let html = render("demo <run>", None, &lines);
        assert!(html.contains("demo &lt;run&gt;"));
        let captions: Vec<&str> =
            html.split("<figcaption>").skip(1).map(|s| s.split("</figcaption>").next().unwrap()).collect();
        assert_eq!(captions, ["loss", "eval.held", "curriculum/p", "grad_norm"], "lr is constant");
        assert!(html.contains("Constant, not plotted: <code>lr</code> = 0.001"));
        assert!(!html.contains("correct") && !html.contains(".total"), "counts beside their rate are left out");
        assert!(html.contains("\"stacked\":true"), "arm probabilities are stacked areas");
        assert!(html.contains("\"marks\":[[2.0,\"dpo\"]]"), "the stage boundary is marked");
        assert!(html.contains("\"log\":true"));
        assert!(
            html.contains("<td>dpo</td><td class=\"num\">2</td><td class=\"num\">2 s</td><td class=\"num\">10</td>")
        );
        assert!(html.contains("0.5 (max, step 2)"), "best accuracy is the maximum: {html}");
    }
}
