//! Examples are tests: every file in `recipes/` compiles, is already in canonical format, plans
//! (text and JSON), and every ```recipe block of `docs/language.md` compiles.
//! `RECIPE_FMT_WRITE=1 cargo test -p recipe-compiler --test recipes` rewrites the recipes in
//! canonical format instead of failing.

use recipe_compiler::diag::{Diagnostic, Source};
use recipe_compiler::{compile, format, parse, plan};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn describe(errors: &[Diagnostic]) -> String {
    errors
        .iter()
        .map(|d| {
            let at = match (&d.source, d.span()) {
                (Some(s), Some(span)) => {
                    let (l, c) = s.line_col(span.start);
                    format!("{}:{l}:{c}", s.name)
                }
                _ => String::from("?"),
            };
            format!(
                "{at}: {} {}{}",
                d.code,
                d.message,
                d.help.as_ref().map_or(String::new(), |h| format!(" (help: {h})"))
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn recipe_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("recipes"))
        .expect("recipes/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "recipe"))
        .collect();
    files.sort();
    files
}

#[test]
fn the_quickstart_and_the_twelve_methods_exist() {
    let names: Vec<String> =
        recipe_files().iter().filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned())).collect();
    for want in [
        "quickstart",
        "curry_dpo",
        "temple_pre_sft",
        "wpo",
        "mixed_po",
        "iterative_rpo",
        "ref_guided_subset",
        "pacing_warmup",
        "online_difficulty_filter",
        "vcrl",
        "self_evolving_curriculum",
        "adaptive_target_difficulty",
        "length_budget",
    ] {
        assert!(names.iter().any(|n| n == want), "recipes/{want}.recipe is missing");
    }
}

#[test]
fn every_recipe_compiles_formats_to_itself_and_plans() {
    let mut failures = Vec::new();
    for path in recipe_files() {
        let text = std::fs::read_to_string(&path).expect("readable");
        let source = Source::new(path.display().to_string(), text.clone());
        match compile(&source, &[]) {
            Ok(program) => {
                let text_plan = plan::render_text(&program);
                assert!(text_plan.contains("run "), "{}: plan has no run line", path.display());
                let json: serde_json::Value =
                    serde_json::from_str(&plan::render_json(&program)).expect("plan JSON parses");
                assert_eq!(json["name"], program.name);
                assert!(!program.run.is_empty());
            }
            Err(errors) => failures.push(describe(&errors)),
        }
        match parse(&source) {
            Ok(module) => {
                let formatted = format(&module, &source);
                if formatted != text && std::env::var_os("RECIPE_FMT_WRITE").is_some() {
                    std::fs::write(&path, &formatted).expect("writable");
                } else if formatted != text {
                    failures.push(format!("{}: not in canonical format (run `recipe fmt --write`)", path.display()));
                }
            }
            Err(errors) => failures.push(describe(&errors)),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// A recipe's control is one flag away: `--set curriculum=uniform()` and friends compile.
#[test]
fn controls_are_one_flag_away() {
    let cases: &[(&str, &str, &str)] = &[
        ("curry_dpo", "curriculum", "uniform()"),
        ("pacing_warmup", "curriculum", "uniform()"),
        ("online_difficulty_filter", "curriculum", "uniform()"),
        ("vcrl", "curriculum", "uniform()"),
        ("self_evolving_curriculum", "curriculum", "uniform()"),
        ("adaptive_target_difficulty", "curriculum", "uniform()"),
        ("wpo", "loss", "dpo()"),
        ("mixed_po", "loss", "dpo()"),
        ("iterative_rpo", "iterations", "1"),
        ("ref_guided_subset", "select", "random"),
        ("temple_pre_sft", "align_first", "false"),
        ("length_budget", "budget", "constant(6.0)"),
        ("quickstart", "seed", "8"),
    ];
    let mut failures = Vec::new();
    for (file, key, value) in cases {
        let path = root().join("recipes").join(format!("{file}.recipe"));
        let text = std::fs::read_to_string(&path).expect("readable");
        let source = Source::new(path.display().to_string(), text);
        let overrides = vec![(key.to_string(), value.to_string())];
        if let Err(errors) = compile(&source, &overrides) {
            failures.push(format!("{file} --set {key}={value}:\n{}", describe(&errors)));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn every_recipe_block_in_the_language_reference_compiles() {
    let text = std::fs::read_to_string(root().join("docs/language.md")).expect("docs/language.md exists");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match (&mut current, line.trim_start()) {
            (None, l) if l.starts_with("```recipe") => current = Some(String::new()),
            (Some(block), l) if l.starts_with("```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            _ => {}
        }
    }
    assert!(blocks.len() >= 5, "expected examples in docs/language.md, found {}", blocks.len());
    let mut failures = Vec::new();
    for (i, block) in blocks.iter().enumerate() {
        let source = Source::new(format!("language.md block {}", i + 1), block.clone());
        if let Err(errors) = compile(&source, &[]) {
            failures.push(format!("block {}:\n{block}\n{}", i + 1, describe(&errors)));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

/// The reference lists every builtin and prelude function.
#[test]
fn the_language_reference_lists_the_whole_stdlib() {
    let doc = std::fs::read_to_string(root().join("docs/language.md")).expect("docs/language.md exists");
    let mut missing = Vec::new();
    for (file, text) in [("builtins", recipe_stdlib::BUILTINS), ("prelude", recipe_stdlib::PRELUDE)] {
        let module = parse(&Source::new(file, text)).expect("the stdlib parses");
        for item in &module.items {
            let name = match item {
                recipe_compiler::ast::Item::Extern(e) => e.name.name.replacen("synth_", "synth.", 1),
                recipe_compiler::ast::Item::Fn(f) => f.name.name.clone(),
                _ => continue,
            };
            if !doc.contains(&format!("`{name}"))
                && !doc.contains(&format!(" {name}("))
                && !doc.contains(&format!("`{name}`"))
            {
                missing.push(name);
            }
        }
    }
    assert!(missing.is_empty(), "docs/language.md does not mention: {missing:?}");
}

/// The backticked names in `doc` between `from` and the next `until`.
fn backticked<'d>(doc: &'d str, from: &str, until: &str) -> Vec<&'d str> {
    let start = doc.find(from).unwrap_or_else(|| panic!("docs/language.md lacks {from:?}")) + from.len();
    let text = &doc[start..start + doc[start..].find(until).expect("the end of the list")];
    text.split('`').skip(1).step_by(2).collect()
}

/// `recipe plan --json` has the keys "The compiled program" in the reference names.
#[test]
fn plan_json_keys_are_the_documented_ones() {
    let doc = std::fs::read_to_string(root().join("docs/language.md")).expect("docs/language.md exists");
    let doc = doc.split_whitespace().collect::<Vec<_>>().join(" ");
    let text = concat!(
        "recipe \"keys\" { seed = 1 }\nmodel m = tiny_lm()\ntype Row = {prompt: String, completion: String}\n",
        "data d: Dataset[Row] = jsonl(\"d.jsonl\")\n",
        "fn lr(step: Int, total: Int) -> Float = 1e-3 * warmup(step, 10)\n",
        "stage s = sft(m, d, lr = lr)\nrounds r = 2 from s.model { stage t = sft(r.input, d) }\nrun s -> r\n",
    );
    let program = compile(&Source::new("keys.recipe", text), &[]).expect("compiles");
    let json: serde_json::Value = serde_json::from_str(&plan::render_json(&program)).expect("JSON");
    let keys = |v: &serde_json::Value| {
        let mut k: Vec<String> = v.as_object().expect("an object").keys().cloned().collect();
        k.sort();
        k
    };
    let sorted = |mut v: Vec<&str>| {
        v.sort();
        v.into_iter().map(str::to_string).collect::<Vec<_>>()
    };
    assert_eq!(keys(&json), sorted(backticked(&doc, "prints the `Program` as one object with the keys", ".")));
    let decl_keys = sorted(backticked(&doc, "Each of `decls` (and of a round's `stages`) has", ";"));
    let data = json["decls"].as_array().unwrap().iter().find(|d| d["name"] == "d").expect("the dataset");
    assert_eq!(keys(data), decl_keys);
    assert_eq!(
        keys(&json["rounds"][0]["stages"][0]),
        decl_keys.iter().filter(|k| *k != "row").cloned().collect::<Vec<_>>()
    );
    assert_eq!(keys(&json["functions"][0]), sorted(backticked(&doc, "`functions` lists the scalar functions (", ")")));
}

/// The reference's table of prelude functions has a row for every `fn` of the prelude, with the
/// signature the prelude declares: `| `name` | `(params) -> Ret` | ... |`.
#[test]
fn the_language_reference_tables_every_prelude_function() {
    let doc = std::fs::read_to_string(root().join("docs/language.md")).expect("docs/language.md exists");
    let text = recipe_stdlib::PRELUDE;
    let module = parse(&Source::new("prelude", text)).expect("the prelude parses");
    let mut missing = Vec::new();
    for item in &module.items {
        let recipe_compiler::ast::Item::Fn(f) = item else { continue };
        let head = text[f.name.span.end as usize..f.body.span.start as usize].trim_end();
        let signature = head.strip_suffix('=').expect("`=` before the body").trim_end();
        let row = format!("| `{}` | `{signature}` |", f.name.name);
        if !doc.lines().any(|l| l.starts_with(&row)) {
            missing.push(row);
        }
    }
    assert!(missing.is_empty(), "docs/language.md's prelude table lacks the rows:\n{}", missing.join("\n"));
}
