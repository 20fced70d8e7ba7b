//! Parser tests: tree shapes for precedence and the record/block rule, and one test per
//! syntax error code checking the code and the primary span.

use super::*;
use crate::ast::{ExprKind, Item, UnOp};

fn src(text: &str) -> Source {
    Source::new("test.recipe", text)
}

fn expr(text: &str) -> Expr {
    match parse_expr(&src(text)) {
        Ok(e) => e,
        Err(ds) => panic!("{text:?} failed: {:?}", ds.iter().map(|d| &d.message).collect::<Vec<_>>()),
    }
}

/// A compact s-expression of a tree, for asserting shapes.
fn sexp(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Int(v) => v.to_string(),
        ExprKind::Float(v) => format!("{v:?}"),
        ExprKind::Bool(b) => b.to_string(),
        ExprKind::Str(s) => format!("{s:?}"),
        ExprKind::Name(n) => n.name.clone(),
        ExprKind::Field(b, n) => format!("(. {} {})", sexp(b), n.name),
        ExprKind::Call(f, args) => {
            let args: Vec<String> = args
                .iter()
                .map(|a| match &a.name {
                    Some(n) => format!("{}={}", n.name, sexp(&a.value)),
                    None => sexp(&a.value),
                })
                .collect();
            format!("(call {} {})", sexp(f), args.join(" "))
        }
        ExprKind::Unary(op, x) => format!("({} {})", if *op == UnOp::Neg { "neg" } else { "not" }, sexp(x)),
        ExprKind::Binary(op, l, r) => format!("({} {} {})", op.symbol(), sexp(l), sexp(r)),
        ExprKind::If { cond, then, otherwise } => format!("(if {} {} {})", sexp(cond), sexp(then), sexp(otherwise)),
        ExprKind::Lambda(ps, body) => {
            let ps: Vec<&str> = ps.iter().map(|p| p.name.name.as_str()).collect();
            format!("(fn [{}] {})", ps.join(" "), sexp(body))
        }
        ExprKind::List(xs) => format!("[{}]", xs.iter().map(sexp).collect::<Vec<_>>().join(" ")),
        ExprKind::Record(fs) => {
            let fs: Vec<String> = fs.iter().map(|f| format!("{}:{}", f.name.name, sexp(&f.value))).collect();
            format!("{{{}}}", fs.join(" "))
        }
        ExprKind::Range { start, end, inclusive } => {
            format!("({} {} {})", if *inclusive { "..=" } else { ".." }, sexp(start), sexp(end))
        }
        ExprKind::Block(lets, value) => {
            let lets: Vec<String> = lets.iter().map(|l| format!("{}={}", l.name.name, sexp(&l.value))).collect();
            format!("(block [{}] {})", lets.join(" "), sexp(value))
        }
    }
}

fn codes(text: &str) -> Vec<&'static str> {
    match parse(&src(text)) {
        Ok(_) => Vec::new(),
        Err(ds) => ds.iter().map(|d| d.code).collect(),
    }
}

fn first_error(text: &str) -> Diagnostic {
    match parse(&src(text)) {
        Ok(_) => panic!("{text:?} parsed"),
        Err(mut ds) => ds.remove(0),
    }
}

fn primary_text<'t>(text: &'t str, d: &Diagnostic) -> &'t str {
    let span = d.span().unwrap_or_default();
    &text[span.start as usize..span.end as usize]
}

#[test]
fn precedence_and_associativity() {
    assert_eq!(sexp(&expr("-x ** 2")), "(neg (** x 2))");
    assert_eq!(sexp(&expr("2 ** 3 ** 2")), "(** 2 (** 3 2))");
    assert_eq!(sexp(&expr("2 ** -1")), "(** 2 (neg 1))");
    assert_eq!(sexp(&expr("a - b - c")), "(- (- a b) c)");
    assert_eq!(sexp(&expr("a + b * c % d")), "(+ a (% (* b c) d))");
    assert_eq!(sexp(&expr("a || b && c == d")), "(|| a (&& b (== c d)))");
    assert_eq!(sexp(&expr("!a.b(c)")), "(not (call (. a b) c))");
    assert_eq!(sexp(&expr("1..=n + 1")), "(..= 1 (+ n 1))");
    assert_eq!(sexp(&expr("0..10")), "(.. 0 10)");
    assert_eq!(sexp(&expr("(a + b) * c")), "(* (+ a b) c)");
}

#[test]
fn lambdas_extend_as_far_as_possible() {
    assert_eq!(sexp(&expr("|r| r.a == r.b")), "(fn [r] (== (. r a) (. r b)))");
    assert_eq!(sexp(&expr("|a, b: Int| a + b")), "(fn [a b] (+ a b))");
    assert_eq!(sexp(&expr("|| 1")), "(fn [] 1)");
    assert_eq!(sexp(&expr("f(by = |p| p.gap, count = 3)")), "(call f by=(fn [p] (. p gap)) count=3)");
    assert_eq!(sexp(&expr("a || b")), "(|| a b)");
}

#[test]
fn records_blocks_and_ifs() {
    assert_eq!(sexp(&expr("{}")), "{}");
    assert_eq!(sexp(&expr("{a: 1, b: \"x\",}")), "{a:1 b:\"x\"}");
    assert_eq!(sexp(&expr("{ a }")), "(block [] a)");
    assert_eq!(sexp(&expr("{ let a = 1; let b: Int = 2; a + b }")), "(block [a=1 b=2] (+ a b))");
    assert_eq!(sexp(&expr("{model: m}")), "{model:m}");
    assert_eq!(
        sexp(&expr("if x < lo { lo } else if x > 1.0 { 1.0 } else { x }")),
        "(if (< x lo) lo (if (> x 1.0) 1.0 x))"
    );
    assert_eq!(sexp(&expr("if c { let y = 1; y } else { 2 }")), "(if c (block [y=1] y) 2)");
}

#[test]
fn literals() {
    assert_eq!(sexp(&expr("1_000_000")), "1000000");
    assert_eq!(sexp(&expr("[1e-3, 0.5, 2.5e3, 1_000.5]")), "[0.001 0.5 2500.0 1000.5]");
    assert_eq!(sexp(&expr(r#""a\"b\u{41}""#)), "\"a\\\"bA\"");
    assert_eq!(sexp(&expr("sft.model")), "(. sft model)");
}

#[test]
fn module_items_and_comments() {
    let text = "// lead\nrecipe \"r\" { seed = 7 }\n/// doc\nlet a: Float = 1 // tail\nrounds r = 2 from m {\n stage s = f(r.input)\n}\nrun s -> r\n";
    let m = parse(&src(text)).map_err(|d| d[0].message.clone());
    let m = m.as_ref().map_err(|e| e.as_str());
    let Ok(m) = m else { panic!("{m:?}") };
    assert_eq!(m.items.len(), 4);
    assert!(matches!(&m.items[3], Item::Run(r) if r.steps.len() == 2));
    let comments: Vec<(&str, bool)> = m.comments.iter().map(|c| (c.text.as_str(), c.doc)).collect();
    assert_eq!(comments, [(" lead", false), (" doc", true), (" tail", false)]);
    let Item::Binding(b) = &m.items[1] else { panic!("not a binding") };
    assert_eq!(&text[b.span.start as usize..b.span.end as usize], "let a: Float = 1");
}

#[test]
fn unexpected_token_is_named() {
    let text = "stage s = f(a, )\nlet x = (1 + )";
    let d = first_error(text);
    assert_eq!(d.code, "recipe::syntax::unexpected");
    assert_eq!(d.message, "expected an expression, found `)`");
    assert_eq!(primary_text(text, &d), ")");
    assert!(d.span().is_some_and(|s| s.start == 30));
    let d = first_error("model = 3");
    assert_eq!(d.message, "expected a name, found `=`");
    let d = first_error("let x = 1;\nlet y = 2");
    assert!(d.message.starts_with("expected"), "{}", d.message);
    assert!(d.help.as_deref().is_some_and(|h| h.contains("`;`")));
    let d = first_error("stage s = f(x) oops");
    assert!(d.message.contains("an item"), "{}", d.message);
    assert_eq!(primary_text("stage s = f(x) oops", &d), "oops");
}

#[test]
fn unclosed_delimiters_and_strings() {
    let text = "stage s = f(a,\n  g(b)\nrun s";
    let d = first_error(text);
    assert_eq!(d.code, "recipe::syntax::unclosed");
    assert_eq!(d.span().map(|s| s.start as usize), Some(text.len()));
    let secondary = d.labels.iter().find(|l| !l.primary).map(|l| l.span.start);
    assert_eq!(secondary, Some(11));
    assert_eq!(codes("let s = \"abc\nrun x"), ["recipe::syntax::unclosed"]);
    assert_eq!(codes("let s = [1, 2"), ["recipe::syntax::unclosed"]);
}

#[test]
fn numbers_escapes_reserved_and_order() {
    assert_eq!(codes("let n = 99999999999999999999"), ["recipe::syntax::number"]);
    let text = r#"let s = "a\qb""#;
    let d = first_error(text);
    assert_eq!(d.code, "recipe::syntax::escape");
    assert_eq!(primary_text(text, &d), r"\q");
    assert_eq!(codes("let model = 1"), ["recipe::syntax::reserved"]);
    assert_eq!(codes("let x = f(model)"), ["recipe::syntax::reserved"]);
    assert_eq!(codes("fn f(data: Int) -> Int = 1"), ["recipe::syntax::reserved"]);
    assert_eq!(codes("extern fn f(data: Int) -> Int"), Vec::<&str>::new());
    let text = "stage s = f(a, steps = 3, b)";
    let d = first_error(text);
    assert_eq!(d.code, "recipe::syntax::argument_order");
    assert_eq!(primary_text(text, &d), "b");
    // Several independent errors are reported together.
    assert_eq!(
        codes("let a = f(x = 1, 2)\nlet fn = 1"),
        ["recipe::syntax::argument_order", "recipe::syntax::reserved"]
    );
}

#[test]
fn non_associative_and_nesting() {
    assert_eq!(codes("let a = x < y < z"), ["recipe::syntax::non_associative"]);
    assert_eq!(codes("let a = 1..2..3"), ["recipe::syntax::non_associative"]);
    assert_eq!(codes("rounds r = 2 from m { let x = 1 }"), ["recipe::syntax::rounds_body"]);
    let deep = format!("let a = {}1{}", "(".repeat(300), ")".repeat(300));
    assert_eq!(codes(&deep), ["recipe::syntax::nesting"]);
    let long = format!("let a = 1{}", " + 1".repeat(400));
    assert_eq!(codes(&long), ["recipe::syntax::nesting"]);
}
