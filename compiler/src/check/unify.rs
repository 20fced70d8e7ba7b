//! Inference variables, subtyping and the implicit conversions.
//!
//! Subtyping is structural: a record with more fields is accepted where fewer are required
//! (width subtyping, recursively in fields, list elements and opaque type arguments); function
//! parameters are contravariant, results covariant. Inference variables (type parameters of an
//! `extern fn`, instantiated per call) are bound by the first type they meet. On top of
//! subtyping, a value in an argument or annotated position may be converted (`Coercion`):
//! Int → Float, a number → Tensor or a constant Schedule, a stage result → its `data`/`model`.
//! Nothing ever converts a Tensor to a scalar.

use super::typed::Coercion;
use crate::types::Ty;

/// A value that is not usable where it is wanted (the caller reports why).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotAccepted;

/// The substitution of inference variables.
#[derive(Clone, Debug, Default)]
pub struct Subst {
    vars: Vec<Option<Ty>>,
}

impl Subst {
    pub fn fresh(&mut self) -> Ty {
        self.vars.push(None);
        Ty::Var(self.vars.len() as u32 - 1)
    }

    pub fn snapshot(&self) -> Subst {
        self.clone()
    }

    pub fn restore(&mut self, snapshot: Subst) {
        *self = snapshot;
    }

    /// `ty` with every bound variable replaced, and `With[R, {..}]` merged once `R` is a record.
    pub fn resolve(&self, ty: &Ty) -> Ty {
        let ty = ty.map_vars(&mut |v| match &self.vars[v as usize] {
            Some(bound) => self.resolve(bound),
            None => Ty::Var(v),
        });
        normalize(ty)
    }

    fn bind(&mut self, var: u32, ty: &Ty) {
        if *ty != Ty::Var(var) {
            self.vars[var as usize] = Some(ty.clone());
        }
    }

    /// Whether a `found` value is usable as `expected`, converting if needed. Binds variables on
    /// success; leaves the substitution untouched on failure.
    pub fn accept(&mut self, found: &Ty, expected: &Ty) -> Result<Option<Coercion>, NotAccepted> {
        let (f, e) = (self.resolve(found), self.resolve(expected));
        let conversion = match (&f, &e) {
            (Ty::Int, Ty::Float) => Some(Coercion::IntToFloat),
            (Ty::Int | Ty::Float, Ty::Tensor) => Some(Coercion::ToTensor),
            (Ty::Int | Ty::Float, sched) if *sched == Ty::schedule() => Some(Coercion::ToSchedule),
            (Ty::Opaque(stage, _), Ty::Opaque(want, _)) if stage == "Stage" && want != "Stage" => {
                let field = if want == "Dataset" { "data" } else { "model" };
                let inner = f.field(field).cloned().ok_or(NotAccepted)?;
                return self.accept(&inner, &e).map(|_| Some(Coercion::StageField(field)));
            }
            _ => None,
        };
        if conversion.is_some() {
            return Ok(conversion);
        }
        let snapshot = self.snapshot();
        if self.subtype(&f, &e) {
            Ok(None)
        } else {
            self.restore(snapshot);
            Err(NotAccepted)
        }
    }

    /// Structural subtyping without conversions.
    pub fn subtype(&mut self, found: &Ty, expected: &Ty) -> bool {
        let (f, e) = (self.resolve(found), self.resolve(expected));
        match (&f, &e) {
            (Ty::Error, _) | (_, Ty::Error) => true,
            (Ty::Var(a), Ty::Var(b)) if a == b => true,
            (_, Ty::Var(v)) => {
                self.bind(*v, &f);
                true
            }
            (Ty::Var(v), _) => {
                self.bind(*v, &e);
                true
            }
            (Ty::Record(have), Ty::Record(want)) => {
                want.iter().all(|(name, wt)| match have.iter().find(|(n, _)| n == name) {
                    Some((_, ht)) => self.subtype(ht, wt),
                    None => false,
                })
            }
            (Ty::List(a), Ty::List(b)) => self.subtype(a, b),
            (Ty::Fn(ps, r), Ty::Fn(qs, s)) => {
                ps.len() == qs.len() && qs.iter().zip(ps).all(|(q, p)| self.subtype(q, p)) && self.subtype(r, s)
            }
            (Ty::Opaque(a, xs), Ty::Opaque(b, ys)) => {
                a == b && xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| self.subtype(x, y))
            }
            _ => f == e,
        }
    }
}

/// Merges `With[R, {extra}]` into one record once `R` is known.
fn normalize(ty: Ty) -> Ty {
    match ty {
        Ty::Opaque(name, args) if name == "With" && args.len() == 2 => {
            let args: Vec<Ty> = args.into_iter().map(normalize).collect();
            match (&args[0], &args[1]) {
                (Ty::Record(base), Ty::Record(extra)) => {
                    let mut fields: Vec<(String, Ty)> =
                        base.iter().filter(|(n, _)| !extra.iter().any(|(m, _)| m == n)).cloned().collect();
                    fields.extend(extra.iter().cloned());
                    Ty::record(fields)
                }
                _ => Ty::Opaque(name, args),
            }
        }
        Ty::Record(fields) => Ty::Record(fields.into_iter().map(|(n, t)| (n, normalize(t))).collect()),
        Ty::List(t) => Ty::List(Box::new(normalize(*t))),
        Ty::Fn(ps, r) => Ty::Fn(ps.into_iter().map(normalize).collect(), Box::new(normalize(*r))),
        Ty::Opaque(n, args) => Ty::Opaque(n, args.into_iter().map(normalize).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(fields: &[(&str, Ty)]) -> Ty {
        Ty::record(fields.iter().map(|(n, t)| (n.to_string(), t.clone())).collect())
    }

    #[test]
    fn width_subtyping_accepts_more_fields() {
        let mut s = Subst::default();
        let wide = rec(&[("a", Ty::Int), ("b", Ty::String)]);
        let narrow = rec(&[("a", Ty::Int)]);
        assert!(s.subtype(&wide, &narrow));
        assert!(!s.subtype(&narrow, &wide));
    }

    #[test]
    fn variables_bind_and_with_merges() {
        let mut s = Subst::default();
        let r = s.fresh();
        let data = Ty::opaque("Dataset", vec![rec(&[("digits", Ty::Int)])]);
        assert!(s.subtype(&data, &Ty::opaque("Dataset", vec![r.clone()])));
        let with = Ty::opaque("With", vec![r, rec(&[("completion", Ty::String)])]);
        assert_eq!(s.resolve(&with), rec(&[("completion", Ty::String), ("digits", Ty::Int)]));
    }

    #[test]
    fn conversions() {
        let mut s = Subst::default();
        assert_eq!(s.accept(&Ty::Int, &Ty::Float), Ok(Some(Coercion::IntToFloat)));
        assert_eq!(s.accept(&Ty::Float, &Ty::schedule()), Ok(Some(Coercion::ToSchedule)));
        assert_eq!(s.accept(&Ty::Tensor, &Ty::Float), Err(NotAccepted));
        let stage = Ty::opaque("Stage", vec![rec(&[("model", Ty::opaque("Model", vec![]))])]);
        assert_eq!(s.accept(&stage, &Ty::opaque("Model", vec![])), Ok(Some(Coercion::StageField("model"))));
    }
}
