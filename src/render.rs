//! Rendering for people: diagnostics through miette (colour unless `NO_COLOR` is set or stderr
//! is not a terminal), other failures as one `error:` line.

use crate::exit::Failure;
use miette::{GraphicalReportHandler, GraphicalTheme};
use recipe_compiler::diag::{Diagnostic, Source};
use std::io::IsTerminal;

pub fn colour() -> bool {
    std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal()
}

/// Render diagnostics for one source file to a string (what `recipe check` prints).
pub fn diagnostics(diagnostics: &[Diagnostic], source: &Source, colour: bool) -> String {
    let theme = if colour { GraphicalTheme::unicode() } else { GraphicalTheme::unicode_nocolor() };
    let handler = GraphicalReportHandler::new_themed(theme).with_width(100);
    let mut out = String::new();
    for diagnostic in diagnostics {
        let diagnostic = diagnostic.clone().with_source(source);
        // Writing into a String cannot fail.
        let _ = handler.render_report(&mut out, &diagnostic);
        out.push('\n');
    }
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = diagnostics.len() - errors;
    if errors == 0 && warnings > 0 {
        let plural = if warnings == 1 { "" } else { "s" };
        out.push_str(&format!("{}: {warnings} warning{plural}\n", source.name));
    }
    if errors > 0 {
        let plural = if errors == 1 { "" } else { "s" };
        out.push_str(&format!("{}: {errors} error{plural}\n", source.name));
    }
    out
}

/// A runtime error that points into the recipe (its source attached), rendered like a check
/// diagnostic.
fn located(diagnostic: &Diagnostic, colour: bool) -> String {
    let theme = if colour { GraphicalTheme::unicode() } else { GraphicalTheme::unicode_nocolor() };
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = GraphicalReportHandler::new_themed(theme).with_width(100).render_report(&mut out, diagnostic);
    out
}

pub fn failure(failure: &Failure) {
    match failure {
        Failure::Recipe(list, source) => eprint!("{}", diagnostics(list, source, colour())),
        Failure::Located(diagnostic, _) => eprint!("{}", located(diagnostic, colour())),
        Failure::Usage(message) => eprintln!("error: {message}\n\nFor more information, try '--help'."),
        Failure::Input(message)
        | Failure::Diverged(message)
        | Failure::Mismatch(message)
        | Failure::Unsupported(message) => {
            eprintln!("error: {message}")
        }
        Failure::Internal(message) => {
            eprintln!("internal error: {message}\nThis is a bug in recipe, not in your input; please report it.")
        }
    }
}

/// Writes to stdout. A closed pipe (`recipe plan x | head`) ends the command quietly, as in
/// other Unix tools, instead of panicking as `println!` does.
pub fn out(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_all(text.as_bytes()).and_then(|_| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(i32::from(crate::exit::INTERNAL));
    }
}

/// `out` with a line break.
pub fn out_line(text: impl std::fmt::Display) {
    out(&format!("{text}\n"));
}
