//! The recipe standard library as text, embedded in the binary: the prelude (schedules,
//! pacing functions, losses, judges written in the recipe language) and the native builtins'
//! signatures (`extern fn` with docs and defaults). The compiler parses both once per process.

/// Functions written in the recipe language; every recipe sees them.
pub const PRELUDE: &str = include_str!("../prelude.recipe");

/// `extern fn` signatures (and the stdlib's type aliases) of the native builtins.
pub const BUILTINS: &str = include_str!("../builtins.recipe");
