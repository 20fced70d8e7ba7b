//! `recipe plan`: the stage graph of a compiled program, with every default resolved, as text
//! for people and JSON for machines. Rendering only: all decisions were made by `check` and
//! `eval`.

use crate::program::{DeclKind, Program, Step, Value};
use std::fmt::Write;

/// The plan as text: header, declarations, the run order with each stage's full arguments, and
/// the compiled scalar functions.
pub fn render_text(p: &Program) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "recipe {:?} (seed {})", p.name, p.seed);
    for (name, v) in &p.header {
        if name != "seed" {
            let _ = writeln!(out, "  {name} = {}", value_text(v, p));
        }
    }
    for kind in [DeclKind::Model, DeclKind::Data, DeclKind::Let, DeclKind::Eval] {
        for d in p.decls_of(kind) {
            let _ = writeln!(out, "{} {}: {} = {}", keyword(kind), d.name, d.ty, value_text(&d.value, p));
        }
    }
    let _ = writeln!(out, "run {}", p.run.join(" -> "));
    for (i, step) in p.stage_order().into_iter().enumerate() {
        match step {
            Step::Stage(d) => {
                let _ = writeln!(out, "{}. stage {}", i + 1, d.name);
                write_call(&mut out, &d.value, p, "     ");
            }
            Step::Rounds(r) => {
                let _ = writeln!(out, "{}. rounds {} x{} from {}", i + 1, r.name, r.count, value_text(&r.from, p));
                for s in &r.stages {
                    let _ = writeln!(out, "     stage {}", s.name);
                    write_call(&mut out, &s.value, p, "       ");
                }
            }
        }
    }
    if !p.functions.is_empty() {
        let _ = writeln!(out, "functions");
        for (i, f) in p.functions.iter().enumerate() {
            let params: Vec<String> = f.params.iter().map(|(n, t)| format!("{n}: {t}")).collect();
            let _ = writeln!(out, "  fn#{i} {}({}) -> {}", f.name, params.join(", "), f.ret);
        }
    }
    out
}

/// The plan as JSON: the whole `Program` (scalar IR bodies as text under `functions`).
pub fn render_json(p: &Program) -> String {
    serde_json::to_string_pretty(p).unwrap_or_else(|e| format!("{{\"error\": {:?}}}", e.to_string()))
}

fn keyword(kind: DeclKind) -> &'static str {
    match kind {
        DeclKind::Model => "model",
        DeclKind::Data => "data",
        DeclKind::Stage => "stage",
        DeclKind::Eval => "eval",
        DeclKind::Let => "let",
    }
}

/// A stage call with one argument per line.
fn write_call(out: &mut String, v: &Value, p: &Program, indent: &str) {
    match v {
        Value::Call { name, args } => {
            let _ = writeln!(out, "{indent}{name}(");
            for (n, a) in args {
                let _ = writeln!(out, "{indent}    {n} = {},", value_text(a, p));
            }
            let _ = writeln!(out, "{indent})");
        }
        other => {
            let _ = writeln!(out, "{indent}{}", value_text(other, p));
        }
    }
}

/// A value on one line.
pub fn value_text(v: &Value, p: &Program) -> String {
    match v {
        Value::Int(i) => i.to_string(),
        Value::Float(f) => format!("{f:?}"),
        Value::Bool(b) => b.to_string(),
        Value::Str(s) => format!("{s:?}"),
        Value::List(items) => format!("[{}]", items.iter().map(|i| value_text(i, p)).collect::<Vec<_>>().join(", ")),
        Value::Record(fields) => format!(
            "{{{}}}",
            fields.iter().map(|(n, v)| format!("{n}: {}", value_text(v, p))).collect::<Vec<_>>().join(", ")
        ),
        Value::Range { start, end, inclusive } => format!("{start}..{}{end}", if *inclusive { "=" } else { "" }),
        Value::Enum { name, .. } => name.clone(),
        Value::Model(n) | Value::Data(n) => n.clone(),
        Value::Stage { stage, field: Some(f) } => format!("{stage}.{f}"),
        Value::Stage { stage, field: None } => stage.clone(),
        Value::RoundInput(r) => format!("{r}.input"),
        Value::Call { name, args } => format!(
            "{name}({})",
            args.iter().map(|(n, v)| format!("{n} = {}", value_text(v, p))).collect::<Vec<_>>().join(", ")
        ),
        Value::Scalar(i) => match p.functions.get(*i as usize) {
            Some(f) => format!("fn#{i} {}", f.name),
            None => format!("fn#{i}"),
        },
        Value::Loss(terms) => terms
            .iter()
            .map(|t| if t.weight == 1.0 { format!("|b| {}", t.f) } else { format!("{} * (|b| {})", t.weight, t.f) })
            .collect::<Vec<_>>()
            .join(" + "),
    }
}
