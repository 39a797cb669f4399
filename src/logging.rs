//! Log output: `tracing` events to stderr, human-readable by default or one
//! JSON object per line for log shippers ([`json`]: lists as real arrays).
//! `RUST_LOG` overrides `-v`/`-q`.

mod json;

pub use json::{array, error_line, Array};

use std::io::IsTerminal;

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// `verbosity`: 0 is the default (info for optiwatch), each `-v` adds a
/// level, `-q` (negative) removes one. Dependencies stay at warn unless
/// RUST_LOG asks: their debug output is noise for an operator.
pub fn init(verbosity: i8, format: LogFormat) {
    let level = match verbosity {
        i8::MIN..=-2 => "error",
        -1 => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("warn,optiwatch={level}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_target(false);
    let result = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.event_format(json::JsonLines).try_init(),
    };
    // Tests may initialise twice in one process; the first one wins.
    drop(result);
}
