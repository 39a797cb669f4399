//! The subcommands, one file each. A command takes its parsed arguments
//! (`cli` only parses and dispatches), opens a [`crate::session::Session`],
//! calls the engine and renders the result as text or `--json`. Nothing
//! outside this folder imports a command.

pub mod check;
pub mod history;
pub mod invalidate;
pub mod scan;
mod sent;
pub mod status;
pub mod token;
pub mod urls;
pub mod watch;

use clap::Args;

use crate::exit_codes::ExitCode;

#[derive(Debug, Args)]
pub struct JsonArg {
    /// Print one JSON object on stdout
    #[arg(long)]
    pub json: bool,
}

/// Prints a command's result as JSON or text; any failure means exit 1.
fn emit<T: serde::Serialize>(
    json: bool,
    value: &T,
    text: impl FnOnce() -> String,
    failures: &[String],
) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string(value)?);
    } else {
        print!("{}", text());
    }
    Ok(exit_code(failures))
}

/// Exit 1 when anything failed.
fn exit_code(failures: &[String]) -> ExitCode {
    if failures.is_empty() {
        ExitCode::Success
    } else {
        ExitCode::Failure
    }
}
