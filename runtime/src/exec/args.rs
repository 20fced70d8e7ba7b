//! Reading a builtin call's arguments (`program::Value`) into Rust values. The checker has
//! already typed every argument, so a mismatch here is a compiler/runtime disagreement and is
//! reported as an internal error naming the builtin and argument, never a panic.

use super::ExecError;
use crate::train::Schedule;
use recipe_compiler::batch::{self, Func};
use recipe_compiler::interp::Value as Scalar;
use recipe_compiler::program::Value;
use std::ops::RangeInclusive;
use std::sync::Arc;

/// A call being read: its builtin name (for messages) and arguments.
pub struct Call<'v> {
    pub name: &'v str,
    pub args: &'v [(String, Value)],
}

impl<'v> Call<'v> {
    pub fn of(value: &'v Value) -> Result<Call<'v>, ExecError> {
        match value {
            Value::Call { name, args } => Ok(Call { name, args }),
            other => Err(ExecError::Internal(format!("expected a builtin call, found {other:?}"))),
        }
    }

    pub fn get(&self, arg: &str) -> Result<&'v Value, ExecError> {
        self.args.iter().find(|(n, _)| n == arg).map(|(_, v)| v).ok_or_else(|| self.bad(arg, "is missing"))
    }

    fn bad(&self, arg: &str, what: &str) -> ExecError {
        ExecError::Internal(format!("argument `{arg}` of `{}` {what}", self.name))
    }

    pub fn int(&self, arg: &str) -> Result<i64, ExecError> {
        self.get(arg)?.as_int().ok_or_else(|| self.bad(arg, "is not an Int"))
    }

    /// A non-negative count, with a user-facing error when negative.
    pub fn count(&self, arg: &str) -> Result<u64, ExecError> {
        let v = self.int(arg)?;
        u64::try_from(v)
            .map_err(|_| ExecError::Config(format!("`{}`: `{arg}` must not be negative, got {v}", self.name)))
    }

    pub fn float(&self, arg: &str) -> Result<f64, ExecError> {
        self.get(arg)?.as_f64().ok_or_else(|| self.bad(arg, "is not a number"))
    }

    pub fn bool(&self, arg: &str) -> Result<bool, ExecError> {
        match self.get(arg)? {
            Value::Bool(b) => Ok(*b),
            _ => Err(self.bad(arg, "is not a Bool")),
        }
    }

    pub fn str(&self, arg: &str) -> Result<&'v str, ExecError> {
        self.get(arg)?.as_str().ok_or_else(|| self.bad(arg, "is not a String"))
    }

    pub fn enum_name(&self, arg: &str) -> Result<&'v str, ExecError> {
        match self.get(arg)? {
            Value::Enum { name, .. } => Ok(name),
            _ => Err(self.bad(arg, "is not an enum constant")),
        }
    }

    /// An Int range as an inclusive range of positive u32 (digits, lengths, steps).
    pub fn range(&self, arg: &str) -> Result<RangeInclusive<u32>, ExecError> {
        match self.get(arg)? {
            &Value::Range { start, end, inclusive } => {
                let end = if inclusive { end } else { end - 1 };
                let lo = u32::try_from(start).ok();
                let hi = u32::try_from(end).ok();
                match (lo, hi) {
                    (Some(lo), Some(hi)) if lo <= hi => Ok(lo..=hi),
                    _ => Err(ExecError::Config(format!(
                        "`{}`: `{arg}` must be a non-empty range of positive numbers",
                        self.name
                    ))),
                }
            }
            _ => Err(self.bad(arg, "is not a Range")),
        }
    }
}

/// Scalar functions of the program, compiled once (JIT) and shared by every stage.
pub struct Functions {
    program: batch::Compiled,
}

impl Functions {
    pub fn new(module: &recipe_compiler::ir::Module) -> Result<Functions, ExecError> {
        let program = batch::Compiled::new(module, batch::Backend::Jit)
            .map_err(|e| ExecError::Internal(format!("compiling the recipe's scalar functions: {e}")))?;
        Ok(Functions { program })
    }

    pub fn func(&self, index: u32) -> Result<Func<'_>, ExecError> {
        let name = self
            .program
            .module()
            .functions
            .get(index as usize)
            .map(|f| f.name.clone())
            .ok_or_else(|| ExecError::Internal(format!("no scalar function #{index}")))?;
        self.program.func(&name).map_err(|e| ExecError::Internal(e.to_string()))
    }
}

/// A numeric argument that may be a constant or a `fn(step: Int, total: Int) -> Float`.
pub fn schedule(call: &Call<'_>, arg: &str, functions: &Arc<Functions>) -> Result<Schedule, ExecError> {
    match call.get(arg)? {
        Value::Int(v) => Ok(Schedule::constant(*v as f64)),
        Value::Float(v) => Ok(Schedule::constant(*v)),
        Value::Scalar(index) => {
            let index = *index;
            // Check the signature once, before training starts.
            let f = functions.func(index)?;
            let probe = f.call(&[Scalar::Int(0), Scalar::Int(1)]);
            if !matches!(probe, Ok(Scalar::Float(_))) {
                return Err(ExecError::Internal(format!("`{arg}` of `{}` is not a fn(Int, Int) -> Float", call.name)));
            }
            let functions = Arc::clone(functions);
            Ok(Schedule::new(move |step, total| {
                let args = [Scalar::Int(step as i64), Scalar::Int(total as i64)];
                match functions.func(index).and_then(|f| f.call(&args).map_err(|e| ExecError::Internal(e.to_string())))
                {
                    Ok(Scalar::Float(v)) => v,
                    // Surfaces as a non-finite schedule value, which the loop reports with the step.
                    _ => f64::NAN,
                }
            }))
        }
        _ => Err(call.bad(arg, "is neither a number nor a schedule function")),
    }
}
