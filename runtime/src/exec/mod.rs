//! Executing a compiled `Program`: build its models and datasets, run its stages in the `run`
//! order through the one step loop, and leave a run folder (lock, metrics, checkpoints, report).
//!
//! Invariants: everything that can be checked without compute — stage kinds this runtime
//! executes, datasets and their rows against each model's context, every model a stage names
//! (policy and reference, loaded and hashed), settings — is checked before the first step, so a
//! bad recipe fails in seconds; the lock is written before training starts; a stage trains its
//! own copy of its model, so a stage that trains never changes a model another stage reads.

pub mod args;
pub mod build;
mod conversations;
mod curricula;
mod evals;
mod judge;
pub mod loss;
mod models;
pub mod registry;
mod settings;
mod stages;

use crate::artifact::{self, ArtifactError, RecipeLock, RunDir};
use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::data::{DataError, Dataset};
use crate::model::{Device, ModelError};
use crate::progress::Progress;
use crate::train::{StageSummary, TrainError};
use args::Functions;
use build::Builder;
use rayon::prelude::*;
use recipe_compiler::diag::Diagnostic;
use recipe_compiler::program::Program;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where a run writes.
pub enum Target {
    /// A new folder: exactly `dir`, or `<runs>/<recipe name>-<UTC time>`.
    New { runs: PathBuf, dir: Option<PathBuf> },
    /// Continue the run in this folder from its latest checkpoint.
    Resume(PathBuf),
}

pub struct RunOptions {
    pub target: Target,
    pub device: Device,
    /// Folders the recipe may read: the recipe's own folder first, then `--data-root`s.
    pub roots: Vec<PathBuf>,
    /// Cap every stage at this many steps (smoke tests); schedules see the capped total.
    pub max_steps: Option<u64>,
}

/// What a finished run reports.
pub struct RunOutcome {
    pub dir: PathBuf,
    pub stages: Vec<(String, StageSummary)>,
}

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// An input file is missing, unreadable or outside the allowed folders.
    #[error("{0}")]
    Input(String),
    /// A value the type checker cannot rule out is unusable (a negative count, an empty range).
    #[error("{0}")]
    Config(String),
    /// The recipe uses a builtin this runtime cannot execute yet.
    #[error("{0} cannot be executed by this version of the runtime")]
    Unsupported(String),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Optim(#[from] crate::optim::OptimError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A disagreement between compiler and runtime, or another fault of ours.
    #[error("{0}")]
    Internal(String),
    /// An error whose cause is written in the recipe: `diagnostic` points at the declaration
    /// or argument (with the recipe's source attached); `kind` is the kind of the error it
    /// located.
    #[error("{diagnostic}")]
    InRecipe { kind: ErrorKind, diagnostic: Box<Diagnostic> },
}

/// What kind of failure an error is, for exit codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad input: data, files, configuration values.
    Input,
    /// Training stopped on a non-finite value.
    Diverged,
    /// Not supported by this runtime.
    Unsupported,
    /// A bug.
    Internal,
}

impl ExecError {
    pub fn io(path: &Path, e: std::io::Error) -> ExecError {
        ExecError::Input(format!("{}: {e}", path.display()))
    }

    /// This error pointed at declaration `decl`'s argument `arg` (a dotted path for nested
    /// calls; `None`: the whole declaration) when it is the user's to fix there — bad input or
    /// something this runtime cannot execute; other errors are returned unchanged.
    pub fn in_recipe(self, program: &Program, decl: &str, arg: Option<&str>) -> ExecError {
        let kind = self.kind();
        let (code, label) = match kind {
            ErrorKind::Input => ("recipe::run::input", "the cause is here"),
            ErrorKind::Unsupported => ("recipe::run::not_executable", "not executable by this runtime"),
            ErrorKind::Diverged | ErrorKind::Internal => return self,
        };
        // A data error already names its file and line; a located error is located.
        if matches!(self, ExecError::InRecipe { .. } | ExecError::Data(_)) {
            return self;
        }
        let diagnostic = program.locate(Diagnostic::error(code, self.to_string()), decl, arg, label);
        ExecError::InRecipe { kind, diagnostic: Box::new(diagnostic) }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            ExecError::InRecipe { kind, .. } => *kind,
            // The run folder is the user's input too: an existing run, a broken one to resume, or
            // a folder that cannot be written.
            ExecError::Input(_) | ExecError::Config(_) | ExecError::Data(_) | ExecError::Artifact(_) => {
                ErrorKind::Input
            }
            ExecError::Unsupported(_) => ErrorKind::Unsupported,
            ExecError::Train(TrainError::NonFinite { .. }) => ErrorKind::Diverged,
            ExecError::Train(e) if e.is_user_error() => ErrorKind::Input,
            // A user's model folder: unreadable, misconfigured, incomplete, a tokenizer that does
            // not parse or encode, a tensor of the wrong shape or type.
            ExecError::Model(
                ModelError::Io { .. }
                | ModelError::Config { .. }
                | ModelError::MissingTensor { .. }
                | ModelError::Shape { .. }
                | ModelError::Tokenizer { .. }
                | ModelError::Encode { .. },
            ) => ErrorKind::Input,
            _ => ErrorKind::Internal,
        }
    }
}

/// Refuses `data` when a row needs more positions than the model's `context`: `tokens` counts a
/// row's positions from its prompt and completion. Names the first such row; a row `tokens`
/// cannot count (its text does not encode) is its error.
pub fn check_context(
    what: &str,
    data: &Dataset,
    context: usize,
    tokens: impl Fn(&str, &str) -> Result<usize, ModelError> + Sync,
) -> Result<(), ExecError> {
    let prompts = data.strings("prompt")?;
    let empty: Arc<str> = Arc::from("");
    let completions = data.strings("completion").ok();
    let too_long = (0..data.len()).into_par_iter().map(|r| {
        let completion = completions.map_or(&empty, |c| &c[r]);
        (r, tokens(&prompts[r], completion))
    });
    let Some((row, len)) = too_long.find_first(|(_, len)| len.as_ref().map_or(true, |&len| len > context)) else {
        return Ok(());
    };
    let len = len?;
    let at = data.row_name(row);
    Err(ExecError::Config(format!(
        "{what}: {at} needs {len} positions (prompt, completion and EOS) but the model has {context} \
         (its `context` / max_position_embeddings); shorten or leave out such rows, or use a longer context"
    )))
}

/// Refuses rows of `data` whose prompt encodes to no tokens (generation needs one to start
/// from), naming the first such row.
pub fn check_prompts_not_empty(what: &str, data: &Dataset, tok: &crate::model::Tokenizer) -> Result<(), ExecError> {
    let prompts = data.strings("prompt")?;
    for (row, prompt) in prompts.iter().enumerate() {
        if tok.encode(prompt)?.is_empty() {
            return Err(ExecError::Config(format!(
                "{what}: {} has an empty prompt; generation needs at least one prompt token",
                data.row_name(row)
            )));
        }
    }
    Ok(())
}

/// Runs `program`. `plan` is the compiler's JSON plan, recorded in the lock.
pub fn run(
    program: &Program,
    plan: Value,
    options: &RunOptions,
    progress: &mut dyn Progress,
) -> Result<RunOutcome, ExecError> {
    if let Some(first) = registry::not_executable(program).into_iter().next() {
        let e = ExecError::Unsupported(first.what);
        return Err(e.in_recipe(program, &first.decl, first.arg.as_deref()));
    }
    let functions = Arc::new(Functions::new(&program.scalar)?);
    let mut builder = Builder::new(program, options.device.clone(), options.roots.clone(), functions);
    let mut models = models::ModelStore::default();
    let (plan_steps, evals) = stages::prepare(program, &mut builder, &mut models, options.max_steps)?;

    let device = device_name(&options.device);
    let (mut dir, resume) = match &options.target {
        Target::New { runs, dir } => {
            let run = match dir {
                Some(dir) => RunDir::create_at(dir)?,
                None => RunDir::create_in(runs, &program.name)?,
            };
            let mut lock =
                RecipeLock::new(program.source.clone(), plan, program.seed as u64, builder.inputs.clone(), device);
            lock.roots = options.roots.clone();
            lock.max_steps = options.max_steps;
            lock.skipped = builder.skipped.clone();
            run.write_lock(&lock)?;
            (run, None)
        }
        Target::Resume(path) => {
            let lock = artifact::read_lock(path)?;
            if lock.inputs != builder.inputs {
                return Err(ExecError::Input(format!(
                    "the inputs of `{}` changed since the run started (their sha256 differs from recipe.lock)",
                    path.display()
                )));
            }
            let checkpoints = path.join(artifact::CHECKPOINTS_DIR);
            Checkpoint::remove_stale(&checkpoints)?;
            let latest = Checkpoint::latest(&checkpoints)?;
            let lines = latest.as_ref().map_or(0, |c| c.state.metrics_lines);
            (RunDir::reopen(path, lines)?, latest)
        }
    };
    for skipped in &builder.skipped {
        progress.note(&skipped.describe());
        // Resuming from a checkpoint keeps the lines written before it; from none, they were cut.
        if resume.is_none() {
            dir.append_metrics(&skipped.metrics_line())?;
        }
    }
    let stages = stages::execute(&plan_steps, &evals, &mut builder, &mut models, &mut dir, progress, resume)?;
    record_final_model(&dir)?;
    write_report(program, dir.root())?;
    Ok(RunOutcome { dir: dir.root().to_path_buf(), stages })
}

/// Records the finished run's final model (its latest checkpoint's) as `final` in its lock.
fn record_final_model(dir: &RunDir) -> Result<(), ExecError> {
    let mut lock = artifact::read_lock(dir.root())?;
    lock.final_model = Checkpoint::latest(&dir.checkpoints())?.map(|c| {
        let model = c.model_dir();
        model.strip_prefix(dir.root()).unwrap_or(&model).to_string_lossy().into_owned()
    });
    Ok(dir.write_lock(&lock)?)
}

/// (Re)writes `report.html` from the run folder's metrics and lock.
pub fn write_report(program: &Program, dir: &Path) -> Result<(), ExecError> {
    let metrics = artifact::read_metrics(dir)?;
    let lock = artifact::read_lock(dir).ok();
    let html = crate::report::render(&program.name, lock.as_ref(), &metrics);
    let path = dir.join("report.html");
    artifact::write_atomic(&path, html.as_bytes()).map_err(|e| ExecError::io(&path, e))
}

fn device_name(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".to_string(),
        Device::Cuda(_) => "cuda:0".to_string(),
        Device::Metal(_) => "metal".to_string(),
    }
}
