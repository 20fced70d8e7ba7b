//! The canonical text of a module (`recipe fmt`). Items, statements and arguments are printed
//! from the tree; literals keep their source spelling (`20_000`, `1e-3`, escapes) when it still
//! denotes the same value; comments are put back from `Module.comments` by position.
//!
//! Invariants (tested): `format` is idempotent; `parse(format(x))` equals `parse(x)` up to
//! spans; every comment's text survives. Layout rules: 4-space indent; at most one blank line
//! between items, kept only where the source had one; a call, list, record, parameter list or
//! block is broken over lines (one element per line, trailing comma) when it would pass column
//! 100 or when a comment sits inside it. Own-line comments stay before the item, argument or
//! statement they precede; end-of-line comments stay at the end of that line. A comment inside
//! an expression that is never broken (`a + // c` `b`) moves to the end of that element's line.
//!
//! The layout depends only on the tree, the comments and the literal spellings, never on the
//! source's own line breaks (except blank lines between items): that is what makes it
//! idempotent.

mod erase;
mod expr;
#[cfg(test)]
mod tests;

pub use erase::erase_spans;

use crate::ast::*;
use crate::diag::Source;

/// Lines are broken when they would pass this column.
pub const WIDTH: usize = 100;
const INDENT: usize = 4;

/// Formats a parsed module; `source` must be the text `module` was parsed from.
pub fn format(module: &Module, source: &Source) -> String {
    let mut p = Printer::new(&source.text, &module.comments);
    p.module(module);
    p.out
}

/// Formats `module` and checks the formatter's contract on it: the text parses back to the same
/// tree (up to spans), formats to itself, and keeps every comment's text in order. Returns the
/// formatted text, or what broke. For tests and the fuzzer.
pub fn format_checked(module: &Module, source: &Source) -> Result<String, String> {
    let text = format(module, source);
    let again_source = Source::new(source.name.clone(), text.as_str());
    let again = crate::parse::parse(&again_source).map_err(|ds| {
        let messages: Vec<String> = ds.iter().map(|d| format!("{} ({})", d.message, d.code)).collect();
        format!("formatted text does not parse: {}\n{text}", messages.join("; "))
    })?;
    if erase_spans(&again) != erase_spans(module) {
        return Err(format!("formatted text parses to a different tree:\n{text}"));
    }
    let before: Vec<&str> = module.comments.iter().map(|c| c.text.as_str()).collect();
    let after: Vec<&str> = again.comments.iter().map(|c| c.text.as_str()).collect();
    if before != after {
        return Err(format!("comments changed: {before:?} became {after:?}\n{text}"));
    }
    let twice = format(&again, &again_source);
    if twice != text {
        return Err(format!("not idempotent; first:\n{text}\nsecond:\n{twice}"));
    }
    Ok(text)
}

/// Writes text with indentation and puts comments back as it goes. In `flat` mode it prints
/// one line, never breaks and never emits comments: that measures whether something fits.
pub(crate) struct Printer<'a> {
    text: &'a str,
    comments: &'a [Comment],
    /// Index of the first comment not yet written.
    next: usize,
    /// Source end of the last item or comment written, for blank-line preservation.
    last_end: usize,
    pub(crate) out: String,
    indent: usize,
    at_line_start: bool,
    flat: bool,
}

impl<'a> Printer<'a> {
    fn new(text: &'a str, comments: &'a [Comment]) -> Printer<'a> {
        Printer {
            text,
            comments,
            next: 0,
            last_end: 0,
            out: String::new(),
            indent: 0,
            at_line_start: true,
            flat: false,
        }
    }

    /// A printer for measuring: same source, no comments, one line.
    fn measurer(&self) -> Printer<'a> {
        Printer { flat: true, comments: &[], ..Printer::new(self.text, &[]) }
    }

    fn write(&mut self, s: &str) {
        if self.at_line_start && !s.is_empty() {
            for _ in 0..self.indent {
                self.out.push(' ');
            }
            self.at_line_start = false;
        }
        self.out.push_str(s);
    }

    fn newline(&mut self) {
        self.out.push('\n');
        self.at_line_start = true;
    }

    /// Ends the current line unless nothing has been written on it.
    fn ensure_line_start(&mut self) {
        if !self.at_line_start {
            self.newline();
        }
    }

    /// The column the next write lands on.
    fn column(&self) -> usize {
        if self.at_line_start {
            return self.indent;
        }
        let line = self.out.rsplit('\n').next().unwrap_or("");
        line.chars().count()
    }

    /// Whether `width` more characters fit on the current line.
    fn fits(&self, width: usize) -> bool {
        self.column() + width <= WIDTH
    }

    /// The one-line rendering of something, for measuring.
    fn measure(&self, print: impl FnOnce(&mut Printer<'a>)) -> String {
        let mut m = self.measurer();
        print(&mut m);
        m.out
    }

    /// Whether a comment not yet written starts inside `span`: such a container must break.
    fn has_comment(&self, span: Span) -> bool {
        !self.flat && self.comments[self.next..].iter().any(|c| c.span.start >= span.start && c.span.start < span.end)
    }

    fn write_comment(&mut self, c: &Comment) {
        self.write(if c.doc { "///" } else { "//" });
        self.write(&c.text);
    }

    /// Whether the source has an empty line between `from` and `to`.
    fn blank_between(&self, from: usize, to: usize) -> bool {
        let Some(gap) = self.text.get(from..to) else {
            return false;
        };
        let mut newlines = 0;
        for ch in gap.chars() {
            match ch {
                '\n' => {
                    newlines += 1;
                    if newlines >= 2 {
                        return true;
                    }
                }
                ' ' | '\t' | '\r' => {}
                _ => newlines = 0,
            }
        }
        false
    }

    /// A blank line may follow what is written so far: not at the top of the file and not
    /// right after an opening brace.
    fn blank_allowed(&self) -> bool {
        let written = self.out.trim_end_matches('\n');
        !written.is_empty() && !written.ends_with('{')
    }

    /// Writes every pending comment that starts before `pos`, each on its own line.
    fn own_line_comments(&mut self, pos: usize, blank_lines: bool) {
        while let Some(c) = self.comments.get(self.next).filter(|c| (c.span.start as usize) < pos) {
            self.next += 1;
            self.ensure_line_start();
            if blank_lines && self.blank_allowed() && self.blank_between(self.last_end, c.span.start as usize) {
                self.newline();
            }
            self.write_comment(c);
            self.newline();
            self.last_end = self.last_end.max(c.span.end as usize);
        }
    }

    /// After an element that ended at source offset `end`: a comment left inside it, or one on
    /// the same source line before `limit`, goes at the end of the current output line.
    fn trailing_comment(&mut self, end: usize, limit: usize) {
        let Some(c) = self.comments.get(self.next) else {
            return;
        };
        let start = c.span.start as usize;
        let inside = start < end;
        let same_line =
            start >= end && start < limit && self.text.get(end..start).is_some_and(|gap| !gap.contains('\n'));
        if inside || same_line {
            self.next += 1;
            self.write(" ");
            self.write_comment(c);
            self.last_end = self.last_end.max(c.span.end as usize);
        }
    }

    /// Elements one per line, each followed by `sep`, with comments put back around them.
    /// `close` is the source offset where the sequence ends (its closing delimiter).
    fn lines<T>(
        &mut self,
        elems: &[T],
        span_of: impl Fn(&T) -> Span,
        close: usize,
        sep: &str,
        blank_lines: bool,
        mut print: impl FnMut(&mut Self, &T),
    ) {
        for (i, elem) in elems.iter().enumerate() {
            let span = span_of(elem);
            let start = span.start as usize;
            self.own_line_comments(start, blank_lines);
            self.ensure_line_start();
            if blank_lines && self.blank_allowed() && self.blank_between(self.last_end, start) {
                self.newline();
            }
            print(self, elem);
            self.write(sep);
            let limit = elems.get(i + 1).map_or(close, |next| span_of(next).start as usize);
            self.last_end = self.last_end.max(span.end as usize);
            self.trailing_comment(span.end as usize, limit);
            self.newline();
        }
        self.own_line_comments(close, blank_lines);
    }

    /// `open elems close` on one line when it fits and holds no comment, else one element per
    /// line with trailing commas. `pad` puts spaces inside the delimiters on one line
    /// (`{ seed = 7 }`). `span` is the whole construct, `close_at` the source offset of its
    /// closing delimiter.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn delimited<T>(
        &mut self,
        open: &str,
        close: &str,
        pad: bool,
        elems: &[T],
        span: Span,
        close_at: usize,
        span_of: impl Fn(&T) -> Span,
        mut print: impl FnMut(&mut Self, &T),
    ) {
        let breaks = !self.flat
            && (self.has_comment(span)
                || !elems.is_empty() && {
                    let flat = self.measure(|m| m.delimited_flat(open, close, pad, elems, &mut print));
                    !self.fits(flat.chars().count())
                });
        if !breaks {
            self.delimited_flat(open, close, pad, elems, &mut print);
            return;
        }
        self.write(open);
        self.newline();
        self.indent += INDENT;
        self.lines(elems, span_of, close_at, ",", false, print);
        self.indent -= INDENT;
        self.write(close);
    }

    fn delimited_flat<T>(
        &mut self,
        open: &str,
        close: &str,
        pad: bool,
        elems: &[T],
        print: &mut impl FnMut(&mut Self, &T),
    ) {
        self.write(open);
        let pad = pad && !elems.is_empty();
        if pad {
            self.write(" ");
        }
        for (i, elem) in elems.iter().enumerate() {
            if i > 0 {
                self.write(", ");
            }
            print(self, elem);
        }
        if pad {
            self.write(" ");
        }
        self.write(close);
    }

    fn module(&mut self, module: &Module) {
        let end = self.text.len();
        self.lines(&module.items, item_span, end, "", true, |p, item| p.item(item));
        self.ensure_line_start();
    }

    fn item(&mut self, item: &Item) {
        match item {
            Item::Header(h) => {
                self.write("recipe ");
                self.string_literal(&h.name, h.name_span);
                self.write(" ");
                let close = h.span.end.saturating_sub(1) as usize;
                self.braces_fields(&h.fields, h.span, close, " = ", true);
            }
            Item::Binding(b) => self.binding(b),
            Item::Fn(f) => {
                self.write("fn ");
                self.write(&f.name.name);
                let close = f.ret.as_ref().map_or(f.body.span, |t| t.span).start as usize;
                self.params(&f.params, Span::new(f.name.span.end as usize, close), close);
                if let Some(ret) = &f.ret {
                    self.write(" -> ");
                    self.ty(ret);
                }
                self.assigned(&f.body);
            }
            Item::Extern(e) => {
                self.write("extern fn ");
                self.write(&e.name.name);
                if !e.type_params.is_empty() {
                    let names: Vec<&str> = e.type_params.iter().map(|t| t.name.as_str()).collect();
                    self.write(&format!("[{}]", names.join(", ")));
                }
                let close = e.ret.span.start as usize;
                self.params(&e.params, Span::new(e.name.span.end as usize, close), close);
                self.write(" -> ");
                self.ty(&e.ret);
            }
            Item::TypeAlias(t) => {
                self.write("type ");
                self.write(&t.name.name);
                self.write(" = ");
                self.ty(&t.ty);
            }
            Item::Rounds(r) => self.rounds(r),
            Item::Run(r) => {
                self.write("run ");
                let names: Vec<&str> = r.steps.iter().map(|s| s.name.as_str()).collect();
                self.write(&names.join(" -> "));
            }
        }
    }

    fn binding(&mut self, b: &Binding) {
        self.write(b.kind.keyword());
        self.write(" ");
        self.write(&b.name.name);
        if let Some(ty) = &b.ty {
            self.write(": ");
            self.ty(ty);
        }
        self.assigned(&b.value);
    }

    fn rounds(&mut self, r: &Rounds) {
        self.write("rounds ");
        self.write(&r.name.name);
        self.write(" = ");
        self.expr(&r.count);
        self.write(" from ");
        self.expr(&r.from);
        let close = r.span.end.saturating_sub(1) as usize;
        if r.stages.is_empty() && !self.has_comment(Span::new(r.from.span.end as usize, close)) {
            self.write(" {}");
            return;
        }
        self.write(" {");
        self.newline();
        self.indent += INDENT;
        self.lines(&r.stages, |s| s.span, close, "", true, |p, s| p.binding(s));
        self.indent -= INDENT;
        self.write("}");
    }

    /// `{ name = value, ... }` (header, `pad`) or `{name: value, ...}` (record), `{}` when
    /// empty.
    pub(crate) fn braces_fields(&mut self, fields: &[Field], span: Span, close: usize, sep: &str, pad: bool) {
        self.delimited(
            "{",
            "}",
            pad,
            fields,
            span,
            close,
            |f| f.span,
            |p, f| {
                p.write(&f.name.name);
                p.write(sep);
                p.expr(&f.value);
            },
        );
    }
}

fn item_span(item: &Item) -> Span {
    match item {
        Item::Header(h) => h.span,
        Item::Binding(b) => b.span,
        Item::Fn(f) => f.span,
        Item::Extern(e) => e.span,
        Item::TypeAlias(t) => t.span,
        Item::Rounds(r) => r.span,
        Item::Run(r) => r.span,
    }
}
