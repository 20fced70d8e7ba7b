//! Row functions: a closure from rows to a record of scalars (`map`'s function) lowered to one
//! scalar IR function per field of the record.

use super::{ir_ty, symbolic, SV};
use crate::eval::{CVal, Closure, Evaluator};
use crate::ir;
use crate::program::Value;
use crate::types::Ty;
use std::rc::Rc;

/// Lower a row function (a closure from rows to a record of scalars: `map`'s) to one IR
/// function per field of its result, in the record's field order (each function's
/// `FunctionInfo::ret` is the field's language type, so `Messages` is told from `String`); every
/// function takes the same parameters (the input row's fields the body reads), so each is evaluated over the input
/// columns like any row function. `None` (with a diagnostic) if it cannot be.
pub fn row_fields(ev: &mut Evaluator<'_, '_>, c: &Rc<Closure>) -> Option<Vec<(String, u32)>> {
    let Ty::Fn(_, ret) = &c.ty else { return None };
    let Ty::Record(fields) = &**ret else { return None };
    let (mut s, body, hint) = symbolic(ev, c)?;
    let mut bodies = Vec::with_capacity(fields.len());
    for (name, ty) in fields {
        let value = match &body {
            SV::Record(values) => values.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()),
            SV::C(CVal::Record(values)) => values.iter().find(|(n, _)| n == name).map(|(_, v)| SV::C(v.clone())),
            SV::C(CVal::V(Value::Record(values))) => {
                values.iter().find(|(n, _)| n == name).map(|(_, v)| SV::C(CVal::V(v.clone())))
            }
            _ => None,
        };
        let Some(value) = value else {
            s.fail(None, "a row function whose result is not written as a record `{field: value, ...}`");
            return None;
        };
        let ret_ty = ir_ty(ty)?;
        let body = s.as_ir(value, None)?;
        let body = if ret_ty == ir::Ty::Float { body.to_float() } else { body };
        bodies.push((name.clone(), ty.to_string(), ret_ty, body));
    }
    if s.failed {
        return None;
    }
    let params = s.params;
    let mut out = Vec::with_capacity(bodies.len());
    for (field, language_ty, ret, body) in bodies {
        let name = ev.function_name(&format!("{hint}.{field}"));
        let id = ev.push_function(ir::Function { name, params: params.clone(), ret, body });
        // The runtime tags the column a `Messages` field makes by this name.
        ev.infos[id as usize].ret = language_ty;
        out.push((field, id));
    }
    Some(out)
}
