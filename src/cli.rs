//! Command-line surface: `recipe check | fmt | plan | run | compare | verify | report | score | generate |
//! loss | convert`.

use crate::exit::{self, Failure};
use crate::render;
use crate::runs;
use clap::{Parser, Subcommand};
use recipe_compiler::diag::{Diagnostic, Source};
use std::path::{Path, PathBuf};

#[derive(Parser, Debug)]
#[command(name = "recipe", version, about = "A typed language and runtime for LLM post-training recipes")]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Type-check recipes; exit 1 with diagnostics when any has errors. Anything this build's
    /// runtime cannot execute is a warning (`recipe::check::not_executable`).
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Override a top-level `let` or a header field: `--set beta=0.2`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Treat warnings as errors: exit 1 when `recipe run` could not execute a recipe.
        #[arg(long)]
        strict: bool,
    },
    /// Print a recipe in canonical form.
    Fmt {
        file: PathBuf,
        /// Exit 1 when the file is not already formatted; print nothing.
        #[arg(long, conflicts_with = "write")]
        check: bool,
        /// Rewrite the file in place.
        #[arg(long)]
        write: bool,
    },
    /// Print the stage graph with every default resolved.
    Plan {
        file: PathBuf,
        #[arg(long)]
        json: bool,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// Run a recipe into a run folder (lock, metrics, checkpoints, report).
    Run {
        /// The recipe; omitted with --resume.
        #[arg(required_unless_present = "resume")]
        file: Option<PathBuf>,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// The run folder to create (default: RUNS/<recipe name>-<UTC time>).
        #[arg(long, conflicts_with = "resume")]
        out: Option<PathBuf>,
        /// Where new run folders go.
        #[arg(long, default_value = "runs")]
        runs: PathBuf,
        /// Continue the run in this folder from its latest checkpoint.
        #[arg(long, value_name = "RUN", conflicts_with = "file")]
        resume: Option<PathBuf>,
        #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda"])]
        device: String,
        /// A folder the recipe may read data from, besides its own.
        #[arg(long = "data-root", value_name = "DIR")]
        data_roots: Vec<PathBuf>,
        /// Cap every stage at N steps, N >= 1 (a smoke test of the whole recipe).
        #[arg(long, value_name = "N", conflicts_with = "resume", value_parser = clap::value_parser!(u64).range(1..))]
        max_steps: Option<u64>,
        /// No progress output.
        #[arg(long, short)]
        quiet: bool,
        /// Progress and results as JSON lines on stdout.
        #[arg(long)]
        json: bool,
        /// Run once per seed into OUT/seed-N: a count (`3`: seeds 1, 2, 3) or a list (`1,2,5`).
        #[arg(long, value_name = "N|LIST", conflicts_with = "resume")]
        seeds: Option<String>,
        /// Also run a control, the recipe with these `--set` overrides (repeatable): the method
        /// goes to OUT/method, the control to OUT/control, their comparison to OUT/compare.html.
        #[arg(long = "control", value_name = "KEY=VALUE", conflicts_with = "resume")]
        controls: Vec<String>,
    },
    /// Compare runs, or groups of seed runs (folders of runs): overlaid curves, final and best
    /// values, and what differs between their locks, equal-compute breakers flagged.
    Compare {
        #[arg(required = true, value_name = "RUN")]
        runs: Vec<PathBuf>,
        /// Only this metric (`loss`, or a stage's: `sft/eval.held_acc.accuracy`).
        #[arg(long)]
        metric: Option<String>,
        /// Write the comparison page (self-contained HTML) here.
        #[arg(long, value_name = "FILE.html")]
        out: Option<PathBuf>,
        /// Print the comparison as one JSON object: runs, metrics (final, best), diff, equal_compute.
        #[arg(long)]
        json: bool,
    },
    /// Re-execute a run from its recipe.lock and check that the metric trace is identical.
    Verify {
        run: PathBuf,
        #[arg(long, short)]
        quiet: bool,
    },
    /// Rebuild a run folder's report.html from its metrics.
    Report { run: PathBuf },
    /// Log-probabilities of completions: one JSON line per `prompt`/`completion` row.
    Score {
        /// A Hugging Face model folder, a GGUF file, a checkpoint folder, or a run folder (its
        /// final model).
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value_t = 16)]
        batch: usize,
        #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda"])]
        device: String,
    },
    /// Continue a prompt with a model.
    Generate {
        /// A Hugging Face model folder, a GGUF file, a checkpoint folder, or a run folder (its
        /// final model).
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        prompt: String,
        #[arg(long, default_value_t = 64)]
        max_tokens: usize,
        /// 0 is greedy.
        #[arg(long, default_value_t = 0.0)]
        temperature: f64,
        #[arg(long, default_value_t = 1.0)]
        top_p: f64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Print token ids instead of text.
        #[arg(long)]
        ids: bool,
        #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda"])]
        device: String,
    },
    /// Evaluate a preference loss on every pair (`--data`), or a policy-gradient loss on every
    /// rollout (`--rollouts`), of a JSONL file as one batch: the loss, the gradient norm over the
    /// policy's parameters before clipping, and the metrics. No training.
    Loss {
        /// The policy: a Hugging Face model folder, a checkpoint folder, or a run folder.
        #[arg(long)]
        policy: PathBuf,
        /// The frozen reference (default: the policy itself, as a `preference` stage starts).
        #[arg(long)]
        reference: Option<PathBuf>,
        /// `prompt`/`chosen`/`rejected` rows, one JSON object a line; EOS is appended to each
        /// response. The loss is a preference loss (`Loss`).
        #[arg(long, required_unless_present = "rollouts", conflicts_with = "rollouts")]
        data: Option<PathBuf>,
        /// Rollouts, one JSON object a line: `prompt`, `completion` (text; EOS appended unless
        /// `"truncated": true`) or `completion_ids` (ids used verbatim), and `reward` (`null`:
        /// unscored); consecutive lines with the same prompt form a group. The loss is a policy
        /// loss (`PolicyLoss`).
        #[arg(long, value_name = "FILE")]
        rollouts: Option<PathBuf>,
        /// With --rollouts: the advantages' scaling, TRL's `scale_rewards`
        /// (`group_relative(scale = ...)`).
        #[arg(long, default_value = "group", value_parser = ["group", "batch", "none"], requires = "rollouts")]
        scale: String,
        /// With --rollouts: the completion limit (TRL's `max_completion_length`, which `dr_grpo`
        /// divides by); default: the longest completion.
        #[arg(long, requires = "rollouts")]
        max_tokens: Option<usize>,
        /// A loss expression: a stdlib loss (`dpo(beta = 0.1)`), a sum of them, or a lambda.
        #[arg(long, value_name = "EXPR")]
        loss: String,
        /// A recipe whose `fn`, `type` and `let` declarations the expression may use.
        #[arg(long, value_name = "FILE")]
        recipe: Option<PathBuf>,
        /// The 0-based step schedules (`beta = interpolate(...)`) are evaluated at.
        #[arg(long, default_value_t = 0)]
        step: u64,
        /// The total steps schedules see.
        #[arg(long, default_value_t = 1)]
        total: u64,
        /// One JSON object on the last line: `loss`, `grad_norm`, `pairs` (or `advantages` and
        /// `rollouts`, with `kl`) and the metrics by name.
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda"])]
        device: String,
    },
    /// Write a model as a Hugging Face folder (config.json, model.safetensors in F32,
    /// tokenizer.json, tokenizer_config.json with the chat template, generation_config.json)
    /// that transformers opens unchanged; prints the folder.
    Convert {
        /// A GGUF file (Llama architecture; quantised tensors are dequantised to f32), or anything
        /// `--model` takes.
        file: PathBuf,
        /// The folder to write (created when absent; the files above are replaced).
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn dispatch(args: Args) -> Result<u8, Failure> {
    match args.command {
        Command::Check { files, overrides, strict } => check(&files, &parse_overrides(&overrides)?, strict),
        Command::Fmt { file, check, write } => fmt(&file, check, write),
        Command::Plan { file, json, overrides } => plan(&file, json, &parse_overrides(&overrides)?),
        Command::Run {
            file,
            overrides,
            out,
            runs,
            resume,
            device,
            data_roots,
            max_steps,
            quiet,
            json,
            seeds,
            controls,
        } => runs::run(runs::RunArgs {
            file,
            overrides,
            out,
            runs,
            resume,
            device,
            data_roots,
            max_steps,
            quiet,
            json,
            seeds,
            controls,
        }),
        Command::Compare { runs, metric, out, json } => {
            crate::compare::run(&runs, metric.as_deref(), out.as_deref(), json)
        }
        Command::Verify { run, quiet } => runs::verify(&run, quiet),
        Command::Report { run } => runs::report(&run),
        Command::Score { model, data, batch, device } => runs::score(&model, &data, batch, &device),
        Command::Generate { model, prompt, max_tokens, temperature, top_p, seed, ids, device } => {
            runs::generate(runs::GenerateArgs { model, prompt, max_tokens, temperature, top_p, seed, ids, device })
        }
        Command::Convert { file, out } => runs::convert(&file, &out),
        Command::Loss {
            policy,
            reference,
            data,
            rollouts,
            scale,
            max_tokens,
            loss,
            recipe,
            step,
            total,
            json,
            device,
        } => {
            let input = match (data, rollouts) {
                (Some(path), _) => crate::loss::LossInput::Pairs(path),
                (None, Some(path)) => crate::loss::LossInput::Rollouts { path, scale, max_tokens },
                (None, None) => return Err(Failure::Usage("give --data PAIRS.jsonl or --rollouts FILE.jsonl".into())),
            };
            crate::loss::loss(crate::loss::LossArgs {
                policy,
                reference,
                input,
                loss,
                recipe,
                step,
                total,
                json,
                device,
            })
        }
    }
}

/// `--set key=value` pairs, split at the first `=`.
pub fn parse_overrides(raw: &[String]) -> Result<Vec<(String, String)>, Failure> {
    raw.iter()
        .map(|item| match item.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => Ok((key.trim().to_string(), value.trim().to_string())),
            _ => Err(Failure::Usage(format!("`--set {item}` must have the form KEY=VALUE"))),
        })
        .collect()
}

pub fn read_source(path: &Path) -> Result<Source, Failure> {
    let text =
        std::fs::read_to_string(path).map_err(|e| Failure::Input(format!("cannot read {}: {e}", path.display())))?;
    Ok(Source::new(path.display().to_string(), text))
}

/// Compile one recipe, turning diagnostics into a `Failure` that renders them.
pub fn compile(path: &Path, overrides: &[(String, String)]) -> Result<(recipe_compiler::Program, Source), Failure> {
    let source = read_source(path)?;
    match recipe_compiler::compile(&source, overrides) {
        Ok(program) => Ok((program, source)),
        Err(diagnostics) => Err(Failure::Recipe(diagnostics, source)),
    }
}

fn check(files: &[PathBuf], overrides: &[(String, String)], strict: bool) -> Result<u8, Failure> {
    let mut worst = exit::OK;
    for file in files {
        match compile(file, overrides) {
            Ok((program, source)) => {
                let warnings = not_executable(&program, strict);
                if !warnings.is_empty() {
                    eprint!("{}", render::diagnostics(&warnings, &source, render::colour()));
                    if strict {
                        worst = worst.max(exit::RECIPE);
                    }
                }
            }
            Err(failure @ Failure::Recipe(..)) => {
                render::failure(&failure);
                worst = worst.max(failure.exit_code());
            }
            Err(other) => return Err(other),
        }
    }
    Ok(worst)
}

/// What `recipe run` of `program` would refuse as not executable by this build, one diagnostic
/// each at its place in the recipe: warnings, or errors when `strict`.
fn not_executable(program: &recipe_compiler::Program, strict: bool) -> Vec<Diagnostic> {
    recipe_runtime::exec::registry::not_executable(program)
        .into_iter()
        .map(|n| {
            let message = format!("{} cannot be executed by this version of the runtime", n.what);
            let code = "recipe::check::not_executable";
            let d = if strict { Diagnostic::error(code, message) } else { Diagnostic::warning(code, message) };
            let d =
                d.with_help("`recipe run` refuses this recipe before any compute (exit 6); it type-checks and plans");
            program.locate(d, &n.decl, n.arg.as_deref(), "not executable yet")
        })
        .collect()
}

fn fmt(path: &Path, check: bool, write: bool) -> Result<u8, Failure> {
    let source = read_source(path)?;
    let module = recipe_compiler::parse(&source).map_err(|diagnostics| Failure::Recipe(diagnostics, source.clone()))?;
    let formatted = recipe_compiler::format(&module, &source);
    if check {
        if formatted.as_str() != &*source.text {
            eprintln!("{} is not formatted (run `recipe fmt --write {}`)", path.display(), path.display());
            return Ok(exit::RECIPE);
        }
    } else if write {
        if formatted.as_str() != &*source.text {
            std::fs::write(path, formatted)
                .map_err(|e| Failure::Input(format!("cannot write {}: {e}", path.display())))?;
        }
    } else {
        render::out(&formatted);
    }
    Ok(exit::OK)
}

fn plan(path: &Path, json: bool, overrides: &[(String, String)]) -> Result<u8, Failure> {
    let (program, _) = compile(path, overrides)?;
    if json {
        render::out_line(recipe_compiler::plan::render_json(&program));
    } else {
        render::out(&recipe_compiler::plan::render_text(&program));
    }
    Ok(exit::OK)
}
