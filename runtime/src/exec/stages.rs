//! Stages: `prepare` turns each step of the run order into a configured stage (checking
//! everything that needs no compute), `execute` runs them through the step loop, resuming from a
//! checkpoint where one exists.

use super::args::{self, Call};
use super::build::Builder;
use super::ExecError;
use crate::artifact::RunDir;
use crate::checkpoint::Checkpoint;
use crate::data::Dataset;
use crate::model::{CausalLm, Tokenizer};
use crate::optim::AdamW;
use crate::progress::Progress;
use crate::train::{
    self, Evaluator, ExactMatch, Resume, RunContext, SftConfig, SftObjective, StageSummary, TrainError,
};
use recipe_compiler::program::{DeclKind, Program, Step, Value};
use std::collections::HashMap;
use std::path::Path;

/// Where a stage's starting model comes from.
enum ModelSource {
    /// `model name = ...`, built fresh.
    Declared(String),
    /// Another stage's output (`sft.model`).
    Stage(String),
}

/// An evaluation declared with `eval name = ...`, applied to every stage.
struct EvalSpec {
    name: String,
    data: Dataset,
    every: u64,
    max_tokens: usize,
}

/// A stage ready to run.
pub(super) struct Prepared {
    index: usize,
    name: String,
    model: ModelSource,
    data: Dataset,
    config: SftConfig,
    /// `optimizer = keep`: continue the AdamW moments of the stage the model comes from.
    keep_optimizer: bool,
    evals: Vec<EvalSpec>,
}

/// Checks and configures every stage of the run order before any training.
pub(super) fn prepare(
    program: &Program,
    builder: &mut Builder<'_>,
    max_steps: Option<u64>,
) -> Result<Vec<Prepared>, ExecError> {
    let evals = prepare_evals(program, builder)?;
    let mut prepared: Vec<Prepared> = Vec::new();
    // Tokenizer and context of each declared model a stage trains.
    let mut limits: HashMap<String, (Tokenizer, usize)> = HashMap::new();
    for (index, step) in program.stage_order().into_iter().enumerate() {
        let decl = match step {
            Step::Stage(decl) => decl,
            Step::Rounds(rounds) => {
                return Err(ExecError::Unsupported(format!("`rounds {}` (iterative rounds)", rounds.name)))
            }
        };
        let call = Call::of(&decl.value)?;
        if call.name != "sft" {
            return Err(ExecError::Unsupported(format!("stage `{}` of kind `{}`", decl.name, call.name)));
        }
        let curriculum = call.get("curriculum")?;
        if curriculum.call_name() != Some("uniform") {
            let kind = curriculum.call_name().unwrap_or("?");
            return Err(ExecError::Unsupported(format!("the `{kind}` curriculum of stage `{}`", decl.name)));
        }
        let model = match call.get("policy")? {
            Value::Model(name) => ModelSource::Declared(name.clone()),
            Value::Stage { stage, .. } => ModelSource::Stage(stage.clone()),
            other => return Err(ExecError::Internal(format!("stage `{}`: model is {other:?}", decl.name))),
        };
        let data = builder.dataset(call.get("dataset")?)?;
        for field in ["prompt", "completion"] {
            if data.column(field).is_none() {
                return Err(ExecError::Config(format!(
                    "stage `{}`: its data ({}) has no `{field}` field",
                    decl.name, data.origin
                )));
            }
        }
        // Building the model validates its configuration (or loads its folder) up front; its
        // context then bounds every row the stage trains on or evaluates.
        if let Some(root) = root_model(&model, &prepared) {
            if !limits.contains_key(root) {
                let m = builder.model(root)?;
                limits.insert(root.to_string(), (m.tokenizer().clone(), m.config().max_position_embeddings));
            }
            let (tok, context) = &limits[root];
            let what = format!("stage `{}`", decl.name);
            super::check_context(&what, &data, *context, |p, c| Ok(tok.encode(p)?.len() + tok.encode(c)?.len() + 1))?;
            for eval in &evals {
                let target = if eval.data.column("completion").is_some() { "completion" } else { "answer" };
                let longest = (0..eval.data.len())
                    .map(|r| -> Result<usize, ExecError> { Ok(tok.encode(&eval.data.text_at(target, r)?)?.len()) })
                    .try_fold(0, |m, len| len.map(|len| m.max(len)))?;
                let budget = (longest + 1).min(eval.max_tokens);
                let what = format!("eval `{}` of stage `{}`", eval.name, decl.name);
                super::check_context(&what, &eval.data, *context, |p, _| Ok(tok.encode(p)?.len() + budget))?;
            }
        }
        let batch = call.count("batch")? as usize;
        let steps = call.count("steps")?.min(max_steps.unwrap_or(u64::MAX));
        let mut config = SftConfig::new(steps, batch, args::schedule(&call, "lr", &builder.functions)?);
        config.weight_decay = args::schedule(&call, "weight_decay", &builder.functions)?;
        config.clip = Some(call.float("max_grad_norm")?).filter(|c| *c > 0.0);
        config.accumulate = u32::try_from(call.count("accumulate")?)
            .ok()
            .filter(|&a| a >= 1)
            .ok_or_else(|| ExecError::Config(format!("stage `{}`: `accumulate` must be at least 1", decl.name)))?;
        config.betas = (call.float("adam_beta1")?, call.float("adam_beta2")?);
        config.eps = call.float("adam_epsilon")?;
        for (arg, value) in [("adam_beta1", config.betas.0), ("adam_beta2", config.betas.1)] {
            if !(0.0..1.0).contains(&value) {
                return Err(ExecError::Config(format!(
                    "stage `{}`: `{arg}` must be in [0, 1), found {value}",
                    decl.name
                )));
            }
        }
        if !(config.eps > 0.0) {
            return Err(ExecError::Config(format!("stage `{}`: `adam_epsilon` must be positive", decl.name)));
        }
        config.seed = builder.seed;
        config.eval_every = evals.iter().map(|e| e.every).filter(|&e| e > 0).min();
        config.checkpoint_every = checkpoint_every(program, steps);
        prepared.push(Prepared {
            index,
            name: decl.name.clone(),
            model,
            data,
            config,
            keep_optimizer: call.enum_name("optimizer")? == "keep",
            evals: evals
                .iter()
                .map(|e| EvalSpec {
                    name: e.name.clone(),
                    data: e.data.clone(),
                    every: e.every,
                    max_tokens: e.max_tokens,
                })
                .collect(),
        });
    }
    Ok(prepared)
}

/// The declared model a stage's model descends from (through earlier stages' outputs).
fn root_model<'p>(source: &'p ModelSource, prepared: &'p [Prepared]) -> Option<&'p str> {
    match source {
        ModelSource::Declared(name) => Some(name),
        ModelSource::Stage(stage) => {
            prepared.iter().find(|p| &p.name == stage).and_then(|p| root_model(&p.model, prepared))
        }
    }
}

/// The header's `checkpoint_every` when given, else about ten checkpoints a stage.
fn checkpoint_every(program: &Program, steps: u64) -> Option<u64> {
    match program.header_field("checkpoint_every").and_then(Value::as_int) {
        Some(n) if n > 0 => Some(n as u64),
        _ => Some((steps / 10).max(1)),
    }
}

fn prepare_evals(program: &Program, builder: &mut Builder<'_>) -> Result<Vec<EvalSpec>, ExecError> {
    let mut evals = Vec::new();
    for decl in program.decls_of(DeclKind::Eval) {
        let call = Call::of(&decl.value)?;
        if call.name != "accuracy" {
            return Err(ExecError::Unsupported(format!("eval `{}` of kind `{}`", decl.name, call.name)));
        }
        let data = builder.dataset(call.get("dataset")?)?;
        let max_tokens = call.count("max_tokens")? as usize;
        if max_tokens == 0 {
            return Err(ExecError::Config(format!("eval `{}`: `max_tokens` must be at least 1", decl.name)));
        }
        evals.push(EvalSpec { name: decl.name.clone(), data, every: call.count("every")?, max_tokens });
    }
    Ok(evals)
}

/// Runs the prepared stages in order. With `resume`, stages finished before it are restored
/// from their final checkpoints and the stage it belongs to continues from it.
pub(super) fn execute(
    stages: &[Prepared],
    builder: &mut Builder<'_>,
    run: &mut RunDir,
    progress: &mut dyn Progress,
    resume: Option<Checkpoint>,
) -> Result<Vec<(String, StageSummary)>, ExecError> {
    let device = builder.device.clone();
    let mut outputs: HashMap<String, (CausalLm, AdamW)> = HashMap::new();
    let mut summaries = Vec::new();
    let resume_at = resume.as_ref().map(|c| c.state.stage_index);
    for stage in stages {
        let cfg = stage.config.loop_config(&stage.name, stage.index);
        // A stage that finished before the resume point: restore its output and move on.
        if resume_at.is_some_and(|at| stage.index < at)
            || resume.as_ref().is_some_and(|c| c.state.stage_index == stage.index && c.state.complete())
        {
            let ck = final_checkpoint(&run.checkpoints(), stage)?;
            let model = ck.load_model(&device)?;
            let mut optim = AdamW::new(model.params(), cfg.adam)?;
            optim.load_state(&ck.load_moments(&device)?, ck.state.optimizer_steps)?;
            progress.note(&format!("stage `{}` restored from {}", stage.name, ck.dir.display()));
            outputs.insert(stage.name.clone(), (model, optim));
            continue;
        }
        let (model, mut optim, state) = match resume.as_ref().filter(|c| c.state.stage_index == stage.index) {
            Some(ck) => {
                let model = ck.load_model(&device)?;
                let optim = AdamW::new(model.params(), cfg.adam)?;
                (model, optim, Some(Resume::from_checkpoint(ck, &device)?))
            }
            None => {
                let (model, previous) = match &stage.model {
                    ModelSource::Declared(name) => (builder.model(name)?, None),
                    ModelSource::Stage(from) => {
                        let (m, o) = outputs.get(from).ok_or_else(|| {
                            ExecError::Internal(format!("stage `{}` reads `{from}`, which has not run", stage.name))
                        })?;
                        (m.snapshot()?, Some(o))
                    }
                };
                let mut optim = AdamW::new(model.params(), cfg.adam)?;
                if let (true, Some(previous)) = (stage.keep_optimizer, previous) {
                    let moments = previous.state_tensors()?.into_iter().collect();
                    optim.load_state(&moments, previous.steps())?;
                }
                (model, optim, None)
            }
        };
        let mut objective = SftObjective::new(&stage.name, &stage.data, stage.config.batch, stage.config.seed)?;
        let mut evaluators: Vec<Box<dyn Evaluator>> = stage
            .evals
            .iter()
            .map(|e| {
                let m = ExactMatch::new(&e.name, &e.data, None, 64)?.max_tokens(e.max_tokens);
                Ok::<_, TrainError>(Box::new(m) as Box<dyn Evaluator>)
            })
            .collect::<Result<_, _>>()?;
        let mut ctx = RunContext { run, progress };
        let summary = train::run_stage(&model, &mut optim, &mut objective, &cfg, &mut evaluators, &mut ctx, state)?;
        summaries.push((stage.name.clone(), summary));
        outputs.insert(stage.name.clone(), (model, optim));
    }
    Ok(summaries)
}

/// The last checkpoint a finished stage wrote.
fn final_checkpoint(checkpoints: &Path, stage: &Prepared) -> Result<Checkpoint, ExecError> {
    let prefix = format!("{:02}-{}-step", stage.index, stage.name);
    let mut best: Option<Checkpoint> = None;
    let entries = std::fs::read_dir(checkpoints).map_err(|e| ExecError::io(checkpoints, e))?;
    for entry in entries {
        let path = entry.map_err(|e| ExecError::io(checkpoints, e))?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.starts_with(&prefix) && !name.contains(".tmp-") {
            let ck = Checkpoint::open(&path)?;
            if ck.state.complete() && best.as_ref().is_none_or(|b| ck.state.step > b.state.step) {
                best = Some(ck);
            }
        }
    }
    best.ok_or_else(|| {
        ExecError::Input(format!(
            "cannot resume: no final checkpoint of stage `{}` in {}",
            stage.name,
            checkpoints.display()
        ))
    })
}
