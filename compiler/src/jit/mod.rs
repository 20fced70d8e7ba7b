//! The Cranelift JIT for the scalar IR. A whole [`Module`] is compiled at once into one
//! [`JitModule`], which owns the machine code, the string constants and the compiled regexes the
//! code points at; dropping it frees them all, and nothing else can reach them.
//!
//! ABI: every IR function becomes one *kernel* that evaluates it over `n` rows:
//! `extern "C" fn(cols: *const *const u8, n: usize, out: *mut u8, arena: *mut Arena)`.
//! `cols[k]` points at `n` values of parameter `k` (Int: `i64`, Float: `f64`, Bool: one byte 0/1,
//! String: a [`StrRef`]); `out` receives `n` results in the same layout. A single call is a batch
//! of one. The row loop lives in the generated code, so batch evaluation pays no call per row.
//!
//! Strings are never copied: the builtins that cut (`trim`, `capture`, `split_part`, `before`,
//! `after`, `after_last`) yield a view of their input, constants live in the module. Only those
//! that build a string (`lower`, `upper`, `replace`, `+`, `format`, `str`, `str_int`, and the
//! `Messages` builders `system`, `user`, `assistant`, `turns`) allocate, into the caller's
//! [`Arena`]; results that point into it are valid until the arena is dropped, which callers do
//! only after copying the results out.
//!
//! Semantics follow the interpreter bit for bit (`docs/scalar-semantics.md`): transcendental
//! functions, rounding, float remainder and all string work call the very same Rust functions
//! (`natives`), and every Float result is NaN-canonicalised as the interpreter's is.

mod codegen;
mod natives;

use crate::batch::{check_args, EvalError};
use crate::interp::Value;
use crate::ir::{FuncId, IrError, Module, Ty};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_jit::{JITBuilder, JITModule};
use regex::Regex;
use std::mem::ManuallyDrop;
use std::sync::Arc;

/// A string as JIT code sees it: a borrowed UTF-8 slice.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StrRef {
    pub ptr: *const u8,
    pub len: usize,
}

impl StrRef {
    /// The empty string (a valid, non-null pointer).
    pub const EMPTY: StrRef = StrRef { ptr: "".as_ptr(), len: 0 };

    pub fn new(s: &str) -> StrRef {
        StrRef { ptr: s.as_ptr(), len: s.len() }
    }

    /// # Safety
    /// The bytes must be alive for `'a` (they came from a `&str` that outlives it).
    pub unsafe fn as_str<'a>(self) -> &'a str {
        unsafe { std::str::from_utf8_unchecked(std::slice::from_raw_parts(self.ptr, self.len)) }
    }
}

// SAFETY: a `StrRef` is a plain view; whoever dereferences it guarantees the bytes are alive.
unsafe impl Send for StrRef {}
unsafe impl Sync for StrRef {}

/// Owns strings that natives build during one batch chunk or one call. Boxed strings never move
/// when the arena grows, so views into them stay valid until the arena is dropped.
#[derive(Debug, Default)]
pub struct Arena {
    strings: Vec<Box<str>>,
}

impl Arena {
    fn alloc(&mut self, s: String) -> StrRef {
        let boxed = s.into_boxed_str();
        let view = StrRef::new(&boxed);
        self.strings.push(boxed);
        view
    }
}

/// Why a module could not be JIT-compiled.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum JitError {
    /// The module is not well-formed IR.
    #[error(transparent)]
    Ir(#[from] IrError),
    /// The host cannot run Cranelift code (unsupported architecture, or not 64-bit).
    #[error("this machine cannot run JIT code: {0}")]
    Host(String),
    /// Cranelift rejected the generated code: a bug in this code generator.
    #[error("Cranelift verifier rejected `{func}`:\n{message}")]
    Verifier { func: String, message: String },
    /// Any other Cranelift failure (out of memory for code, ...).
    #[error("code generation failed: {0}")]
    Codegen(String),
}

/// Compilation switches.
#[derive(Clone, Copy, Debug)]
pub struct JitOptions {
    /// Run the Cranelift IR verifier on every function (tests turn it on; it costs compile time).
    pub verify: bool,
    /// Keep each function's Cranelift IR text, for [`JitModule::clif`].
    pub keep_clif: bool,
}

impl Default for JitOptions {
    fn default() -> JitOptions {
        JitOptions { verify: cfg!(debug_assertions), keep_clif: false }
    }
}

type Kernel = unsafe extern "C" fn(*const *const u8, usize, *mut u8, *mut Arena);

/// A compiled module: native kernels plus everything they point at.
pub struct JitModule {
    /// The executable memory. Freed on drop; kernels are only reachable through `&self`.
    code: ManuallyDrop<JITModule>,
    kernels: Vec<Kernel>,
    clif: Vec<String>,
    module: Module,
    /// Constant bytes and regexes whose addresses are baked into the code: never mutated or
    /// moved (boxed slices) while `code` is alive.
    _strings: Box<[Box<str>]>,
    _regexes: Box<[Regex]>,
}

// SAFETY: after `compile` the code memory and constants are immutable; kernels only read them,
// and the natives they call are thread-safe (`Regex::is_match` is `Sync`). The per-call mutable
// state (the arena, the output buffer) is supplied by each caller.
unsafe impl Send for JitModule {}
unsafe impl Sync for JitModule {}

impl Drop for JitModule {
    fn drop(&mut self) {
        // SAFETY: no kernel can run any more: they are only callable through `&self`.
        unsafe { ManuallyDrop::take(&mut self.code).free_memory() }
    }
}

impl std::fmt::Debug for JitModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JitModule").field("functions", &self.kernels.len()).finish()
    }
}

impl JitModule {
    /// Validates and compiles every function of `module` with default options.
    pub fn compile(module: &Module) -> Result<JitModule, JitError> {
        JitModule::compile_with(module, JitOptions::default())
    }

    /// Validates and compiles every function of `module`.
    pub fn compile_with(module: &Module, options: JitOptions) -> Result<JitModule, JitError> {
        module.validate()?;
        if cfg!(not(target_pointer_width = "64")) {
            return Err(JitError::Host("the JIT needs a 64-bit target".into()));
        }
        let strings: Box<[Box<str>]> = module.strings.iter().map(|s| s.as_str().into()).collect();
        let regexes: Box<[Regex]> = module
            .regexes
            .iter()
            .map(|p| Regex::new(p).map_err(|e| IrError::InvalidRegex { pattern: p.clone(), message: e.to_string() }))
            .collect::<Result<_, _>>()?;

        let mut flags = settings::builder();
        let host = |e: &dyn std::fmt::Display| JitError::Host(e.to_string());
        flags.set("opt_level", "speed").map_err(|e| host(&e))?;
        flags.set("enable_verifier", "false").map_err(|e| host(&e))?;
        flags.set("use_colocated_libcalls", "false").map_err(|e| host(&e))?;
        flags.set("is_pic", "false").map_err(|e| host(&e))?;
        let isa = cranelift_native::builder()
            .map_err(|e| host(&e))?
            .finish(settings::Flags::new(flags))
            .map_err(|e| host(&e))?;
        let mut builder = JITBuilder::with_isa(isa, cranelift_module::default_libcall_names());
        let natives = natives::all();
        for n in &natives {
            builder.symbol(n.name, n.addr);
        }
        let mut code = JITModule::new(builder);

        let consts = codegen::Constants {
            strings: strings.iter().map(|s| StrRef::new(s)).collect(),
            regexes: regexes.iter().map(|r| r as *const Regex as i64).collect(),
        };
        let compiled = codegen::compile_all(&mut code, module, &consts, &natives, options);
        let (ids, clif) = match compiled {
            Ok(v) => v,
            Err(e) => {
                // SAFETY: nothing was finalised, so no pointer into this memory exists.
                unsafe { code.free_memory() };
                return Err(e);
            }
        };
        if let Err(e) = code.finalize_definitions() {
            // SAFETY: as above; finalisation failed, no kernel pointer was handed out.
            unsafe { code.free_memory() };
            return Err(JitError::Codegen(e.to_string()));
        }
        let kernels = ids
            .iter()
            .map(|id| {
                let ptr = code.get_finalized_function(*id);
                // SAFETY: `codegen` built this function with exactly the `Kernel` signature in
                // the host's default calling convention, which is `extern "C"`.
                unsafe { std::mem::transmute::<*const u8, Kernel>(ptr) }
            })
            .collect();
        Ok(JitModule {
            code: ManuallyDrop::new(code),
            kernels,
            clif,
            module: module.clone(),
            _strings: strings,
            _regexes: regexes,
        })
    }

    pub fn module(&self) -> &Module {
        &self.module
    }

    /// The Cranelift IR of function `f`, if compiled with `keep_clif`.
    pub fn clif(&self, f: FuncId) -> Option<&str> {
        self.clif.get(f.0 as usize).map(String::as_str)
    }

    /// Runs function `f`'s kernel over `n` rows.
    ///
    /// # Safety
    /// `cols` has one pointer per parameter of `f`, each to `n` values laid out as the module
    /// docs describe (strings valid UTF-8 alive for the call); `out` has room for `n` results.
    /// Results that are strings may point into `arena`, the columns or this module.
    pub(crate) unsafe fn run(&self, f: FuncId, cols: &[*const u8], n: usize, out: *mut u8, arena: &mut Arena) {
        debug_assert_eq!(cols.len(), self.module.function(f).params.len());
        unsafe { (self.kernels[f.0 as usize])(cols.as_ptr(), n, out, arena) }
    }

    /// Calls function `f` once with owned arguments (checked against its parameters).
    pub fn call(&self, f: FuncId, args: &[Value]) -> Result<Value, EvalError> {
        let func = self.module.function(f);
        check_args(func, args)?;
        // One 16-byte cell per argument holds any value, a StrRef included.
        let mut cells: Vec<[u64; 2]> = vec![[0; 2]; args.len()];
        for (cell, a) in cells.iter_mut().zip(args) {
            let p = cell.as_mut_ptr();
            // SAFETY: each cell is 16 bytes, 8-aligned: room for any argument layout.
            unsafe {
                match a {
                    Value::Int(v) => (p as *mut i64).write(*v),
                    Value::Float(v) => (p as *mut f64).write(*v),
                    Value::Bool(v) => (p as *mut u8).write(*v as u8),
                    Value::Str(s) => (p as *mut StrRef).write(StrRef::new(s)),
                }
            }
        }
        let cols: Vec<*const u8> = cells.iter().map(|c| c.as_ptr() as *const u8).collect();
        let mut out = [0u64; 2];
        let mut arena = Arena::default();
        let o = out.as_mut_ptr();
        // SAFETY: `cols` holds one single-row cell per parameter (types checked above) and
        // `out` has room for one result of any type; `args` and `arena` outlive the call and
        // the copy of a string result below.
        unsafe {
            self.run(f, &cols, 1, o as *mut u8, &mut arena);
            Ok(match func.ret {
                Ty::Int => Value::Int((o as *const i64).read()),
                Ty::Float => Value::Float((o as *const f64).read()),
                Ty::Bool => Value::Bool((o as *const u8).read() != 0),
                Ty::Str => Value::Str(Arc::from((o as *const StrRef).read().as_str())),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{BinOp, Expr, Function, Param};

    fn lr_module() -> Module {
        // lr(step, total) = 1e-3 * min(1.0, step / 50) * (0.5 + 0.5 * cos-free decay)
        let mut m = Module::new();
        let step = Expr::param(0, Ty::Int);
        let total = Expr::param(1, Ty::Int);
        let warm = crate::ir::binary(crate::ast::BinOp::Div, step.clone(), Expr::int(50)).unwrap();
        let warm = m.call("min", vec![Expr::float(1.0), warm]).unwrap();
        let frac = crate::ir::binary(crate::ast::BinOp::Div, step, total).unwrap();
        let decay = m.call("exp", vec![Expr::unary(crate::ir::UnOp::FNeg, frac)]).unwrap();
        let body = Expr::binary(BinOp::FMul, Expr::float(1e-3), Expr::binary(BinOp::FMul, warm, decay));
        let params = vec![Param { name: "step".into(), ty: Ty::Int }, Param { name: "total".into(), ty: Ty::Int }];
        m.push(Function { name: "lr".into(), params, ret: Ty::Float, body });
        m
    }

    #[test]
    fn verifies_and_keeps_clif() {
        let m = lr_module();
        let jit = JitModule::compile_with(&m, JitOptions { verify: true, keep_clif: true }).unwrap();
        let clif = jit.clif(FuncId(0)).unwrap();
        assert!(clif.contains("fmin") && clif.contains("call"), "{clif}");
        let lr = jit.call(FuncId(0), &[Value::Int(25), Value::Int(100)]).unwrap();
        assert_eq!(lr, Value::Float(1e-3 * (0.5 * (-0.25f64).exp())));
    }

    #[test]
    fn rejects_invalid_ir() {
        let mut m = lr_module();
        m.functions[0].ret = Ty::Int;
        assert!(matches!(JitModule::compile(&m), Err(JitError::Ir(_))));
    }

    #[test]
    fn modules_are_freed_and_recompiled() {
        // Many compile/drop cycles: code memory is released on drop, pointers never outlive it.
        let m = lr_module();
        for step in 1..50 {
            let jit = JitModule::compile(&m).unwrap();
            let v = jit.call(FuncId(0), &[Value::Int(step), Value::Int(50)]).unwrap();
            assert!(matches!(v, Value::Float(x) if x > 0.0));
        }
    }
}
