//! The recipe's advantage estimator (an `Advantages`, e.g. the prelude's `group_relative` or
//! `rloo`), evaluated over a micro-batch's scored rollouts in f64, without gradient.

use super::rollouts::Group;
use crate::model::{DType, Device, Tensor};
use crate::train::loss::{evaluate, LossInputs};
use crate::train::loss::{scalar_nodes, ScalarFns};
use recipe_compiler::program::{LossTerm, Value};
use recipe_compiler::tensor::{Groups, Shape};
use std::collections::HashMap;

/// The rollout fields an advantage estimator may read: per rollout (`[B]`), and per batch.
const SEQ_FIELDS: &[&str] = &["reward", "len", "truncated"];
const SCALAR_FIELDS: &[&str] = &["step", "total"];

/// An advantage estimator: one value per rollout (`[B]`) from the rewards and groups.
#[derive(Clone)]
pub struct AdvantageFn {
    term: LossTerm,
    scalars: ScalarFns,
}

impl AdvantageFn {
    /// The estimator `term` (the one term of an `Advantages` value); `scalars` evaluates the
    /// recipe functions it calls on `step` and `total`.
    ///
    /// Errors: a message when it reads a field other than `reward`, `len`, `truncated`, `step`
    /// and `total` (advantages are computed before any forward pass, so there are no
    /// log-probabilities yet), or does not give one value per rollout.
    pub fn new(term: LossTerm, scalars: ScalarFns) -> Result<AdvantageFn, String> {
        for (name, _) in term.f.inputs() {
            if !SEQ_FIELDS.contains(&name) && !SCALAR_FIELDS.contains(&name) {
                return Err(format!(
                    "the advantage estimator `{}` reads `{name}`; advantages are computed from the rollouts \
                     before any forward pass, so an estimator reads only {}",
                    term.name,
                    SEQ_FIELDS.iter().chain(SCALAR_FIELDS).copied().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        let shape = term.f.shape(term.f.output);
        if shape != Shape::Seq {
            return Err(format!(
                "the advantage estimator `{}` gives {shape}, not one value per rollout ([B])",
                term.name
            ));
        }
        Ok(AdvantageFn { term, scalars })
    }

    /// Whether the estimator scales by the whole batch's reward deviation (`group_relative(scale
    /// = batch)`), which TRL's `reward_std` and `frac_reward_zero_std` then report.
    pub fn batch_scaled(&self) -> bool {
        matches!(self.term.param("scale"), Some(Value::Enum { name, .. }) if name == "batch")
    }

    /// Every completion's advantage, in the order of `groups`' completions.
    ///
    /// Errors: a message when the estimator cannot be evaluated or gives a NaN or infinite
    /// value (naming the rollout's example id).
    pub fn over(&self, groups: &[Group], step: u64, total: u64) -> Result<Vec<f64>, String> {
        let b: usize = groups.iter().map(|g| g.completions.len()).sum();
        if b == 0 {
            return Ok(Vec::new());
        }
        let column = |f: &dyn Fn(&super::rollouts::Completion) -> f64| -> Result<Tensor, String> {
            let v: Vec<f64> = groups.iter().flat_map(|g| g.completions.iter().map(f)).collect();
            Tensor::from_vec(v, b, &Device::Cpu).map_err(|e| e.to_string())
        };
        let seq = HashMap::from([
            ("reward".to_string(), column(&|c| c.reward)?),
            ("len".to_string(), column(&|c| c.ids.len() as f64)?),
            ("truncated".to_string(), column(&|c| f64::from(u8::from(c.truncated)))?),
        ]);
        let no_fields = HashMap::new();
        let scalar_node = scalar_nodes(&self.scalars, (step, total), &no_fields);
        let index = groups.iter().enumerate().flat_map(|(i, g)| std::iter::repeat_n(i as u32, g.completions.len()));
        let inputs = LossInputs {
            batch: b,
            device: Device::Cpu,
            dtype: DType::F64,
            scalar: HashMap::from([("step".to_string(), step as f64), ("total".to_string(), total as f64)]),
            seq,
            group: HashMap::new(),
            token: HashMap::new(),
            mask: None,
            groups: Some(Groups { index: index.collect(), count: groups.len() }),
            totals: None,
            scalars: &scalar_node,
        };
        let failed = |e: &dyn std::fmt::Display| format!("the advantage estimator `{}`: {e}", self.term.name);
        let values: Vec<f64> =
            evaluate(&self.term.f, &inputs).map_err(|e| failed(&e))?.to_vec1().map_err(|e| failed(&e))?;
        let ids = groups.iter().flat_map(|g| std::iter::repeat_n(g.example_id, g.completions.len()));
        if let Some((v, id)) = values.iter().zip(ids).find(|(v, _)| !v.is_finite()) {
            return Err(format!("the advantage estimator `{}` gives {v} for example {id}", self.term.name));
        }
        Ok(values)
    }
}
