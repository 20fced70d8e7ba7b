//! Native builtins that JIT code calls: `extern "C"` shims over the same Rust functions the
//! interpreter uses (`interp::ops`), registered with the JIT as symbols.
//!
//! Strings cross the boundary as `(ptr, len)` pairs of valid UTF-8; string results are written to
//! an out-pointer as a [`StrRef`]. The builtins that cut (`trim`, `capture`, `split_part`,
//! `before`, `after`, `after_last`) return a view into their input (no allocation); those that
//! build a string (`lower`, `upper`, `replace`, `concat`, `format`, `str`, `str_int`, and the
//! `Messages` builders `system`, `user`, `assistant`, `turns`) allocate into the caller's
//! [`Arena`] (always their first argument), which lives as long as the batch chunk (or the
//! single call) that produced them. No shim panics or unwinds.

use super::{Arena, StrRef};
use crate::interp::ops;
use crate::messages;
use regex::Regex;

/// A native's parameter or result type at the machine level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum NTy {
    /// `i64`, and pointers / lengths (the JIT requires a 64-bit target).
    I64,
    F64,
    /// `i32` booleans (0 or 1): returned as a full register, narrowed in JIT code.
    I32,
}

/// A native function the JIT can call.
pub(super) struct Native {
    pub name: &'static str,
    pub addr: *const u8,
    pub params: &'static [NTy],
    pub ret: Option<NTy>,
}

/// Rebuilds a `&str` from a pair that JIT code got from a column, a constant or a shim.
///
/// SAFETY (caller): `ptr..ptr+len` is valid UTF-8 that outlives the returned reference.
unsafe fn text<'a>(ptr: *const u8, len: usize) -> &'a str {
    unsafe { std::str::from_utf8_unchecked(std::slice::from_raw_parts(ptr, len)) }
}

extern "C" fn round(x: f64) -> f64 {
    ops::round(x)
}
extern "C" fn exp(x: f64) -> f64 {
    ops::exp(x)
}
extern "C" fn log(x: f64) -> f64 {
    ops::log(x)
}
extern "C" fn log1p(x: f64) -> f64 {
    ops::log1p(x)
}
extern "C" fn tanh(x: f64) -> f64 {
    ops::tanh(x)
}
extern "C" fn cos(x: f64) -> f64 {
    ops::cos(x)
}
extern "C" fn sin(x: f64) -> f64 {
    ops::sin(x)
}
extern "C" fn sigmoid(x: f64) -> f64 {
    ops::sigmoid(x)
}
extern "C" fn pow(x: f64, y: f64) -> f64 {
    ops::pow(x, y)
}
extern "C" fn frem(x: f64, y: f64) -> f64 {
    ops::frem(x, y)
}

extern "C" fn len(p: *const u8, n: usize) -> i64 {
    ops::len(unsafe { text(p, n) })
}

extern "C" fn str_eq(p: *const u8, n: usize, q: *const u8, m: usize) -> i32 {
    (unsafe { text(p, n) } == unsafe { text(q, m) }) as i32
}

extern "C" fn contains(p: *const u8, n: usize, q: *const u8, m: usize) -> i32 {
    unsafe { text(p, n) }.contains(unsafe { text(q, m) }) as i32
}

extern "C" fn starts_with(p: *const u8, n: usize, q: *const u8, m: usize) -> i32 {
    unsafe { text(p, n) }.starts_with(unsafe { text(q, m) }) as i32
}

extern "C" fn ends_with(p: *const u8, n: usize, q: *const u8, m: usize) -> i32 {
    unsafe { text(p, n) }.ends_with(unsafe { text(q, m) }) as i32
}

extern "C" fn trim(p: *const u8, n: usize, out: *mut StrRef) {
    let s = unsafe { text(p, n) }.trim();
    unsafe { out.write(StrRef::new(s)) };
}

extern "C" fn lower(arena: *mut Arena, p: *const u8, n: usize, out: *mut StrRef) {
    let s = unsafe { text(p, n) }.to_lowercase();
    unsafe { out.write((*arena).alloc(s)) };
}

extern "C" fn upper(arena: *mut Arena, p: *const u8, n: usize, out: *mut StrRef) {
    let s = unsafe { text(p, n) }.to_uppercase();
    unsafe { out.write((*arena).alloc(s)) };
}

extern "C" fn capture(re: *const Regex, p: *const u8, n: usize, group: i64, out: *mut StrRef) {
    let s = ops::capture(unsafe { &*re }, unsafe { text(p, n) }, group);
    unsafe { out.write(StrRef::new(s)) };
}

extern "C" fn split_part(p: *const u8, n: usize, q: *const u8, m: usize, part: i64, out: *mut StrRef) {
    let s = ops::split_part(unsafe { text(p, n) }, unsafe { text(q, m) }, part);
    unsafe { out.write(StrRef::new(s)) };
}

extern "C" fn before(p: *const u8, n: usize, q: *const u8, m: usize, out: *mut StrRef) {
    let s = ops::before(unsafe { text(p, n) }, unsafe { text(q, m) });
    unsafe { out.write(StrRef::new(s)) };
}

extern "C" fn after(p: *const u8, n: usize, q: *const u8, m: usize, out: *mut StrRef) {
    let s = ops::after(unsafe { text(p, n) }, unsafe { text(q, m) });
    unsafe { out.write(StrRef::new(s)) };
}

extern "C" fn after_last(p: *const u8, n: usize, q: *const u8, m: usize, out: *mut StrRef) {
    let s = ops::after_last(unsafe { text(p, n) }, unsafe { text(q, m) });
    unsafe { out.write(StrRef::new(s)) };
}

#[allow(clippy::too_many_arguments)] // three strings as (ptr, len), the arena and the result
extern "C" fn replace(
    arena: *mut Arena,
    p: *const u8,
    n: usize,
    q: *const u8,
    m: usize,
    r: *const u8,
    k: usize,
    out: *mut StrRef,
) {
    let s = ops::replace(unsafe { text(p, n) }, unsafe { text(q, m) }, unsafe { text(r, k) });
    unsafe { out.write((*arena).alloc(s)) };
}

extern "C" fn concat(arena: *mut Arena, p: *const u8, n: usize, q: *const u8, m: usize, out: *mut StrRef) {
    let s = ops::concat(unsafe { text(p, n) }, unsafe { text(q, m) });
    unsafe { out.write((*arena).alloc(s)) };
}

extern "C" fn format(arena: *mut Arena, p: *const u8, n: usize, q: *const u8, m: usize, out: *mut StrRef) {
    let s = ops::format(unsafe { text(p, n) }, unsafe { text(q, m) });
    unsafe { out.write((*arena).alloc(s)) };
}

extern "C" fn str_float(arena: *mut Arena, x: f64, out: *mut StrRef) {
    unsafe { out.write((*arena).alloc(ops::float_text(x))) };
}

extern "C" fn str_int(arena: *mut Arena, x: i64, out: *mut StrRef) {
    unsafe { out.write((*arena).alloc(x.to_string())) };
}

extern "C" fn first_number(p: *const u8, n: usize) -> f64 {
    ops::first_number(unsafe { text(p, n) })
}

extern "C" fn last_number(p: *const u8, n: usize) -> f64 {
    ops::last_number(unsafe { text(p, n) })
}

extern "C" fn system(arena: *mut Arena, p: *const u8, n: usize, out: *mut StrRef) {
    let s = messages::turn("system", unsafe { text(p, n) });
    unsafe { out.write((*arena).alloc(s)) };
}

extern "C" fn user(arena: *mut Arena, p: *const u8, n: usize, out: *mut StrRef) {
    let s = messages::turn("user", unsafe { text(p, n) });
    unsafe { out.write((*arena).alloc(s)) };
}

extern "C" fn assistant(arena: *mut Arena, p: *const u8, n: usize, out: *mut StrRef) {
    let s = messages::turn("assistant", unsafe { text(p, n) });
    unsafe { out.write((*arena).alloc(s)) };
}

extern "C" fn turns(arena: *mut Arena, p: *const u8, n: usize, q: *const u8, m: usize, out: *mut StrRef) {
    let s = messages::concat(unsafe { text(p, n) }, unsafe { text(q, m) });
    unsafe { out.write((*arena).alloc(s)) };
}

extern "C" fn parse_int(p: *const u8, n: usize, default: i64) -> i64 {
    ops::parse_int(unsafe { text(p, n) }, default)
}

extern "C" fn parse_float(p: *const u8, n: usize, default: f64) -> f64 {
    ops::parse_float(unsafe { text(p, n) }, default)
}

extern "C" fn matches(re: *const Regex, p: *const u8, n: usize) -> i32 {
    unsafe { (*re).is_match(text(p, n)) as i32 }
}

/// Every native, by symbol name.
pub(super) fn all() -> Vec<Native> {
    use NTy::{F64, I32, I64};
    type F1 = extern "C" fn(f64) -> f64;
    type F2 = extern "C" fn(f64, f64) -> f64;
    type S2 = extern "C" fn(*const u8, usize, *const u8, usize) -> i32;
    let f1 = |name, f: F1| Native { name, addr: f as *const u8, params: &[F64], ret: Some(F64) };
    let f2 = |name, f: F2| Native { name, addr: f as *const u8, params: &[F64, F64], ret: Some(F64) };
    let s2 = |name, f: S2| Native { name, addr: f as *const u8, params: &[I64, I64, I64, I64], ret: Some(I32) };
    type Trim = extern "C" fn(*const u8, usize, *mut StrRef);
    type Case = extern "C" fn(*mut Arena, *const u8, usize, *mut StrRef);
    type Len = extern "C" fn(*const u8, usize) -> i64;
    type PInt = extern "C" fn(*const u8, usize, i64) -> i64;
    type PFloat = extern "C" fn(*const u8, usize, f64) -> f64;
    type Match = extern "C" fn(*const Regex, *const u8, usize) -> i32;
    type Capture = extern "C" fn(*const Regex, *const u8, usize, i64, *mut StrRef);
    type SplitPart = extern "C" fn(*const u8, usize, *const u8, usize, i64, *mut StrRef);
    type Cut = extern "C" fn(*const u8, usize, *const u8, usize, *mut StrRef);
    type Replace = extern "C" fn(*mut Arena, *const u8, usize, *const u8, usize, *const u8, usize, *mut StrRef);
    type Join = extern "C" fn(*mut Arena, *const u8, usize, *const u8, usize, *mut StrRef);
    type StrFloat = extern "C" fn(*mut Arena, f64, *mut StrRef);
    type StrInt = extern "C" fn(*mut Arena, i64, *mut StrRef);
    type Number = extern "C" fn(*const u8, usize) -> f64;
    let cut = |name, f: Cut| Native { name, addr: f as *const u8, params: &[I64; 5], ret: None };
    let join = |name, f: Join| Native { name, addr: f as *const u8, params: &[I64; 6], ret: None };
    let number = |name, f: Number| Native { name, addr: f as *const u8, params: &[I64, I64], ret: Some(F64) };
    vec![
        f1("recipe_round", round),
        f1("recipe_exp", exp),
        f1("recipe_log", log),
        f1("recipe_log1p", log1p),
        f1("recipe_tanh", tanh),
        f1("recipe_cos", cos),
        f1("recipe_sin", sin),
        f1("recipe_sigmoid", sigmoid),
        f2("recipe_pow", pow),
        f2("recipe_frem", frem),
        s2("recipe_str_eq", str_eq),
        s2("recipe_contains", contains),
        s2("recipe_starts_with", starts_with),
        s2("recipe_ends_with", ends_with),
        Native { name: "recipe_len", addr: len as Len as *const u8, params: &[I64, I64], ret: Some(I64) },
        Native { name: "recipe_trim", addr: trim as Trim as *const u8, params: &[I64, I64, I64], ret: None },
        Native { name: "recipe_lower", addr: lower as Case as *const u8, params: &[I64, I64, I64, I64], ret: None },
        Native { name: "recipe_upper", addr: upper as Case as *const u8, params: &[I64, I64, I64, I64], ret: None },
        Native { name: "recipe_system", addr: system as Case as *const u8, params: &[I64, I64, I64, I64], ret: None },
        Native { name: "recipe_user", addr: user as Case as *const u8, params: &[I64, I64, I64, I64], ret: None },
        Native {
            name: "recipe_assistant",
            addr: assistant as Case as *const u8,
            params: &[I64, I64, I64, I64],
            ret: None,
        },
        Native {
            name: "recipe_turns",
            addr: turns as Join as *const u8,
            params: &[I64, I64, I64, I64, I64, I64],
            ret: None,
        },
        Native {
            name: "recipe_parse_int",
            addr: parse_int as PInt as *const u8,
            params: &[I64, I64, I64],
            ret: Some(I64),
        },
        Native {
            name: "recipe_parse_float",
            addr: parse_float as PFloat as *const u8,
            params: &[I64, I64, F64],
            ret: Some(F64),
        },
        Native {
            name: "recipe_matches",
            addr: matches as Match as *const u8,
            params: &[I64, I64, I64],
            ret: Some(I32),
        },
        Native { name: "recipe_capture", addr: capture as Capture as *const u8, params: &[I64; 5], ret: None },
        Native { name: "recipe_split_part", addr: split_part as SplitPart as *const u8, params: &[I64; 6], ret: None },
        cut("recipe_before", before),
        cut("recipe_after", after),
        cut("recipe_after_last", after_last),
        Native { name: "recipe_replace", addr: replace as Replace as *const u8, params: &[I64; 8], ret: None },
        join("recipe_concat", concat),
        join("recipe_format", format),
        Native { name: "recipe_str", addr: str_float as StrFloat as *const u8, params: &[I64, F64, I64], ret: None },
        Native { name: "recipe_str_int", addr: str_int as StrInt as *const u8, params: &[I64; 3], ret: None },
        number("recipe_first_number", first_number),
        number("recipe_last_number", last_number),
    ]
}
