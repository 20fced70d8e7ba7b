//! The string builtins as a recipe writes them: folded at compile time on constants, lowered to
//! scalar IR over a row's fields (a GSM8K reward, a mapping of text), and a pattern that is not
//! a regular expression refused at compile time.

use recipe_compiler::compile;
use recipe_compiler::diag::Source;
use recipe_compiler::interp::{Interp, Value as IV};
use recipe_compiler::ir::FuncId;
use recipe_compiler::jit::JitModule;
use recipe_compiler::program::{Program, Value};

const HEAD: &str =
    "recipe \"t\" { seed = 3 }\nmodel m = tiny_lm()\ndata d = synth.addition(digits = 1..=2, count = 10)\n";

fn compiled(body: &str) -> Result<Program, Vec<(&'static str, String)>> {
    let source = Source::new("t.recipe", format!("{HEAD}{body}"));
    compile(&source, &[]).map_err(|errors| errors.iter().map(|d| (d.code, d.message.clone())).collect())
}

fn program(body: &str) -> Program {
    compiled(body).unwrap_or_else(|e| panic!("{e:#?}"))
}

fn constant(p: &Program, name: &str) -> Value {
    p.decl(name).expect("declared").value.clone()
}

#[test]
fn constants_fold_to_the_documented_values() {
    let p = program(concat!(
        "let a = capture(\"so 72 clips\\n#### 72\", \"#### (-?[0-9]+)\", 1)\n",
        "let b = replace(\"1,234,567\", \",\", \"\")\n",
        "let c = split_part(\"a,b,,c\", \",\", -2)\n",
        "let e = before(\"key=value=x\", \"=\") + \"|\" + after(\"key=value=x\", \"=\") + \"|\" + after_last(\"key=value=x\", \"=\")\n",
        "let f = lower(\"ÀB\") + upper(\"ß\")\n",
        "let g = last_number(\"It costs $1,234.50.\")\n",
        "let h = first_number(\"no digits\")\n",
        "let i = str(72.0) + \" \" + str(0.5) + \" \" + str(3) + \" \" + str_int(-9223372036854775807 - 1)\n",
        "let j = format(\"#### {}\", str(last_number(\"1,23\")))\n",
        "stage s = sft(m, d)\nrun s\n",
    ));
    let text = |name: &str| match constant(&p, name) {
        Value::Str(s) => s,
        other => panic!("{name} is not a String: {other:?}"),
    };
    assert_eq!(text("a"), "72");
    assert_eq!(text("b"), "1234567");
    assert_eq!(text("c"), "");
    assert_eq!(text("e"), "key|value=x|x");
    assert_eq!(text("f"), "àbSS");
    assert_eq!(constant(&p, "g"), Value::Float(1234.5));
    assert!(matches!(constant(&p, "h"), Value::Float(x) if x.is_nan()));
    assert_eq!(text("i"), "72 0.5 3 -9223372036854775808");
    assert_eq!(text("j"), "#### 23");
}

#[test]
fn a_gsm8k_reward_compiles_and_runs_on_both_backends() {
    let p = program(concat!(
        "fn correct(completion: String, answer: String) -> Float =\n",
        "    if last_number(completion) == last_number(answer) { 1.0 } else { 0.0 }\n",
        "data short = filter(d, |r| len(after(r.completion, \"=\") + str(float(len(r.prompt)))) < 50)\n",
        "stage s = rl(m, short, reward = |r| correct(r.completion, r.answer))\nrun s\n",
    ));
    let Some(Value::Scalar(reward)) = p.decl("s").and_then(|d| d.value.arg("reward")) else { panic!("reward") };
    let interp = Interp::new(&p.scalar).unwrap();
    let jit = JitModule::compile(&p.scalar).unwrap();
    let f = &p.scalar.functions[*reward as usize];
    let args = |completion: &str, answer: &str| -> Vec<IV> {
        f.params
            .iter()
            .map(|param| IV::Str(if param.name == "completion" { completion } else { answer }.into()))
            .collect()
    };
    for (completion, answer, want) in [
        ("48 + 24 = 72 clips. The answer is 72.", "Natalia sold 48+24 = 72 clips.\n#### 72", 1.0),
        ("The answer is $1,200.", "#### 1200", 1.0),
        ("I think 71", "#### 72", 0.0),
        ("no idea", "#### 72", 0.0),
    ] {
        let args = args(completion, answer);
        assert_eq!(interp.call(FuncId(*reward), &args), Ok(IV::Float(want)), "{completion:?}");
        assert_eq!(jit.call(FuncId(*reward), &args), Ok(IV::Float(want)), "{completion:?}");
    }
}

#[test]
fn a_pattern_that_is_no_regular_expression_is_refused() {
    let errors =
        compiled("stage s = rl(m, d, reward = |r| float(len(capture(r.completion, \"(unclosed\", 1))))\nrun s\n")
            .unwrap_err();
    assert!(
        errors
            .iter()
            .any(|(code, message)| *code == "recipe::eval::unsupported"
                && message.contains("invalid regular expression")),
        "{errors:#?}"
    );
    let errors = compiled("stage s = rl(m, d, reward = |r| float(len(capture(r.completion, r.answer, 1))))\nrun s\n")
        .unwrap_err();
    assert!(errors.iter().any(|(_, message)| message.contains("pattern of `capture`")), "{errors:#?}");
}
