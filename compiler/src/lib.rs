//! The recipe front end: parse → resolve/check → plan, plus the scalar IR with its interpreter
//! and Cranelift JIT. This crate knows nothing of tensors: batch-tensor expressions (losses) are
//! checked here and handed to the runtime as data.

pub mod ast;
pub mod diag;
pub mod column;
pub mod ir;
pub mod interp;
pub mod jit;
pub mod batch;
pub mod parse;
pub mod fmt;
pub mod types;
pub mod check;
pub mod tensor;
pub mod program;
pub mod eval;
pub mod lower;
pub mod plan;
mod compile;

pub use fmt::format;
pub use parse::{parse, parse_expr};
pub use compile::compile;
pub use program::Program;
