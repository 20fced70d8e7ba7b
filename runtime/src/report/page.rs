//! The page both `report.html` and `compare.html` are: one self-contained HTML file (inline CSS,
//! the panels' data as JSON and `plot.js`, which draws them as SVG; no network), sections of
//! panels under a smoothing slider.

use serde::Serialize;
use std::fmt::Write;

/// The plotting code every page embeds.
const PLOT_JS: &str = include_str!("plot.js");

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em 2em;color:#222;max-width:1400px}\
h1{margin:.2em 0}h2{margin:1.2em 0 .4em;font-size:1.15em;border-bottom:1px solid #ddd}\
.panels{display:flex;flex-wrap:wrap;gap:1.2em}.summary{display:flex;flex-wrap:wrap;gap:2em;align-items:flex-start}figure{margin:0}\
figcaption{font-weight:600;font-size:.9em;margin-bottom:.2em}\
table{border-collapse:collapse;font-size:.9em}td,th{padding:.2em .7em;border-bottom:1px solid #eee;text-align:left}\
th{background:#f6f6f6}td.num{text-align:right;font-variant-numeric:tabular-nums}\
.legend{font-size:.8em;max-width:430px}.legend span{margin-right:.8em;white-space:nowrap}\
.controls{margin:.8em 0;font-size:.9em}.note{color:#666;font-size:.85em}.bad{color:#c00;font-weight:600}\
#tip{position:absolute;display:none;background:#fff;border:1px solid #aaa;padding:.3em .5em;\
font-size:.8em;pointer-events:none;box-shadow:0 1px 4px #0003}";

/// One plot. `log` asks for a log y axis (used when every value is positive).
#[derive(Clone, Debug, Serialize)]
pub struct Panel {
    pub title: String,
    pub ylabel: String,
    pub log: bool,
    /// Series drawn as stacked areas (shares that sum to one, e.g. arm probabilities).
    pub stacked: bool,
    /// Whether the smoothing slider applies (not to sparse curves such as evaluations).
    pub smooth: bool,
    pub series: Vec<Line>,
    /// Vertical dashed lines: (step, label), where stages start.
    pub marks: Vec<(f64, String)>,
}

/// One series: points (step, value) and, for a group of runs, its (step, min, max) band.
#[derive(Clone, Debug, Serialize)]
pub struct Line {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub band: Vec<(f64, f64, f64)>,
}

/// A heading and its panels.
#[derive(Clone, Debug)]
pub struct Section {
    pub title: String,
    pub panels: Vec<Panel>,
    /// HTML shown under the panels (e.g. the metrics left out as constants).
    pub note: String,
}

/// The page: `head` (HTML: summary tables) above the sections.
pub fn render(title: &str, head: &str, sections: &[Section]) -> String {
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title><style>{STYLE}</style></head>\
         <body><h1>{t}</h1>{head}<div class=\"controls\"><label>smoothing (EMA weight, as TensorBoard's) \
         <input id=\"smoothing\" type=\"range\" min=\"0\" max=\"0.99\" step=\"0.01\" value=\"0.6\"></label> \
         <span id=\"smoothing-value\"></span></div>",
        t = escape(title)
    );
    let mut panels = Vec::new();
    for section in sections.iter().filter(|s| !s.panels.is_empty() || !s.note.is_empty()) {
        let _ = write!(html, "<h2>{}</h2><div class=\"panels\">", escape(&section.title));
        for panel in &section.panels {
            let _ = write!(
                html,
                "<figure class=\"panel\" data-panel=\"{}\"><figcaption>{}</figcaption></figure>",
                panels.len(),
                escape(&panel.title)
            );
            panels.push(panel);
        }
        html.push_str("</div>");
        if !section.note.is_empty() {
            let _ = write!(html, "<p class=\"note\">{}</p>", section.note);
        }
    }
    // `</` would end the script element early wherever a name contains it.
    let data = serde_json::json!({ "panels": panels }).to_string().replace("</", "<\\/");
    let _ = write!(html, "<div id=\"tip\"></div><script>const PAGE = {data};\n{PLOT_JS}</script></body></html>\n");
    html
}

/// `text` safe inside HTML text and attribute values.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A number for a table: four significant digits, exponent form when very large or small.
pub fn short(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        format!("{v}")
    } else if v.abs() < 1e-3 || v.abs() >= 1e5 {
        format!("{v:.2e}")
    } else {
        let digits = (3 - v.abs().log10().floor() as i32).clamp(0, 6) as usize;
        let s = format!("{v:.digits$}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    }
}

/// An HTML table: a header row and rows of cells already escaped (`<td>` content); cells that
/// parse as numbers are right-aligned.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut html = String::from("<table><tr>");
    for h in header {
        let _ = write!(html, "<th>{}</th>", escape(h));
    }
    html.push_str("</tr>");
    for row in rows {
        html.push_str("<tr>");
        for cell in row {
            let numeric = cell.split_whitespace().next().is_some_and(|w| w.parse::<f64>().is_ok());
            let _ = write!(html, "<td{}>{cell}</td>", if numeric { " class=\"num\"" } else { "" });
        }
        html.push_str("</tr>");
    }
    html.push_str("</table>");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_holds_every_panel_and_its_data_inline() {
        let panel = Panel {
            title: "loss </script>".into(),
            ylabel: "loss".into(),
            log: true,
            stacked: false,
            smooth: true,
            series: vec![Line { name: "a".into(), points: vec![(0.0, 1.0)], band: vec![] }],
            marks: vec![],
        };
        let section = Section { title: "Loss terms".into(), panels: vec![panel.clone(), panel], note: String::new() };
        let html = render("t", "", &[section]);
        assert_eq!(html.matches("<figure class=\"panel\"").count(), 2);
        assert!(html.contains("data-panel=\"1\""));
        assert!(!html.contains("loss </script>"), "names cannot end the script early");
        assert!(!html.contains("<script src"), "no network");
        assert!(html.contains("document.body.dataset.rendered"));
    }

    #[test]
    fn numbers_are_short() {
        assert_eq!(short(0.123456), "0.1235");
        assert_eq!(short(12.0), "12");
        assert_eq!(short(1234.5678), "1235");
        assert_eq!(short(2e-5), "2.00e-5");
        assert_eq!(short(0.0), "0");
        assert_eq!(short(f64::NAN), "NaN");
    }
}
