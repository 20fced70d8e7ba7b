//! The recipe front end: parse → resolve/check → plan, plus the scalar IR with its interpreter
//! and Cranelift JIT. This crate knows nothing of tensors: batch-tensor expressions (losses) are
//! checked here and handed to the runtime as data.

pub mod ast;
pub mod batch;
pub mod check;
pub mod column;
mod compile;
pub mod diag;
pub mod domain;
pub mod eval;
pub mod fmt;
pub mod interp;
pub mod ir;
pub mod jit;
pub mod lower;
pub mod messages;
pub mod parse;
pub mod plan;
pub mod program;
pub mod tensor;
pub mod types;

pub use compile::compile;
pub use fmt::format;
pub use parse::{parse, parse_expr};
pub use program::Program;
