//! The tensor-expression IR for losses: what a `Loss` value (a recipe function from a batch to a
//! Tensor) becomes once the compiler has inlined every call and baked in every constant. The
//! runtime turns it into candle ops with autograd (`recipe_runtime::train::loss`); this crate
//! knows nothing of candle, and [`TensorFn::eval`] here is the plain-f64 reference meaning.
//!
//! Every node has a [`Shape`], one of four, designed for preference and RL batches alike:
//! `Scalar` (one value per batch), `Seq` (`[B]`, one per sequence, pair or rollout), `Token`
//! (`[B, T]`, meaningful where the batch's completion mask is 1) and `Group` (`[G]`, one per
//! prompt group; each sequence has a group index). Elementwise ops need equal shapes, except
//! that a `Scalar` operand broadcasts to the other's shape; every other change of shape is an
//! explicit [`Node::Broadcast`] or [`Node::Reduce`], and the [`Builder`] refuses ill-shaped
//! nodes with a [`ShapeError`].
//!
//! Invariants: nodes are in topological order (an operand's id is smaller than its user's);
//! identical nodes are shared (hash-consed on the node value), so `margin(b)` used twice is
//! computed once; operations on constants are folded, and a product with a constant 0 is that
//! 0 (broadcast to the product's shape); `shapes[i]` is node `i`'s shape.

use serde::{Serialize, Serializer};
use std::collections::HashMap;
use std::fmt;

/// Index of a node in [`TensorFn::nodes`].
pub type NodeId = u32;

/// The shape of a node's value. `B` sequences in the batch, `T` token positions, `G` groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Shape {
    /// One value for the whole batch, `[]`.
    Scalar,
    /// One value per sequence (pair, rollout), `[B]`.
    Seq,
    /// One value per token position, `[B, T]`; positions where the mask is 0 are padding and
    /// never reach a reduction.
    Token,
    /// One value per prompt group, `[G]`.
    Group,
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Shape::Scalar => "[]",
            Shape::Seq => "[B]",
            Shape::Token => "[B, T]",
            Shape::Group => "[G]",
        })
    }
}

/// An f64 compared and hashed by its bits, every NaN made the one canonical NaN, so that a
/// node holding a constant can derive `Eq` and `Hash`. `0.0` and `-0.0` stay distinct
/// (`1 / x` tells them apart).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct F64Bits(u64);

impl F64Bits {
    pub fn new(x: f64) -> F64Bits {
        F64Bits(if x.is_nan() { f64::NAN.to_bits() } else { x.to_bits() })
    }

    pub fn get(self) -> f64 {
        f64::from_bits(self.0)
    }
}

impl fmt::Debug for F64Bits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.get())
    }
}

impl Serialize for F64Bits {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.get())
    }
}

/// A loss (or other batch-tensor function) as an expression DAG. Built only by [`Builder`].
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TensorFn {
    pub nodes: Vec<Node>,
    pub output: NodeId,
    shapes: Vec<Shape>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Node {
    /// A field of the batch by name (`policy_chosen`), of any shape: a `Scalar` input is a
    /// Float field with one value for the batch (`chosen_tokens`).
    Input { name: String, shape: Shape },
    /// A constant, `Scalar`.
    Const(F64Bits),
    /// A scalar function of the batch's scalar fields (`step`, `total`), evaluated once per
    /// batch by the runtime, `Scalar`: `Scalar { func: 3, args: ["step", "total"] }` is
    /// `program.scalar.functions[3](step, total)`.
    Scalar { func: u32, args: Vec<String> },
    /// Elementwise, the operand's shape.
    Unary(UnaryOp, NodeId),
    /// Elementwise; both shapes equal, or one `Scalar` (broadcast to the other's shape).
    Binary(BinaryOp, NodeId, NodeId),
    /// The operand repeated to a larger shape: `Scalar` to any shape, `Seq` to `Token` (over
    /// time), `Group` to `Seq` (each sequence reads its group's value).
    Broadcast(Shape, NodeId),
    /// A sum or mean along `Axis`; a mean over no valid elements is 0.
    Reduce(Reduce, Axis, NodeId),
    /// The same values, no gradient.
    StopGradient(NodeId),
    /// The values of a `Seq` or `Group` operand sorted ascending along its axis (NaN last);
    /// the gradient follows each value to where it came from (`torch.sort`, as TRL's AOT loss
    /// uses it).
    Sort(NodeId),
}

impl Node {
    /// The nodes this one reads.
    pub fn operands(&self) -> impl Iterator<Item = NodeId> {
        let (a, b) = match *self {
            Node::Unary(_, a)
            | Node::Broadcast(_, a)
            | Node::Reduce(_, _, a)
            | Node::StopGradient(a)
            | Node::Sort(a) => (Some(a), None),
            Node::Binary(_, a, b) => (Some(a), Some(b)),
            Node::Input { .. } | Node::Const(_) | Node::Scalar { .. } => (None, None),
        };
        a.into_iter().chain(b)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum UnaryOp {
    Neg,
    Log,
    Log1p,
    Exp,
    LogSigmoid,
    Sigmoid,
    Softplus,
    Relu,
    Abs,
    Sqrt,
    Tanh,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Min,
    Max,
    /// 1 where the first operand is greater than the second, else 0 (also for NaN); no
    /// gradient flows through it. Selects between per-sign values: SAPO's and VESPO's
    /// `torch.where(advantages > 0, ...)`.
    Greater,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Reduce {
    Mean,
    Sum,
}

/// What a reduction reduces: from one shape to a smaller one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Axis {
    /// `[B, T] → [B]`, over each sequence's valid tokens.
    TokenToSeq,
    /// `[B, T] → []`, over every valid token of the batch (TRL's `(x * mask).sum() / mask.sum()`).
    TokenToScalar,
    /// `[B] → [G]`, over each group's sequences.
    SeqToGroup,
    /// `[B] → []`.
    SeqToScalar,
    /// `[G] → []`.
    GroupToScalar,
}

impl Axis {
    pub fn input(self) -> Shape {
        match self {
            Axis::TokenToSeq | Axis::TokenToScalar => Shape::Token,
            Axis::SeqToGroup | Axis::SeqToScalar => Shape::Seq,
            Axis::GroupToScalar => Shape::Group,
        }
    }

    pub fn output(self) -> Shape {
        match self {
            Axis::TokenToSeq => Shape::Seq,
            Axis::SeqToGroup => Shape::Group,
            Axis::TokenToScalar | Axis::SeqToScalar | Axis::GroupToScalar => Shape::Scalar,
        }
    }

    /// The reduction of a whole `shape` to a `Scalar`.
    pub fn to_scalar(shape: Shape) -> Option<Axis> {
        match shape {
            Shape::Token => Some(Axis::TokenToScalar),
            Shape::Seq => Some(Axis::SeqToScalar),
            Shape::Group => Some(Axis::GroupToScalar),
            Shape::Scalar => None,
        }
    }
}

/// Whether `Broadcast(to, x)` is allowed for `x` of shape `from`.
pub fn can_broadcast(from: Shape, to: Shape) -> bool {
    matches!(
        (from, to),
        (Shape::Scalar, Shape::Seq | Shape::Token | Shape::Group)
            | (Shape::Seq, Shape::Token)
            | (Shape::Group, Shape::Seq)
    )
}

impl UnaryOp {
    /// The builtin of this name, if it is a tensor unary op.
    pub fn from_builtin(name: &str) -> Option<UnaryOp> {
        Some(match name {
            "log" => UnaryOp::Log,
            "log1p" => UnaryOp::Log1p,
            "exp" => UnaryOp::Exp,
            "log_sigmoid" => UnaryOp::LogSigmoid,
            "sigmoid" => UnaryOp::Sigmoid,
            "softplus" => UnaryOp::Softplus,
            "relu" => UnaryOp::Relu,
            "abs" => UnaryOp::Abs,
            "sqrt" => UnaryOp::Sqrt,
            "tanh" => UnaryOp::Tanh,
            _ => return None,
        })
    }

    /// The builtin's name.
    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Log => "log",
            UnaryOp::Log1p => "log1p",
            UnaryOp::Exp => "exp",
            UnaryOp::LogSigmoid => "log_sigmoid",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::Softplus => "softplus",
            UnaryOp::Relu => "relu",
            UnaryOp::Abs => "abs",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Tanh => "tanh",
        }
    }

    /// The reference meaning, in f64. log_sigmoid and softplus are computed stably.
    pub fn apply(self, x: f64) -> f64 {
        match self {
            UnaryOp::Neg => -x,
            UnaryOp::Log => x.ln(),
            UnaryOp::Log1p => x.ln_1p(),
            UnaryOp::Exp => x.exp(),
            UnaryOp::LogSigmoid => -softplus(-x),
            UnaryOp::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            UnaryOp::Softplus => softplus(x),
            UnaryOp::Relu => x.max(0.0),
            UnaryOp::Abs => x.abs(),
            UnaryOp::Sqrt => x.sqrt(),
            UnaryOp::Tanh => x.tanh(),
        }
    }
}

fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

impl BinaryOp {
    /// The reference meaning, in f64. `Pow` is `powf`; the runtime computes a non-constant
    /// exponent as `exp(b ln a)`, which agrees for `a > 0`.
    pub fn apply(self, a: f64, b: f64) -> f64 {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
            BinaryOp::Pow => a.powf(b),
            BinaryOp::Min => a.min(b),
            BinaryOp::Max => a.max(b),
            BinaryOp::Greater => f64::from(u8::from(a > b)),
        }
    }

    pub fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Pow => "**",
            BinaryOp::Min => "min",
            BinaryOp::Max => "max",
            BinaryOp::Greater => "greater",
        }
    }
}

/// A node the [`Builder`] refuses. The messages are written to be shown to a recipe's author
/// once the language checks shapes with spans.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ShapeError {
    #[error("`{op}` needs operands of the same shape (or a scalar), not {left} and {right}")]
    Elementwise { op: &'static str, left: Shape, right: Shape },
    #[error("a value of shape {from} cannot be broadcast to {to}")]
    Broadcast { from: Shape, to: Shape },
    #[error("this reduction reads shape {expected}, not {got}")]
    Reduce { expected: Shape, got: Shape },
    #[error("only a value with one axis ([B] or [G]) can be sorted, not {shape}")]
    Sort { shape: Shape },
    #[error("node {0} does not exist")]
    UnknownNode(NodeId),
}

/// Builds a `TensorFn`: checks shapes, shares identical nodes and folds constant operations.
#[derive(Default)]
pub struct Builder {
    nodes: Vec<Node>,
    shapes: Vec<Shape>,
    index: HashMap<Node, NodeId>,
}

impl Builder {
    /// Add `node` (or find its twin), after checking its operands' shapes. Reducing a `Scalar`
    /// first broadcasts it to the reduction's input shape, so `sum` of `c` over `B` sequences is
    /// `B × c`.
    pub fn add(&mut self, node: Node) -> Result<NodeId, ShapeError> {
        let shape = match &node {
            Node::Input { shape, .. } => *shape,
            Node::Const(_) | Node::Scalar { .. } => Shape::Scalar,
            Node::Unary(op, a) => {
                if let Some(x) = self.constant_value(*a)? {
                    return Ok(self.constant(op.apply(x)));
                }
                self.shape(*a)?
            }
            Node::Binary(op, a, b) => {
                if let (Some(x), Some(y)) = (self.constant_value(*a)?, self.constant_value(*b)?) {
                    return Ok(self.constant(op.apply(x, y)));
                }
                let shape = match (self.shape(*a)?, self.shape(*b)?) {
                    (l, r) if l == r => l,
                    (Shape::Scalar, s) | (s, Shape::Scalar) => s,
                    (left, right) => return Err(ShapeError::Elementwise { op: op.symbol(), left, right }),
                };
                // A product with a constant 0 is 0, of the product's shape, whatever the other
                // operand: a term weighted by 0 is left out (and its inputs are not read), as
                // TRL leaves out its KL term at beta = 0.
                let zero = |x: Option<f64>| x == Some(0.0);
                if *op == BinaryOp::Mul && (zero(self.constant_value(*a)?) || zero(self.constant_value(*b)?)) {
                    let c = self.constant(0.0);
                    return if shape == Shape::Scalar { Ok(c) } else { self.add(Node::Broadcast(shape, c)) };
                }
                shape
            }
            Node::Broadcast(to, a) => {
                let from = self.shape(*a)?;
                if !can_broadcast(from, *to) {
                    return Err(ShapeError::Broadcast { from, to: *to });
                }
                *to
            }
            Node::Reduce(r, axis, a) => {
                let got = self.shape(*a)?;
                if got == Shape::Scalar {
                    let wide = self.add(Node::Broadcast(axis.input(), *a))?;
                    return self.add(Node::Reduce(*r, *axis, wide));
                }
                if got != axis.input() {
                    return Err(ShapeError::Reduce { expected: axis.input(), got });
                }
                axis.output()
            }
            Node::StopGradient(a) => self.shape(*a)?,
            Node::Sort(a) => match self.shape(*a)? {
                shape @ (Shape::Seq | Shape::Group) => shape,
                shape => return Err(ShapeError::Sort { shape }),
            },
        };
        Ok(self.intern(node, shape))
    }

    /// A constant node (always well-shaped).
    pub fn constant(&mut self, x: f64) -> NodeId {
        self.intern(Node::Const(F64Bits::new(x)), Shape::Scalar)
    }

    /// The shape of a node already added.
    pub fn shape(&self, id: NodeId) -> Result<Shape, ShapeError> {
        self.shapes.get(id as usize).copied().ok_or(ShapeError::UnknownNode(id))
    }

    pub fn finish(self, output: NodeId) -> TensorFn {
        TensorFn { nodes: self.nodes, output, shapes: self.shapes }
    }

    fn constant_value(&self, id: NodeId) -> Result<Option<f64>, ShapeError> {
        match self.nodes.get(id as usize) {
            Some(Node::Const(x)) => Ok(Some(x.get())),
            Some(_) => Ok(None),
            None => Err(ShapeError::UnknownNode(id)),
        }
    }

    fn intern(&mut self, node: Node, shape: Shape) -> NodeId {
        if let Some(&id) = self.index.get(&node) {
            return id;
        }
        let id = self.nodes.len() as NodeId;
        self.nodes.push(node.clone());
        self.shapes.push(shape);
        self.index.insert(node, id);
        id
    }
}

/// Each sequence's prompt group, for `Group` ops: `index[i] < count` is sequence `i`'s group.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Groups {
    pub index: Vec<u32>,
    pub count: usize,
}

/// Counts over a whole optimiser step (every micro-batch of it): what a mean to a `Scalar`
/// divides by, so that a step's loss is the sum of its micro-batches' losses and
/// `batch = 1, accumulate = 2` computes what `batch = 2, accumulate = 1` does.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Totals {
    /// Valid (completion) tokens, for `Token → Scalar` means.
    pub tokens: f64,
    /// Sequences, for `Seq → Scalar` means.
    pub sequences: f64,
    /// Groups (pairs, prompts), for `Group → Scalar` means.
    pub groups: f64,
}

/// The batch a [`TensorFn::eval`] reads, in plain f64.
#[derive(Clone, Debug, Default)]
pub struct EvalInputs {
    /// `B`, the sequences in the batch.
    pub batch: usize,
    /// `T`, the token positions per sequence.
    pub time: usize,
    /// `Scalar` inputs (Float fields of the batch) by name.
    pub scalar: HashMap<String, f64>,
    /// `Seq` inputs by name, each of length `B`.
    pub seq: HashMap<String, Vec<f64>>,
    /// `Group` inputs by name, each of length `G` (the groups' count).
    pub group: HashMap<String, Vec<f64>>,
    /// `Token` inputs by name, each `[B, T]` row-major.
    pub token: HashMap<String, Vec<f64>>,
    /// The completion mask, `[B, T]` row-major; needed by `Token` inputs and reductions.
    pub mask: Vec<bool>,
    /// Needed by `Group` ops.
    pub groups: Option<Groups>,
    /// The optimiser step's counts; `None` when the batch is the whole step.
    pub totals: Option<Totals>,
}

/// Why [`TensorFn::eval`] could not evaluate.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum EvalError {
    #[error("node {node}: batch input `{name}` ({shape}) is missing")]
    MissingInput { node: NodeId, name: String, shape: Shape },
    #[error("node {node}: batch input `{name}` has {got} values, expected {expected}")]
    InputLength { node: NodeId, name: String, expected: usize, got: usize },
    #[error("node {node} needs the completion mask ([B, T] = {expected} values), which has {got}")]
    Mask { node: NodeId, expected: usize, got: usize },
    #[error("node {node} needs each sequence's group index, which is missing or out of range")]
    Groups { node: NodeId },
    #[error("node {node}: scalar function fn#{func} has no value")]
    Scalar { node: NodeId, func: u32 },
}

impl TensorFn {
    /// The shape of node `id` (`Scalar` for an id out of range, as for an empty function).
    pub fn shape(&self, id: NodeId) -> Shape {
        self.shapes.get(id as usize).copied().unwrap_or(Shape::Scalar)
    }

    /// The batch inputs the output reads, with their shapes, in node order (a runtime need not
    /// compute the others: `grpo()` at `beta = 0` reads no reference log-probs).
    pub fn inputs(&self) -> Vec<(&str, Shape)> {
        self.nodes
            .iter()
            .zip(self.live())
            .filter_map(|(n, live)| match n {
                Node::Input { name, shape } if live => Some((name.as_str(), *shape)),
                _ => None,
            })
            .collect()
    }

    /// Which nodes the output depends on (folding leaves dead constants behind, and a caller may
    /// point `output` at an inner node). Evaluators compute only these, so an input, mask or
    /// group index is needed only if the output reads it.
    pub fn live(&self) -> Vec<bool> {
        let mut live = vec![false; self.nodes.len()];
        if let Some(l) = live.get_mut(self.output as usize) {
            *l = true;
        }
        // Operands precede their users, so one backward pass finds them all.
        for id in (0..self.nodes.len()).rev() {
            if live[id] {
                for a in self.nodes[id].operands() {
                    if let Some(l) = live.get_mut(a as usize) {
                        *l = true;
                    }
                }
            }
        }
        live
    }

    /// Reference evaluation over f64. `scalars` gives each `Scalar` node's value from its
    /// function and argument names. Returns the output's values: 1 for `Scalar`, `B` for `Seq`,
    /// `B × T` row-major for `Token` (values at padded positions are unspecified), `G` for
    /// `Group`. An empty function is the constant 0.
    pub fn eval(
        &self,
        inputs: &EvalInputs,
        scalars: &dyn Fn(u32, &[String]) -> Option<f64>,
    ) -> Result<Vec<f64>, EvalError> {
        let (b, t) = (inputs.batch, inputs.time);
        let mask = |node: NodeId| {
            if inputs.mask.len() == b * t {
                Ok(&inputs.mask)
            } else {
                Err(EvalError::Mask { node, expected: b * t, got: inputs.mask.len() })
            }
        };
        let groups = |node: NodeId| match &inputs.groups {
            Some(g) if g.index.len() == b && g.index.iter().all(|&i| (i as usize) < g.count) => Ok(g),
            _ => Err(EvalError::Groups { node }),
        };
        // A mean over nothing is 0 (TRL clamps its denominators at 1).
        let mean = |sum: f64, n: usize| sum / n.max(1) as f64;
        let live = self.live();
        let mut values: Vec<Vec<f64>> = Vec::with_capacity(self.nodes.len());
        for (id, node) in self.nodes.iter().enumerate() {
            if !live[id] {
                values.push(Vec::new());
                continue;
            }
            let id = id as NodeId;
            let v = match node {
                Node::Input { name, shape } => {
                    let scalar = inputs.scalar.get(name).map(|x| vec![*x]);
                    let (v, expected) = match shape {
                        Shape::Scalar => (scalar.as_ref(), 1),
                        Shape::Seq => (inputs.seq.get(name), b),
                        Shape::Token => (inputs.token.get(name), b * t),
                        Shape::Group => (inputs.group.get(name), groups(id)?.count),
                    };
                    let v = v.ok_or_else(|| EvalError::MissingInput { node: id, name: name.clone(), shape: *shape })?;
                    if v.len() != expected {
                        return Err(EvalError::InputLength { node: id, name: name.clone(), expected, got: v.len() });
                    }
                    v.clone()
                }
                Node::Const(x) => vec![x.get()],
                Node::Scalar { func, args } => {
                    vec![scalars(*func, args).ok_or(EvalError::Scalar { node: id, func: *func })?]
                }
                Node::Unary(op, a) => values[*a as usize].iter().map(|x| op.apply(*x)).collect(),
                Node::Binary(op, a, c) => {
                    let (x, y) = (&values[*a as usize], &values[*c as usize]);
                    let at = |v: &Vec<f64>, i: usize| if v.len() == 1 { v[0] } else { v[i] };
                    (0..x.len().max(y.len())).map(|i| op.apply(at(x, i), at(y, i))).collect()
                }
                Node::Broadcast(to, a) => {
                    let x = &values[*a as usize];
                    match (self.shape(*a), to) {
                        (Shape::Seq, Shape::Token) => x.iter().flat_map(|v| std::iter::repeat_n(*v, t)).collect(),
                        (Shape::Group, Shape::Seq) => groups(id)?.index.iter().map(|g| x[*g as usize]).collect(),
                        (_, Shape::Seq) => vec![x[0]; b],
                        (_, Shape::Token) => vec![x[0]; b * t],
                        (_, Shape::Group) => vec![x[0]; groups(id)?.count],
                        (_, Shape::Scalar) => x.clone(),
                    }
                }
                Node::Reduce(r, axis, a) => {
                    let x = &values[*a as usize];
                    let finish = |sum: f64, n: usize| if *r == Reduce::Mean { mean(sum, n) } else { sum };
                    match axis {
                        Axis::TokenToSeq => {
                            let m = mask(id)?;
                            (0..b)
                                .map(|i| {
                                    let row = (i * t..(i + 1) * t).filter(|&j| m[j]);
                                    finish(row.clone().map(|j| x[j]).sum(), row.count())
                                })
                                .collect()
                        }
                        Axis::TokenToScalar => {
                            let m = mask(id)?;
                            let valid = (0..b * t).filter(|&j| m[j]);
                            let sum = valid.clone().map(|j| x[j]).sum();
                            vec![match inputs.totals {
                                Some(n) if *r == Reduce::Mean => sum / n.tokens.max(1.0),
                                _ => finish(sum, valid.count()),
                            }]
                        }
                        Axis::SeqToGroup => {
                            let g = groups(id)?;
                            let mut sums = vec![0.0; g.count];
                            let mut counts = vec![0; g.count];
                            for (i, &gi) in g.index.iter().enumerate() {
                                sums[gi as usize] += x[i];
                                counts[gi as usize] += 1;
                            }
                            sums.iter().zip(&counts).map(|(s, n)| finish(*s, *n)).collect()
                        }
                        Axis::SeqToScalar | Axis::GroupToScalar => {
                            let sum = x.iter().sum();
                            vec![match inputs.totals {
                                Some(n) if *r == Reduce::Mean => {
                                    sum / if *axis == Axis::SeqToScalar { n.sequences } else { n.groups }.max(1.0)
                                }
                                _ => finish(sum, x.len()),
                            }]
                        }
                    }
                }
                Node::StopGradient(a) => values[*a as usize].clone(),
                Node::Sort(a) => {
                    let mut v = values[*a as usize].clone();
                    v.sort_by(sort_order);
                    v
                }
            };
            values.push(v);
        }
        Ok(values.get(self.output as usize).cloned().unwrap_or_else(|| vec![0.0]))
    }
}

/// Ascending, NaN last: the order [`Node::Sort`] sorts by.
pub fn sort_order(a: &f64, b: &f64) -> std::cmp::Ordering {
    match (a.is_nan(), b.is_nan()) {
        (false, false) => a.total_cmp(b),
        (x, y) => x.cmp(&y),
    }
}

impl fmt::Display for TensorFn {
    /// One expression, nodes used more than once written out each time. A broadcast scalar is
    /// written as the scalar, and reductions to a scalar as `mean(x)` / `sum(x)`, so the losses
    /// of today's recipes read as they are written.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn call(t: &TensorFn, name: &str, args: &[NodeId], f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{name}(")?;
            for (i, a) in args.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write(t, *a, f)?;
            }
            f.write_str(")")
        }
        fn write(t: &TensorFn, id: NodeId, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match &t.nodes[id as usize] {
                Node::Input { name, .. } => write!(f, "{name}"),
                Node::Const(x) => write!(f, "{x:?}"),
                Node::Scalar { func, args } => write!(f, "fn#{func}({})", args.join(", ")),
                Node::Unary(UnaryOp::Neg, a) => call(t, "-", &[*a], f),
                Node::Unary(op, a) => call(t, op.name(), &[*a], f),
                Node::Binary(op @ (BinaryOp::Min | BinaryOp::Max | BinaryOp::Greater), a, b) => {
                    call(t, op.symbol(), &[*a, *b], f)
                }
                Node::Binary(op, a, b) => {
                    f.write_str("(")?;
                    write(t, *a, f)?;
                    write!(f, " {} ", op.symbol())?;
                    write(t, *b, f)?;
                    f.write_str(")")
                }
                Node::Broadcast(_, a) if t.shape(*a) == Shape::Scalar => write(t, *a, f),
                Node::Broadcast(Shape::Token, a) => call(t, "per_token", &[*a], f),
                Node::Broadcast(_, a) => call(t, "per_seq", &[*a], f),
                Node::Reduce(r, axis, a) => {
                    let r = if *r == Reduce::Mean { "mean" } else { "sum" };
                    let name = match axis {
                        Axis::TokenToSeq => format!("{r}_per_seq"),
                        Axis::SeqToGroup => format!("{r}_per_group"),
                        _ => r.to_string(),
                    };
                    call(t, &name, &[*a], f)
                }
                Node::StopGradient(a) => call(t, "stop_gradient", &[*a], f),
                Node::Sort(a) => call(t, "sort", &[*a], f),
            }
        }
        if self.nodes.is_empty() {
            return f.write_str("0.0");
        }
        write(self, self.output, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(b: &mut Builder, name: &str, shape: Shape) -> NodeId {
        b.add(Node::Input { name: name.into(), shape }).unwrap()
    }

    #[test]
    fn shares_nodes_and_folds_constants() {
        let mut b = Builder::default();
        let x = input(&mut b, "policy_chosen", Shape::Seq);
        let y = input(&mut b, "policy_chosen", Shape::Seq);
        assert_eq!(x, y);
        let two = b.constant(2.0);
        let three = b.constant(3.0);
        let five = b.add(Node::Binary(BinaryOp::Add, two, three)).unwrap();
        assert_eq!(b.nodes[five as usize], Node::Const(F64Bits::new(5.0)));
        // Equal constants are one node, NaNs included; 0.0 and -0.0 are two.
        assert_eq!(b.constant(f64::NAN), b.constant(-f64::NAN));
        assert_ne!(b.constant(0.0), b.constant(-0.0));
        let e1 = b.add(Node::Unary(UnaryOp::Exp, x)).unwrap();
        let e2 = b.add(Node::Unary(UnaryOp::Exp, y)).unwrap();
        assert_eq!(e1, e2);
    }

    #[test]
    fn evaluates_mean_log_sigmoid() {
        let mut b = Builder::default();
        let x = input(&mut b, "h", Shape::Seq);
        let ls = b.add(Node::Unary(UnaryOp::LogSigmoid, x)).unwrap();
        let neg = b.add(Node::Unary(UnaryOp::Neg, ls)).unwrap();
        let out = b.add(Node::Reduce(Reduce::Mean, Axis::SeqToScalar, neg)).unwrap();
        let f = b.finish(out);
        let inputs =
            EvalInputs { batch: 2, seq: HashMap::from([("h".to_string(), vec![0.0, 0.0])]), ..Default::default() };
        let v = f.eval(&inputs, &|_, _| None).unwrap();
        assert!((v[0] - std::f64::consts::LN_2).abs() < 1e-12);
        assert_eq!(f.to_string(), "mean(-(log_sigmoid(h)))");
        // Stable for large arguments: -log sigmoid(-800) = 800.
        assert_eq!(UnaryOp::LogSigmoid.apply(-800.0), -800.0);
    }

    #[test]
    fn the_sum_of_a_constant_counts_the_batch() {
        let mut b = Builder::default();
        let two = b.constant(2.0);
        let out = b.add(Node::Reduce(Reduce::Sum, Axis::SeqToScalar, two)).unwrap();
        let f = b.finish(out);
        assert_eq!(f.eval(&EvalInputs { batch: 5, ..Default::default() }, &|_, _| None), Ok(vec![10.0]));
        assert_eq!(f.to_string(), "sum(2.0)");
    }

    #[test]
    fn ill_shaped_nodes_are_errors() {
        let mut b = Builder::default();
        let s = input(&mut b, "s", Shape::Seq);
        let t = input(&mut b, "t", Shape::Token);
        let err = b.add(Node::Binary(BinaryOp::Add, s, t));
        assert_eq!(err, Err(ShapeError::Elementwise { op: "+", left: Shape::Seq, right: Shape::Token }));
        assert_eq!(
            b.add(Node::Broadcast(Shape::Seq, t)),
            Err(ShapeError::Broadcast { from: Shape::Token, to: Shape::Seq })
        );
        assert_eq!(
            b.add(Node::Reduce(Reduce::Sum, Axis::TokenToSeq, s)),
            Err(ShapeError::Reduce { expected: Shape::Token, got: Shape::Seq })
        );
        assert_eq!(b.add(Node::Sort(t)), Err(ShapeError::Sort { shape: Shape::Token }));
        assert_eq!(b.add(Node::Unary(UnaryOp::Exp, 99)), Err(ShapeError::UnknownNode(99)));
        // With the broadcast spelled out, the sum is well-shaped.
        let st = b.add(Node::Broadcast(Shape::Token, s)).unwrap();
        let sum = b.add(Node::Binary(BinaryOp::Add, st, t)).unwrap();
        assert_eq!(b.shape(sum), Ok(Shape::Token));
    }

    #[test]
    fn sorts_reads_group_and_scalar_inputs_and_divides_means_by_the_step_totals() {
        let mut b = Builder::default();
        let g = input(&mut b, "g", Shape::Group);
        let c = input(&mut b, "c", Shape::Scalar);
        let sorted = b.add(Node::Sort(g)).unwrap();
        let scaled = b.add(Node::Binary(BinaryOp::Mul, sorted, c)).unwrap();
        let mean = b.add(Node::Reduce(Reduce::Mean, Axis::GroupToScalar, scaled)).unwrap();
        let f = b.finish(mean);
        let mut inputs = EvalInputs {
            batch: 3,
            group: HashMap::from([("g".to_string(), vec![3.0, f64::NAN, -1.0])]),
            scalar: HashMap::from([("c".to_string(), 2.0)]),
            groups: Some(Groups { index: vec![0, 1, 2], count: 3 }),
            ..Default::default()
        };
        let at = |f: &TensorFn, output, inputs: &EvalInputs| {
            TensorFn { output, ..f.clone() }.eval(inputs, &|_, _| None).unwrap()
        };
        let sorted_values = at(&f, sorted, &inputs);
        assert_eq!(&sorted_values[..2], &[-1.0, 3.0]);
        assert!(sorted_values[2].is_nan(), "NaN sorts last");
        inputs.group.insert("g".into(), vec![3.0, 1.0, -1.0]);
        assert_eq!(f.eval(&inputs, &|_, _| None).unwrap(), vec![2.0]);
        // One micro-batch of a step with 4 groups: the mean is this batch's share.
        inputs.totals = Some(Totals { tokens: 1.0, sequences: 1.0, groups: 4.0 });
        assert_eq!(f.eval(&inputs, &|_, _| None).unwrap(), vec![1.5]);
        assert_eq!(f.to_string(), "mean((sort(g) * c))");
    }

    #[test]
    fn greater_is_one_or_zero_and_nan_is_never_greater() {
        let mut b = Builder::default();
        let x = input(&mut b, "x", Shape::Seq);
        let zero = b.constant(0.0);
        let positive = b.add(Node::Binary(BinaryOp::Greater, x, zero)).unwrap();
        let f = b.finish(positive);
        let inputs = EvalInputs {
            batch: 4,
            seq: HashMap::from([("x".to_string(), vec![1.5, 0.0, -2.0, f64::NAN])]),
            ..Default::default()
        };
        assert_eq!(f.eval(&inputs, &|_, _| None).unwrap(), vec![1.0, 0.0, 0.0, 0.0]);
        assert_eq!(f.to_string(), "greater(x, 0.0)");
        assert_eq!(BinaryOp::Greater.apply(2.0, 1.0), 1.0);
        assert_eq!(BinaryOp::Greater.apply(1.0, f64::NAN), 0.0);
    }

    #[test]
    fn a_product_with_a_constant_zero_is_zero_of_its_shape_and_reads_nothing() {
        let mut b = Builder::default();
        let t = input(&mut b, "t", Shape::Token);
        let s = input(&mut b, "s", Shape::Seq);
        let zero = b.constant(0.0);
        let minus_zero = b.constant(-0.0);
        let off = b.add(Node::Binary(BinaryOp::Mul, zero, t)).unwrap();
        assert_eq!(b.shape(off), Ok(Shape::Token), "the product's shape");
        assert_eq!(b.nodes[off as usize], Node::Broadcast(Shape::Token, zero));
        let off_too = b.add(Node::Binary(BinaryOp::Mul, t, minus_zero)).unwrap();
        assert_eq!(off_too, off);
        // Still shape-checked.
        assert!(matches!(b.add(Node::Binary(BinaryOp::Mul, zero, zero)), Ok(id) if id == zero));
        let st = b.add(Node::Broadcast(Shape::Token, s)).unwrap();
        let sum = b.add(Node::Binary(BinaryOp::Add, st, off)).unwrap();
        let bad = b.add(Node::Binary(BinaryOp::Add, s, off));
        assert_eq!(bad, Err(ShapeError::Elementwise { op: "+", left: Shape::Seq, right: Shape::Token }));
        let out = b.add(Node::Reduce(Reduce::Sum, Axis::TokenToScalar, sum)).unwrap();
        let f = b.finish(out);
        assert_eq!(f.inputs(), vec![("s", Shape::Seq)], "`t` is read by nothing the output needs");
        // 0 × inf is 0: the term is left out, not evaluated.
        let inputs = EvalInputs {
            batch: 1,
            time: 2,
            seq: HashMap::from([("s".to_string(), vec![2.0])]),
            token: HashMap::from([("t".to_string(), vec![f64::INFINITY, f64::NAN])]),
            mask: vec![true, true],
            ..Default::default()
        };
        assert_eq!(f.eval(&inputs, &|_, _| None).unwrap(), vec![4.0]);
    }

    #[test]
    fn token_and_group_reductions_follow_the_mask_and_the_groups() {
        // B = 3 sequences, T = 2; sequence 1 has no valid token; groups {0, 2} and {1}.
        let mut b = Builder::default();
        let x = input(&mut b, "x", Shape::Token);
        let per_seq = b.add(Node::Reduce(Reduce::Mean, Axis::TokenToSeq, x)).unwrap();
        let per_group = b.add(Node::Reduce(Reduce::Mean, Axis::SeqToGroup, per_seq)).unwrap();
        let back = b.add(Node::Broadcast(Shape::Seq, per_group)).unwrap();
        let centred = b.add(Node::Binary(BinaryOp::Sub, per_seq, back)).unwrap();
        let token_mean = b.add(Node::Reduce(Reduce::Mean, Axis::TokenToScalar, x)).unwrap();
        let inputs = EvalInputs {
            batch: 3,
            time: 2,
            token: HashMap::from([("x".to_string(), vec![1.0, 3.0, f64::NAN, f64::INFINITY, 5.0, 7.0])]),
            mask: vec![true, true, false, false, true, false],
            groups: Some(Groups { index: vec![0, 1, 0], count: 2 }),
            ..Default::default()
        };
        let eval = |b: &Builder, out| {
            let f = TensorFn { nodes: b.nodes.clone(), output: out, shapes: b.shapes.clone() };
            f.eval(&inputs, &|_, _| None).unwrap()
        };
        assert_eq!(eval(&b, per_seq), vec![2.0, 0.0, 5.0]);
        assert_eq!(eval(&b, per_group), vec![3.5, 0.0]);
        assert_eq!(eval(&b, centred), vec![-1.5, 0.0, 1.5]);
        assert_eq!(eval(&b, token_mean), vec![3.0], "(1 + 3 + 5) / 3");
        let f = b.finish(centred);
        assert_eq!(f.to_string(), "(mean_per_seq(x) - per_seq(mean_per_group(mean_per_seq(x))))");
        let no_groups = EvalInputs { groups: None, ..inputs };
        assert!(matches!(f.eval(&no_groups, &|_, _| None), Err(EvalError::Groups { .. })));
    }
}
