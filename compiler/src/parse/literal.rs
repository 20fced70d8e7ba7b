//! Literal values: integers (`1_000_000`, i64), floats (`1e-3`, `2.5e3`) and strings with
//! escapes. The grammar accepts the shapes; these functions compute the values and report
//! out-of-range numbers and unknown escapes with spans on the offending text.

use crate::ast::Span;
use crate::diag::Diagnostic;

/// The value of an integer literal; `text` is digits and underscores.
pub fn int(text: &str, span: Span) -> Result<i64, Diagnostic> {
    let digits: String = text.chars().filter(|&c| c != '_').collect();
    digits.parse::<i64>().map_err(|_| {
        Diagnostic::error("recipe::syntax::number", format!("integer literal `{text}` is too large"))
            .with_primary(span, "does not fit in a 64-bit signed integer")
            .with_help(format!(
                "integers range from {} to {}; write a float (`{}.0`) for larger magnitudes",
                i64::MIN,
                i64::MAX,
                digits
            ))
    })
}

/// The value of a float literal. Overflow to infinity is an error: a literal is meant to be a
/// finite number.
pub fn float(text: &str, span: Span) -> Result<f64, Diagnostic> {
    let digits: String = text.chars().filter(|&c| c != '_').collect();
    match digits.parse::<f64>() {
        Ok(value) if value.is_finite() => Ok(value),
        _ => Err(Diagnostic::error("recipe::syntax::number", format!("float literal `{text}` is out of range"))
            .with_primary(span, "larger than the largest 64-bit float")
            .with_help("the largest finite float is about 1.8e308")),
    }
}

/// The value of a string literal's contents (between the quotes). `start` is the byte offset of
/// the first content byte, so escape errors point at the escape itself. Reports every bad escape.
pub fn string(inner: &str, start: usize) -> Result<String, Vec<Diagnostic>> {
    let mut out = String::with_capacity(inner.len());
    let mut errors = Vec::new();
    let mut chars = inner.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some((_, e)) = chars.next() else {
            // The grammar never ends a string right after a backslash.
            errors.push(bad_escape("\\", Span::new(start + i, start + i + 1)));
            break;
        };
        let simple = match e {
            'n' => Some('\n'),
            't' => Some('\t'),
            'r' => Some('\r'),
            '\\' => Some('\\'),
            '"' => Some('"'),
            '0' => Some('\0'),
            _ => None,
        };
        if let Some(ch) = simple {
            out.push(ch);
            continue;
        }
        if e == 'u' {
            match unicode_escape(&inner[i..]) {
                Some((ch, len)) => {
                    out.push(ch);
                    // Skip the rest of `u{...}` (the `\` and `u` are consumed already).
                    while chars.peek().is_some_and(|&(j, _)| j < i + len) {
                        chars.next();
                    }
                }
                None => {
                    let len = inner[i..].find('}').map_or(2, |n| n + 1);
                    let text = &inner[i..i + len];
                    errors.push(bad_escape(text, Span::new(start + i, start + i + len)).with_help(
                        "a unicode escape is `\\u{` followed by 1 to 6 hex digits of a valid \
                             code point and `}`, as in `\\u{1F600}`",
                    ));
                }
            }
            continue;
        }
        let len = 1 + e.len_utf8();
        errors.push(bad_escape(&inner[i..i + len], Span::new(start + i, start + i + len)));
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Parses `\u{XXXX}` at the start of `text`; returns the char and the escape's byte length.
fn unicode_escape(text: &str) -> Option<(char, usize)> {
    let body = text.strip_prefix("\\u{")?;
    let close = body.find('}')?;
    let hex = &body[..close];
    if hex.is_empty() || hex.len() > 6 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let ch = char::from_u32(u32::from_str_radix(hex, 16).ok()?)?;
    Some((ch, 3 + close + 1))
}

fn bad_escape(text: &str, span: Span) -> Diagnostic {
    Diagnostic::error("recipe::syntax::escape", format!("unknown escape `{text}` in a string"))
        .with_primary(span, "not a valid escape")
        .with_help(
            "the escapes are `\\n`, `\\t`, `\\r`, `\\\\`, `\\\"`, `\\0` and `\\u{...}`; \
             write `\\\\` for a literal backslash",
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ints_with_underscores_and_overflow() {
        assert_eq!(int("1_000_000", Span::default()).ok(), Some(1_000_000));
        assert_eq!(int("9223372036854775807", Span::default()).ok(), Some(i64::MAX));
        let err = int("9223372036854775808", Span::default()).err().map(|d| d.code);
        assert_eq!(err, Some("recipe::syntax::number"));
    }

    #[test]
    fn floats() {
        assert_eq!(float("1e-3", Span::default()).ok(), Some(1e-3));
        assert_eq!(float("1_000.5", Span::default()).ok(), Some(1000.5));
        assert!(float("1e999", Span::default()).is_err());
    }

    #[test]
    fn escapes() {
        assert_eq!(string(r#"a\n\t\r\\\"\0\u{1F600}b"#, 0).ok().as_deref(), Some("a\n\t\r\\\"\0😀b"));
        let errs = string(r"x\q \u{110000} \u{zz}", 10).err().unwrap_or_default();
        let spans: Vec<_> = errs.iter().map(|d| d.span().map(|s| (s.start, s.end))).collect();
        assert_eq!(spans, [Some((11, 13)), Some((14, 24)), Some((25, 31))]);
    }
}
