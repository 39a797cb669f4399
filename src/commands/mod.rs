//! The subcommands, one file each. A command takes its parsed arguments
//! (`cli` only parses and dispatches), opens a [`crate::session::Session`],
//! calls the engine and renders the result as text or `--json`. Nothing
//! outside this folder imports a command.

pub mod check;
pub mod history;
mod host;
pub mod init;
pub mod invalidate;
pub mod json;
mod probe;
pub mod scan;
pub(crate) mod sent;
pub mod status;
pub mod token;
pub mod urls;
pub mod watch;

use clap::Args;

use crate::exit_codes::ExitCode;

/// `--timeout`: how long a command waits for a running daemon it handed
/// its work to (see [`crate::control`]).
#[derive(Debug, Args)]
pub struct WaitArg {
    /// Beside a running `watch`: how long to wait for it to send the work; after that the work stays queued in the daemon (exit 1)
    #[arg(long, value_name = "DURATION", default_value = crate::control::client::DEFAULT_TIMEOUT, value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct JsonArg {
    /// Print one JSON object on stdout
    #[arg(long)]
    pub json: bool,
}

/// How much a command prints on stdout: the global `-v` / `-q`. (`--json`
/// is printed whatever this says: it was asked for.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// `-q`: nothing but errors (stderr) and the exit code.
    Quiet,
    Normal,
    /// `-v`: lists are not cut short.
    Verbose,
}

impl Output {
    pub fn from_flags(verbose: u8, quiet: u8) -> Output {
        match (verbose, quiet) {
            (_, 1..) => Output::Quiet,
            (1.., _) => Output::Verbose,
            _ => Output::Normal,
        }
    }
}

/// Prints a command's result as JSON or text; any failure means exit 1.
fn emit<T: serde::Serialize>(
    json: bool,
    value: &T,
    text: impl FnOnce() -> String,
    failures: &[String],
) -> anyhow::Result<ExitCode> {
    if json {
        json::print(value)?;
    } else {
        print!("{}", text());
    }
    Ok(exit_code(failures))
}

/// With `-q` the errors are all a command prints: on stderr, one line each.
fn log_errors(errors: &[String]) {
    for error in errors {
        tracing::error!(error = %error, "failed");
    }
}

/// Exit 1 when anything failed.
fn exit_code(failures: &[String]) -> ExitCode {
    if failures.is_empty() {
        ExitCode::Success
    } else {
        ExitCode::Failure
    }
}
