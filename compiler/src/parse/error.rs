//! Turning a pest failure into one diagnostic a user can read: pest's raw text and rule names
//! are never shown. What pest expected (rules and literal tokens) is mapped to words such as
//! "an expression", "a name" or "`)`"; the primary label sits on the offending token.
//!
//! Order of explanations: an unclosed delimiter or string beats a generic "unexpected" (it is
//! usually the real cause), and a keyword where a name belongs is `recipe::syntax::reserved`.

use super::lex::{self, Unclosed};
use crate::ast::Span;
use crate::diag::Diagnostic;
use pest::error::{Error, ErrorVariant, InputLocation};
use recipe_grammar::Rule;
use std::collections::BTreeSet;

/// The diagnostic for a failed pest parse of `text`.
pub fn from_pest(error: &Error<Rule>, text: &str, unclosed: Option<Unclosed>) -> Diagnostic {
    let mut pos = match error.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((p, _)) => p,
    };
    let mut positives = match &error.variant {
        ErrorVariant::ParsingError { positives, .. } => positives.clone(),
        ErrorVariant::CustomError { .. } => return too_deep(text, pos),
    };
    // A keyword where pest wanted a name or an expression: `recipe::syntax::reserved`.
    if let Some((word, span)) = lex::token_at(text, pos) {
        let wanted = Expected::new(&positives, &[]);
        if lex::is_keyword(word) && (wanted.name || wanted.expression) {
            return reserved(word, span);
        }
    }
    let attempts = error.parse_attempts();
    // pest places the error where the furthest *rule* was tried; a literal token (`=`, `:`)
    // may have been expected further on, which is where the user's mistake is.
    if let Some(furthest) = attempts.as_ref().map(|a| a.max_position).filter(|&p| p > pos) {
        pos = furthest;
        positives.clear();
    }
    if let Some(unclosed) = unclosed {
        if unclosed.open <= pos {
            return unclosed_diagnostic(text, unclosed);
        }
    }
    // pest does not export its token type by name; its `Display` is the literal text.
    let tokens: Vec<String> =
        attempts.map(|a| a.expected_tokens().iter().map(|t| t.to_string()).collect()).unwrap_or_default();
    let expected = Expected::new(&positives, &tokens);
    // Name the next real token, not the whitespace or comment before it.
    let found = lex::token_at(text, lex::skip_trivia(text, pos));
    if let Some((word, span)) = found {
        if lex::is_keyword(word) && (expected.name || expected.expression) {
            return reserved(word, span);
        }
    }
    let (found_text, span) = match found {
        Some((word, span)) => (describe_token(word), span),
        None => ("the end of the file".to_string(), Span::new(text.len(), text.len())),
    };
    let wanted = expected.words();
    let message = if wanted.is_empty() {
        format!("unexpected {found_text}")
    } else {
        format!("expected {wanted}, found {found_text}")
    };
    // The label repeats a short expectation; a long one is in the message already.
    let label = if wanted.is_empty() || wanted.len() > 40 {
        "unexpected here".to_string()
    } else {
        format!("expected {wanted}")
    };
    let mut diagnostic = Diagnostic::error("recipe::syntax::unexpected", message).with_primary(span, label);
    if let Some(help) = expected.help(found.map(|f| f.0)) {
        diagnostic = diagnostic.with_help(help);
    }
    diagnostic
}

/// `recipe::syntax::unclosed`: primary label at the end of the input, secondary on the opener.
pub fn unclosed_diagnostic(text: &str, unclosed: Unclosed) -> Diagnostic {
    // Just after the last token, so the label sits on a line the user can see.
    let last = text.trim_end().len();
    let end = Span::new(last, last);
    let open = Span::new(unclosed.open, unclosed.open + 1);
    let (what, closer) = match unclosed.delimiter {
        '"' => ("string".to_string(), '"'),
        d => (format!("`{d}`"), lex::matching(d)),
    };
    Diagnostic::error("recipe::syntax::unclosed", format!("unclosed {what}"))
        .with_primary(end, format!("expected `{closer}` before the end of the file"))
        .with_secondary(open, format!("{what} opened here"))
        .with_help(format!("add the closing `{closer}`"))
}

/// `recipe::syntax::reserved`: a keyword where a name belongs.
pub fn reserved(word: &str, span: Span) -> Diagnostic {
    Diagnostic::error("recipe::syntax::reserved", format!("`{word}` is a keyword, not a name"))
        .with_primary(span, "reserved keyword")
        .with_help(format!("choose another name, such as `{word}_` or `my_{word}`"))
}

fn too_deep(text: &str, pos: usize) -> Diagnostic {
    let pos = pos.min(text.len());
    Diagnostic::error("recipe::syntax::nesting", "expression nested too deeply")
        .with_primary(Span::new(pos, pos), "the parser gave up here")
        .with_help("split the expression with `let` bindings or helper functions")
}

fn describe_token(token: &str) -> String {
    if token == "\"" {
        "a string".to_string()
    } else if token.starts_with(|c: char| c.is_ascii_digit()) {
        format!("the number `{token}`")
    } else {
        format!("`{token}`")
    }
}

/// What the parser would have accepted, grouped into the categories a user thinks in.
#[derive(Default)]
struct Expected {
    item: bool,
    expression: bool,
    name: bool,
    label: bool,
    ty: bool,
    string: bool,
    operator: bool,
    end: bool,
    /// Literal punctuation and keywords not covered by a category, in a stable order.
    tokens: BTreeSet<String>,
}

/// Tokens that can start an expression: subsumed by "an expression".
const EXPR_START: &[&str] = &["(", "[", "{", "-", "!", "|", "||", "\"", "if", "true", "false"];
const ITEM_START: &[&str] =
    &["recipe", "model", "data", "stage", "eval", "let", "fn", "extern", "type", "rounds", "run"];
const PUNCTUATION: &[&str] = &[")", "]", "}", ",", ":", ";", "=", "->", "from", "else"];
const OPERATORS: &[&str] =
    &["+", "-", "*", "/", "%", "**", "==", "!=", "<", "<=", ">", ">=", "&&", "||", "..", "..=", "."];

impl Expected {
    fn new(positives: &[Rule], tokens: &[String]) -> Expected {
        let mut e = Expected::default();
        for rule in positives {
            e.rule(*rule);
        }
        // Only the grammar's own literals: character ranges and built-in rules display as
        // something else and are covered by the rule categories.
        let literals: Vec<&str> = tokens
            .iter()
            .map(String::as_str)
            .filter(|t| {
                EXPR_START.contains(t) || ITEM_START.contains(t) || OPERATORS.contains(t) || PUNCTUATION.contains(t)
            })
            .collect();
        if literals.iter().any(|t| OPERATORS.contains(t) && !EXPR_START.contains(t)) {
            e.operator = true;
        }
        for &token in &literals {
            if ITEM_START.contains(&token) && literals.contains(&"rounds") {
                e.item = true;
            } else if OPERATORS.contains(&token) && !(e.expression && EXPR_START.contains(&token)) {
                e.operator = true;
            } else if token == "(" && e.operator {
                // A call: covered by "an operator".
            } else if !(e.expression && EXPR_START.contains(&token)) && !ITEM_START.contains(&token) {
                e.tokens.insert(token.to_string());
            }
        }
        e
    }

    fn rule(&mut self, rule: Rule) {
        match rule {
            Rule::header
            | Rule::binding
            | Rule::fn_def
            | Rule::extern_fn
            | Rule::type_alias
            | Rule::rounds
            | Rule::run
            | Rule::kw_recipe
            | Rule::binding_kw
            | Rule::kw_extern
            | Rule::kw_type
            | Rule::kw_rounds
            | Rule::kw_run => self.item = true,
            Rule::name | Rule::binder => self.name = true,
            Rule::label | Rule::named_arg | Rule::header_field | Rule::record_field => self.label = true,
            Rule::type_expr | Rule::fn_type | Rule::record_type | Rule::applied_type | Rule::named_type => {
                self.ty = true
            }
            Rule::string => self.string = true,
            Rule::EOI => self.end = true,
            Rule::range_op
            | Rule::or_op
            | Rule::and_op
            | Rule::cmp_op
            | Rule::add_op
            | Rule::mul_op
            | Rule::pow_op
            | Rule::call_args
            | Rule::field_access => self.operator = true,
            Rule::kw_from => {
                self.tokens.insert("from".to_string());
            }
            Rule::kw_else => {
                self.tokens.insert("else".to_string());
            }
            // `fn` starts an item or a function type, both named already.
            Rule::kw_fn => {}
            Rule::kw_let => {
                self.tokens.insert("let".to_string());
            }
            _ => self.expression = true,
        }
    }

    /// "an expression", "`)` or `,`", ... joined as a list.
    fn words(&self) -> String {
        let mut words: Vec<String> = Vec::new();
        if self.item {
            words.push("an item (`model`, `data`, `stage`, `fn`, ...)".to_string());
        }
        if self.expression {
            words.push("an expression".to_string());
        } else if self.name {
            words.push("a name".to_string());
        }
        if self.label && !self.expression {
            words.push("a field name".to_string());
        }
        if self.ty {
            words.push("a type".to_string());
        }
        if self.string {
            words.push("a string".to_string());
        }
        words.extend(self.tokens.iter().map(|token| format!("`{token}`")));
        if self.operator {
            words.push("an operator".to_string());
        }
        if self.end {
            words.push("the end of the file".to_string());
        }
        join_or(&words)
    }

    /// A fix when one is obvious from what was expected and found.
    fn help(&self, found: Option<&str>) -> Option<String> {
        match found {
            Some(";") if self.item || self.operator => {
                Some("items are separated by newlines; remove the `;`".to_string())
            }
            Some("=") if self.tokens.contains(":") => None,
            Some("//") => Some("floor division is the builtin `div(a, b)`; `//` starts a comment".to_string()),
            _ if self.tokens.contains("else") => Some("`if` is an expression and needs an `else` branch".to_string()),
            _ => None,
        }
    }
}

fn join_or(words: &[String]) -> String {
    match words {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}
