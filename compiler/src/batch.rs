//! Batch evaluation: run a compiled scalar function over every row of a set of columns, in
//! parallel, on either backend. This is what the runtime calls for per-example difficulty scores,
//! filters and rewards, and (with [`Func::call`]) for one-off calls such as a schedule at a step.
//!
//! Parameters are matched to columns by name (the lowering names a row function's parameters after
//! the record fields it uses). Rows are split into fixed-size chunks, so the result never depends
//! on the number of threads; each chunk has its own string arena (JIT) or local slots
//! (interpreter), released when the chunk is done, after its results are copied out.

use crate::column::Column;
use crate::interp::{Interp, Text, Val, Value};
use crate::ir::{FuncId, Function, IrError, Module, Ty};
use crate::jit::{Arena, JitError, JitModule, StrRef};
use rayon::prelude::*;
use std::sync::Arc;

/// Rows per parallel work item. Fixed, so chunking is independent of the thread count.
const CHUNK: usize = 4096;

/// Which backend evaluates scalar code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// Cranelift-compiled native code.
    Jit,
    /// The reference interpreter.
    Interp,
}

/// Why a call or a batch evaluation could not run. All are caller errors (wrong arguments or
/// columns), detected before any row is evaluated.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum EvalError {
    /// The module has no function of that name.
    #[error("no scalar function `{0}`")]
    UnknownFunction(String),
    /// A call passed the wrong number of arguments.
    #[error("`{func}` takes {expected} argument(s), given {found}")]
    Arity { func: String, expected: usize, found: usize },
    /// A call passed an argument of the wrong type.
    #[error("argument `{param}` of `{func}` must be {}, given {}", expected.name(), found.name())]
    ArgType { func: String, param: String, expected: Ty, found: Ty },
    /// No column is named like a parameter of the function.
    #[error("`{func}` needs a column `{param}`, which the data does not have")]
    MissingColumn { func: String, param: String },
    /// A column has the wrong element type for its parameter.
    #[error("column `{column}` holds {}, but `{func}` takes it as {}", found.name(), expected.name())]
    ColumnType { func: String, column: String, expected: Ty, found: Ty },
    /// Columns of different lengths.
    #[error("column `{column}` has {found} rows, expected {expected}")]
    LengthMismatch { column: String, expected: usize, found: usize },
    /// No columns at all, so the number of rows is unknown.
    #[error("`{func}` evaluated over no columns: the number of rows is unknown")]
    NoColumns { func: String },
}

/// Why a module could not be prepared for evaluation.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum CompileError {
    #[error(transparent)]
    Ir(#[from] IrError),
    #[error(transparent)]
    Jit(#[from] JitError),
}

enum Engine {
    Interp(Interp),
    /// Boxed: the JIT module is much larger than the interpreter.
    Jit(Box<JitModule>),
}

/// A scalar [`Module`] prepared for evaluation on one backend (not to be confused with the
/// front end's `program::Program`, whose `scalar` field is the module). `Sync`: share it across
/// threads.
pub struct Compiled {
    engine: Engine,
}

impl Compiled {
    /// Validates `module` and compiles it (JIT) or prepares it (interpreter).
    pub fn new(module: &Module, backend: Backend) -> Result<Compiled, CompileError> {
        let engine = match backend {
            Backend::Interp => Engine::Interp(Interp::new(module)?),
            Backend::Jit => Engine::Jit(Box::new(JitModule::compile(module)?)),
        };
        Ok(Compiled { engine })
    }

    pub fn backend(&self) -> Backend {
        match self.engine {
            Engine::Interp(_) => Backend::Interp,
            Engine::Jit(_) => Backend::Jit,
        }
    }

    pub fn module(&self) -> &Module {
        match &self.engine {
            Engine::Interp(i) => i.module(),
            Engine::Jit(j) => j.module(),
        }
    }

    /// The function of that name.
    pub fn func(&self, name: &str) -> Result<Func<'_>, EvalError> {
        let id = self.module().find(name).ok_or_else(|| EvalError::UnknownFunction(name.into()))?;
        Ok(Func { program: self, id })
    }
}

/// A function of a [`Compiled`].
#[derive(Clone, Copy)]
pub struct Func<'p> {
    program: &'p Compiled,
    id: FuncId,
}

impl<'p> Func<'p> {
    pub fn function(&self) -> &'p Function {
        self.program.module().function(self.id)
    }

    /// Calls the function once.
    pub fn call(&self, args: &[Value]) -> Result<Value, EvalError> {
        match &self.program.engine {
            Engine::Interp(i) => i.call(self.id, args),
            Engine::Jit(j) => j.call(self.id, args),
        }
    }
}

/// Checks call arguments against a function's parameters.
pub(crate) fn check_args(func: &Function, args: &[Value]) -> Result<(), EvalError> {
    if args.len() != func.params.len() {
        return Err(EvalError::Arity { func: func.name.clone(), expected: func.params.len(), found: args.len() });
    }
    for (p, a) in func.params.iter().zip(args) {
        if p.ty != a.ty() {
            return Err(EvalError::ArgType {
                func: func.name.clone(),
                param: p.name.clone(),
                expected: p.ty,
                found: a.ty(),
            });
        }
    }
    Ok(())
}

fn column_ty(c: &Column) -> Ty {
    match c {
        Column::Int(_) => Ty::Int,
        Column::Float(_) => Ty::Float,
        Column::Bool(_) => Ty::Bool,
        Column::Str(_) => Ty::Str,
    }
}

/// Finds each parameter's column and the common row count.
fn bind<'c>(func: &Function, columns: &[(&str, &'c Column)]) -> Result<(Vec<&'c Column>, usize), EvalError> {
    let Some((_, first)) = columns.first() else {
        return Err(EvalError::NoColumns { func: func.name.clone() });
    };
    let rows = first.len();
    for (name, col) in columns {
        if col.len() != rows {
            return Err(EvalError::LengthMismatch { column: (*name).to_owned(), expected: rows, found: col.len() });
        }
    }
    let mut bound = Vec::with_capacity(func.params.len());
    for p in &func.params {
        let Some((name, col)) = columns.iter().find(|(n, _)| *n == p.name) else {
            return Err(EvalError::MissingColumn { func: func.name.clone(), param: p.name.clone() });
        };
        if column_ty(col) != p.ty {
            return Err(EvalError::ColumnType {
                func: func.name.clone(),
                column: (*name).to_owned(),
                expected: p.ty,
                found: column_ty(col),
            });
        }
        bound.push(*col);
    }
    Ok((bound, rows))
}

/// Evaluates `func` on every row of `columns` (matched to its parameters by name), in parallel.
/// The result has one element per row and the function's return type.
pub fn eval_batch(func: Func<'_>, columns: &[(&str, &Column)]) -> Result<Column, EvalError> {
    let function = func.function();
    let (cols, rows) = bind(function, columns)?;
    Ok(match &func.program.engine {
        Engine::Interp(interp) => interp_batch(interp, func.id, function.ret, &cols, rows),
        Engine::Jit(jit) => jit_batch(jit, func.id, function.ret, &cols, rows),
    })
}

/// Splits `0..rows` into fixed chunks, evaluates them in parallel and concatenates in order.
fn chunked<T: Send>(rows: usize, eval: impl Fn(usize, usize) -> Vec<T> + Sync) -> Vec<T> {
    let chunks: Vec<Vec<T>> = (0..rows.div_ceil(CHUNK))
        .into_par_iter()
        .map(|c| {
            let start = c * CHUNK;
            eval(start, (start + CHUNK).min(rows))
        })
        .collect();
    let mut out = Vec::with_capacity(rows);
    chunks.into_iter().for_each(|c| out.extend(c));
    out
}

fn interp_batch(interp: &Interp, f: FuncId, ret: Ty, cols: &[&Column], rows: usize) -> Column {
    /// Evaluates every row, reusing parameter and local slots within a chunk; `take` unwraps the
    /// result, whose type the validated function guarantees.
    fn run<'a, T: Send>(
        interp: &'a Interp,
        f: FuncId,
        cols: &[&'a Column],
        rows: usize,
        take: impl Fn(Val<'a>) -> T + Sync,
    ) -> Vec<T> {
        chunked(rows, |start, end| {
            let mut params: Vec<Val<'a>> = vec![Val::Int(0); cols.len()];
            let mut locals = interp.locals(f);
            let mut out = Vec::with_capacity(end - start);
            for row in start..end {
                for (slot, col) in params.iter_mut().zip(cols) {
                    *slot = match col {
                        Column::Int(v) => Val::Int(v[row]),
                        Column::Float(v) => Val::Float(v[row]),
                        Column::Bool(v) => Val::Bool(v[row]),
                        Column::Str(v) => Val::Str(Text::Borrowed(&v[row])),
                    };
                }
                out.push(take(interp.eval_row(f, &params, &mut locals)));
            }
            out
        })
    }
    match ret {
        Ty::Int => Column::Int(run(interp, f, cols, rows, |v| match v {
            Val::Int(x) => x,
            _ => unreachable!("validated: Int result"),
        })),
        Ty::Float => Column::Float(run(interp, f, cols, rows, |v| match v {
            Val::Float(x) => x,
            _ => unreachable!("validated: Float result"),
        })),
        Ty::Bool => Column::Bool(run(interp, f, cols, rows, |v| match v {
            Val::Bool(x) => x,
            _ => unreachable!("validated: Bool result"),
        })),
        Ty::Str => Column::Str(run(interp, f, cols, rows, |v| match v {
            Val::Str(s) => Arc::from(s.as_str()),
            _ => unreachable!("validated: Str result"),
        })),
    }
}

fn jit_batch(jit: &JitModule, f: FuncId, ret: Ty, cols: &[&Column], rows: usize) -> Column {
    // Per chunk: point the kernel at each column's rows (strings as (ptr, len) views of the
    // column's `Arc<str>`s, which outlive the chunk), run it, copy the results out.
    let run = |start: usize, end: usize, out: *mut u8, arena: &mut Arena| {
        let views: Vec<Vec<StrRef>> = cols
            .iter()
            .map(|c| match c {
                Column::Str(v) => v[start..end].iter().map(|s| StrRef::new(s)).collect(),
                _ => Vec::new(),
            })
            .collect();
        let ptrs: Vec<*const u8> = cols
            .iter()
            .zip(&views)
            .map(|(c, view)| match c {
                Column::Int(v) => v[start..end].as_ptr() as *const u8,
                Column::Float(v) => v[start..end].as_ptr() as *const u8,
                Column::Bool(v) => v[start..end].as_ptr() as *const u8,
                Column::Str(_) => view.as_ptr() as *const u8,
            })
            .collect();
        // SAFETY: `ptrs` holds one pointer per parameter, each to `end - start` elements of the
        // parameter's type (checked by `bind`); `out` has room for as many results.
        unsafe { jit.run(f, &ptrs, end - start, out, arena) };
    };
    match ret {
        Ty::Int => Column::Int(chunked(rows, |s, e| {
            let mut out = vec![0i64; e - s];
            run(s, e, out.as_mut_ptr() as *mut u8, &mut Arena::default());
            out
        })),
        Ty::Float => Column::Float(chunked(rows, |s, e| {
            let mut out = vec![0f64; e - s];
            run(s, e, out.as_mut_ptr() as *mut u8, &mut Arena::default());
            out
        })),
        Ty::Bool => Column::Bool(chunked(rows, |s, e| {
            let mut out = vec![false; e - s];
            run(s, e, out.as_mut_ptr() as *mut u8, &mut Arena::default());
            out
        })),
        Ty::Str => Column::Str(chunked(rows, |s, e| {
            let mut out = vec![StrRef::EMPTY; e - s];
            let mut arena = Arena::default();
            run(s, e, out.as_mut_ptr() as *mut u8, &mut arena);
            // SAFETY: every result points into a column, a module constant or `arena`, all of
            // which are alive here; `arena` is dropped only after the copies.
            out.iter().map(|r| Arc::from(unsafe { r.as_str() })).collect()
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Expr, Param};

    /// `score(digits: Int, prompt: String, margin: Float) = digits * 2 + len(prompt) - margin`,
    /// and `echo(prompt) = upper(trim(prompt))` (a string result built in the arena).
    fn module() -> Module {
        let mut m = Module::new();
        let digits = Expr::param(0, Ty::Int);
        let prompt = Expr::param(1, Ty::Str);
        let len = m.call("len", vec![prompt.clone()]).unwrap();
        let twice = crate::ir::binary(crate::ast::BinOp::Mul, digits, Expr::int(2)).unwrap();
        let sum = crate::ir::binary(crate::ast::BinOp::Add, twice, len).unwrap();
        let margin = Expr::param(2, Ty::Float);
        let body = crate::ir::binary(crate::ast::BinOp::Sub, sum, margin).unwrap();
        let params = vec![
            Param { name: "digits".into(), ty: Ty::Int },
            Param { name: "prompt".into(), ty: Ty::Str },
            Param { name: "margin".into(), ty: Ty::Float },
        ];
        m.push(Function { name: "score".into(), params, ret: Ty::Float, body });
        let trimmed = m.call("trim", vec![Expr::param(0, Ty::Str)]).unwrap();
        let body = m.call("upper", vec![trimmed]).unwrap();
        let params = vec![Param { name: "prompt".into(), ty: Ty::Str }];
        m.push(Function { name: "echo".into(), params, ret: Ty::Str, body });
        m
    }

    fn data(n: usize) -> (Column, Column, Column) {
        let digits = Column::Int((0..n as i64).map(|i| i % 17 - 3).collect());
        let prompt = Column::Str((0..n).map(|i| Arc::from(format!(" q{}é ", i % 101).as_str())).collect());
        let margin = Column::Float((0..n).map(|i| (i as f64).sin()).collect());
        (digits, prompt, margin)
    }

    #[test]
    fn backends_agree_and_ignore_thread_count() {
        let m = module();
        let (digits, prompt, margin) = data(3 * CHUNK + 17);
        // Column order and extra columns do not matter: parameters bind by name.
        let extra = Column::Bool(vec![true; digits.len()]);
        let cols = [("margin", &margin), ("unused", &extra), ("prompt", &prompt), ("digits", &digits)];
        let mut results = Vec::new();
        for backend in [Backend::Interp, Backend::Jit] {
            let program = Compiled::new(&m, backend).unwrap();
            for threads in [1, 3] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                for name in ["score", "echo"] {
                    let f = program.func(name).unwrap();
                    results.push((name, pool.install(|| eval_batch(f, &cols)).unwrap()));
                }
            }
        }
        for pair in results.chunks(2).skip(1) {
            assert_eq!(pair[0], results[0]);
            assert_eq!(pair[1], results[1]);
        }
        let Column::Float(score) = &results[0].1 else { panic!("score is Float") };
        assert_eq!(score[5], (2 * 2 + 5) as f64 - 5f64.sin());
        let Column::Str(echo) = &results[1].1 else { panic!("echo is Str") };
        assert_eq!(&*echo[5], "Q5É");
        assert_eq!(echo.len(), digits.len());
    }

    #[test]
    fn string_builtins_evaluate_over_chunks_on_both_backends() {
        use crate::interp::ops;
        // One row function per String-valued builtin, over `answer` (String) and `n` (Int).
        let mut m = Module::new();
        let (answer, n) = (Expr::param(0, Ty::Str), Expr::param(1, Ty::Int));
        let sep = Expr::str(m.string(" "));
        let pattern = Expr::str(m.string(r"#### (\d+)"));
        let (underscore, template) = (Expr::str(m.string("_")), Expr::str(m.string("{}!")));
        let bodies = vec![
            ("capture", m.call("capture", vec![answer.clone(), pattern, Expr::int(1)])),
            ("replace", m.call("replace", vec![answer.clone(), sep.clone(), underscore])),
            ("split_part", m.call("split_part", vec![answer.clone(), sep.clone(), n.clone()])),
            ("before", m.call("before", vec![answer.clone(), sep.clone()])),
            ("after", m.call("after", vec![answer.clone(), sep.clone()])),
            ("after_last", m.call("after_last", vec![answer.clone(), sep.clone()])),
            ("lower", m.call("lower", vec![answer.clone()])),
            ("upper", m.call("upper", vec![answer.clone()])),
            ("str", m.call("str", vec![n.clone()])),
            ("str_int", m.call("str_int", vec![n.clone()])),
            ("format", m.call("format", vec![template, answer.clone()])),
            ("concat", crate::ir::binary(crate::ast::BinOp::Add, answer.clone(), sep)),
        ];
        for (name, body) in bodies {
            let params = vec![Param { name: "answer".into(), ty: Ty::Str }, Param { name: "n".into(), ty: Ty::Int }];
            m.push(Function { name: name.into(), params, ret: Ty::Str, body: body.unwrap() });
        }
        let rows = 2 * CHUNK + 3;
        let answer = Column::Str((0..rows).map(|i| Arc::from(format!("Q{} ß a #### {}", i % 7, i).as_str())).collect());
        let n = Column::Int((0..rows as i64).map(|i| i % 9 - 4).collect());
        let re = regex::Regex::new(r"#### (\d+)").unwrap();
        let want = |name: &str, a: &str, n: i64| -> String {
            match name {
                "capture" => ops::capture(&re, a, 1).into(),
                "replace" => ops::replace(a, " ", "_"),
                "split_part" => ops::split_part(a, " ", n).into(),
                "before" => ops::before(a, " ").into(),
                "after" => ops::after(a, " ").into(),
                "after_last" => ops::after_last(a, " ").into(),
                "lower" => a.to_lowercase(),
                "upper" => a.to_uppercase(),
                "str" => ops::float_text(n as f64),
                "str_int" => n.to_string(),
                "format" => format!("{a}!"),
                _ => format!("{a} "),
            }
        };
        let (Column::Str(texts), Column::Int(ns)) = (&answer, &n) else { unreachable!() };
        for backend in [Backend::Interp, Backend::Jit] {
            let program = Compiled::new(&m, backend).unwrap();
            for threads in [1, 3] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                for f in &m.functions {
                    let func = program.func(&f.name).unwrap();
                    let got = pool.install(|| eval_batch(func, &[("n", &n), ("answer", &answer)])).unwrap();
                    let Column::Str(got) = got else { panic!("{} gives Strings", f.name) };
                    assert_eq!(got.len(), rows);
                    for r in [0, 1, CHUNK - 1, CHUNK, 2 * CHUNK + 2] {
                        assert_eq!(&*got[r], want(&f.name, &texts[r], ns[r]), "{} row {r} on {backend:?}", f.name);
                    }
                }
            }
        }
        let one = Compiled::new(&m, Backend::Jit).unwrap();
        let args = [Value::Str(Arc::from("x #### 72")), Value::Int(-1)];
        assert_eq!(one.func("capture").unwrap().call(&args), Ok(Value::Str(Arc::from("72"))));
        assert_eq!(one.func("split_part").unwrap().call(&args), Ok(Value::Str(Arc::from("72"))));
    }

    #[test]
    fn binding_errors_are_typed() {
        let m = module();
        let program = Compiled::new(&m, Backend::Jit).unwrap();
        let f = program.func("score").unwrap();
        let (digits, prompt, margin) = data(4);
        let short = Column::Float(vec![1.0]);
        let err = eval_batch(f, &[("digits", &digits), ("prompt", &prompt), ("margin", &short)]);
        assert_eq!(err, Err(EvalError::LengthMismatch { column: "margin".into(), expected: 4, found: 1 }));
        let err = eval_batch(f, &[("digits", &digits), ("margin", &margin)]);
        assert_eq!(err, Err(EvalError::MissingColumn { func: "score".into(), param: "prompt".into() }));
        let err = eval_batch(f, &[("digits", &margin), ("prompt", &prompt), ("margin", &margin)]);
        assert!(matches!(err, Err(EvalError::ColumnType { expected: Ty::Int, found: Ty::Float, .. })));
        assert!(matches!(eval_batch(f, &[]), Err(EvalError::NoColumns { .. })));
        assert!(matches!(program.func("nope"), Err(EvalError::UnknownFunction(_))));
        assert!(matches!(f.call(&[Value::Int(1)]), Err(EvalError::Arity { .. })));
        let args = [Value::Int(1), Value::Int(2), Value::Float(0.0)];
        assert!(matches!(f.call(&args), Err(EvalError::ArgType { .. })));
        let args = [Value::Int(1), Value::Str(Arc::from("ab")), Value::Float(0.5)];
        assert_eq!(f.call(&args), Ok(Value::Float(3.5)));
    }

    #[test]
    fn empty_columns_give_empty_results() {
        let m = module();
        for backend in [Backend::Interp, Backend::Jit] {
            let program = Compiled::new(&m, backend).unwrap();
            let empty = Column::Str(Vec::new());
            let out = eval_batch(program.func("echo").unwrap(), &[("prompt", &empty)]).unwrap();
            assert_eq!(out, Column::Str(Vec::new()));
        }
    }
}
