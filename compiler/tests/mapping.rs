//! `map` and `Messages` through `compile`: the row type `map` infers, its row function lowered
//! to one scalar function per output field (run here on the reference interpreter), the
//! conversation builtins and `+` on conversations, and the check errors around them.

use recipe_compiler::compile;
use recipe_compiler::diag::Source;
use recipe_compiler::interp::{Interp, Value as IV};
use recipe_compiler::ir::FuncId;
use recipe_compiler::messages;
use recipe_compiler::program::{FieldKind, Program, Value};

const HEAD: &str = "recipe \"t\" { seed = 3 }\nmodel m = tiny_lm()\n\
data gsm: Dataset[{question: String, answer: String, level: Int}] = jsonl(\"gsm.jsonl\")\n";

fn compiled(body: &str) -> Result<Program, Vec<(&'static str, String, Option<String>)>> {
    // A recipe needs a run line; the bodies that test no stage get a neutral one.
    let tail = if body.contains("\nrun ") { "" } else { "stage z = sft(m, synth.addition())\nrun z\n" };
    let source = Source::new("t.recipe", format!("{HEAD}{body}{tail}"));
    compile(&source, &[]).map_err(|ds| ds.into_iter().map(|d| (d.code, d.message, d.help)).collect())
}

fn program(body: &str) -> Program {
    compiled(body).unwrap_or_else(|errors| panic!("{errors:#?}"))
}

fn error_codes(body: &str) -> Vec<&'static str> {
    compiled(body).map_or_else(|es| es.into_iter().map(|e| e.0).collect(), |_| Vec::new())
}

/// The field functions of `map`'s `f` in the declaration `name`.
fn field_functions(p: &Program, name: &str) -> Vec<(String, u32)> {
    let Some(Value::Record(fields)) = p.decl(name).and_then(|d| d.value.arg("f")) else {
        panic!("`{name}`'s function is a record of functions: {:?}", p.decl(name).map(|d| &d.value))
    };
    fields
        .iter()
        .map(|(n, v)| match v {
            Value::Scalar(id) => (n.clone(), *id),
            other => panic!("field `{n}` is not compiled: {other:?}"),
        })
        .collect()
}

/// Runs the field function `id` on one input row given by field name.
fn run(p: &Program, id: u32, row: &[(&str, IV)]) -> IV {
    let f = &p.scalar.functions[id as usize];
    let args: Vec<IV> = f
        .params
        .iter()
        .map(|param| row.iter().find(|(n, _)| *n == param.name).map(|(_, v)| v.clone()).expect("a row field"))
        .collect();
    Interp::new(&p.scalar).expect("valid IR").call(FuncId(id), &args).expect("runs")
}

#[test]
fn map_infers_the_row_type_from_its_function() {
    let p = program(
        "data train = map(gsm, |r| {prompt: system(\"Solve it.\") + user(r.question), completion: r.answer, \
         hard: r.level > 2, weight: 0.5, n: len(r.answer)})\nstage s = sft(m, train, steps = 2)\nrun s\n",
    );
    let decl = p.decl("train").expect("declared");
    assert_eq!(decl.ty, "Dataset[{completion: String, hard: Bool, n: Int, prompt: Messages, weight: Float}]");
    let kinds: Vec<(&str, &FieldKind)> =
        decl.row.as_ref().expect("rows").fields.iter().map(|(n, k)| (n.as_str(), k)).collect();
    assert_eq!(kinds[3], ("prompt", &FieldKind::Messages));
    assert_eq!(kinds[2], ("n", &FieldKind::Int));
}

#[test]
fn each_output_field_is_one_function_of_the_fields_it_reads() {
    let p = program(
        "data train = map(gsm, |r| { let q = trim(r.question); {prompt: system(\"Solve it.\") + user(q), \
         completion: r.answer, hard: r.level > 2, weight: 0.5} })\n",
    );
    let fields = field_functions(&p, "train");
    let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["completion", "hard", "prompt", "weight"], "in the record's field order");
    let row =
        [("question", IV::Str(" What is 2+\"2\"?\n".into())), ("answer", IV::Str("4".into())), ("level", IV::Int(3))];
    let at = |field: &str| {
        let id = fields.iter().find(|(n, _)| n == field).expect("field").1;
        run(&p, id, &row)
    };
    let expected =
        messages::concat(&messages::turn("system", "Solve it."), &messages::turn("user", "What is 2+\"2\"?"));
    assert_eq!(at("prompt"), IV::Str(expected.as_str().into()));
    let prompt = fields.iter().find(|(n, _)| n == "prompt").expect("prompt").1;
    assert_eq!(p.functions[prompt as usize].ret, "Messages", "the runtime tags the column by it");
    assert_eq!(at("completion"), IV::Str("4".into()));
    assert_eq!(at("hard"), IV::Bool(true));
    assert_eq!(at("weight"), IV::Float(0.5));
    // Every field function reads the input row's flattened fields by name.
    for (_, id) in &fields {
        let params: Vec<&str> = p.scalar.functions[*id as usize].params.iter().map(|p| p.name.as_str()).collect();
        assert!(params.iter().all(|n| ["question", "answer", "level"].contains(n)), "{params:?}");
    }
}

#[test]
fn a_constant_conversation_folds_to_its_canonical_text() {
    let p = program("let greeting = system(\"Be brief.\") + user(\"hi\") + assistant(\"hello\")\n");
    let Some(Value::Str(text)) = p.decl("greeting").map(|d| &d.value) else { panic!("folded") };
    let parsed: serde_json::Value = serde_json::from_str(text).expect("JSON");
    let roles: Vec<&str> = parsed.as_array().unwrap().iter().map(|t| t["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["system", "user", "assistant"]);
}

#[test]
fn stages_accept_conversational_rows() {
    program("data chat: Dataset[{messages: Messages}] = jsonl(\"chat.jsonl\")\nstage s = sft(m, chat)\nrun s\n");
    program(
        "data p = map(gsm, |r| {prompt: user(r.question), chosen: assistant(r.answer), rejected: assistant(\"no\")})\n\
         stage s = preference(m, p)\nrun s\n",
    );
}

#[test]
fn mistakes_are_check_errors() {
    // The GSM8K rows as they are: no `prompt`, no `completion`.
    assert_eq!(error_codes("stage s = sft(m, gsm)\nrun s\n"), ["recipe::call::missing_field"]);
    // Not a row.
    assert_eq!(error_codes("data x = map(gsm, |r| r.question)\n"), ["recipe::type::mismatch"]);
    assert_eq!(error_codes("data x = map(gsm, |r| {prompt: [r.question]})\n"), ["recipe::type::mismatch"]);
    // A field the input lacks.
    assert_eq!(error_codes("data x = map(gsm, |r| {prompt: r.questoin})\n"), ["recipe::resolve::unknown_field"]);
    // A conversation is not a String, and the other way round.
    assert_eq!(error_codes("data x = filter(gsm, |r| len(user(r.question)) > 3)\n"), ["recipe::type::mismatch"]);
    assert_eq!(
        error_codes("data x = map(gsm, |r| {prompt: r.question + user(r.answer)})\n"),
        ["recipe::type::operator"]
    );
    // `rl` generates from conversational prompts (the chat template renders them); `perturb`
    // rewrites the text of String prompts only.
    let chat = "data x = map(gsm, |r| {prompt: user(r.question)})\n";
    assert!(error_codes(&format!("{chat}stage s = rl(m, x, reward = |r| 0.0)\nrun s\n")).is_empty());
    assert_eq!(error_codes(&format!("{chat}data y = perturb(x)\n")), ["recipe::call::missing_field"]);
}

#[test]
fn the_missing_field_message_says_what_to_map() {
    let errors = compiled("stage s = sft(m, gsm)\nrun s\n").unwrap_err();
    let (_, message, help) = &errors[0];
    assert!(message.contains("fields `prompt` and `completion` (String or Messages), which"), "{message}");
    let help = help.as_deref().unwrap_or_default();
    assert!(help.contains(", or `messages` (Messages) of each row") && help.contains("map(data, |r|"), "{help}");
}
