//! Reading a builtin call's arguments (`program::Value`) into Rust values. The checker has
//! already typed every argument, so a mismatch here is a compiler/runtime disagreement and is
//! reported as an internal error naming the builtin and argument, never a panic. A value the
//! types allow but the builtin cannot use (`batch = 0`) is the user's: a call read from a
//! declaration reports it at the argument's place in the recipe.

use super::ExecError;
use crate::train::Schedule;
use recipe_compiler::batch::{self, Func};
use recipe_compiler::interp::Value as Scalar;
use recipe_compiler::program::{Program, Value};
use std::ops::RangeInclusive;
use std::sync::Arc;

/// A call being read: its builtin name (for messages), arguments and, when it is (part of)
/// a declaration, where that declaration is.
pub struct Call<'v> {
    pub name: &'v str,
    pub args: &'v [(String, Value)],
    at: Option<Place<'v>>,
}

/// A declaration's call, or an argument of it (`path`: `curriculum`, `curriculum.policy`), in a
/// program.
#[derive(Clone)]
struct Place<'v> {
    program: &'v Program,
    decl: &'v str,
    path: Option<String>,
}

impl<'v> Call<'v> {
    /// A call with no place in the recipe (inline values, tests).
    pub fn of(value: &'v Value) -> Result<Call<'v>, ExecError> {
        match value {
            Value::Call { name, args } => Ok(Call { name, args, at: None }),
            other => Err(ExecError::Internal(format!("expected a builtin call, found {other:?}"))),
        }
    }

    /// The call declaration `decl` of `program` makes; errors about its arguments point at
    /// them in the recipe.
    pub fn of_decl(program: &'v Program, decl: &'v str) -> Result<Call<'v>, ExecError> {
        let value = program
            .any_decl(decl)
            .map(|d| &d.value)
            .ok_or_else(|| ExecError::Internal(format!("no declaration `{decl}`")))?;
        Ok(Call { at: Some(Place { program, decl, path: None }), ..Call::of(value)? })
    }

    /// The call passed as argument `arg` (`curriculum = buckets(...)`), keeping its place.
    pub fn nested(&self, arg: &str) -> Result<Call<'v>, ExecError> {
        let at =
            self.at.as_ref().map(|p| Place { path: Some(self.path_of(Some(arg)).unwrap_or_default()), ..p.clone() });
        Ok(Call { at, ..Call::of(self.get(arg)?)? })
    }

    /// The dotted path of argument `arg` of this call within its declaration.
    fn path_of(&self, arg: Option<&str>) -> Option<String> {
        let outer = self.at.as_ref().and_then(|p| p.path.as_deref());
        match (outer, arg) {
            (Some(p), Some(a)) => Some(format!("{p}.{a}")),
            (Some(p), None) => Some(p.to_string()),
            (None, a) => a.map(str::to_string),
        }
    }

    /// `error` located at argument `arg` of this call in the recipe (or at the nearest enclosing
    /// argument the recipe wrote, or the whole declaration); unchanged when the call has no place.
    pub fn locate(&self, error: ExecError, arg: Option<&str>) -> ExecError {
        let Some(at) = &self.at else { return error };
        error.in_recipe(at.program, at.decl, self.path_of(arg).as_deref())
    }

    /// The recipe text written for argument `arg`; `None` when it took its default or the call
    /// has no place in a program.
    pub fn written(&self, arg: &str) -> Option<String> {
        let at = self.at.as_ref()?;
        let path = self.path_of(Some(arg))?;
        let decl = at.program.any_decl(at.decl)?;
        let (_, origin) = decl.arg_origins.iter().find(|(n, _)| *n == path)?;
        let text = &at.program.sources.get(origin.file as usize)?.text;
        text.get(origin.span.start as usize..origin.span.end as usize).map(str::to_string)
    }

    /// A user error about argument `arg`: a value the types allow but `self.name` cannot use.
    pub fn invalid(&self, arg: &str, message: impl std::fmt::Display) -> ExecError {
        self.locate(ExecError::Config(format!("`{}`: `{arg}` {message}", self.name)), Some(arg))
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
        u64::try_from(v).map_err(|_| self.invalid(arg, format!("must not be negative, got {v}")))
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

    /// An enum constant decoded into `T`. A constant `T` does not know is a disagreement
    /// between the stdlib and the runtime (an internal error), never a silent default.
    pub fn constant<T: Constant>(&self, arg: &str) -> Result<T, ExecError> {
        match self.get(arg)? {
            Value::Enum { name, .. } => T::from_name(name).ok_or_else(|| {
                self.bad(arg, &format!("is `{name}`, which this runtime does not know as a {}", T::TYPE))
            }),
            _ => Err(self.bad(arg, "is not an enum constant")),
        }
    }

    /// An Int range as an inclusive range of positive u32 (digits, lengths, steps).
    pub fn range(&self, arg: &str) -> Result<RangeInclusive<u32>, ExecError> {
        match self.get(arg)? {
            &Value::Range { start, end, inclusive } => {
                let end = if inclusive { Some(end) } else { end.checked_sub(1) };
                let lo = u32::try_from(start).ok();
                let hi = end.and_then(|end| u32::try_from(end).ok());
                match (lo, hi) {
                    (Some(lo), Some(hi)) if lo <= hi => Ok(lo..=hi),
                    _ => Err(self.invalid(arg, "must be a non-empty range of positive numbers")),
                }
            }
            _ => Err(self.bad(arg, "is not a Range")),
        }
    }
}

/// A stdlib enum type the runtime decodes exhaustively (`Optimizer`, `OnError`).
pub trait Constant: Sized {
    /// The enum type's name in the stdlib.
    const TYPE: &'static str;
    /// The value of the constant `name`, if it is one of the type's.
    fn from_name(name: &str) -> Option<Self>;
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

impl Functions {
    /// Calls scalar function `index` once with numeric `args`, each converted to its parameter's
    /// type (an Int parameter takes the value truncated); an Int or Float result as f64.
    ///
    /// Errors: `ExecError::Internal` for an unknown function, a wrong arity, a parameter or
    /// result that is not numeric, or a failed call.
    pub fn call_numeric(&self, index: u32, args: &[f64]) -> Result<f64, ExecError> {
        let f = self.func(index)?;
        let params = &f.function().params;
        if params.len() != args.len() {
            return Err(ExecError::Internal(format!(
                "scalar function `{}` takes {} arguments, given {}",
                f.function().name,
                params.len(),
                args.len()
            )));
        }
        let values = params
            .iter()
            .zip(args)
            .map(|(p, &a)| match p.ty {
                recipe_compiler::ir::Ty::Int => Ok(Scalar::Int(a as i64)),
                recipe_compiler::ir::Ty::Float => Ok(Scalar::Float(a)),
                other => Err(ExecError::Internal(format!("parameter `{}` is {other:?}, not a number", p.name))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        match f.call(&values).map_err(|e| ExecError::Internal(e.to_string()))? {
            Scalar::Int(v) => Ok(v as f64),
            Scalar::Float(v) => Ok(v),
            other => Err(ExecError::Internal(format!("`{}` returned {other:?}, not a number", f.function().name))),
        }
    }

    /// [`Functions::call_numeric`] as the objectives' `ScalarFns`: `None` where it fails.
    pub fn numeric(functions: &Arc<Functions>) -> crate::train::preference::ScalarFns {
        let functions = Arc::clone(functions);
        Arc::new(move |index, args| functions.call_numeric(index, args).ok())
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
            // Named as written (`lr`, `warmup_cosine(3e-3)`), else by the argument.
            let name = call.written(arg).unwrap_or_else(|| arg.to_string());
            let functions = Arc::clone(functions);
            Ok(Schedule::named(name, move |step, total| {
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
