//! The semantic difference of runs' locks, in recipe terms: which stage, evaluation, model and
//! data arguments (defaults included: the lock's plan has them resolved), scalar functions, data
//! and model hashes, seeds and stage graph differ — and which of those differences break equal
//! compute.

use crate::artifact::RecipeLock;
use serde::Serialize;
use serde_json::Value;

/// Stage arguments that change how much a stage computes (optimiser steps, examples and
/// generated tokens per step, repeated passes) or how its optimiser steps: a comparison that
/// differs in one is not at equal compute and tuning. Names as the stage builtins spell them.
pub const COMPUTE_ARGS: &[&str] = &[
    "steps",
    "batch",
    "accumulate",
    "group",
    "max_tokens",
    "iterations",
    "lr",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "weight_decay",
    "max_grad_norm",
    "optimizer",
];

/// The path prefix of the optimiser steps a stage took, read from the metrics
/// (`steps taken: stage dpo`): always an equal-compute difference.
pub const STEPS_TAKEN: &str = "steps taken: stage ";

/// One difference: `values` holds each compared run's (or group's) value, `—` where it has none.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DiffEntry {
    /// What differs, in recipe terms: `seed`, `run`, `stage dpo`, `stage dpo: curriculum`,
    /// `fn lr`, `input data/train.jsonl`, `generated data/01-scored.jsonl`, `reference dpo`.
    pub path: String,
    pub values: Vec<String>,
    pub breaks_equal_compute: bool,
}

/// A lock as (path, value) pairs in recipe order.
pub fn flatten(lock: &RecipeLock) -> Vec<(String, String)> {
    let plan = &lock.plan;
    let functions: Vec<(String, String)> = plan
        .get("functions")
        .and_then(Value::as_array)
        // One line each: the text's line breaks are layout.
        .map(|fs| fs.iter().map(|f| (str_of(f.get("name")), one_line(&str_of(f.get("text"))))).collect())
        .unwrap_or_default();
    let mut out = vec![("seed".to_string(), lock.seed.to_string())];
    for field in plan.get("header").and_then(Value::as_array).into_iter().flatten() {
        let name = str_of(field.get(0));
        if name != "seed" {
            out.push((format!("header {name}"), text(field.get(1).unwrap_or(&Value::Null), &functions)));
        }
    }
    let names = |key: &str| -> String {
        plan.get(key).and_then(Value::as_array).map_or(String::new(), |r| {
            r.iter().map(|v| v.as_str().map_or_else(|| v.to_string(), String::from)).collect::<Vec<_>>().join(" → ")
        })
    };
    out.push(("run".into(), names("run")));
    if plan.get("rounds").and_then(Value::as_array).is_some_and(|r| !r.is_empty()) {
        out.push(("rounds".into(), plan["rounds"].to_string()));
    }
    out.push(("max_steps".into(), lock.max_steps.map_or("none".into(), |n| n.to_string())));
    for decl in plan.get("decls").and_then(Value::as_array).into_iter().flatten() {
        let kind = str_of(decl.get("kind"));
        // A `let` shows wherever it is used; its own entry would repeat that.
        if kind == "let" {
            continue;
        }
        let name = format!("{kind} {}", str_of(decl.get("name")));
        match decl.get("value").and_then(|v| v.get("Call")) {
            Some(call) => {
                out.push((name.clone(), str_of(call.get("name"))));
                for arg in call.get("args").and_then(Value::as_array).into_iter().flatten() {
                    let value = text(arg.get(1).unwrap_or(&Value::Null), &functions);
                    out.push((format!("{name}: {}", str_of(arg.get(0))), value));
                }
            }
            None => out.push((name, text(decl.get("value").unwrap_or(&Value::Null), &functions))),
        }
    }
    for (name, body) in &functions {
        out.push((format!("fn {name}"), body.clone()));
    }
    for input in &lock.inputs {
        let path = lock.roots.iter().find_map(|r| std::path::Path::new(&input.path).strip_prefix(r).ok());
        let path = path.map_or(input.path.clone(), |p| p.display().to_string());
        out.push((format!("input {path}"), short_hash(&input.sha256)));
    }
    for g in &lock.generated {
        out.push((format!("generated {}", g.path), short_hash(&g.sha256)));
    }
    for r in &lock.references {
        let round = r.round.map_or(String::new(), |n| format!(" round {n}"));
        out.push((format!("reference {}{round}", r.stage), format!("{} {}", r.model, short_hash(&r.sha256))));
    }
    out.push(("device".into(), lock.device.clone()));
    out
}

/// The differences between runs, each given as its flattened lock ([`flatten`]); a group's value
/// is its members' distinct values joined by `, ` (its seeds: `1, 2, 3`). Paths in first-seen
/// order; only paths whose values are not all equal.
pub fn diff(arms: &[Vec<Vec<(String, String)>>]) -> Vec<DiffEntry> {
    let mut paths: Vec<&str> = Vec::new();
    for member in arms.iter().flatten() {
        for (p, _) in member {
            if !paths.contains(&p.as_str()) {
                paths.push(p);
            }
        }
    }
    let mut out = Vec::new();
    for path in paths {
        let values: Vec<String> = arms
            .iter()
            .map(|members| {
                let mut distinct: Vec<&str> = Vec::new();
                for member in members {
                    let v = member.iter().find(|(p, _)| p == path).map_or("—", |(_, v)| v.as_str());
                    if !distinct.contains(&v) {
                        distinct.push(v);
                    }
                }
                distinct.join(", ")
            })
            .collect();
        if values.iter().any(|v| *v != values[0]) {
            let breaks_equal_compute = breaks_equal_compute(path, &values);
            out.push(DiffEntry { path: path.to_string(), values, breaks_equal_compute });
        }
    }
    out
}

/// Whether a difference at `path` means the runs did not spend equal compute: a compute argument
/// of a stage ([`COMPUTE_ARGS`]), the steps a stage took ([`STEPS_TAKEN`]), a stage of another kind, another stage graph or `--max-steps`,
/// the function a stage's closure argument among those compiles to (`fn sft.lr`, an `lr`
/// schedule), and a curriculum that refills (samples more rollouts a step than its batch).
fn breaks_equal_compute(path: &str, values: &[String]) -> bool {
    if path.starts_with(STEPS_TAKEN) {
        return true;
    }
    let Some(rest) = path.strip_prefix("stage ") else {
        // A stage's closure argument is compiled to the function `STAGE.ARG` (`fn sft.lr`).
        let closure_of = path.strip_prefix("fn ").and_then(|f| f.rsplit_once('.')).map(|(_, arg)| arg);
        return matches!(path, "run" | "rounds" | "max_steps") || closure_of.is_some_and(|a| COMPUTE_ARGS.contains(&a));
    };
    match rest.split_once(": ") {
        None => true,
        Some((_, "curriculum")) => values.iter().any(|v| v.contains("refill = true")),
        Some((_, arg)) => COMPUTE_ARGS.contains(&arg),
    }
}

/// A plan value as recipe text: `buckets(n = 4, by = fn#0 difficulty)` → `buckets(n = 4, by =
/// difficulty)`, losses as their stdlib calls (`dpo(beta = 0.1)`).
pub fn text(v: &Value, functions: &[(String, String)]) -> String {
    let Some((tag, inner)) = v.as_object().and_then(|m| m.iter().next()) else {
        return v.as_str().map_or_else(|| v.to_string(), |s| s.to_string());
    };
    let list =
        |items: &Value| -> Vec<String> { items.as_array().into_iter().flatten().map(|i| text(i, functions)).collect() };
    let args = |items: &Value| -> String {
        let parts: Vec<String> = items
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| format!("{} = {}", str_of(a.get(0)), text(a.get(1).unwrap_or(&Value::Null), functions)))
            .collect();
        parts.join(", ")
    };
    match tag.as_str() {
        "Int" | "Float" | "Bool" => inner.to_string(),
        "Str" => inner.to_string(),
        "List" => format!("[{}]", list(inner).join(", ")),
        "Record" => {
            let fields: Vec<String> = inner
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| format!("{}: {}", str_of(f.get(0)), text(f.get(1).unwrap_or(&Value::Null), functions)))
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
        "Range" => format!(
            "{}..{}{}",
            inner["start"],
            if inner["inclusive"].as_bool() == Some(true) { "=" } else { "" },
            inner["end"]
        ),
        "Enum" => str_of(inner.get("name")),
        "Model" | "Data" => str_of(Some(inner)),
        "Stage" => match inner.get("field").and_then(Value::as_str) {
            Some(f) => format!("{}.{f}", str_of(inner.get("stage"))),
            None => str_of(inner.get("stage")),
        },
        "RoundInput" => format!("{}.input", str_of(Some(inner))),
        "Call" => format!("{}({})", str_of(inner.get("name")), args(&inner["args"])),
        "Scalar" => inner
            .as_u64()
            .and_then(|i| functions.get(i as usize))
            .map_or_else(|| format!("fn#{inner}"), |(name, _)| name.clone()),
        "Loss" => {
            let terms: Vec<String> = inner
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| {
                    let name = str_of(t.get("name"));
                    // A lambda has no stdlib name: its expression's hash tells two apart.
                    let call = if name.is_empty() {
                        format!("|b| … #{}", short_hash(&crate::artifact::sha256_hex(t["f"].to_string().as_bytes())))
                    } else {
                        format!("{name}({})", args(&t["params"]))
                    };
                    match t.get("weight").and_then(Value::as_f64) {
                        Some(w) if w != 1.0 => format!("{w} * {call}"),
                        _ => call,
                    }
                })
                .collect();
            terms.join(" + ")
        }
        _ => v.to_string(),
    }
}

fn str_of(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn short_hash(sha: &str) -> String {
    sha[..12.min(sha.len())].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lock(seed: u64, curriculum: Value, steps: i64) -> RecipeLock {
        let plan = json!({
            "header": [["seed", {"Int": seed}]],
            "run": ["dpo"],
            "functions": [{"name": "difficulty", "text": "fn difficulty(r) = r.gap"}],
            "decls": [
                {"kind": "let", "name": "beta", "value": {"Float": 0.1}},
                {"kind": "stage", "name": "dpo", "value": {"Call": {"name": "preference", "args": [
                    ["curriculum", curriculum],
                    ["steps", {"Int": steps}],
                    ["loss", {"Loss": [{"name": "dpo", "params": [["beta", {"Float": 0.1}]], "weight": 1.0, "f": {}}]}],
                ]}}},
            ],
        });
        RecipeLock::new(String::new(), plan, seed, vec![], "cpu".into())
    }

    #[test]
    fn differences_are_said_in_recipe_terms_and_flag_equal_compute() {
        let buckets = json!({"Call": {"name": "buckets", "args": [["n", {"Int": 4}], ["by", {"Scalar": 0}]]}});
        let uniform = json!({"Call": {"name": "uniform", "args": []}});
        let a = flatten(&lock(1, buckets, 100));
        assert!(a.contains(&("stage dpo: loss".into(), "dpo(beta = 0.1)".into())));
        let entries = diff(&[vec![a], vec![flatten(&lock(2, uniform.clone(), 100))]]);
        let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["seed", "stage dpo: curriculum"]);
        assert_eq!(entries[1].values, ["buckets(n = 4, by = difficulty)", "uniform()"]);
        assert!(!entries[1].breaks_equal_compute);
        let entries =
            diff(&[vec![flatten(&lock(1, uniform.clone(), 100))], vec![flatten(&lock(1, uniform.clone(), 50))]]);
        assert_eq!(entries.len(), 1);
        assert_eq!((entries[0].path.as_str(), entries[0].breaks_equal_compute), ("stage dpo: steps", true));
        // Groups: the seeds of each, equal between the groups, are no difference.
        let group = |steps| vec![flatten(&lock(1, uniform.clone(), steps)), flatten(&lock(2, uniform.clone(), steps))];
        assert!(diff(&[group(100), group(100)]).is_empty());
        let refill = json!({"Call": {"name": "band_pass", "args": [["refill", {"Bool": true}]]}});
        let entries = diff(&[vec![flatten(&lock(1, refill, 100))], vec![flatten(&lock(1, uniform, 100))]]);
        assert!(entries[0].breaks_equal_compute, "a refilling curriculum generates more");
    }
}
