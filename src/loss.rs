//! `recipe loss`: one loss expression on every pair (`--data`) or rollout (`--rollouts`) of a
//! JSONL file as one batch, one backward pass, no training. Prints the loss, the global L2
//! gradient norm over the policy's parameters before clipping, and the objective's metrics
//! (for rollouts also the advantages and `kl`); `--json` prints them as one JSON object.

use crate::cli::read_source;
use crate::exit::{self, Failure};
use crate::render;
use crate::runs::{load_model, on_pool};
use recipe_runtime::data::{jsonl, BadRowPolicy, Schema};
use recipe_runtime::exec::args::Functions;
use recipe_runtime::exec::loss::{compile_loss, CompiledLoss, LossCompileError, LossKind};
use recipe_runtime::model::CausalLm;
use recipe_runtime::train::preference::{loss_on_all_rows, Pairs, PairsError};
use recipe_runtime::train::rl::advantages::AdvantageFn;
use recipe_runtime::train::rl::file::read_rollouts;
use recipe_runtime::train::rl::loss_on_rollouts;
use recipe_runtime::train::TrainError;
use serde_json::{json, Map, Value};
use std::path::PathBuf;
use std::sync::Arc;

pub struct LossArgs {
    pub policy: PathBuf,
    pub reference: Option<PathBuf>,
    /// What the loss is evaluated on: pairs or rollouts.
    pub input: LossInput,
    pub loss: String,
    pub recipe: Option<PathBuf>,
    pub step: u64,
    pub total: u64,
    pub json: bool,
    pub device: String,
}

/// `--data PAIRS.jsonl`, or `--rollouts FILE.jsonl` with the advantage scaling (TRL's
/// `scale_rewards`) and the completion limit (TRL's `max_completion_length`; the longest
/// completion when not given).
pub enum LossInput {
    Pairs(PathBuf),
    Rollouts { path: PathBuf, scale: String, max_tokens: Option<usize> },
}

pub fn loss(args: LossArgs) -> Result<u8, Failure> {
    if args.total == 0 || args.step >= args.total {
        return Err(Failure::Usage(format!("--step {} must be below --total {}", args.step, args.total)));
    }
    on_pool(None, || evaluate(args))?
}

fn evaluate(args: LossArgs) -> Result<u8, Failure> {
    let recipe = args.recipe.as_deref().map(read_source).transpose()?;
    let kind = match &args.input {
        LossInput::Pairs(_) => LossKind::Pairs,
        // clap keeps `--scale` to group, batch or none.
        LossInput::Rollouts { scale, .. } => {
            LossKind::Rollouts { advantages: format!("group_relative(scale = {scale})") }
        }
    };
    let compiled = compile_loss(&args.loss, &kind, recipe.as_ref()).map_err(|e| match e {
        LossCompileError::Diagnostics(d, source) => Failure::Recipe(d, source),
        LossCompileError::Exec(e) => Failure::Internal(e.to_string()),
    })?;
    let policy = load_model(&args.policy, &args.device)?;
    // `reference = policy` when none is given, as in a `preference` or `rl` stage: a frozen copy.
    let reference = match &args.reference {
        Some(dir) => load_model(dir, &args.device)?.into_frozen(),
        None => policy.frozen().map_err(|e| Failure::Internal(e.to_string()))?,
    };
    let (vocab, ref_vocab) = (policy.config().vocab_size, reference.config().vocab_size);
    if vocab != ref_vocab {
        return Err(Failure::Input(format!(
            "--reference has a vocabulary of {ref_vocab} tokens; the policy's has {vocab}"
        )));
    }
    let train_failure = |e: TrainError| match e {
        TrainError::Config { message, .. } => Failure::Input(message),
        e => Failure::Internal(e.to_string()),
    };
    let (header, lines, mut object) = match &args.input {
        LossInput::Pairs(path) => pairs_loss(&args, path, &policy, &reference, compiled, train_failure)?,
        LossInput::Rollouts { path, max_tokens, .. } => {
            rollouts_loss(&args, path, *max_tokens, &policy, &reference, compiled, train_failure)?
        }
    };
    if args.json {
        for (name, value) in &lines {
            object.insert(name.clone(), json!(value));
        }
        render::out_line(Value::Object(object));
    } else {
        let width = lines.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        let mut text = header;
        for (name, value) in lines {
            text.push_str(&format!("{name:<width$}  {value:.9}\n"));
        }
        render::out(&text);
    }
    Ok(exit::OK)
}

/// What a mode prints: a header, the named values (loss, grad_norm, metrics) in order, and the
/// extra fields of the JSON object.
type Printed = (String, Vec<(String, f64)>, Map<String, Value>);

fn pairs_loss(
    args: &LossArgs,
    path: &std::path::Path,
    policy: &CausalLm,
    reference: &CausalLm,
    compiled: CompiledLoss,
    train_failure: impl Fn(TrainError) -> Failure,
) -> Result<Printed, Failure> {
    let (rows, _) = jsonl::read_jsonl(path, &Schema::preference(), BadRowPolicy::Fail)
        .map_err(|e| Failure::Input(e.to_string()))?;
    if rows.is_empty() {
        return Err(Failure::Input(format!("{} has no rows", path.display())));
    }
    let context = policy.config().max_position_embeddings;
    let pairs = Pairs::tokenize(&rows, policy.tokenizer(), context).map_err(|e| match e {
        PairsError::Model(e) => Failure::Input(e.to_string()),
        other => Failure::Input(other.to_string()),
    })?;
    let scalars = Functions::numeric(&compiled.functions);
    let report = loss_on_all_rows(policy, reference, Arc::new(pairs), compiled.terms, scalars, args.step, args.total)
        .map_err(train_failure)?;
    let mut lines = vec![("loss".to_string(), report.loss), ("grad_norm".to_string(), report.grad_norm)];
    lines.extend(report.metrics);
    let mut object = Map::new();
    object.insert("pairs".into(), json!(report.pairs));
    Ok((format!("{} pairs\n", report.pairs), lines, object))
}

fn rollouts_loss(
    args: &LossArgs,
    path: &std::path::Path,
    max_tokens: Option<usize>,
    policy: &CausalLm,
    reference: &CausalLm,
    compiled: CompiledLoss,
    train_failure: impl Fn(TrainError) -> Failure,
) -> Result<Printed, Failure> {
    let scalars = Functions::numeric(&compiled.functions);
    let estimator = compiled.advantages.ok_or_else(|| Failure::Internal("no advantage estimator".into()))?;
    let estimator = AdvantageFn::new(estimator, scalars.clone()).map_err(Failure::Internal)?;
    let mut rollouts = read_rollouts(path, policy.tokenizer(), policy.config().vocab_size, estimator.batch_scaled())
        .map_err(|e| Failure::Input(e.to_string()))?;
    let context = policy.config().max_position_embeddings;
    if let Some(g) =
        rollouts.groups.iter().find(|g| g.completions.iter().any(|c| g.prompt.len() + c.ids.len() > context))
    {
        return Err(Failure::Input(format!(
            "{}:{}: a prompt and completion need more than the policy's {context} positions",
            path.display(),
            g.example_id
        )));
    }
    let advantages = estimator.over(&rollouts.groups, args.step, args.total).map_err(Failure::Input)?;
    for (c, a) in rollouts.groups.iter_mut().flat_map(|g| g.completions.iter_mut()).zip(&advantages) {
        c.advantage = *a;
    }
    let longest = rollouts.completions().map(|(_, _, c)| c.ids.len()).max().unwrap_or(1);
    if let Some(limit) = max_tokens.filter(|&m| m < longest) {
        return Err(Failure::Usage(format!(
            "--max-tokens {limit} is below the longest completion in {} ({longest} tokens)",
            path.display()
        )));
    }
    let completions = advantages.len();
    let report = loss_on_rollouts(
        policy,
        reference,
        rollouts,
        compiled.terms,
        scalars,
        max_tokens.unwrap_or(longest),
        (args.step, args.total),
    )
    .map_err(train_failure)?;
    let mut lines = vec![("loss".to_string(), report.loss), ("grad_norm".to_string(), report.grad_norm)];
    lines.extend(report.metrics);
    let mut object = Map::new();
    object.insert("advantages".into(), json!(report.advantages));
    object.insert("rollouts".into(), json!(completions));
    let shown: Vec<String> = report.advantages.iter().map(|a| format!("{a:.6}")).collect();
    Ok((format!("{completions} rollouts\nadvantages  [{}]\n", shown.join(", ")), lines, object))
}
