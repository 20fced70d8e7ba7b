//! The pest grammar of the recipe language (`recipe.pest`), and nothing else: this crate knows
//! nothing of the syntax tree, types or evaluation. The compiler's `parse` module turns the pest
//! pairs into `ast::Module` and maps pest's failures to diagnostics.
//!
//! Invariant: the grammar accepts a superset of the language where that gives better errors
//! (keywords in binder positions, chained comparisons, unknown string escapes); the compiler
//! rejects those with dedicated diagnostics.

use pest_derive::Parser;

/// The derived parser. Start at [`Rule::module`] for a whole file, [`Rule::expr`] for a single
/// expression (e.g. a `--set key=value` override) or [`Rule::type_expr`] for a type.
#[derive(Parser)]
#[grammar = "recipe.pest"]
pub struct RecipeParser;
