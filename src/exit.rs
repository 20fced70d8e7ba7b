//! Exit codes and the failures that map to them. A user error (bad recipe, bad data, bad usage)
//! and an internal fault never share a code, so scripts and CI can tell them apart.

use recipe_compiler::diag::{Diagnostic, Source};

pub const OK: u8 = 0;
/// The recipe has errors (diagnostics were printed), or `fmt --check` found unformatted files.
pub const RECIPE: u8 = 1;
/// The command line is wrong.
pub const USAGE: u8 = 2;
/// An input file is missing or malformed (data rows, model folders).
pub const INPUT: u8 = 3;
/// Training stopped on a non-finite loss or gradient.
pub const DIVERGED: u8 = 4;
/// `recipe verify` re-executed the run and the metric trace differs.
pub const MISMATCH: u8 = 5;
/// The recipe uses a builtin this build of the runtime cannot execute.
pub const UNSUPPORTED: u8 = 6;
/// A fault of ours, not of the input: please report it.
pub const INTERNAL: u8 = 70;

#[derive(Debug)]
pub enum Failure {
    Recipe(Vec<Diagnostic>, Source),
    /// A runtime error located in the recipe (source attached), with the exit code of its kind.
    Located(Box<Diagnostic>, u8),
    Usage(String),
    Input(String),
    Diverged(String),
    Mismatch(String),
    Unsupported(String),
    Internal(String),
}

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Recipe(..) => RECIPE,
            Failure::Located(_, code) => *code,
            Failure::Usage(_) => USAGE,
            Failure::Input(_) => INPUT,
            Failure::Diverged(_) => DIVERGED,
            Failure::Mismatch(_) => MISMATCH,
            Failure::Unsupported(_) => UNSUPPORTED,
            Failure::Internal(_) => INTERNAL,
        }
    }
}
