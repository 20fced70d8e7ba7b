//! The tensor-expression IR for losses: what a `Loss` value (a recipe function from a batch of
//! sequence statistics to a Tensor) becomes once the compiler has inlined every call and baked
//! in every constant. The runtime turns it into candle ops with autograd; this crate knows
//! nothing of candle, and `TensorFn::eval` here is a plain-f64 reference used by tests.
//!
//! Invariants: nodes are in topological order (an operand's id is smaller than its user's);
//! identical nodes are shared (hash-consed), so `margin(b)` used twice is computed once; inputs
//! are batch fields by name (`policy_chosen`, shape `[B]`), constants broadcast, and `Reduce`
//! yields a scalar (shape `[]`) that broadcasts in later ops.

use serde::Serialize;
use std::collections::HashMap;
use std::fmt;

/// Index of a node in [`TensorFn::nodes`].
pub type NodeId = u32;

/// A loss (or other batch-tensor function) as an expression DAG.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TensorFn {
    pub nodes: Vec<Node>,
    pub output: NodeId,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Node {
    /// A Tensor field of the batch record, shape `[B]`.
    Input(String),
    /// A constant, broadcast.
    Const(f64),
    /// A scalar function of the batch's scalar fields (`step`, `total`), evaluated once per
    /// batch by the runtime and broadcast: `Scalar { func: 3, args: ["step", "total"] }` is
    /// `program.scalar.functions[3](step, total)`.
    Scalar {
        func: u32,
        args: Vec<String>,
    },
    Unary(UnaryOp, NodeId),
    Binary(BinaryOp, NodeId, NodeId),
    /// Mean or sum over the batch: a scalar.
    Reduce(Reduce, NodeId),
    /// The same values, no gradient.
    StopGradient(NodeId),
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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Reduce {
    Mean,
    Sum,
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
    pub fn apply(self, a: f64, b: f64) -> f64 {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
            BinaryOp::Pow => a.powf(b),
            BinaryOp::Min => a.min(b),
            BinaryOp::Max => a.max(b),
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Pow => "**",
            BinaryOp::Min => "min",
            BinaryOp::Max => "max",
        }
    }
}

/// Builds a `TensorFn`, sharing identical nodes and folding constant operations.
#[derive(Default)]
pub struct Builder {
    nodes: Vec<Node>,
    index: HashMap<String, NodeId>,
}

impl Builder {
    pub fn add(&mut self, node: Node) -> NodeId {
        // Fold operations on constants.
        match &node {
            Node::Unary(op, a) => {
                if let Node::Const(x) = self.nodes[*a as usize] {
                    return self.add(Node::Const(op.apply(x)));
                }
            }
            Node::Binary(op, a, b) => {
                if let (Node::Const(x), Node::Const(y)) = (&self.nodes[*a as usize], &self.nodes[*b as usize]) {
                    return self.add(Node::Const(op.apply(*x, *y)));
                }
            }
            _ => {}
        }
        let key = format!("{node:?}");
        if let Some(&id) = self.index.get(&key) {
            return id;
        }
        self.nodes.push(node);
        let id = self.nodes.len() as NodeId - 1;
        self.index.insert(key, id);
        id
    }

    pub fn constant(&mut self, x: f64) -> NodeId {
        self.add(Node::Const(x))
    }

    pub fn finish(self, output: NodeId) -> TensorFn {
        TensorFn { nodes: self.nodes, output }
    }
}

impl TensorFn {
    /// The batch inputs this function reads, in node order.
    pub fn inputs(&self) -> Vec<&str> {
        self.nodes.iter().filter_map(|n| if let Node::Input(name) = n { Some(name.as_str()) } else { None }).collect()
    }

    /// Reference evaluation over f64 vectors (every input the same length `B`); `scalars`
    /// supplies each `Scalar` node's value. Returns the output's values (length 1 for a
    /// reduction). Panics are impossible: missing inputs read as an empty batch.
    pub fn eval(&self, inputs: &HashMap<String, Vec<f64>>, scalars: &dyn Fn(u32) -> f64) -> Vec<f64> {
        let batch = inputs.values().map(Vec::len).max().unwrap_or(0);
        let mut values: Vec<Vec<f64>> = Vec::with_capacity(self.nodes.len());
        let broadcast =
            |v: &Vec<f64>, i: usize| if v.len() == 1 { v[0] } else { v.get(i).copied().unwrap_or(f64::NAN) };
        for node in &self.nodes {
            let v = match node {
                Node::Input(name) => inputs.get(name).cloned().unwrap_or_default(),
                Node::Const(x) => vec![*x],
                Node::Scalar { func, .. } => vec![scalars(*func)],
                Node::Unary(op, a) => values[*a as usize].iter().map(|x| op.apply(*x)).collect(),
                Node::Binary(op, a, b) => {
                    let (x, y) = (&values[*a as usize], &values[*b as usize]);
                    let n = if x.len() == 1 && y.len() == 1 { 1 } else { batch };
                    (0..n).map(|i| op.apply(broadcast(x, i), broadcast(y, i))).collect()
                }
                Node::Reduce(r, a) => {
                    let x = &values[*a as usize];
                    let s: f64 = x.iter().sum();
                    vec![match r {
                        Reduce::Sum => s,
                        Reduce::Mean => s / x.len().max(1) as f64,
                    }]
                }
                Node::StopGradient(a) => values[*a as usize].clone(),
            };
            values.push(v);
        }
        values.get(self.output as usize).cloned().unwrap_or_default()
    }
}

impl fmt::Display for TensorFn {
    /// One expression, nodes used more than once written out each time.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn write(t: &TensorFn, id: NodeId, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match &t.nodes[id as usize] {
                Node::Input(name) => write!(f, "{name}"),
                Node::Const(x) => write!(f, "{x:?}"),
                Node::Scalar { func, args } => write!(f, "fn#{func}({})", args.join(", ")),
                Node::Unary(UnaryOp::Neg, a) => {
                    f.write_str("-(")?;
                    write(t, *a, f)?;
                    f.write_str(")")
                }
                Node::Unary(op, a) => {
                    write!(f, "{}(", op.name())?;
                    write(t, *a, f)?;
                    f.write_str(")")
                }
                Node::Binary(op @ (BinaryOp::Min | BinaryOp::Max), a, b) => {
                    write!(f, "{}(", op.symbol())?;
                    write(t, *a, f)?;
                    f.write_str(", ")?;
                    write(t, *b, f)?;
                    f.write_str(")")
                }
                Node::Binary(op, a, b) => {
                    f.write_str("(")?;
                    write(t, *a, f)?;
                    write!(f, " {} ", op.symbol())?;
                    write(t, *b, f)?;
                    f.write_str(")")
                }
                Node::Reduce(r, a) => {
                    write!(f, "{}(", if *r == Reduce::Mean { "mean" } else { "sum" })?;
                    write(t, *a, f)?;
                    f.write_str(")")
                }
                Node::StopGradient(a) => {
                    f.write_str("stop_gradient(")?;
                    write(t, *a, f)?;
                    f.write_str(")")
                }
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

    #[test]
    fn shares_nodes_and_folds_constants() {
        let mut b = Builder::default();
        let x = b.add(Node::Input("policy_chosen".into()));
        let y = b.add(Node::Input("policy_chosen".into()));
        assert_eq!(x, y);
        let two = b.constant(2.0);
        let three = b.constant(3.0);
        let five = b.add(Node::Binary(BinaryOp::Add, two, three));
        assert_eq!(b.nodes[five as usize], Node::Const(5.0));
    }

    #[test]
    fn evaluates_mean_log_sigmoid() {
        let mut b = Builder::default();
        let x = b.add(Node::Input("h".into()));
        let ls = b.add(Node::Unary(UnaryOp::LogSigmoid, x));
        let neg = b.add(Node::Unary(UnaryOp::Neg, ls));
        let out = b.add(Node::Reduce(Reduce::Mean, neg));
        let f = b.finish(out);
        let inputs = HashMap::from([("h".to_string(), vec![0.0, 0.0])]);
        let v = f.eval(&inputs, &|_| 0.0);
        assert!((v[0] - std::f64::consts::LN_2).abs() < 1e-12);
        // Stable for large arguments: -log sigmoid(-800) = 800.
        assert_eq!(UnaryOp::LogSigmoid.apply(-800.0), -800.0);
    }
}
