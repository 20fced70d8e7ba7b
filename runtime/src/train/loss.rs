//! Losses on candle tensors: evaluates the compiler's loss IR ([`TensorFn`]) with autograd, so
//! that gradients flow from the loss to the batch's inputs (the policy's log-probabilities) and
//! on into the model.
//!
//! Shapes follow the IR: a `Scalar` node is a rank-0 tensor, `Seq` is `[B]`, `Token` is
//! `[B, T]` and `Group` is `[G]`. Every op is composed from candle-core ops that have a backward
//! (candle-nn's fused ops have none), in forms that stay finite for large arguments:
//! `softplus(x) = relu(x) + log(1 + exp(-|x|))`, `log_sigmoid(x) = -softplus(-x)`,
//! `sigmoid(x) = exp(log_sigmoid(x))`. Masked reductions select with `where_cond` rather than
//! multiply by the mask, so a padded position's value never reaches a sum. Its gradient is 0
//! times the op's derivative there, which is NaN where that derivative is infinite (`log` or
//! `sqrt` of 0, a division by 0): whoever builds the inputs fills padding with values inside
//! every op's domain (a log-prob of 0, a length of 1). Segment
//! sums use `index_add` and gathers `index_select` (the sparse forms of the one-hot matmuls,
//! which also keep one group's NaN out of the others). [`TensorFn::eval`] is the reference
//! meaning and the tests hold this lowering to it.

use super::TrainError;
use crate::model::{DType, Device, Tensor};
use recipe_compiler::program::LossTerm;
use recipe_compiler::tensor::{Axis, BinaryOp, Groups, Node, NodeId, Reduce, Shape, TensorFn, Totals, UnaryOp};
use std::collections::BTreeSet;
use std::collections::HashMap;
use std::sync::Arc;

/// The batch a loss reads.
pub struct LossInputs<'a> {
    /// `B`, the sequences (pairs, rollouts) in the batch.
    pub batch: usize,
    pub device: Device,
    /// The dtype of every input and of the result.
    pub dtype: DType,
    /// `Scalar` inputs (the batch's Float fields) by name.
    pub scalar: HashMap<String, f64>,
    /// `Seq` inputs by name, each `[B]`.
    pub seq: HashMap<String, Tensor>,
    /// `Group` inputs by name, each `[G]`.
    pub group: HashMap<String, Tensor>,
    /// `Token` inputs by name, each `[B, T]`. Values at padded positions are never read, but
    /// they must be finite: their gradient is 0, and 0 × inf would be NaN.
    pub token: HashMap<String, Tensor>,
    /// The completion mask, `[B, T]`, nonzero where a token is valid; needed by `Token` inputs,
    /// broadcasts and reductions.
    pub mask: Option<Tensor>,
    /// Each sequence's prompt group; needed by `Group` ops.
    pub groups: Option<Groups>,
    /// The whole optimiser step's counts, which a mean to a `Scalar` divides by so that the
    /// step's loss is the sum of its micro-batches' losses; `None` when this batch is the step.
    pub totals: Option<Totals>,
    /// The value of a `Node::Scalar { func, args }` (a recipe function of the batch's scalar
    /// fields), or `None` if it has none.
    pub scalars: &'a dyn Fn(u32, &[String]) -> Option<f64>,
}

/// Why a loss could not be evaluated; each names the node (its index in [`TensorFn::nodes`]).
#[derive(Debug, thiserror::Error)]
pub enum LossError {
    #[error("loss node {node}: batch input `{name}` ({shape}) is missing")]
    MissingInput { node: NodeId, name: String, shape: Shape },
    #[error("loss node {node}: batch input `{name}` is {got_dtype:?} {got:?}, expected {dtype:?} {expected:?}")]
    Input { node: NodeId, name: String, expected: Vec<usize>, got: Vec<usize>, dtype: DType, got_dtype: DType },
    #[error("loss node {node} needs the completion mask, [B, T] with B = {batch}; it is {got:?}")]
    Mask { node: NodeId, batch: usize, got: Option<Vec<usize>> },
    #[error("loss node {node} needs each of the {batch} sequences' group index, below the group count")]
    Groups { node: NodeId, batch: usize },
    #[error("loss node {node}: scalar function fn#{func} has no value")]
    Scalar { node: NodeId, func: u32 },
    #[error("loss node {node} reads node {operand}, which does not precede it")]
    Operand { node: NodeId, operand: NodeId },
    #[error("loss node {node} ({shape}) came out as {got:?}, expected {expected:?}")]
    Shape { node: NodeId, shape: Shape, expected: Vec<usize>, got: Vec<usize> },
    #[error("loss node {node}: {source}")]
    Candle { node: NodeId, source: candle_core::Error },
}

/// The program's scalar function `func` called with numeric arguments (each converted to its
/// parameter's type); `None` when it cannot be called. Schedules (`beta`) and `Node::Scalar`
/// loss nodes are evaluated through it.
pub type ScalarFns = Arc<dyn Fn(u32, &[f64]) -> Option<f64> + Send + Sync>;

/// The value of a loss's `Node::Scalar { func, args }` nodes (a recipe function of the batch's
/// scalar fields, `beta(b.step, b.total)`): `scalars` called with the named arguments, `step`
/// and `total` or one of the batch's `fields`.
pub fn scalar_nodes<'a>(
    scalars: &'a ScalarFns,
    (step, total): (u64, u64),
    fields: &'a HashMap<String, f64>,
) -> impl Fn(u32, &[String]) -> Option<f64> + 'a {
    move |func, args| {
        let values: Option<Vec<f64>> = args
            .iter()
            .map(|a| match a.as_str() {
                "step" => Some(step as f64),
                "total" => Some(total as f64),
                other => fields.get(other).copied(),
            })
            .collect();
        scalars(func, &values?)
    }
}

/// The batch fields a loss's terms read (their `TensorFn::inputs`), so an objective builds only
/// those (a KL-free policy loss never scores a reference).
#[derive(Clone, Debug, Default)]
pub struct Reads(BTreeSet<String>);

impl Reads {
    /// The fields `terms` read, each one of `fields` (the batch's, named `batch` in errors:
    /// "a rollout batch").
    ///
    /// Errors: the first field the batch does not have, with the term that reads it.
    pub fn of(terms: &[LossTerm], batch: &str, fields: &[&str]) -> Result<Reads, String> {
        let mut names = BTreeSet::new();
        for term in terms {
            for (name, _) in term.f.inputs() {
                if !fields.contains(&name) {
                    return Err(format!(
                        "the loss term `{}` reads the batch field `{name}`, which {batch} does not have (it has {})",
                        term.name,
                        fields.join(", ")
                    ));
                }
                names.insert(name.to_string());
            }
        }
        Ok(Reads(names))
    }

    pub fn has(&self, name: &str) -> bool {
        self.0.contains(name)
    }
}

/// The loss `Σ weight × term` of `terms` on `inputs` (a rank-0 tensor, 0 for no terms), and
/// each term's weighted value as the metric `loss/<name>` (terms of one name summed). The loop
/// averages metrics over a step's `micro_batches`, so a micro-batch reports its share times
/// their number: the average is then the step's term, and the terms sum to the step's loss.
///
/// Errors: `TrainError::Candle` naming `stage` and the term when a term cannot be evaluated;
/// the checker typed the loss and the objective checked its fields, so that is a disagreement
/// between compiler and runtime, not the user's error.
pub fn weighted_terms(
    stage: &str,
    terms: &[LossTerm],
    inputs: &LossInputs<'_>,
    micro_batches: usize,
) -> Result<(Tensor, Vec<(String, f64)>), TrainError> {
    let mut loss: Option<Tensor> = None;
    let mut metrics: Vec<(String, f64)> = Vec::new();
    for term in terms {
        let value = evaluate(&term.f, inputs).map_err(|e| {
            let message = format!("stage `{stage}`, loss term `{}`: {e}", term.name);
            TrainError::Candle(candle_core::Error::Msg(message))
        })?;
        let weighted = if term.weight == 1.0 { value } else { value.affine(term.weight, 0.0)? };
        let v = super::scalar(&weighted)? * micro_batches as f64;
        let key = format!("loss/{}", term.name);
        match metrics.iter_mut().find(|(k, _)| *k == key) {
            Some((_, total)) => *total += v,
            None => metrics.push((key, v)),
        }
        loss = Some(match loss {
            None => weighted,
            Some(acc) => (acc + weighted)?,
        });
    }
    let loss = match loss {
        Some(l) => l,
        None => Tensor::new(0f32, &inputs.device)?.to_dtype(inputs.dtype)?,
    };
    Ok((loss, metrics))
}

/// Evaluate `f` on `inputs`: a tensor of the output's shape (rank 0 for a `Scalar` loss) that
/// `backward` differentiates with respect to the inputs.
pub fn evaluate(f: &TensorFn, inputs: &LossInputs<'_>) -> Result<Tensor, LossError> {
    let mut lower = Lower { f, inputs, values: Vec::with_capacity(f.nodes.len()), mask: None, groups: None };
    for (id, live) in f.live().into_iter().enumerate() {
        let id = id as NodeId;
        if !live {
            lower.values.push(None);
            continue;
        }
        let v = lower.node(id)?;
        let expected = lower.dims(id, f.shape(id))?;
        if v.dims() != expected.as_slice() {
            return Err(LossError::Shape { node: id, shape: f.shape(id), expected, got: v.dims().to_vec() });
        }
        lower.values.push(Some(v));
    }
    match lower.values.get(f.output as usize) {
        Some(Some(v)) => Ok(v.clone()),
        // A function of no nodes (a sum of no loss terms) is the zero loss.
        None if f.nodes.is_empty() => lower.constant(f.output, 0.0),
        _ => Err(LossError::Operand { node: f.output, operand: f.output }),
    }
}

/// The mask in the forms the ops use, made once.
struct Mask {
    /// `[B, T]` u8, 1 at valid tokens.
    valid: Tensor,
    time: usize,
    /// `[B]`, valid tokens per sequence, at least 1 (a mean over none is 0).
    per_seq: Tensor,
    /// `[]`, valid tokens in the batch, at least 1.
    total: Tensor,
}

/// The groups in the forms the ops use, made once.
struct GroupIndex {
    /// `[B]` u32.
    index: Tensor,
    count: usize,
    /// `[G]`, sequences per group, at least 1.
    sizes: Tensor,
}

struct Lower<'f, 'i, 'a> {
    f: &'f TensorFn,
    inputs: &'i LossInputs<'a>,
    /// Node values; `None` for nodes the output does not read.
    values: Vec<Option<Tensor>>,
    mask: Option<Mask>,
    groups: Option<GroupIndex>,
}

impl Lower<'_, '_, '_> {
    fn node(&mut self, id: NodeId) -> Result<Tensor, LossError> {
        let candle = |source| LossError::Candle { node: id, source };
        Ok(match &self.f.nodes[id as usize] {
            Node::Input { name, shape } => self.input(id, name, *shape)?,
            Node::Const(x) => self.constant(id, x.get())?,
            Node::Scalar { func, args } => {
                let x = (self.inputs.scalars)(*func, args).ok_or(LossError::Scalar { node: id, func: *func })?;
                self.constant(id, x)?
            }
            Node::Unary(op, a) => unary(*op, self.operand(id, *a)?).map_err(candle)?,
            Node::Binary(op, a, b) => {
                let (x, y) = (self.operand(id, *a)?, self.operand(id, *b)?);
                // A constant exponent uses powf, which is defined for a negative base too.
                match (op, &self.f.nodes[*b as usize]) {
                    (BinaryOp::Pow, Node::Const(e)) => x.powf(e.get()),
                    _ => binary(*op, x, y),
                }
                .map_err(candle)?
            }
            Node::Broadcast(to, a) => {
                let x = self.operand(id, *a)?;
                let dims = self.dims(id, *to)?;
                match (self.f.shape(*a), to) {
                    (Shape::Seq, Shape::Token) => x.unsqueeze(1).and_then(|x| x.broadcast_as(dims)),
                    (Shape::Group, Shape::Seq) => {
                        let index = &self.groups(id)?.index;
                        // index_select and index_add read contiguous storage only.
                        x.contiguous().and_then(|x| x.index_select(index, 0))
                    }
                    _ => x.broadcast_as(dims),
                }
                .map_err(candle)?
            }
            Node::Reduce(r, axis, a) => {
                let x = self.operand(id, *a)?;
                self.reduce(id, *r, *axis, x)?
            }
            Node::StopGradient(a) => self.operand(id, *a)?.detach(),
            Node::Sort(a) => {
                let x = self.operand(id, *a)?;
                // The permutation is computed on the host (candle's arg-sort is not on every
                // device) in the reference's order; gathering through it carries the gradient.
                let mut order: Vec<(u32, f64)> = x
                    .to_dtype(DType::F64)
                    .and_then(|v| v.to_vec1::<f64>())
                    .map_err(candle)?
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| (i as u32, v))
                    .collect();
                order.sort_by(|a, b| recipe_compiler::tensor::sort_order(&a.1, &b.1));
                let index: Vec<u32> = order.into_iter().map(|(i, _)| i).collect();
                let n = index.len();
                Tensor::from_vec(index, n, x.device())
                    .and_then(|i| x.contiguous()?.index_select(&i, 0))
                    .map_err(candle)?
            }
        })
    }

    fn reduce(&mut self, id: NodeId, r: Reduce, axis: Axis, x: Tensor) -> Result<Tensor, LossError> {
        let candle = |source| LossError::Candle { node: id, source };
        // The sum, and what a mean divides it by.
        let (sum, count) = match axis {
            Axis::TokenToSeq | Axis::TokenToScalar => {
                let mask = self.mask(id)?;
                let kept = x.zeros_like().and_then(|zeros| mask.valid.where_cond(&x, &zeros)).map_err(candle)?;
                match axis {
                    Axis::TokenToSeq => (kept.sum(1), mask.per_seq.clone()),
                    _ => (kept.sum_all(), mask.total.clone()),
                }
            }
            Axis::SeqToGroup => {
                let g = self.groups(id)?;
                let sum = Tensor::zeros(g.count, x.dtype(), x.device())
                    .and_then(|zeros| zeros.index_add(&g.index, &x.contiguous()?, 0));
                (sum, g.sizes.clone())
            }
            Axis::SeqToScalar | Axis::GroupToScalar => (x.sum_all(), self.constant(id, x.elem_count().max(1) as f64)?),
        };
        // A mean to a scalar divides by the whole step's count when the batch is a part of it.
        let count = match (self.inputs.totals, axis) {
            (Some(n), Axis::TokenToScalar) => self.constant(id, n.tokens.max(1.0))?,
            (Some(n), Axis::SeqToScalar) => self.constant(id, n.sequences.max(1.0))?,
            (Some(n), Axis::GroupToScalar) => self.constant(id, n.groups.max(1.0))?,
            _ => count,
        };
        let sum = sum.map_err(candle)?;
        match r {
            Reduce::Sum => Ok(sum),
            Reduce::Mean => sum.broadcast_div(&count).map_err(candle),
        }
    }

    fn operand(&self, node: NodeId, operand: NodeId) -> Result<Tensor, LossError> {
        self.values.get(operand as usize).cloned().flatten().ok_or(LossError::Operand { node, operand })
    }

    fn input(&mut self, id: NodeId, name: &str, shape: Shape) -> Result<Tensor, LossError> {
        let missing = || LossError::MissingInput { node: id, name: name.into(), shape };
        let map = match shape {
            Shape::Scalar => {
                let x = *self.inputs.scalar.get(name).ok_or_else(missing)?;
                return self.constant(id, x);
            }
            Shape::Seq => &self.inputs.seq,
            Shape::Token => &self.inputs.token,
            Shape::Group => &self.inputs.group,
        };
        let t = map.get(name).ok_or_else(missing)?;
        let expected = self.dims(id, shape)?;
        if t.dims() != expected.as_slice() || t.dtype() != self.inputs.dtype {
            return Err(LossError::Input {
                node: id,
                name: name.into(),
                expected,
                got: t.dims().to_vec(),
                dtype: self.inputs.dtype,
                got_dtype: t.dtype(),
            });
        }
        Ok(t.clone())
    }

    fn constant(&self, id: NodeId, x: f64) -> Result<Tensor, LossError> {
        Tensor::new(x, &self.inputs.device)
            .and_then(|t| t.to_dtype(self.inputs.dtype))
            .map_err(|source| LossError::Candle { node: id, source })
    }

    /// The dims a value of `shape` has in this batch.
    fn dims(&mut self, id: NodeId, shape: Shape) -> Result<Vec<usize>, LossError> {
        let b = self.inputs.batch;
        Ok(match shape {
            Shape::Scalar => vec![],
            Shape::Seq => vec![b],
            Shape::Token => vec![b, self.mask(id)?.time],
            Shape::Group => vec![self.groups(id)?.count],
        })
    }

    /// The mask's forms, made on first use.
    fn mask(&mut self, id: NodeId) -> Result<&Mask, LossError> {
        let mask = match self.mask.take() {
            Some(m) => m,
            None => self.make_mask(id)?,
        };
        Ok(self.mask.insert(mask))
    }

    fn make_mask(&self, id: NodeId) -> Result<Mask, LossError> {
        let b = self.inputs.batch;
        let err = |got: Option<&Tensor>| LossError::Mask { node: id, batch: b, got: got.map(|m| m.dims().to_vec()) };
        let m = self.inputs.mask.as_ref().ok_or_else(|| err(None))?;
        let &[rows, time] = m.dims() else { return Err(err(Some(m))) };
        if rows != b {
            return Err(err(Some(m)));
        }
        let candle = |source| LossError::Candle { node: id, source };
        let valid = m.ne(0.0).map_err(candle)?;
        let ones = valid.to_dtype(self.inputs.dtype).map_err(candle)?;
        let per_seq = ones.sum(1).and_then(|c| c.maximum(1.0)).map_err(candle)?;
        let total = ones.sum_all().and_then(|c| c.maximum(1.0)).map_err(candle)?;
        Ok(Mask { valid, time, per_seq, total })
    }

    /// The groups' forms, made on first use.
    fn groups(&mut self, id: NodeId) -> Result<&GroupIndex, LossError> {
        let groups = match self.groups.take() {
            Some(g) => g,
            None => self.make_groups(id)?,
        };
        Ok(self.groups.insert(groups))
    }

    fn make_groups(&self, id: NodeId) -> Result<GroupIndex, LossError> {
        let b = self.inputs.batch;
        let g = match &self.inputs.groups {
            Some(g) if g.index.len() == b && g.index.iter().all(|&i| (i as usize) < g.count) => g,
            _ => return Err(LossError::Groups { node: id, batch: b }),
        };
        let mut sizes = vec![0.0f64; g.count];
        for &i in &g.index {
            sizes[i as usize] += 1.0;
        }
        let (device, dtype) = (&self.inputs.device, self.inputs.dtype);
        let candle = |source| LossError::Candle { node: id, source };
        let index = Tensor::from_vec(g.index.clone(), b, device).map_err(candle)?;
        let sizes = Tensor::from_vec(sizes, g.count, device)
            .and_then(|s| s.maximum(1.0))
            .and_then(|s| s.to_dtype(dtype))
            .map_err(candle)?;
        Ok(GroupIndex { index, count: g.count, sizes })
    }
}

/// `relu(x) + log(1 + exp(-|x|))`: exp never overflows, and the gradient is sigmoid(x).
fn softplus(x: &Tensor) -> candle_core::Result<Tensor> {
    let tail = ((x.abs()?.neg()?.exp()? + 1.0)?).log()?;
    x.relu()? + tail
}

fn unary(op: UnaryOp, x: Tensor) -> candle_core::Result<Tensor> {
    match op {
        UnaryOp::Neg => x.neg(),
        UnaryOp::Log => x.log(),
        // candle has no log1p; 1 + x loses digits only for |x| below 1e-8 or so.
        UnaryOp::Log1p => (x + 1.0)?.log(),
        UnaryOp::Exp => x.exp(),
        UnaryOp::LogSigmoid => softplus(&x.neg()?)?.neg(),
        UnaryOp::Sigmoid => softplus(&x.neg()?)?.neg()?.exp(),
        UnaryOp::Softplus => softplus(&x),
        UnaryOp::Relu => x.relu(),
        UnaryOp::Abs => x.abs(),
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Tanh => x.tanh(),
    }
}

fn binary(op: BinaryOp, x: Tensor, y: Tensor) -> candle_core::Result<Tensor> {
    match op {
        BinaryOp::Add => x.broadcast_add(&y),
        BinaryOp::Sub => x.broadcast_sub(&y),
        BinaryOp::Mul => x.broadcast_mul(&y),
        BinaryOp::Div => x.broadcast_div(&y),
        // exp(y log x): the reference's powf for x > 0, NaN for x < 0 as for most y.
        BinaryOp::Pow => y.broadcast_mul(&x.log()?)?.exp(),
        BinaryOp::Min => x.broadcast_minimum(&y),
        BinaryOp::Max => x.broadcast_maximum(&y),
        // A comparison has no gradient; detached so that none is ever looked for.
        BinaryOp::Greater => Ok(x.broadcast_gt(&y)?.to_dtype(x.dtype())?.detach()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Var;
    use crate::rng::Rng;
    use recipe_compiler::tensor::{Builder, EvalInputs};
    use std::collections::BTreeSet;

    const SEQ: [&str; 2] = ["s0", "s1"];
    const TOKEN: [&str; 2] = ["t0", "t1"];
    const UNARY: [UnaryOp; 11] = [
        UnaryOp::Neg,
        UnaryOp::Log,
        UnaryOp::Log1p,
        UnaryOp::Exp,
        UnaryOp::LogSigmoid,
        UnaryOp::Sigmoid,
        UnaryOp::Softplus,
        UnaryOp::Relu,
        UnaryOp::Abs,
        UnaryOp::Sqrt,
        UnaryOp::Tanh,
    ];
    const BINARY: [BinaryOp; 8] = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Pow,
        BinaryOp::Min,
        BinaryOp::Max,
        BinaryOp::Greater,
    ];
    const AXES: [Axis; 5] =
        [Axis::TokenToSeq, Axis::TokenToScalar, Axis::SeqToGroup, Axis::SeqToScalar, Axis::GroupToScalar];

    fn scalars(func: u32, _: &[String]) -> Option<f64> {
        Some(0.5 + func as f64)
    }

    /// A random batch for the reference; [`loss_inputs`] gives the same as F64 CPU tensors.
    fn random_batch(rng: &mut Rng) -> EvalInputs {
        let (b, t, g) = (1 + rng.below(5) as usize, 1 + rng.below(4) as usize, 1 + rng.below(3) as usize);
        // Some sequences have no valid token and some groups no sequence: means over nothing.
        let mask: Vec<bool> = (0..b * t).map(|_| rng.uniform() < 0.7).collect();
        let seq = SEQ.iter().map(|n| (n.to_string(), (0..b).map(|_| 2.0 * rng.normal()).collect())).collect();
        // Padded positions hold values that must never reach a reduction.
        let token = TOKEN
            .iter()
            .map(|n| (n.to_string(), mask.iter().map(|v| if *v { 2.0 } else { 9.0 } * rng.normal()).collect()))
            .collect();
        let groups = Groups { index: (0..b).map(|_| rng.below(g as u64) as u32).collect(), count: g };
        let group = HashMap::from([("g0".to_string(), (0..g).map(|_| 2.0 * rng.normal()).collect())]);
        let scalar = HashMap::from([("c0".to_string(), 2.0 * rng.normal())]);
        // Half the batches are one micro-batch of a larger step.
        let totals = (rng.below(2) == 0).then(|| Totals {
            tokens: (b * t) as f64 + 3.0,
            sequences: b as f64 + 1.0,
            groups: g as f64 + 2.0,
        });
        EvalInputs { batch: b, time: t, scalar, seq, group, token, mask, groups: Some(groups), totals }
    }

    fn loss_inputs(e: &EvalInputs) -> LossInputs<'static> {
        let tensors = |map: &HashMap<String, Vec<f64>>, dims: &[usize]| {
            map.iter().map(|(n, v)| (n.clone(), Tensor::from_vec(v.clone(), dims, &Device::Cpu).unwrap())).collect()
        };
        let mask: Vec<f64> = e.mask.iter().map(|v| *v as u8 as f64).collect();
        LossInputs {
            batch: e.batch,
            device: Device::Cpu,
            dtype: DType::F64,
            scalar: e.scalar.clone(),
            seq: tensors(&e.seq, &[e.batch]),
            group: tensors(&e.group, &[e.groups.as_ref().map_or(0, |g| g.count)]),
            token: tensors(&e.token, &[e.batch, e.time]),
            mask: Some(Tensor::from_vec(mask, (e.batch, e.time), &Device::Cpu).unwrap()),
            groups: e.groups.clone(),
            totals: e.totals,
            scalars: &scalars,
        }
    }

    fn add(b: &mut Builder, node: Node) -> NodeId {
        b.add(node).expect("well-shaped")
    }

    /// softplus(x) + 0.5: an operand for ops defined on positive numbers only.
    fn positive(b: &mut Builder, x: NodeId) -> NodeId {
        let s = add(b, Node::Unary(UnaryOp::Softplus, x));
        let half = b.constant(0.5);
        add(b, Node::Binary(BinaryOp::Add, s, half))
    }

    /// A random well-shaped DAG of `size` steps over the inputs, and the nodes it made; every op,
    /// broadcast and reduction can appear, with domains guarded so that values stay finite.
    fn dag(rng: &mut Rng, size: usize, stop_gradient: bool) -> (Builder, Vec<NodeId>) {
        let mut b = Builder::default();
        let mut pool: Vec<NodeId> = Vec::new();
        for n in SEQ {
            pool.push(add(&mut b, Node::Input { name: n.into(), shape: Shape::Seq }));
        }
        for n in TOKEN {
            pool.push(add(&mut b, Node::Input { name: n.into(), shape: Shape::Token }));
        }
        pool.push(add(&mut b, Node::Input { name: "g0".into(), shape: Shape::Group }));
        pool.push(add(&mut b, Node::Input { name: "c0".into(), shape: Shape::Scalar }));
        pool.push(add(&mut b, Node::Scalar { func: 0, args: vec!["step".into()] }));
        pool.push(b.constant(1.5));
        let pick = |rng: &mut Rng, from: &[NodeId]| from[rng.below(from.len() as u64) as usize];
        for _ in 0..size {
            let x = pick(rng, &pool);
            let sx = b.shape(x).unwrap();
            let id = match rng.below(if stop_gradient { 6 } else { 5 }) {
                0 => {
                    let op = UNARY[rng.below(UNARY.len() as u64) as usize];
                    let x = match op {
                        UnaryOp::Log | UnaryOp::Log1p | UnaryOp::Sqrt => positive(&mut b, x),
                        UnaryOp::Exp => add(&mut b, Node::Unary(UnaryOp::Tanh, x)),
                        _ => x,
                    };
                    add(&mut b, Node::Unary(op, x))
                }
                1 => {
                    let op = BINARY[rng.below(BINARY.len() as u64) as usize];
                    let fits: Vec<NodeId> = pool
                        .iter()
                        .copied()
                        .filter(|y| {
                            sx == Shape::Scalar || matches!(b.shape(*y), Ok(s) if s == sx || s == Shape::Scalar)
                        })
                        .collect();
                    let y = pick(rng, &fits);
                    let (x, y) = match op {
                        BinaryOp::Div => (x, positive(&mut b, y)),
                        BinaryOp::Pow if rng.below(2) == 0 => (x, b.constant(2.0 + rng.below(2) as f64)),
                        BinaryOp::Pow => (positive(&mut b, x), add(&mut b, Node::Unary(UnaryOp::Tanh, y))),
                        _ => (x, y),
                    };
                    add(&mut b, Node::Binary(op, x, y))
                }
                2 => {
                    let to = match sx {
                        Shape::Scalar => [Shape::Seq, Shape::Token, Shape::Group][rng.below(3) as usize],
                        Shape::Seq => Shape::Token,
                        Shape::Group => Shape::Seq,
                        Shape::Token => continue,
                    };
                    add(&mut b, Node::Broadcast(to, x))
                }
                3 => {
                    let axes: Vec<Axis> =
                        AXES.iter().copied().filter(|a| sx == Shape::Scalar || a.input() == sx).collect();
                    let r = if rng.below(2) == 0 { Reduce::Sum } else { Reduce::Mean };
                    add(&mut b, Node::Reduce(r, axes[rng.below(axes.len() as u64) as usize], x))
                }
                4 => match sx {
                    Shape::Seq | Shape::Group => add(&mut b, Node::Sort(x)),
                    _ => continue,
                },
                _ => add(&mut b, Node::StopGradient(x)),
            };
            pool.push(id);
        }
        (b, pool)
    }

    /// What kind of op a node is, for the coverage check.
    fn kind(f: &TensorFn, node: &Node) -> Option<String> {
        match node {
            Node::Unary(op, _) => Some(format!("{op:?}")),
            Node::Binary(op, _, _) => Some(format!("{op:?}")),
            Node::Broadcast(to, a) => Some(format!("{:?}->{to:?}", f.shape(*a))),
            Node::Reduce(r, axis, _) => Some(format!("{r:?} {axis:?}")),
            Node::Sort(a) => Some(format!("Sort {:?}", f.shape(*a))),
            _ => None,
        }
    }

    /// The same DAG with another node as its output.
    fn with_output(f: &TensorFn, output: NodeId) -> TensorFn {
        let mut g = f.clone();
        g.output = output;
        g
    }

    fn close(a: f64, b: f64, rel: f64) -> bool {
        a == b || (a - b).abs() <= rel * a.abs().max(b.abs()).max(1.0)
    }

    /// A tensor's values, row-major (one for a scalar).
    fn values(t: &Tensor) -> Vec<f64> {
        t.flatten_all().and_then(|t| t.to_vec1()).unwrap()
    }

    #[test]
    fn agrees_with_the_reference_on_random_dags_of_every_shape() {
        let mut rng = Rng::derive(7, "loss-dags");
        let mut seen = BTreeSet::new();
        for _ in 0..80 {
            let (b, pool) = dag(&mut rng, 30, true);
            let f = b.finish(*pool.last().unwrap());
            let batch = random_batch(&mut rng);
            let inputs = loss_inputs(&batch);
            for (id, node) in f.nodes.iter().enumerate() {
                seen.extend(kind(&f, node));
                let g = with_output(&f, id as NodeId);
                let want = g.eval(&batch, &scalars).unwrap();
                let got = values(&evaluate(&g, &inputs).unwrap());
                assert_eq!(got.len(), want.len(), "node {id} of {g}");
                for (j, (x, y)) in got.iter().zip(&want).enumerate() {
                    // Values at padded token positions are unspecified.
                    let padded = f.shape(id as NodeId) == Shape::Token && !batch.mask[j];
                    assert!(padded || close(*x, *y, 1e-9), "node {id} [{j}]: candle {x}, reference {y}: {g}");
                }
            }
        }
        // Five broadcasts, and sorts of [B] and [G].
        let expected = UNARY.len() + BINARY.len() + 5 + 2 * AXES.len() + 2;
        assert_eq!(seen.len(), expected, "every op, broadcast and reduction is exercised: {seen:?}");
    }

    fn input_mut(e: &mut EvalInputs, shape: Shape) -> &mut HashMap<String, Vec<f64>> {
        match shape {
            Shape::Token => &mut e.token,
            Shape::Group => &mut e.group,
            _ => &mut e.seq,
        }
    }

    /// The gradient of `f` (a Scalar) with respect to every input element, by candle's backward
    /// and by central differences of the reference.
    fn check_gradients(f: &TensorFn, batch: &EvalInputs) {
        let mut inputs = loss_inputs(batch);
        let vars: Vec<(String, Shape, Var)> =
            [(&mut inputs.seq, Shape::Seq), (&mut inputs.token, Shape::Token), (&mut inputs.group, Shape::Group)]
                .into_iter()
                .flat_map(|(map, shape)| {
                    map.iter_mut()
                        .map(|(name, t)| {
                            let v = Var::from_tensor(t).unwrap();
                            *t = v.as_tensor().clone();
                            (name.clone(), shape, v)
                        })
                        .collect::<Vec<_>>()
                })
                .collect();
        let grads = evaluate(f, &inputs).unwrap().backward().unwrap();
        let reference = |e: &EvalInputs| f.eval(e, &scalars).unwrap()[0];
        for (name, shape, var) in &vars {
            let got = grads.get(var).map(values).unwrap_or_else(|| vec![0.0; var.elem_count()]);
            for (j, g) in got.iter().enumerate() {
                let mut e = batch.clone();
                let x = input_mut(&mut e, *shape)[name][j];
                let h = 1e-6 * x.abs().max(1.0);
                input_mut(&mut e, *shape).get_mut(name).unwrap()[j] = x + h;
                let up = reference(&e);
                input_mut(&mut e, *shape).get_mut(name).unwrap()[j] = x - h;
                let fd = (up - reference(&e)) / (2.0 * h);
                assert!(close(*g, fd, 1e-5), "d/d{name}[{j}]: backward {g}, differences {fd}: {f}");
            }
        }
    }

    #[test]
    fn gradients_agree_with_finite_differences() {
        let mut rng = Rng::derive(11, "loss-gradients");
        for _ in 0..20 {
            let (mut b, pool) = dag(&mut rng, 14, false);
            // One number that every node reaches: the sum of their means.
            let mut total = b.constant(0.0);
            for id in pool {
                let mean = match Axis::to_scalar(b.shape(id).unwrap()) {
                    Some(axis) => add(&mut b, Node::Reduce(Reduce::Mean, axis, id)),
                    None => id,
                };
                total = add(&mut b, Node::Binary(BinaryOp::Add, total, mean));
            }
            check_gradients(&b.finish(total), &random_batch(&mut rng));
        }
    }

    /// A GRPO-shaped loss: group-centred sequence rewards, broadcast over tokens, token mean.
    #[test]
    fn gradients_flow_through_groups_and_tokens() {
        let mut b = Builder::default();
        let r = add(&mut b, Node::Input { name: "s0".into(), shape: Shape::Seq });
        let lp = add(&mut b, Node::Input { name: "t0".into(), shape: Shape::Token });
        let group_mean = add(&mut b, Node::Reduce(Reduce::Mean, Axis::SeqToGroup, r));
        let back = add(&mut b, Node::Broadcast(Shape::Seq, group_mean));
        let adv = add(&mut b, Node::Binary(BinaryOp::Sub, r, back));
        let adv_t = add(&mut b, Node::Broadcast(Shape::Token, adv));
        let ratio = add(&mut b, Node::Unary(UnaryOp::Exp, lp));
        let per_token = add(&mut b, Node::Binary(BinaryOp::Mul, ratio, adv_t));
        let per_seq = add(&mut b, Node::Reduce(Reduce::Sum, Axis::TokenToSeq, per_token));
        let by_group = add(&mut b, Node::Reduce(Reduce::Sum, Axis::SeqToGroup, per_seq));
        let loss = add(&mut b, Node::Reduce(Reduce::Mean, Axis::GroupToScalar, by_group));
        let f = b.finish(loss);
        let mut rng = Rng::derive(3, "loss-grpo");
        for _ in 0..5 {
            check_gradients(&f, &random_batch(&mut rng));
        }
    }

    #[test]
    fn stop_gradient_blocks_the_gradient() {
        let mut b = Builder::default();
        let x = add(&mut b, Node::Input { name: "s0".into(), shape: Shape::Seq });
        let frozen = add(&mut b, Node::StopGradient(x));
        let sq = add(&mut b, Node::Binary(BinaryOp::Mul, frozen, x));
        let out = add(&mut b, Node::Reduce(Reduce::Sum, Axis::SeqToScalar, sq));
        let f = b.finish(out);
        let batch = random_batch(&mut Rng::derive(1, "loss-stop"));
        let mut inputs = loss_inputs(&batch);
        let var = Var::from_tensor(&inputs.seq["s0"]).unwrap();
        inputs.seq.insert("s0".into(), var.as_tensor().clone());
        let grads = evaluate(&f, &inputs).unwrap().backward().unwrap();
        assert_eq!(values(grads.get(&var).unwrap()), batch.seq["s0"], "d(sg(x) x)/dx = x, not 2x");
    }

    fn empty(batch: usize) -> LossInputs<'static> {
        LossInputs {
            batch,
            device: Device::Cpu,
            dtype: DType::F64,
            scalar: HashMap::new(),
            seq: HashMap::new(),
            group: HashMap::new(),
            token: HashMap::new(),
            mask: None,
            groups: None,
            totals: None,
            scalars: &|_, _| None,
        }
    }

    #[test]
    fn reducing_a_constant_broadcasts_it_first() {
        let mut b = Builder::default();
        let two = b.constant(2.0);
        let sum = add(&mut b, Node::Reduce(Reduce::Sum, Axis::SeqToScalar, two));
        let token_sum = add(&mut b, Node::Reduce(Reduce::Sum, Axis::TokenToScalar, two));
        let mean = add(&mut b, Node::Reduce(Reduce::Mean, Axis::SeqToScalar, two));
        let f = b.finish(sum);
        let out = evaluate(&f, &empty(5)).unwrap();
        assert_eq!(out.dims(), &[] as &[usize], "a Scalar loss is rank 0");
        assert_eq!(out.to_vec0::<f64>().unwrap(), 10.0);
        let mut inputs = empty(2);
        inputs.mask = Some(Tensor::new(&[[1u8, 1, 0], [0, 1, 0]], &Device::Cpu).unwrap());
        let at = |output| values(&evaluate(&with_output(&f, output), &inputs).unwrap());
        assert_eq!(at(token_sum), vec![6.0], "2.0 at each of 3 valid tokens");
        assert_eq!(at(mean), vec![2.0]);
    }

    #[test]
    fn missing_or_ill_shaped_inputs_are_errors_naming_the_node() {
        let mut b = Builder::default();
        let s = add(&mut b, Node::Input { name: "s0".into(), shape: Shape::Seq });
        let t = add(&mut b, Node::Input { name: "t0".into(), shape: Shape::Token });
        let to_group = add(&mut b, Node::Reduce(Reduce::Sum, Axis::SeqToGroup, s));
        let beta = add(&mut b, Node::Scalar { func: 4, args: vec!["step".into()] });
        let f = b.finish(s);
        let at = |output, inputs: &LossInputs| evaluate(&with_output(&f, output), inputs);

        let mut inputs = empty(3);
        assert!(matches!(at(s, &inputs), Err(LossError::MissingInput { node: 0, ref name, .. }) if name == "s0"));
        inputs.seq.insert("s0".into(), Tensor::zeros(4, DType::F64, &Device::Cpu).unwrap());
        assert!(matches!(at(s, &inputs), Err(LossError::Input { node: 0, .. })), "4 values for B = 3");
        inputs.seq.insert("s0".into(), Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap());
        assert!(matches!(at(s, &inputs), Err(LossError::Input { .. })), "F32 in an F64 loss");
        inputs.seq.insert("s0".into(), Tensor::zeros(3, DType::F64, &Device::Cpu).unwrap());
        assert!(at(s, &inputs).is_ok());

        inputs.token.insert("t0".into(), Tensor::zeros((3, 2), DType::F64, &Device::Cpu).unwrap());
        assert!(matches!(at(t, &inputs), Err(LossError::Mask { node: 1, got: None, .. })));
        inputs.mask = Some(Tensor::ones((2, 2), DType::F64, &Device::Cpu).unwrap());
        assert!(matches!(at(t, &inputs), Err(LossError::Mask { node: 1, got: Some(_), .. })), "B = 2 rows");

        assert!(matches!(at(to_group, &inputs), Err(LossError::Groups { node: 2, .. })));
        inputs.groups = Some(Groups { index: vec![0, 1, 2], count: 2 });
        assert!(matches!(at(to_group, &inputs), Err(LossError::Groups { node: 2, .. })), "index 2 of 2 groups");
        inputs.groups = Some(Groups { index: vec![0, 1, 1], count: 2 });
        assert!(at(to_group, &inputs).is_ok());

        let err = at(beta, &inputs).unwrap_err();
        assert!(matches!(err, LossError::Scalar { node: 3, func: 4 }));
        assert_eq!(err.to_string(), "loss node 3: scalar function fn#4 has no value");
    }
}
