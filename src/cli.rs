//! Command-line surface: `recipe check | fmt | plan | run | verify | score | generate`.

use crate::exit::{self, Failure};
use crate::render;
use clap::{Parser, Subcommand};
use recipe_compiler::diag::Source;
use std::path::{Path, PathBuf};

#[derive(Parser, Debug)]
#[command(name = "recipe", version, about = "A typed language and runtime for LLM post-training recipes")]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Type-check recipes; exit 1 with diagnostics when any has errors.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Override a top-level `let` or a header field: `--set beta=0.2`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
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
}

pub fn dispatch(args: Args) -> Result<u8, Failure> {
    match args.command {
        Command::Check { files, overrides } => check(&files, &parse_overrides(&overrides)?),
        Command::Fmt { file, check, write } => fmt(&file, check, write),
        Command::Plan { file, json, overrides } => plan(&file, json, &parse_overrides(&overrides)?),
    }
}

/// `--set key=value` pairs, split at the first `=`.
pub fn parse_overrides(raw: &[String]) -> Result<Vec<(String, String)>, Failure> {
    raw.iter()
        .map(|item| match item.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                Ok((key.trim().to_string(), value.trim().to_string()))
            }
            _ => Err(Failure::Usage(format!("`--set {item}` must have the form KEY=VALUE"))),
        })
        .collect()
}

pub fn read_source(path: &Path) -> Result<Source, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::Input(format!("cannot read {}: {e}", path.display())))?;
    Ok(Source::new(path.display().to_string(), text))
}

/// Compile one recipe, turning diagnostics into a `Failure` that renders them.
pub fn compile(
    path: &Path,
    overrides: &[(String, String)],
) -> Result<(recipe_compiler::Program, Source), Failure> {
    let source = read_source(path)?;
    match recipe_compiler::compile(&source, overrides) {
        Ok(program) => Ok((program, source)),
        Err(diagnostics) => Err(Failure::Recipe(diagnostics, source)),
    }
}

fn check(files: &[PathBuf], overrides: &[(String, String)]) -> Result<u8, Failure> {
    let mut worst = exit::OK;
    for file in files {
        match compile(file, overrides) {
            Ok(_) => {}
            Err(failure @ Failure::Recipe(..)) => {
                render::failure(&failure);
                worst = worst.max(failure.exit_code());
            }
            Err(other) => return Err(other),
        }
    }
    Ok(worst)
}

fn fmt(path: &Path, check: bool, write: bool) -> Result<u8, Failure> {
    let source = read_source(path)?;
    let module = recipe_compiler::parse(&source)
        .map_err(|diagnostics| Failure::Recipe(diagnostics, source.clone()))?;
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
        print!("{formatted}");
    }
    Ok(exit::OK)
}

fn plan(path: &Path, json: bool, overrides: &[(String, String)]) -> Result<u8, Failure> {
    let (program, _) = compile(path, overrides)?;
    if json {
        println!("{}", recipe_compiler::plan::render_json(&program));
    } else {
        print!("{}", recipe_compiler::plan::render_text(&program));
    }
    Ok(exit::OK)
}
