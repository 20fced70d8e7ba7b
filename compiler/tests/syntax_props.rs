//! Property tests of the parser and formatter (stable Rust, run in CI; `fuzz/` goes further):
//! - token soups built from the language's own tokens never make `parse` or `format` panic,
//!   every diagnostic is a `recipe::syntax::*` code with a span inside the text, and whatever
//!   parses keeps the formatter's contract;
//! - generated well-formed expressions, with random spacing, parentheses and comments, always
//!   parse and keep the formatter's contract (this exercises the printer's parenthesisation).

use proptest::prelude::*;
use recipe_compiler::diag::Source;
use recipe_compiler::fmt::format_checked;
use recipe_compiler::parse;

const TOKENS: &[&str] = &[
    "recipe",
    "model",
    "data",
    "stage",
    "eval",
    "let",
    "fn",
    "extern",
    "type",
    "rounds",
    "from",
    "run",
    "if",
    "else",
    "true",
    "false",
    "x",
    "sft",
    "policy",
    "_y2",
    "Int",
    "Float",
    "List",
    "0",
    "7",
    "1_000",
    "1.5",
    "2e-3",
    "99999999999999999999",
    "\"s\"",
    "\"a\\nb\"",
    "\"\\q\"",
    "\"\\u{1F600}\"",
    "\"open",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ",",
    ":",
    ";",
    "=",
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "+",
    "-",
    "*",
    "/",
    "%",
    "**",
    "!",
    "&&",
    "||",
    "|",
    "..",
    "..=",
    ".",
    "->",
    "// note\n",
    "/// doc\n",
    "\n",
    "\n\n",
    "é",
];

fn soup() -> impl Strategy<Value = String> {
    prop::collection::vec((prop::sample::select(TOKENS), prop::sample::select(&[" ", "", "  ", "\n"][..])), 0..40)
        .prop_map(|parts| parts.into_iter().map(|(t, s)| format!("{t}{s}")).collect())
}

/// Source text of a well-formed expression.
fn expr_text() -> impl Strategy<Value = String> {
    let atom = prop_oneof![
        Just("x".to_string()),
        Just("sft.model".to_string()),
        Just("1_000".to_string()),
        Just("2.5e3".to_string()),
        Just("\"tab\\t\"".to_string()),
        Just("true".to_string()),
        Just("{}".to_string()),
        (0i64..1000).prop_map(|n| n.to_string()),
    ];
    atom.prop_recursive(5, 48, 4, |inner| {
        let op = prop::sample::select(&["+", "-", "*", "/", "%", "**", "&&", "||"][..]);
        let cmp = prop::sample::select(&["==", "!=", "<", "<=", ">", ">="][..]);
        prop_oneof![
            // A chain of associative operators over operands, some negated.
            (inner.clone(), prop::collection::vec((op, inner.clone(), any::<bool>()), 1..4)).prop_map(
                |(first, rest)| {
                    let mut s = first;
                    for (op, operand, neg) in rest {
                        let operand = if neg { format!("-{operand}") } else { operand };
                        s = format!("{s} {op} {operand}");
                    }
                    s
                }
            ),
            (inner.clone(), cmp, inner.clone()).prop_map(|(a, c, b)| format!("(({a}) {c} ({b}))")),
            inner.clone().prop_map(|e| format!("({e})")),
            inner.clone().prop_map(|e| format!("!({e})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("f({a}, // arg\n named = {b},)")),
            prop::collection::vec(inner.clone(), 0..4).prop_map(|xs| format!("[{}]", xs.join(", "))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{{a: {a}, model: {b}}}")),
            inner.clone().prop_map(|e| format!("(|r, s: Int| {e})")),
            (inner.clone(), inner.clone(), inner.clone())
                .prop_map(|(c, a, b)| format!("if {c} {{ {a} }} else {{ {b} }}")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{{ let v = {a}; {b} }}")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("(({a})..=({b}))")),
            inner.clone().prop_map(|e| format!("({e}).field")),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn token_soup_never_panics(text in soup()) {
        let source = Source::new("soup.recipe", text.as_str());
        match parse(&source) {
            Ok(module) => {
                if let Err(why) = format_checked(&module, &source) {
                    return Err(TestCaseError::fail(why));
                }
            }
            Err(diagnostics) => {
                prop_assert!(!diagnostics.is_empty());
                for d in &diagnostics {
                    prop_assert!(d.code.starts_with("recipe::syntax::"), "{}", d.code);
                    prop_assert!(!d.message.contains("Rule::") && !d.message.contains("EOI"), "{}", d.message);
                    for label in &d.labels {
                        prop_assert!(label.span.start <= label.span.end && label.span.end as usize <= text.len());
                    }
                }
            }
        }
    }

    #[test]
    fn well_formed_expressions_parse_and_format(e in expr_text(), pad in "[ \n]{0,2}") {
        let text = format!("let v ={pad} {e}{pad}// end\nrun a\n");
        let source = Source::new("gen.recipe", text.as_str());
        let module = parse(&source).map_err(|ds| TestCaseError::fail(format!("{}: {text}", ds[0].message)))?;
        if let Err(why) = format_checked(&module, &source) {
            return Err(TestCaseError::fail(why));
        }
    }
}
