//! The `recipe` command: parses arguments, calls the compiler and the runtime, renders
//! diagnostics and progress. The only place that does terminal I/O and colour.

mod cli;
mod compare;
mod exit;
mod loss;
mod progress;
mod render;
mod runs;

use clap::Parser;
use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = match cli::Args::try_parse() {
        Ok(args) => args,
        Err(err) => {
            // clap prints help/version to stdout with exit 0, usage errors to stderr with exit 2.
            let _ = err.print();
            return ExitCode::from(if err.use_stderr() { exit::USAGE } else { exit::OK });
        }
    };
    match cli::dispatch(args) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            render::failure(&failure);
            ExitCode::from(failure.exit_code())
        }
    }
}
