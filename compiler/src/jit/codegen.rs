//! Translation of validated IR functions to Cranelift IR kernels (see the ABI in `jit/mod.rs`).
//!
//! Values: Int → `i64`, Float → `f64`, Bool → `i8` holding exactly 0 or 1 (stored straight into
//! `Vec<bool>`), String → a `(ptr, len)` pair of `i64`s. Int division and remainder are total:
//! the divisor is replaced by 1 where it is 0 or -1 (the two cases `sdiv`/`srem` trap on) and the
//! defined result is selected afterwards.

use super::natives::{NTy, Native};
use super::{JitError, JitOptions, StrRef};
use crate::interp::ops::CANONICAL_NAN;
use crate::ir::{BinOp, Builtin, Cmp, Const, Expr, ExprKind, Function, Module, Ty, UnOp};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F64, I32, I64, I8};
use cranelift_codegen::ir::{
    AbiParam, BlockArg, FuncRef, InstBuilder, MemFlagsData, Signature, StackSlot, StackSlotData, StackSlotKind, Type,
    UserFuncName, Value,
};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::JITModule;
use cranelift_module::{FuncId as ClifFuncId, Linkage, Module as _};
use std::collections::HashMap;

/// Addresses of the module's constants, baked into the code as immediates.
pub(super) struct Constants {
    pub strings: Vec<StrRef>,
    pub regexes: Vec<i64>,
}

/// Compiles every function; returns their ids (in module order) and, if asked, their CLIF text.
pub(super) fn compile_all(
    code: &mut JITModule,
    module: &Module,
    consts: &Constants,
    natives: &[Native],
    options: JitOptions,
) -> Result<(Vec<ClifFuncId>, Vec<String>), JitError> {
    let call_conv = code.isa().default_call_conv();
    let err = |e: cranelift_module::ModuleError| JitError::Codegen(format!("{e:?}"));
    let mut native_ids = HashMap::new();
    for n in natives {
        let mut sig = Signature::new(call_conv);
        sig.params.extend(n.params.iter().map(|t| AbiParam::new(clif_ty(*t))));
        sig.returns.extend(n.ret.map(|t| AbiParam::new(clif_ty(t))));
        let id = code.declare_function(n.name, Linkage::Import, &sig).map_err(err)?;
        native_ids.insert(n.name, id);
    }
    let mut kernel_sig = Signature::new(call_conv);
    kernel_sig.params.extend([AbiParam::new(I64); 4]);

    let frontend = code.target_config();
    let mut ctx = code.make_context();
    let mut fctx = FunctionBuilderContext::new();
    let mut ids = Vec::with_capacity(module.functions.len());
    let mut clif = Vec::new();
    for (index, func) in module.functions.iter().enumerate() {
        let id = code.declare_function(&format!("recipe_kernel_{index}"), Linkage::Local, &kernel_sig).map_err(err)?;
        ctx.func.signature = kernel_sig.clone();
        ctx.func.name = UserFuncName::user(0, index as u32);
        {
            let b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
            let mut g = Gen {
                b,
                code: &mut *code,
                native_ids: &native_ids,
                refs: HashMap::new(),
                consts,
                params: vec![None; func.params.len()],
                locals: vec![None; func.local_count()],
                arena: None,
                slot: None,
            };
            g.kernel(func);
            g.b.seal_all_blocks();
            g.b.finalize(frontend);
        }
        if options.keep_clif {
            clif.push(ctx.func.display().to_string());
        }
        if options.verify {
            if let Err(errors) = cranelift_codegen::verify_function(&ctx.func, code.isa()) {
                let message = cranelift_codegen::print_errors::pretty_verifier_error(&ctx.func, None, errors);
                return Err(JitError::Verifier { func: func.name.clone(), message });
            }
        }
        code.define_function(id, &mut ctx).map_err(err)?;
        code.clear_context(&mut ctx);
        ids.push(id);
    }
    Ok((ids, clif))
}

fn clif_ty(t: NTy) -> Type {
    match t {
        NTy::I64 => I64,
        NTy::F64 => F64,
        NTy::I32 => I32,
    }
}

/// A compiled value: one SSA value, or a string's (ptr, len).
#[derive(Clone, Copy, Debug)]
enum V {
    One(Value),
    Str(Value, Value),
}

impl V {
    fn one(self) -> Value {
        match self {
            V::One(v) => v,
            V::Str(..) => unreachable!("validated: scalar value"),
        }
    }

    fn str(self) -> (Value, Value) {
        match self {
            V::Str(p, n) => (p, n),
            V::One(_) => unreachable!("validated: string value"),
        }
    }

    /// The machine values: one, or a string's pointer and length.
    fn flat(self) -> Vec<Value> {
        match self {
            V::One(v) => vec![v],
            V::Str(p, n) => vec![p, n],
        }
    }

    fn values(self) -> Vec<BlockArg> {
        match self {
            V::One(v) => vec![BlockArg::Value(v)],
            V::Str(p, n) => vec![BlockArg::Value(p), BlockArg::Value(n)],
        }
    }
}

/// Bytes per element of a column or result of this type.
fn stride(ty: Ty) -> i64 {
    match ty {
        Ty::Int | Ty::Float => 8,
        Ty::Bool => 1,
        Ty::Str => 16,
    }
}

struct Gen<'a, 'b> {
    b: FunctionBuilder<'b>,
    code: &'a mut JITModule,
    native_ids: &'a HashMap<&'static str, ClifFuncId>,
    /// Natives imported into the current function so far.
    refs: HashMap<&'static str, FuncRef>,
    consts: &'a Constants,
    /// The current row's parameters (only those the body uses are loaded).
    params: Vec<Option<V>>,
    locals: Vec<Option<V>>,
    arena: Option<Value>,
    /// 16 bytes for string results of natives, created on first use.
    slot: Option<StackSlot>,
}

impl Gen<'_, '_> {
    /// Emits the row loop around the body.
    fn kernel(&mut self, func: &Function) {
        let flags = MemFlagsData::trusted();
        let entry = self.b.create_block();
        self.b.append_block_params_for_function_params(entry);
        self.b.switch_to_block(entry);
        let args = self.b.block_params(entry).to_vec();
        let (cols, n, out) = (args[0], args[1], args[2]);
        self.arena = Some(args[3]);

        let mut used = vec![false; func.params.len()];
        used_params(&func.body, &mut used);
        let bases: Vec<Option<Value>> = used
            .iter()
            .enumerate()
            .map(|(k, &u)| u.then(|| self.b.ins().load(I64, flags, cols, 8 * k as i32)))
            .collect();

        let body = self.b.create_block();
        let row = self.b.append_block_param(body, I64);
        let exit = self.b.create_block();
        let zero = self.b.ins().iconst(I64, 0);
        self.b.ins().brif(n, body, &[BlockArg::Value(zero)], exit, &[]);

        self.b.switch_to_block(body);
        for (k, base) in bases.iter().enumerate() {
            let Some(base) = *base else { continue };
            let ty = func.params[k].ty;
            let offset = self.b.ins().imul_imm_s(row, stride(ty));
            let addr = self.b.ins().iadd(base, offset);
            self.params[k] = Some(match ty {
                Ty::Int => V::One(self.b.ins().load(I64, flags, addr, 0)),
                Ty::Float => V::One(self.b.ins().load(F64, flags, addr, 0)),
                Ty::Bool => V::One(self.b.ins().load(I8, flags, addr, 0)),
                Ty::Str => {
                    let p = self.b.ins().load(I64, flags, addr, 0);
                    let len = self.b.ins().load(I64, flags, addr, 8);
                    V::Str(p, len)
                }
            });
        }
        let result = self.expr(&func.body);
        let offset = self.b.ins().imul_imm_s(row, stride(func.ret));
        let addr = self.b.ins().iadd(out, offset);
        match (func.ret, result) {
            (Ty::Float, V::One(x)) => {
                let nan = self.b.ins().fcmp(FloatCC::Unordered, x, x);
                let canonical = self.b.ins().f64const(CANONICAL_NAN);
                let x = self.b.ins().select(nan, canonical, x);
                self.b.ins().store(flags, x, addr, 0);
            }
            (_, V::One(x)) => {
                self.b.ins().store(flags, x, addr, 0);
            }
            (_, V::Str(p, len)) => {
                self.b.ins().store(flags, p, addr, 0);
                self.b.ins().store(flags, len, addr, 8);
            }
        }
        let next = self.b.ins().iadd_imm_s(row, 1);
        let more = self.b.ins().icmp(IntCC::UnsignedLessThan, next, n);
        self.b.ins().brif(more, body, &[BlockArg::Value(next)], exit, &[]);

        self.b.switch_to_block(exit);
        self.b.ins().return_(&[]);
    }

    fn expr(&mut self, e: &Expr) -> V {
        match &e.kind {
            ExprKind::Const(c) => self.constant(*c),
            ExprKind::Param(i) => {
                self.params[*i as usize].unwrap_or_else(|| unreachable!("used parameters are loaded before the body"))
            }
            ExprKind::Local(i) => self.locals[*i as usize].unwrap_or_else(|| unreachable!("validated: bound local")),
            ExprKind::Let { local, value, body } => {
                let v = self.expr(value);
                self.locals[*local as usize] = Some(v);
                self.expr(body)
            }
            ExprKind::Unary(op, a) => {
                let a = self.expr(a).one();
                V::One(match op {
                    UnOp::INeg => self.b.ins().ineg(a),
                    UnOp::FNeg => self.b.ins().fneg(a),
                    UnOp::Not => self.b.ins().bxor_imm_s(a, 1),
                })
            }
            ExprKind::Binary(BinOp::And, a, b) => self.logic(true, a, b),
            ExprKind::Binary(BinOp::Or, a, b) => self.logic(false, a, b),
            ExprKind::Binary(op, a, b) => {
                let (a, b) = (self.expr(a).one(), self.expr(b).one());
                V::One(self.binary(*op, a, b))
            }
            ExprKind::If { cond, then, otherwise } => {
                let c = self.expr(cond).one();
                let (t, f, merge) = (self.b.create_block(), self.b.create_block(), self.b.create_block());
                let results = self.merge_params(merge, e.ty);
                self.b.ins().brif(c, t, &[], f, &[]);
                for (block, branch) in [(t, then), (f, otherwise)] {
                    self.b.switch_to_block(block);
                    let v = self.expr(branch).values();
                    self.b.ins().jump(merge, &v);
                }
                self.b.switch_to_block(merge);
                results
            }
            ExprKind::Call(builtin, args) => self.call(*builtin, args),
        }
    }

    /// Adds block parameters for a value of type `ty` to `block` and returns them.
    fn merge_params(&mut self, block: cranelift_codegen::ir::Block, ty: Ty) -> V {
        match ty {
            Ty::Int => V::One(self.b.append_block_param(block, I64)),
            Ty::Float => V::One(self.b.append_block_param(block, F64)),
            Ty::Bool => V::One(self.b.append_block_param(block, I8)),
            Ty::Str => {
                let p = self.b.append_block_param(block, I64);
                V::Str(p, self.b.append_block_param(block, I64))
            }
        }
    }

    fn constant(&mut self, c: Const) -> V {
        match c {
            Const::Int(v) => V::One(self.b.ins().iconst(I64, v)),
            Const::Float(v) => V::One(self.b.ins().f64const(v)),
            Const::Bool(v) => V::One(self.b.ins().iconst(I8, v as i64)),
            Const::Str(id) => {
                let s = self.consts.strings[id.0 as usize];
                let p = self.b.ins().iconst(I64, s.ptr as i64);
                V::Str(p, self.b.ins().iconst(I64, s.len as i64))
            }
        }
    }

    /// `a && b` / `a || b`. A right side without calls or branches is evaluated eagerly (it
    /// cannot fail or have effects, and a branch would cost more); otherwise it short-circuits.
    fn logic(&mut self, and: bool, a: &Expr, b: &Expr) -> V {
        let a = self.expr(a).one();
        if is_cheap(b) {
            let b = self.expr(b).one();
            return V::One(if and { self.b.ins().band(a, b) } else { self.b.ins().bor(a, b) });
        }
        let (rhs, merge) = (self.b.create_block(), self.b.create_block());
        let result = self.b.append_block_param(merge, I8);
        let short = [BlockArg::Value(a)];
        if and {
            self.b.ins().brif(a, rhs, &[], merge, &short);
        } else {
            self.b.ins().brif(a, merge, &short, rhs, &[]);
        }
        self.b.switch_to_block(rhs);
        let b = self.expr(b).one();
        self.b.ins().jump(merge, &[BlockArg::Value(b)]);
        self.b.switch_to_block(merge);
        V::One(result)
    }

    fn binary(&mut self, op: BinOp, a: Value, b: Value) -> Value {
        let ins = self.b.ins();
        match op {
            BinOp::IAdd => ins.iadd(a, b),
            BinOp::ISub => ins.isub(a, b),
            BinOp::IMul => ins.imul(a, b),
            BinOp::IDiv | BinOp::IRem => self.int_division(op == BinOp::IDiv, a, b),
            BinOp::FAdd => ins.fadd(a, b),
            BinOp::FSub => ins.fsub(a, b),
            BinOp::FMul => ins.fmul(a, b),
            BinOp::FDiv => ins.fdiv(a, b),
            BinOp::FRem => self.native1("recipe_frem", &[a, b]),
            BinOp::ICmp(c) => ins.icmp(int_cc(c), a, b),
            BinOp::FCmp(c) => ins.fcmp(float_cc(c), a, b),
            BinOp::BEq => ins.icmp(IntCC::Equal, a, b),
            BinOp::BNe => ins.icmp(IntCC::NotEqual, a, b),
            BinOp::And => ins.band(a, b),
            BinOp::Or => ins.bor(a, b),
        }
    }

    /// Floor division / remainder with the sign of the divisor, total (see `interp::ops`).
    fn int_division(&mut self, div: bool, a: Value, b: Value) -> Value {
        let is_zero = self.b.ins().icmp_imm_s(IntCC::Equal, b, 0);
        let is_minus_one = self.b.ins().icmp_imm_s(IntCC::Equal, b, -1);
        let unsafe_divisor = self.b.ins().bor(is_zero, is_minus_one);
        let one = self.b.ins().iconst(I64, 1);
        let d = self.b.ins().select(unsafe_divisor, one, b);
        let q = self.b.ins().sdiv(a, d);
        let r = self.b.ins().srem(a, d);
        // Truncated → floored: adjust when the remainder is non-zero and its sign differs from
        // the divisor's.
        let r_nonzero = self.b.ins().icmp_imm_s(IntCC::NotEqual, r, 0);
        let signs = self.b.ins().bxor(r, d);
        let signs_differ = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, signs, 0);
        let adjust = self.b.ins().band(r_nonzero, signs_differ);
        if div {
            let adjust = self.b.ins().uextend(I64, adjust);
            let q = self.b.ins().isub(q, adjust);
            let neg = self.b.ins().ineg(a);
            let q = self.b.ins().select(is_minus_one, neg, q);
            let zero = self.b.ins().iconst(I64, 0);
            self.b.ins().select(is_zero, zero, q)
        } else {
            // With d = 1 for b ∈ {0, -1}, r is already 0 there.
            let r_plus = self.b.ins().iadd(r, d);
            self.b.ins().select(adjust, r_plus, r)
        }
    }

    fn call(&mut self, builtin: Builtin, args: &[Expr]) -> V {
        use Builtin as B;
        let vals: Vec<V> = args.iter().map(|a| self.expr(a)).collect();
        if builtin.regex().is_some() || builtin.signature().1 == Ty::Str {
            // Natives of a regex take its address first; strings go as (ptr, len).
            let mut flat = Vec::new();
            if let Some(re) = builtin.regex() {
                flat.push(self.b.ins().iconst(I64, self.consts.regexes[re.0 as usize]));
            }
            flat.extend(vals.iter().flat_map(|v| v.flat()));
            return match builtin {
                B::Matches(_) => V::One(self.native_bool("recipe_matches", &flat)),
                _ => self.string_native(string_native_name(builtin), builtin_allocates(builtin), &flat),
            };
        }
        let one = |i: usize| vals[i].one();
        let strs = |i: usize| vals[i].str();
        V::One(match builtin {
            B::AbsInt => self.b.ins().iabs(one(0)),
            B::MinInt => self.b.ins().smin(one(0), one(1)),
            B::MaxInt => self.b.ins().smax(one(0), one(1)),
            B::ClampInt => {
                let lo = self.b.ins().smax(one(0), one(1));
                self.b.ins().smin(lo, one(2))
            }
            B::AbsFloat => self.b.ins().fabs(one(0)),
            B::MinFloat => self.b.ins().fmin(one(0), one(1)),
            B::MaxFloat => self.b.ins().fmax(one(0), one(1)),
            B::ClampFloat => {
                let lo = self.b.ins().fmax(one(0), one(1));
                self.b.ins().fmin(lo, one(2))
            }
            B::Floor => self.b.ins().floor(one(0)),
            B::Ceil => self.b.ins().ceil(one(0)),
            B::Sqrt => self.b.ins().sqrt(one(0)),
            B::Round => self.native1("recipe_round", &[one(0)]),
            B::Exp => self.native1("recipe_exp", &[one(0)]),
            B::Log => self.native1("recipe_log", &[one(0)]),
            B::Log1p => self.native1("recipe_log1p", &[one(0)]),
            B::Tanh => self.native1("recipe_tanh", &[one(0)]),
            B::Cos => self.native1("recipe_cos", &[one(0)]),
            B::Sin => self.native1("recipe_sin", &[one(0)]),
            B::Sigmoid => self.native1("recipe_sigmoid", &[one(0)]),
            B::Pow => self.native1("recipe_pow", &[one(0), one(1)]),
            B::IsNan => self.b.ins().fcmp(FloatCC::Unordered, one(0), one(0)),
            B::Float => self.b.ins().fcvt_from_sint(F64, one(0)),
            B::Int => self.b.ins().fcvt_to_sint_sat(I64, one(0)),
            B::Len => {
                let (p, n) = strs(0);
                self.native1("recipe_len", &[p, n])
            }
            // A string is (pointer, UTF-8 byte length): the count is already there.
            B::Bytes => strs(0).1,
            B::StrEq | B::Contains | B::StartsWith | B::EndsWith => {
                let name = match builtin {
                    B::StrEq => "recipe_str_eq",
                    B::Contains => "recipe_contains",
                    B::StartsWith => "recipe_starts_with",
                    _ => "recipe_ends_with",
                };
                let ((p, n), (q, m)) = (strs(0), strs(1));
                self.native_bool(name, &[p, n, q, m])
            }
            B::ParseInt | B::ParseFloat => {
                let name = if builtin == B::ParseInt { "recipe_parse_int" } else { "recipe_parse_float" };
                let (p, n) = strs(0);
                self.native1(name, &[p, n, one(1)])
            }
            B::FirstNumber | B::LastNumber => {
                let name = if builtin == B::FirstNumber { "recipe_first_number" } else { "recipe_last_number" };
                let (p, n) = strs(0);
                self.native1(name, &[p, n])
            }
            _ => unreachable!("handled above: regex and String builtins"),
        })
    }

    /// Calls a native that writes a `StrRef` to an out-pointer: `(arena?, args…, out)`, the
    /// arena first for the natives that allocate.
    fn string_native(&mut self, name: &'static str, allocates: bool, args: &[Value]) -> V {
        let slot = match self.slot {
            Some(s) => s,
            None => {
                let s = self.b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, 16, 3));
                self.slot = Some(s);
                s
            }
        };
        let out = self.b.ins().stack_addr(I64, slot, 0);
        let arena = self.arena.unwrap_or_else(|| unreachable!("set in kernel entry"));
        let mut all = Vec::with_capacity(args.len() + 2);
        if allocates {
            all.push(arena);
        }
        all.extend_from_slice(args);
        all.push(out);
        self.native0(name, &all);
        let flags = MemFlagsData::trusted();
        let rp = self.b.ins().load(I64, flags, out, 0);
        let rn = self.b.ins().load(I64, flags, out, 8);
        V::Str(rp, rn)
    }

    fn func_ref(&mut self, name: &'static str) -> FuncRef {
        if let Some(r) = self.refs.get(name) {
            return *r;
        }
        let id = self.native_ids[name];
        let r = self.code.declare_func_in_func(id, self.b.func);
        self.refs.insert(name, r);
        r
    }

    fn native0(&mut self, name: &'static str, args: &[Value]) {
        let f = self.func_ref(name);
        self.b.ins().call(f, args);
    }

    /// Calls a native with one result.
    fn native1(&mut self, name: &'static str, args: &[Value]) -> Value {
        let f = self.func_ref(name);
        let call = self.b.ins().call(f, args);
        self.b.inst_results(call)[0]
    }

    /// Calls a native returning an `i32` boolean and narrows it to a 0/1 `i8`.
    fn native_bool(&mut self, name: &'static str, args: &[Value]) -> Value {
        let r = self.native1(name, args);
        self.b.ins().icmp_imm_s(IntCC::NotEqual, r, 0)
    }
}

/// The native of a String-valued builtin (its arguments flattened, strings as `(ptr, len)`).
fn string_native_name(builtin: Builtin) -> &'static str {
    match builtin {
        Builtin::Trim => "recipe_trim",
        Builtin::Lower => "recipe_lower",
        Builtin::Upper => "recipe_upper",
        Builtin::Capture(_) => "recipe_capture",
        Builtin::Replace => "recipe_replace",
        Builtin::SplitPart => "recipe_split_part",
        Builtin::Before => "recipe_before",
        Builtin::After => "recipe_after",
        Builtin::AfterLast => "recipe_after_last",
        Builtin::Str => "recipe_str",
        Builtin::StrInt => "recipe_str_int",
        Builtin::Concat => "recipe_concat",
        Builtin::Format => "recipe_format",
        Builtin::System => "recipe_system",
        Builtin::User => "recipe_user",
        Builtin::Assistant => "recipe_assistant",
        Builtin::Turns => "recipe_turns",
        _ => unreachable!("validated: a String builtin"),
    }
}

/// Whether a String-valued builtin builds its result in the arena (the others cut a view out of
/// their input).
fn builtin_allocates(builtin: Builtin) -> bool {
    !matches!(
        builtin,
        Builtin::Trim
            | Builtin::Capture(_)
            | Builtin::SplitPart
            | Builtin::Before
            | Builtin::After
            | Builtin::AfterLast
    )
}

fn int_cc(c: Cmp) -> IntCC {
    match c {
        Cmp::Eq => IntCC::Equal,
        Cmp::Ne => IntCC::NotEqual,
        Cmp::Lt => IntCC::SignedLessThan,
        Cmp::Le => IntCC::SignedLessThanOrEqual,
        Cmp::Gt => IntCC::SignedGreaterThan,
        Cmp::Ge => IntCC::SignedGreaterThanOrEqual,
    }
}

/// IEEE comparisons: ordered for `== < <= > >=` (false with NaN), unordered-or-unequal for `!=`.
fn float_cc(c: Cmp) -> FloatCC {
    match c {
        Cmp::Eq => FloatCC::Equal,
        Cmp::Ne => FloatCC::NotEqual,
        Cmp::Lt => FloatCC::LessThan,
        Cmp::Le => FloatCC::LessThanOrEqual,
        Cmp::Gt => FloatCC::GreaterThan,
        Cmp::Ge => FloatCC::GreaterThanOrEqual,
    }
}

/// Marks the parameters an expression reads.
fn used_params(e: &Expr, used: &mut [bool]) {
    match &e.kind {
        ExprKind::Param(i) => used[*i as usize] = true,
        ExprKind::Const(_) | ExprKind::Local(_) => {}
        ExprKind::Let { value, body, .. } => {
            used_params(value, used);
            used_params(body, used);
        }
        ExprKind::Unary(_, a) => used_params(a, used),
        ExprKind::Binary(_, a, b) => {
            used_params(a, used);
            used_params(b, used);
        }
        ExprKind::If { cond, then, otherwise } => {
            used_params(cond, used);
            used_params(then, used);
            used_params(otherwise, used);
        }
        ExprKind::Call(_, args) => args.iter().for_each(|a| used_params(a, used)),
    }
}

/// No calls out, no branches, no division: cheaper to evaluate than to branch around.
fn is_cheap(e: &Expr) -> bool {
    match &e.kind {
        ExprKind::Const(_) | ExprKind::Param(_) | ExprKind::Local(_) => true,
        ExprKind::Unary(_, a) => is_cheap(a),
        ExprKind::Binary(op, a, b) => {
            !matches!(op, BinOp::IDiv | BinOp::IRem | BinOp::FRem | BinOp::And | BinOp::Or)
                && is_cheap(a)
                && is_cheap(b)
        }
        ExprKind::Call(b, args) => {
            matches!(
                b,
                Builtin::IsNan
                    | Builtin::AbsInt
                    | Builtin::AbsFloat
                    | Builtin::MinInt
                    | Builtin::MaxInt
                    | Builtin::Float
            ) && args.iter().all(is_cheap)
        }
        ExprKind::Let { .. } | ExprKind::If { .. } => false,
    }
}
