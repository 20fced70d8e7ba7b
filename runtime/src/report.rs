//! The run report: one self-contained HTML page (inline SVG, no scripts, no network) with a plot
//! per numeric metric over steps, one line per stage, written beside `metrics.jsonl`.
//!
//! Invariant: the report is derived from `metrics.jsonl` and `recipe.lock` alone, so
//! `recipe report RUN` can rebuild it for any run folder, including one that stopped early.

use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Keys that are bookkeeping, not curves (timing varies run to run and lives under `timing`).
const NOT_PLOTTED: &[&str] = &["stage", "step", "round", "timing"];

/// One metric's points, per stage: `series[metric][stage] = [(global step, value)]`.
type Series = BTreeMap<String, BTreeMap<String, Vec<(f64, f64)>>>;

/// Render the report from the lines of `metrics.jsonl` and a title.
pub fn render(title: &str, metrics: &[Value], summary: &[(String, String)]) -> String {
    let series = collect(metrics);
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title><style>\
         body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}\
         .plots{{display:flex;flex-wrap:wrap;gap:1.5em}} figure{{margin:0}}\
         figcaption{{font-weight:600;margin-bottom:.3em}} td{{padding:.15em .8em .15em 0}}\
         .legend span{{margin-right:1em}}</style></head><body><h1>{t}</h1>",
        t = escape(title)
    );
    if !summary.is_empty() {
        html.push_str("<table>");
        for (k, v) in summary {
            let _ = write!(html, "<tr><td>{}</td><td><code>{}</code></td></tr>", escape(k), escape(v));
        }
        html.push_str("</table>");
    }
    html.push_str("<div class=\"plots\">");
    for (metric, stages) in &series {
        html.push_str(&plot(metric, stages));
    }
    html.push_str("</div></body></html>\n");
    html
}

fn collect(metrics: &[Value]) -> Series {
    let mut series = Series::new();
    for (index, line) in metrics.iter().enumerate() {
        // Event lines (`"event": "skipped_rows"`) are not points of any curve.
        let Some(fields) = line.as_object().filter(|f| !f.contains_key("event")) else { continue };
        let mut stage = fields.get("stage").and_then(Value::as_str).unwrap_or("run").to_string();
        // Each round of a stage in rounds counts its own steps: a line of its own.
        if let Some(round) = fields.get("round").and_then(Value::as_u64) {
            stage = format!("{stage} round {round}");
        }
        let step = fields.get("step").and_then(Value::as_f64).unwrap_or(index as f64);
        for (key, value) in fields {
            if !NOT_PLOTTED.contains(&key.as_str()) {
                add_points(&mut series, key, value, &stage, step);
            }
        }
    }
    series
}

/// Numbers become points of the curve `key`; nested objects (`eval.held_acc.accuracy`) are
/// flattened into dotted keys.
fn add_points(series: &mut Series, key: &str, value: &Value, stage: &str, step: f64) {
    match value {
        Value::Object(inner) => {
            for (k, v) in inner {
                add_points(series, &format!("{key}.{k}"), v, stage, step);
            }
        }
        _ => {
            if let Some(y) = value.as_f64().filter(|y| y.is_finite()) {
                series.entry(key.to_string()).or_default().entry(stage.to_string()).or_default().push((step, y));
            }
        }
    }
}

const COLOURS: &[&str] = &["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];
const WIDTH: f64 = 420.0;
const HEIGHT: f64 = 220.0;
const PAD: f64 = 40.0;

fn plot(metric: &str, stages: &BTreeMap<String, Vec<(f64, f64)>>) -> String {
    let points = stages.values().flatten();
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in points {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if y1 <= y0 {
        y1 = y0 + 1.0;
    }
    let sx = |x: f64| PAD + (x - x0) / (x1 - x0) * (WIDTH - 1.5 * PAD);
    let sy = |y: f64| HEIGHT - PAD + (y0 - y) / (y1 - y0) * (HEIGHT - 1.5 * PAD);
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<figure><figcaption>{m}</figcaption><svg width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         xmlns=\"http://www.w3.org/2000/svg\" font-size=\"10\">\
         <line x1=\"{PAD}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#888\"/>\
         <line x1=\"{PAD}\" y1=\"{t}\" x2=\"{PAD}\" y2=\"{b}\" stroke=\"#888\"/>\
         <text x=\"2\" y=\"{t}\">{y1}</text><text x=\"2\" y=\"{b}\">{y0}</text>\
         <text x=\"{PAD}\" y=\"{xl}\">{x0}</text><text x=\"{r}\" y=\"{xl}\" text-anchor=\"end\">{x1}</text>",
        m = escape(metric),
        b = HEIGHT - PAD,
        t = PAD / 2.0,
        r = WIDTH - PAD / 2.0,
        xl = HEIGHT - PAD + 14.0,
        y0 = short(y0),
        y1 = short(y1),
        x0 = short(x0),
        x1 = short(x1),
    );
    let mut legend = String::from("<div class=\"legend\">");
    for (i, (stage, pts)) in stages.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let path: Vec<String> = pts.iter().map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y))).collect();
        if pts.len() == 1 {
            let _ = write!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{colour}\"/>",
                sx(pts[0].0),
                sy(pts[0].1)
            );
        } else {
            let _ = write!(
                svg,
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/>",
                path.join(" ")
            );
        }
        let _ = write!(legend, "<span style=\"color:{colour}\">■ {}</span>", escape(stage));
    }
    svg.push_str("</svg>");
    svg.push_str(&legend);
    svg.push_str("</div></figure>");
    svg
}

fn short(v: f64) -> String {
    if v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e5) {
        format!("{v:.2e}")
    } else {
        format!("{}", (v * 1e4).round() / 1e4)
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plots_each_metric_per_stage() {
        let lines = vec![
            json!({"stage": "sft", "step": 1, "loss": 2.0, "lr": 1e-3}),
            json!({"stage": "sft", "step": 2, "loss": 1.5, "lr": 1e-3}),
            json!({"stage": "dpo", "step": 3, "loss": 0.7, "eval": {"held": {"accuracy": 0.5}},
                   "timing": {"tokens_per_s": 10.0}}),
            json!({"stage": "dpo", "round": 1, "step": 1, "loss": 0.6}),
        ];
        let html = render("demo <run>", &lines, &[("seed".into(), "7".into())]);
        assert!(html.contains("demo &lt;run&gt;"));
        assert_eq!(html.matches("<figure>").count(), 3, "loss, lr, eval.held.accuracy");
        assert!(html.contains("<figcaption>eval.held.accuracy"));
        assert!(!html.contains("tokens_per_s"), "timing is not plotted");
        assert!(html.contains("■ sft") && html.contains("■ dpo"));
        assert!(html.contains("■ dpo round 1"), "a round's steps are a line of their own");
        assert!(!html.contains("<figcaption>step"));
    }
}
