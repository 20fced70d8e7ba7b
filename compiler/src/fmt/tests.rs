//! Formatter tests: exact layouts for the rules in the module header, and the contract
//! (`format_checked`) over the golden inputs.

use super::*;
use crate::parse::parse;

fn fmt(text: &str) -> String {
    let source = Source::new("t.recipe", text);
    let module = match parse(&source) {
        Ok(m) => m,
        Err(ds) => panic!("does not parse: {}", ds[0].message),
    };
    match format_checked(&module, &source) {
        Ok(out) => out,
        Err(why) => panic!("{why}"),
    }
}

#[test]
fn canonical_spacing_and_literal_spelling() {
    assert_eq!(
        fmt("recipe   \"r\"{seed=7,}\nlet x:Float=1_000.5e-3*(a+b)   -  -c"),
        "recipe \"r\" { seed = 7 }\nlet x: Float = 1_000.5e-3 * (a + b) - -c\n"
    );
    assert_eq!(
        fmt("data d = f(digits=1..=3,xs=[1,2,],r={a:1,b:\"\\u{41}\"})"),
        "data d = f(digits = 1..=3, xs = [1, 2], r = {a: 1, b: \"\\u{41}\"})\n"
    );
    assert_eq!(fmt("let l = (|x| x)(1) + (|| 2)()"), "let l = (|x| x)(1) + (|| 2)()\n");
    assert_eq!(
        fmt("let p = (-x) ** 2 + -x ** 2 + 2 ** 3 ** 4 + (2 ** 3) ** 4"),
        "let p = (-x) ** 2 + -x ** 2 + 2 ** 3 ** 4 + (2 ** 3) ** 4\n"
    );
    assert_eq!(fmt("let c = (a < b) == (c..d == e)"), "let c = (a < b) == (c..d == e)\n");
    assert_eq!(fmt("let r = (0..n).len"), "let r = (0..n).len\n");
}

#[test]
fn blank_lines_between_items_are_kept_once() {
    assert_eq!(fmt("let a = 1\n\n\n\nlet b = 2\nlet c = 3\n"), "let a = 1\n\nlet b = 2\nlet c = 3\n");
    assert_eq!(fmt("\n\n// head\n\n\nlet a = 1"), "// head\n\nlet a = 1\n");
}

#[test]
fn comments_stay_where_they_were() {
    let text = "// lead\n/// doc\nlet a = 1 // tail\n\n// own\nlet b = 2\n// end\n";
    assert_eq!(fmt(text), text);
    // A comment inside a call breaks it, one argument per line.
    let text = "stage s = sft(policy, sums, // the data\n    steps = 10)\n";
    assert_eq!(fmt(text), "stage s = sft(\n    policy,\n    sums, // the data\n    steps = 10,\n)\n");
    // A comment inside an expression that never breaks moves to the end of the line.
    assert_eq!(fmt("let x = 1 + // one\n  2\nlet y = 3"), "let x = 1 + 2 // one\nlet y = 3\n");
}

#[test]
fn long_calls_break_one_argument_per_line() {
    let text = "stage dpo = preference(sft.model, pairs, loss = 0.8 * dpo(beta = beta) + nll(), curriculum = buckets(by = |p| p.gap))";
    let expected = "stage dpo = preference(\n    sft.model,\n    pairs,\n    loss = 0.8 * dpo(beta = beta) + nll(),\n    curriculum = buckets(by = |p| p.gap),\n)\n";
    assert_eq!(fmt(text), expected);
}

#[test]
fn blocks_ifs_rounds_and_signatures() {
    assert_eq!(fmt("fn f(x: Int) -> Int = {let a = x; a}"), "fn f(x: Int) -> Int = { let a = x; a }\n");
    assert_eq!(
        fmt("fn g(x: Int) -> Int = if x > 0 { // positive\n x } else { 0 }"),
        "fn g(x: Int) -> Int = if x > 0 {\n    // positive\n    x\n} else {\n    0\n}\n"
    );
    assert_eq!(
        fmt("rounds r = 3 from m {\nstage a = f(r.input)\n\n\nstage b = g(a)}"),
        "rounds r = 3 from m {\n    stage a = f(r.input)\n\n    stage b = g(a)\n}\n"
    );
    assert_eq!(
        fmt("extern fn b[R,S](by: fn(R)->Float, count: Int=3) -> Curriculum[R]"),
        "extern fn b[R, S](by: fn(R) -> Float, count: Int = 3) -> Curriculum[R]\n"
    );
    assert_eq!(fmt("type P = {prompt: String,chosen:String}"), "type P = {prompt: String, chosen: String}\n");
    assert_eq!(fmt("run a->b ->c"), "run a -> b -> c\n");
}

#[test]
fn golden_inputs_keep_the_contract() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden");
    let mut checked = 0;
    for entry in walk(&root) {
        let text = std::fs::read_to_string(&entry).unwrap_or_default();
        let source = Source::new(entry.display().to_string(), text);
        if let Ok(module) = parse(&source) {
            if let Err(why) = format_checked(&module, &source) {
                panic!("{}: {why}", entry.display());
            }
            checked += 1;
        }
    }
    assert!(checked > 0, "no golden input parsed under {}", root.display());
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else if path.extension().is_some_and(|e| e == "recipe") {
            out.push(path);
        }
    }
    out.sort();
    out
}

#[test]
fn long_operator_chains_break_before_operators() {
    let long = "let total = first_component_value + second_component_value * weight - third_component_value / scale + tail + more_tail";
    let expected = "let total =\n    first_component_value\n        + second_component_value * weight\n        - third_component_value / scale\n        + tail\n        + more_tail\n";
    assert_eq!(fmt(long), expected);
}
