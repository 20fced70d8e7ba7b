//! `recipe loss`: one loss expression on every pair of a JSONL file as one batch, one backward
//! pass, no training. Prints the loss, the global L2 gradient norm over the policy's parameters
//! before clipping, and the preference metrics; `--json` prints them as one JSON object.

use crate::cli::read_source;
use crate::exit::{self, Failure};
use crate::render;
use crate::runs::{load_model, on_pool};
use recipe_runtime::data::{jsonl, BadRowPolicy, Schema};
use recipe_runtime::exec::args::Functions;
use recipe_runtime::exec::loss::{compile_loss, LossCompileError};
use recipe_runtime::train::preference::{loss_on_all_rows, Pairs, PairsError};
use recipe_runtime::train::TrainError;
use serde_json::{json, Map, Value};
use std::path::PathBuf;
use std::sync::Arc;

pub struct LossArgs {
    pub policy: PathBuf,
    pub reference: Option<PathBuf>,
    pub data: PathBuf,
    pub loss: String,
    pub recipe: Option<PathBuf>,
    pub step: u64,
    pub total: u64,
    pub json: bool,
    pub device: String,
}

pub fn loss(args: LossArgs) -> Result<u8, Failure> {
    if args.total == 0 || args.step >= args.total {
        return Err(Failure::Usage(format!("--step {} must be below --total {}", args.step, args.total)));
    }
    on_pool(None, || evaluate(args))?
}

fn evaluate(args: LossArgs) -> Result<u8, Failure> {
    let recipe = args.recipe.as_deref().map(read_source).transpose()?;
    let compiled = compile_loss(&args.loss, recipe.as_ref()).map_err(|e| match e {
        LossCompileError::Diagnostics(d, source) => Failure::Recipe(d, source),
        LossCompileError::Exec(e) => Failure::Internal(e.to_string()),
    })?;
    let policy = load_model(&args.policy, &args.device)?;
    // `reference = policy` when none is given, as in a `preference` stage: a frozen copy.
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
    let (rows, _) = jsonl::read_jsonl(&args.data, &Schema::preference(), BadRowPolicy::Fail)
        .map_err(|e| Failure::Input(e.to_string()))?;
    if rows.is_empty() {
        return Err(Failure::Input(format!("{} has no rows", args.data.display())));
    }
    let context = policy.config().max_position_embeddings;
    let pairs = Pairs::tokenize(&rows, policy.tokenizer(), context).map_err(|e| match e {
        PairsError::Model(e) => Failure::Input(e.to_string()),
        other => Failure::Input(other.to_string()),
    })?;
    let scalars = Functions::numeric(&compiled.functions);
    let report = loss_on_all_rows(&policy, &reference, Arc::new(pairs), compiled.terms, scalars, args.step, args.total)
        .map_err(|e| match e {
            TrainError::Config { message, .. } => Failure::Input(message),
            e => Failure::Internal(e.to_string()),
        })?;
    if args.json {
        let mut object = Map::new();
        object.insert("loss".into(), json!(report.loss));
        object.insert("grad_norm".into(), json!(report.grad_norm));
        object.insert("pairs".into(), json!(report.pairs));
        for (name, value) in &report.metrics {
            object.insert(name.clone(), json!(value));
        }
        render::out_line(Value::Object(object));
    } else {
        let mut lines = vec![("loss".to_string(), report.loss), ("grad_norm".to_string(), report.grad_norm)];
        lines.extend(report.metrics);
        let width = lines.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        let mut text = format!("{} pairs\n", report.pairs);
        for (name, value) in lines {
            text.push_str(&format!("{name:<width$}  {value:.9}\n"));
        }
        render::out(&text);
    }
    Ok(exit::OK)
}
