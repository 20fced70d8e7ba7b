//! Lexical scans beside the pest parse: collecting comments (pest skips them), finding unclosed
//! delimiters and strings, and naming the token at an error position.
//!
//! Invariant: these scans agree with the grammar on what is a string and what is a comment: a
//! string starts at `"` and ends at the next `"` not preceded by an escaping `\`; a comment runs
//! from `//` outside a string to the end of the line.

use crate::ast::{Comment, Span};

/// The keywords of the language, reserved as names.
pub const KEYWORDS: &[&str] = &[
    "recipe", "model", "data", "stage", "eval", "let", "fn", "extern", "type", "rounds", "from", "run", "if", "else",
    "true", "false",
];

/// The keywords that start an item.
const ITEM_KEYWORDS: &[&str] =
    &["recipe", "model", "data", "stage", "eval", "let", "fn", "extern", "type", "rounds", "run"];

pub fn is_keyword(word: &str) -> bool {
    KEYWORDS.contains(&word)
}

/// What a scan of the whole text found: every comment, and the first delimiter problem.
pub struct Scan {
    pub comments: Vec<Comment>,
    pub unclosed: Option<Unclosed>,
    /// An upper bound on how deeply the parser may recurse: the deepest bracket nesting plus
    /// the most tokens that nest without brackets (`**`, `|` of a lambda, `if`) in one item.
    pub nesting_bound: usize,
}

/// An opening delimiter (or string quote) that is never closed.
#[derive(Clone, Copy, Debug)]
pub struct Unclosed {
    /// The byte offset of the opening `(`, `[`, `{` or `"`.
    pub open: usize,
    pub delimiter: char,
}

/// Scans `text` once, collecting comments in source order and the innermost unclosed delimiter.
/// A mismatched closer (`(]`) stops the delimiter tracking: that is an ordinary syntax error.
pub fn scan(text: &str) -> Scan {
    let bytes = text.as_bytes();
    let mut comments = Vec::new();
    let mut stack: Vec<(usize, char)> = Vec::new();
    let mut tracking = true;
    let mut unclosed_string = None;
    let mut deepest = 0;
    let mut unbracketed = 0;
    let mut worst_item = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => match string_end(bytes, i) {
                Some(end) => i = end,
                None => {
                    unclosed_string = Some(Unclosed { open: i, delimiter: '"' });
                    break;
                }
            },
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                let end = text[i..].find('\n').map_or(text.len(), |n| i + n);
                let doc = bytes.get(i + 2) == Some(&b'/');
                let body_start = if doc { i + 3 } else { i + 2 };
                let body = text[body_start..end].trim_end_matches('\r');
                comments.push(Comment { text: body.to_string(), doc, span: Span::new(i, end) });
                i = end;
            }
            open @ (b'(' | b'[' | b'{') => {
                if tracking {
                    stack.push((i, open as char));
                    deepest = deepest.max(stack.len());
                }
                i += 1;
            }
            b'*' if bytes.get(i + 1) == Some(&b'*') => {
                unbracketed += 1;
                i += 2;
            }
            b'|' => {
                unbracketed += 1;
                i += 1;
            }
            c if c.is_ascii_alphanumeric() || c == b'_' => {
                let start = i;
                while bytes.get(i).is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_') {
                    i += 1;
                }
                match &text[start..i] {
                    "if" => unbracketed += 1,
                    // A new item: nesting does not carry over from the previous one.
                    word if stack.is_empty() && ITEM_KEYWORDS.contains(&word) => {
                        worst_item = worst_item.max(unbracketed);
                        unbracketed = 0;
                    }
                    _ => {}
                }
            }
            close @ (b')' | b']' | b'}') => {
                if tracking {
                    match stack.last() {
                        Some(&(_, open)) if matching(open) == close as char => {
                            stack.pop();
                        }
                        _ => tracking = false,
                    }
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    let unclosed = unclosed_string.or_else(|| {
        if tracking {
            stack.last().map(|&(open, delimiter)| Unclosed { open, delimiter })
        } else {
            None
        }
    });
    // A mismatched closer stops the bracket count: assume the worst.
    let nesting_bound = if tracking { deepest + worst_item.max(unbracketed) } else { text.len() };
    Scan { comments, unclosed, nesting_bound }
}

/// The offset just past the closing quote of the string starting at `start`, if it is closed.
fn string_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

pub fn matching(open: char) -> char {
    match open {
        '(' => ')',
        '[' => ']',
        '{' => '}',
        other => other,
    }
}

/// The token starting at `pos` (after skipping nothing), as a user would name it: a word, a
/// number, `"` for a string, an operator, or `None` at the end of the input.
pub fn token_at(text: &str, pos: usize) -> Option<(&str, Span)> {
    let rest = text.get(pos..)?;
    let first = rest.chars().next()?;
    let len = if first.is_ascii_alphanumeric() || first == '_' {
        rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.' && first.is_ascii_digit()))
            .unwrap_or(rest.len())
    } else if first == '"' {
        1
    } else {
        const OPERATORS: &[&str] = &["..=", "**", "==", "!=", "<=", ">=", "&&", "||", "->", "..", "//"];
        OPERATORS.iter().find(|op| rest.starts_with(*op)).map_or(first.len_utf8(), |op| op.len())
    };
    Some((&rest[..len], Span::new(pos, pos + len)))
}

/// The offset of the first non-whitespace, non-comment byte at or after `pos`.
pub fn skip_trivia(text: &str, mut pos: usize) -> usize {
    let bytes = text.as_bytes();
    while pos < bytes.len() {
        match bytes[pos] {
            b' ' | b'\t' | b'\r' | b'\n' => pos += 1,
            b'/' if bytes.get(pos + 1) == Some(&b'/') => {
                pos = text[pos..].find('\n').map_or(text.len(), |n| pos + n);
            }
            _ => break,
        }
    }
    pos
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_comments_outside_strings() {
        let scan = scan("let a = \"// not\" // yes\n/// doc\nx");
        let texts: Vec<_> = scan.comments.iter().map(|c| (c.text.as_str(), c.doc)).collect();
        assert_eq!(texts, [(" yes", false), (" doc", true)]);
        assert!(scan.unclosed.is_none());
    }

    #[test]
    fn finds_innermost_unclosed_delimiter() {
        let scan = scan("f(a, g(b)");
        let unclosed = scan.unclosed.map(|u| (u.open, u.delimiter));
        assert_eq!(unclosed, Some((1, '(')));
        assert_eq!(super::scan("\"abc\\\"").unclosed.map(|u| u.delimiter), Some('"'));
        assert!(super::scan("f(a]").unclosed.is_none());
    }

    #[test]
    fn bounds_nesting_per_item() {
        assert_eq!(scan("let a = 1 * 2\nlet b = [(x)]").nesting_bound, 2);
        assert_eq!(scan("fn f() = |x| if x { 2 ** y } else { z }").nesting_bound, 1 + 4);
        assert_eq!(scan("let a = |x| x\nlet b = |y| y").nesting_bound, 2);
    }

    #[test]
    fn names_tokens() {
        assert_eq!(token_at("..= 3", 0).map(|t| t.0), Some("..="));
        assert_eq!(token_at("model x", 0).map(|t| t.0), Some("model"));
        assert_eq!(token_at("1.5e3)", 0).map(|t| t.0), Some("1.5e3"));
        assert_eq!(token_at("", 0), None);
    }
}
