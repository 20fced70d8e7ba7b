//! Golden tests: every `tests/golden/**/*.recipe` (at the repository root) states its expected
//! outcome on its first line, `// expect: pass` or `// expect: error CODE[, CODE...]`. The
//! harness runs the front end on it, asserts the set of error codes, and snapshots the rendered
//! diagnostics with insta (`tests/snapshots/<folder>__<file>.snap`). Every input that parses
//! must also keep the formatter's contract (`fmt::format_checked`).
//!
//! Regenerate snapshots after an intended change to a message:
//! `INSTA_UPDATE=always cargo test -p recipe-compiler --test golden` (or `cargo insta review`).

use miette::{GraphicalReportHandler, GraphicalTheme};
use recipe_compiler::diag::{Diagnostic, Source};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The front end as far as the file's phase folder goes: files under `syntax/` test the
/// grammar and run the parser only (so a `pass` there need not type-check); every other folder
/// runs the whole front end: parse, resolve, check, evaluate the top level.
fn run_front_end(phase: &str, source: &Source) -> Vec<Diagnostic> {
    let result = if phase == "syntax" {
        recipe_compiler::parse(source).map(drop)
    } else {
        recipe_compiler::compile(source, &[]).map(drop)
    };
    result.err().unwrap_or_default()
}

/// What a golden file's first line says.
#[derive(Debug, PartialEq)]
enum Expect {
    Pass,
    Errors(BTreeSet<String>),
}

fn expectation(path: &Path, text: &str) -> Expect {
    let first = text.lines().next().unwrap_or("");
    let Some(rest) = first.strip_prefix("// expect:") else {
        panic!("{}: the first line must be `// expect: pass` or `// expect: error CODE`", path.display())
    };
    let rest = rest.trim();
    if rest == "pass" {
        return Expect::Pass;
    }
    let Some(codes) = rest.strip_prefix("error") else {
        panic!("{}: cannot read the expectation `{rest}`", path.display())
    };
    let codes: BTreeSet<String> = codes.split(',').map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect();
    assert!(!codes.is_empty(), "{}: `// expect: error` names no code", path.display());
    Expect::Errors(codes)
}

fn render(diagnostics: &[Diagnostic]) -> String {
    let handler = GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor()).with_width(100);
    let mut out = String::new();
    for diagnostic in diagnostics {
        if handler.render_report(&mut out, diagnostic).is_err() {
            out.push_str(&format!("<could not render {}>\n", diagnostic.code));
        }
        out.push('\n');
    }
    out
}

fn golden_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(golden_files(&path));
        } else if path.extension().is_some_and(|e| e == "recipe") {
            out.push(path);
        }
    }
    out.sort();
    out
}

#[test]
fn golden() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden");
    // `GOLDEN_FILTER=syntax/` runs only the files whose path (under tests/golden) starts so.
    let filter = std::env::var("GOLDEN_FILTER").unwrap_or_default();
    let files: Vec<PathBuf> = golden_files(&root)
        .into_iter()
        .filter(|p| p.strip_prefix(&root).is_ok_and(|r| r.to_string_lossy().starts_with(&filter)))
        .collect();
    assert!(!files.is_empty(), "no golden files under {} match `{filter}`", root.display());
    let mut failures = Vec::new();
    for path in &files {
        let relative = path.strip_prefix(&root).unwrap_or(path);
        // Forward slashes, so snapshots do not depend on the platform.
        let name = relative.with_extension("").to_string_lossy().replace('\\', "/");
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let source = Source::new(format!("{name}.recipe"), text.as_str());
        let expect = expectation(path, &text);
        let phase = name.split('/').next().unwrap_or("");
        let diagnostics = run_front_end(phase, &source);
        let codes: BTreeSet<String> = diagnostics.iter().filter(|d| d.is_error()).map(|d| d.code.to_string()).collect();
        match &expect {
            Expect::Pass if !codes.is_empty() => {
                failures.push(format!("{name}: expected to pass, got {codes:?}\n{}", render(&diagnostics)));
            }
            Expect::Errors(wanted) if *wanted != codes => {
                failures.push(format!("{name}: expected {wanted:?}, got {codes:?}\n{}", render(&diagnostics)));
            }
            _ => {}
        }
        if let Ok(module) = recipe_compiler::parse(&source) {
            if let Err(why) = recipe_compiler::fmt::format_checked(&module, &source) {
                failures.push(format!("{name}: formatter contract broken: {why}"));
            }
        }
        if matches!(expect, Expect::Errors(_)) {
            insta::with_settings!({ prepend_module_to_snapshot => false, omit_expression => true }, {
                insta::assert_snapshot!(name.replace('/', "__"), render(&diagnostics));
            });
        }
    }
    assert!(failures.is_empty(), "{} golden file(s) failed:\n\n{}", failures.len(), failures.join("\n\n"));
}
