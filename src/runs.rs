//! The commands that execute: `run` (new or `--resume`), `verify`, `report`, and the model
//! utilities `score` and `generate`.

use crate::cli::{self, compile};
use crate::exit::{self, Failure};
use crate::progress::{Mode, Reporter};
use crate::render;
use recipe_compiler::diag::Source;
use recipe_runtime::artifact::{self, RecipeLock};
use recipe_runtime::checkpoint::{Checkpoint, MODEL_DIR};
use recipe_runtime::data::{jsonl, BadRowPolicy, Schema};
use recipe_runtime::exec::{self, ErrorKind, ExecError, RunOptions, Target};
use recipe_runtime::model::{self, CausalLm, Device, GenerateOptions, TokenBatch};
use recipe_runtime::rng::Rng;
use serde_json::json;
use std::path::{Path, PathBuf};

pub struct RunArgs {
    pub file: Option<PathBuf>,
    pub overrides: Vec<String>,
    pub out: Option<PathBuf>,
    pub runs: PathBuf,
    pub resume: Option<PathBuf>,
    pub device: String,
    pub data_roots: Vec<PathBuf>,
    pub max_steps: Option<u64>,
    pub quiet: bool,
    pub json: bool,
    /// `--seeds`: a count or a comma-separated list.
    pub seeds: Option<String>,
    /// `--control KEY=VALUE`: the overrides that make the control arm.
    pub controls: Vec<String>,
}

pub fn device(name: &str) -> Result<Device, Failure> {
    match name {
        "cpu" => Ok(Device::Cpu),
        // Not a usage error: the flag is right, this binary or machine cannot honour it.
        "cuda" if !cfg!(feature = "cuda") => Err(Failure::Unsupported(
            "--device cuda: this binary was built without CUDA; build it with `cargo build --release --features cuda`"
                .into(),
        )),
        "cuda" => Device::new_cuda(0).map_err(|e| {
            let e = match e {
                candle_core::Error::WithBacktrace { inner, .. } => *inner,
                e => e,
            };
            Failure::Unsupported(format!("--device cuda: no usable CUDA device or driver: {e}"))
        }),
        other => Err(Failure::Usage(format!("unknown device `{other}`: use cpu or cuda"))),
    }
}

fn exec_failure(e: ExecError) -> Failure {
    if let ExecError::InRecipe { kind, diagnostic } = e {
        let code = match kind {
            ErrorKind::Input => exit::INPUT,
            ErrorKind::Diverged => exit::DIVERGED,
            ErrorKind::Unsupported => exit::UNSUPPORTED,
            ErrorKind::Internal => exit::INTERNAL,
        };
        return Failure::Located(diagnostic, code);
    }
    let message = match &e {
        ExecError::Train(t) => t.to_diagnostic().to_string(),
        _ => e.to_string(),
    };
    match e.kind() {
        ErrorKind::Input => Failure::Input(message),
        ErrorKind::Diverged => Failure::Diverged(format!(
            "{message}\n  metrics and checkpoints written so far are intact; fix the recipe and start a new run \
             (`--resume` replays the locked recipe: it only continues an interrupted run)"
        )),
        ErrorKind::Unsupported => Failure::Unsupported(message),
        ErrorKind::Internal => Failure::Internal(message),
    }
}

/// A run folder's lock. Errors: `Input` saying "not a run folder" when `dir` is missing or has no
/// recipe.lock, and for an unreadable lock.
fn read_lock(dir: &Path) -> Result<RecipeLock, Failure> {
    if !dir.join(artifact::LOCK_FILE).is_file() {
        let why = if dir.is_dir() { "it has no recipe.lock" } else { "no such folder" };
        return Err(Failure::Input(format!("`{}` is not a run folder ({why})", dir.display())));
    }
    artifact::read_lock(dir).map_err(|e| Failure::Input(e.to_string()))
}

/// A recipe recompiled from a run folder's lock (for `--resume` and `verify`).
fn from_lock(dir: &Path) -> Result<(recipe_compiler::Program, RecipeLock), Failure> {
    let lock = read_lock(dir)?;
    let overrides: Vec<(String, String)> =
        serde_json::from_value(lock.plan.get("overrides").cloned().unwrap_or(json!([]))).unwrap_or_default();
    let source = Source::new(format!("{}/recipe.lock", dir.display()), lock.recipe.clone());
    let program = recipe_compiler::compile(&source, &overrides).map_err(|d| Failure::Recipe(d, source))?;
    Ok((program, lock))
}

pub fn run(args: RunArgs) -> Result<u8, Failure> {
    let device = device(&args.device)?;
    let mut reporter = Reporter::new(Mode::choose(args.quiet, args.json));
    let outcome = match (&args.resume, &args.file) {
        (Some(dir), _) => {
            let (program, lock) = from_lock(dir)?;
            if let Some(model) = &lock.final_model {
                eprintln!(
                    "`{}` finished already (its final model is {}); nothing to resume",
                    dir.display(),
                    dir.join(model).display()
                );
                return Ok(exit::OK);
            }
            execute(&program, Target::Resume(dir.clone()), lock.roots, lock.max_steps, device, &mut reporter)?
        }
        (None, Some(file)) => {
            if let Some(out) = args.out.as_ref().filter(|out| out.is_file()) {
                return Err(Failure::Input(format!("--out `{}` is a file; name a folder", out.display())));
            }
            if args.seeds.is_some() || !args.controls.is_empty() {
                return sweep(&args, file, device, &mut reporter);
            }
            let overrides = cli::parse_overrides(&args.overrides)?;
            run_new(&args, file, &overrides, args.out.clone(), device, &mut reporter)?
        }
        (None, None) => return Err(Failure::Usage("`recipe run` needs a recipe FILE or --resume RUN".into())),
    };
    finished(&args, &outcome);
    Ok(exit::OK)
}

/// Compiles `file` with `overrides` and runs it into `out` (default: a new folder in `--runs`).
fn run_new(
    args: &RunArgs,
    file: &Path,
    overrides: &[(String, String)],
    out: Option<PathBuf>,
    device: Device,
    reporter: &mut Reporter,
) -> Result<exec::RunOutcome, Failure> {
    let (program, _) = compile(file, overrides)?;
    let folder = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    // Absolute, so `verify` and `--resume` find the inputs from any working directory.
    let mut roots = vec![absolute(folder)?];
    for root in &args.data_roots {
        roots.push(absolute(root)?);
    }
    let target = Target::New { runs: args.runs.clone(), dir: out };
    execute(&program, target, roots, args.max_steps, device, reporter)
}

fn execute(
    program: &recipe_compiler::Program,
    target: Target,
    roots: Vec<PathBuf>,
    max_steps: Option<u64>,
    device: Device,
    reporter: &mut Reporter,
) -> Result<exec::RunOutcome, Failure> {
    let plan = serde_json::from_str(&recipe_compiler::plan::render_json(program))
        .map_err(|e| Failure::Internal(format!("plan JSON: {e}")))?;
    let options = RunOptions { target, device, roots, max_steps };
    on_pool(threads(program), || exec::run(program, plan, &options, reporter))?.map_err(exec_failure)
}

/// What a finished run prints: its JSON event, or each stage's summary and the folder.
fn finished(args: &RunArgs, outcome: &exec::RunOutcome) {
    if args.json {
        render::out_line(json!({"event": "finished", "run": outcome.dir}));
    } else if !args.quiet {
        for (stage, summary) in &outcome.stages {
            let evals: Vec<String> = summary
                .eval
                .iter()
                .flat_map(|(name, m)| m.iter().map(move |(k, v)| format!("{name}.{k} = {v:.4}")))
                .collect();
            eprintln!("{stage}: {} steps, final loss {:.4}; {}", summary.steps, summary.final_loss, evals.join(", "));
        }
        eprintln!("run folder: {}", outcome.dir.display());
    }
}

/// The seeds `--seeds` names: a count N (seeds 1 to N) or a comma-separated list. Errors:
/// `Usage` for anything else, a seed named twice, or a count of 0.
pub fn parse_seeds(text: &str) -> Result<Vec<u64>, Failure> {
    let bad = || Failure::Usage(format!("--seeds `{text}`: give a count (`3`: seeds 1, 2, 3) or a list (`1,2,5`)"));
    let seeds: Vec<u64> = if text.contains(',') {
        text.split(',').map(|s| s.trim().parse::<u64>().map_err(|_| bad())).collect::<Result<_, _>>()?
    } else {
        (1..=text.trim().parse::<u64>().map_err(|_| bad())?).collect()
    };
    let mut sorted = seeds.clone();
    sorted.sort_unstable();
    sorted.dedup();
    if seeds.is_empty() || sorted.len() != seeds.len() {
        return Err(bad());
    }
    Ok(seeds)
}

/// `run --seeds` and `--control`: the recipe once per seed (its header `seed` overridden as
/// `--set seed=N` does) into `OUT/seed-N`; with `--control`, the method into `OUT/method/…` and
/// the method plus the control's overrides into `OUT/control/…`, then `OUT/compare.html` and
/// `OUT/compare.json`, and the comparison printed.
fn sweep(args: &RunArgs, file: &Path, device: Device, reporter: &mut Reporter) -> Result<u8, Failure> {
    let seeds = args.seeds.as_deref().map(parse_seeds).transpose()?.unwrap_or_default();
    let base = cli::parse_overrides(&args.overrides)?;
    if !seeds.is_empty() && base.iter().any(|(k, _)| k == "seed") {
        return Err(Failure::Usage("--seeds sets the seed of each run; drop `--set seed=...`".into()));
    }
    let controls = cli::parse_overrides(&args.controls)?;
    let parent = match &args.out {
        Some(out) => out.clone(),
        None => {
            let stem = file.file_stem().map_or("run".into(), |s| s.to_string_lossy().into_owned());
            args.runs.join(format!("{stem}-{}", artifact::utc_stamp(std::time::SystemTime::now())))
        }
    };
    let arms: Vec<(PathBuf, Vec<(String, String)>)> = if controls.is_empty() {
        vec![(parent.clone(), base)]
    } else {
        let control = base.iter().chain(&controls).cloned().collect();
        vec![(parent.join("method"), base), (parent.join("control"), control)]
    };
    for (dir, overrides) in &arms {
        if seeds.is_empty() {
            let outcome = run_new(args, file, overrides, Some(dir.clone()), device.clone(), reporter)?;
            finished(args, &outcome);
        }
        for seed in &seeds {
            let mut overrides = overrides.clone();
            overrides.push(("seed".into(), seed.to_string()));
            let out = dir.join(format!("seed-{seed}"));
            let outcome = run_new(args, file, &overrides, Some(out), device.clone(), reporter)?;
            finished(args, &outcome);
        }
    }
    if controls.is_empty() {
        return Ok(exit::OK);
    }
    let paths: Vec<PathBuf> = arms.into_iter().map(|(dir, _)| dir).collect();
    let comparison = crate::compare::build(&crate::compare::load(&paths)?, None)?;
    crate::compare::write_html(&comparison, &parent.join("compare.html"))?;
    let json_path = parent.join("compare.json");
    artifact::write_atomic(&json_path, format!("{:#}\n", comparison.to_json()).as_bytes())
        .map_err(|e| Failure::Input(format!("cannot write {}: {e}", json_path.display())))?;
    if args.json {
        render::out_line(json!({"event": "compared", "html": parent.join("compare.html"), "json": json_path}));
    } else if !args.quiet {
        eprint!("{}", crate::compare::text(&comparison));
        eprintln!("comparison: {}", parent.join("compare.html").display());
    }
    Ok(exit::OK)
}

/// `path` made absolute against the working directory (not resolving links).
fn absolute(path: &Path) -> Result<PathBuf, Failure> {
    std::path::absolute(path).map_err(|e| Failure::Input(format!("{}: {e}", path.display())))
}

/// Re-executes a run from its lock into a scratch folder and compares the metric traces.
pub fn verify(dir: &Path, quiet: bool) -> Result<u8, Failure> {
    let (program, lock) = from_lock(dir)?;
    let scratch = std::env::temp_dir().join(format!("recipe-verify-{}", artifact::temp_suffix()));
    let options = RunOptions {
        target: Target::New { runs: scratch.clone(), dir: Some(scratch.join("run")) },
        device: device(lock.device.split(':').next().unwrap_or("cpu"))?,
        roots: lock.roots.clone(),
        max_steps: lock.max_steps,
    };
    let mut reporter = Reporter::new(Mode::choose(quiet, false));
    let outcome = on_pool(threads(&program), || exec::run(&program, lock.plan.clone(), &options, &mut reporter))?;
    let result = outcome.map_err(exec_failure).and_then(|outcome| {
        let read = |d: &Path| artifact::read_metrics(d).map_err(|e| Failure::Input(e.to_string()));
        let (original, replay) = (read(dir)?, read(&outcome.dir)?);
        let strip = |v: &[serde_json::Value]| v.iter().map(artifact::without_timing).collect::<Vec<_>>();
        let (original, replay) = (strip(&original), strip(&replay));
        if let Some(i) = (0..original.len().max(replay.len())).find(|&i| original.get(i) != replay.get(i)) {
            return Err(Failure::Mismatch(format!(
                "metrics line {} differs:\n  recorded: {}\n  replayed: {}",
                i + 1,
                original.get(i).map_or("(none)".into(), |v| v.to_string()),
                replay.get(i).map_or("(none)".into(), |v| v.to_string()),
            )));
        }
        if !quiet {
            eprintln!("verified: {} metrics lines replay identically", original.len());
        }
        Ok(exit::OK)
    });
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// Rebuilds `report.html` of a run folder.
pub fn report(dir: &Path) -> Result<u8, Failure> {
    let (program, _) = from_lock(dir)?;
    exec::write_report(&program, dir).map_err(exec_failure)?;
    render::out_line(dir.join("report.html").display());
    Ok(exit::OK)
}

/// The recipe's `threads` header field, when set.
fn threads(program: &recipe_compiler::program::Program) -> Option<usize> {
    program.header_field("threads").and_then(|v| v.as_int()).filter(|&n| n > 0).map(|n| n as usize)
}

/// Runs `f` on the runtime's thread pool (see `recipe_runtime::threads`).
pub(crate) fn on_pool<R: Send>(threads: Option<usize>, f: impl FnOnce() -> R + Send) -> Result<R, Failure> {
    recipe_runtime::threads::run_on_pool(threads, f).map_err(|e| Failure::Internal(format!("thread pool: {e}")))
}

/// The model `--model PATH` names: a run folder (with recipe.lock) gives its final model, or
/// while unfinished its latest checkpoint's; a checkpoint folder gives its `model/`; anything
/// else is taken as a Hugging Face model folder or a GGUF file (`CausalLm::load` tells them
/// apart). Errors: `Input` for a run without checkpoints.
fn model_folder(path: &Path) -> Result<PathBuf, Failure> {
    if path.join(artifact::LOCK_FILE).is_file() {
        if let Some(model) = read_lock(path)?.final_model {
            return Ok(path.join(model));
        }
        let latest = Checkpoint::latest(&path.join(artifact::CHECKPOINTS_DIR))
            .map_err(|e| Failure::Input(e.to_string()))?
            .ok_or_else(|| Failure::Input(format!("run `{}` has no checkpoint yet", path.display())))?;
        return Ok(latest.model_dir());
    }
    match path.join(MODEL_DIR) {
        model if model.join("config.json").is_file() => Ok(model),
        _ => Ok(path.to_path_buf()),
    }
}

pub(crate) fn load_model(path: &Path, device_name: &str) -> Result<CausalLm, Failure> {
    let dir = model_folder(path)?;
    CausalLm::load(&dir, &device(device_name)?).map_err(|e| Failure::Input(e.to_string()))
}

/// `recipe convert`: the model at `input` (a GGUF file, or anything `--model` takes) written as a
/// Hugging Face folder `out` (`CausalLm::save`); prints the folder. Errors: `Input` when the
/// model cannot be read or the folder written.
pub fn convert(input: &Path, out: &Path) -> Result<u8, Failure> {
    let model = load_model(input, "cpu")?;
    model.save(out).map_err(|e| Failure::Input(format!("cannot write {}: {e}", out.display())))?;
    render::out_line(out.display());
    Ok(exit::OK)
}

/// One JSONL line per row: summed and mean log-probability of the completion (EOS appended).
pub fn score(model_dir: &Path, data: &Path, batch: usize, device_name: &str) -> Result<u8, Failure> {
    on_pool(None, || score_rows(model_dir, data, batch, device_name))?
}

fn score_rows(model_dir: &Path, data: &Path, batch: usize, device_name: &str) -> Result<u8, Failure> {
    // Frozen: scoring never backpropagates, so the forward passes keep no activations.
    let model = load_model(model_dir, device_name)?.into_frozen();
    let (rows, _) = jsonl::read_jsonl(data, &Schema::prompt_completion(), BadRowPolicy::Fail)
        .map_err(|e| Failure::Input(e.to_string()))?;
    let prompts = rows.strings("prompt").map_err(|e| Failure::Input(e.to_string()))?;
    let completions = rows.strings("completion").map_err(|e| Failure::Input(e.to_string()))?;
    let tok = model.tokenizer();
    let context = model.config().max_position_embeddings;
    exec::check_context("`score`", &rows, context, |p, c| model::training_positions(tok, p, c))
        .map_err(exec_failure)?;
    let internal = |e: candle_core::Error| Failure::Internal(e.to_string());
    for start in (0..rows.len()).step_by(batch.max(1)) {
        let end = (start + batch.max(1)).min(rows.len());
        let pairs: Vec<(&str, &str)> = (start..end).map(|i| (&*prompts[i], &*completions[i])).collect();
        let tokens = TokenBatch::collate(model.tokenizer(), &pairs, true, model.device())
            .map_err(|e| Failure::Internal(e.to_string()))?;
        let (sum, count) = model::completion_logprobs(&model, &tokens).map_err(internal)?;
        let sum = sum.to_vec1::<f32>().map_err(internal)?;
        let count = count.to_dtype(candle_core::DType::F32).and_then(|c| c.to_vec1::<f32>()).map_err(internal)?;
        for (i, (s, n)) in sum.iter().zip(&count).enumerate() {
            render::out_line(json!({
                "id": rows.ids[start + i],
                "logprob_sum": s,
                "logprob_mean": s / n.max(1.0),
                "tokens": n,
            }));
        }
    }
    Ok(exit::OK)
}

pub struct GenerateArgs {
    pub model: PathBuf,
    pub prompt: String,
    pub max_tokens: usize,
    pub temperature: f64,
    pub top_p: f64,
    pub seed: u64,
    pub ids: bool,
    pub device: String,
}

pub fn generate(args: GenerateArgs) -> Result<u8, Failure> {
    on_pool(None, || generate_text(args))?
}

fn generate_text(args: GenerateArgs) -> Result<u8, Failure> {
    let model = load_model(&args.model, &args.device)?;
    let prompt = model.tokenizer().encode(&args.prompt).map_err(|e| Failure::Input(e.to_string()))?;
    let context = model.config().max_position_embeddings;
    if prompt.len() + args.max_tokens > context {
        return Err(Failure::Usage(format!(
            "a prompt of {} tokens plus --max-tokens {} exceeds the model's {context} positions",
            prompt.len(),
            args.max_tokens
        )));
    }
    let options = GenerateOptions {
        max_new_tokens: args.max_tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        stop_at_eos: true,
    };
    let mut rng = Rng::derive(args.seed, "generate");
    let out = model::generate(&model, &[prompt], &options, &mut rng).map_err(|e| Failure::Internal(e.to_string()))?;
    let tokens = out.into_iter().next().unwrap_or_default();
    if args.ids {
        let ids: Vec<String> = tokens.iter().map(u32::to_string).collect();
        render::out_line(ids.join(" "));
    } else {
        let text: Vec<u32> = tokens.into_iter().take_while(|&t| !model.tokenizer().is_stop(t)).collect();
        render::out_line(model.tokenizer().decode(&text));
    }
    Ok(exit::OK)
}
