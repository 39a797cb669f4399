//! The command line: clap definitions, resolving settings once
//! (flag > environment > config file > default), and turning each command's
//! result into output and an exit code.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::exit_codes::{self, ExitCode};
use crate::logging::{self, LogFormat};
use crate::pipeline::{run_scan, ScanOptions};

#[derive(Debug, Parser)]
#[command(
    name = "optiwatch",
    version,
    about = "Keeps Optimole's image CDN in step with the origin."
)]
pub struct Cli {
    /// Config file [default: ./watcher.toml]
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "OPTIWATCH_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,

    /// More log detail (-v debug, -vv trace)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Less log detail (-q warnings only, -qq errors only)
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "verbose")]
    pub quiet: u8,

    /// Log line format on stderr
    #[arg(
        long,
        global = true,
        env = "OPTIWATCH_LOG_FORMAT",
        value_enum,
        default_value_t
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Find changed images, invalidate them at Optimole, publish a fresh token
    Scan(ScanArgs),
    /// Run as a daemon: watch the rule folders and invalidate changes as they settle
    Watch,
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Show what would be invalidated; no API call, no state change
    #[arg(long)]
    pub dry_run: bool,
    /// Print one JSON object on stdout instead of the summary
    #[arg(long)]
    pub json: bool,
    /// Record every file's hash without invalidating anything
    #[arg(long, conflicts_with = "dry_run")]
    pub baseline: bool,
}

/// Parses the process arguments, runs the command, returns the exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::Usage
            } else {
                ExitCode::Success
            };
        }
    };
    logging::init(cli.verbose as i8 - cli.quiet as i8, cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::Failure;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            exit_codes::for_error(&e)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config_path = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from("watcher.toml"));
    let config = Config::load(&config_path)?;
    match cli.command {
        Command::Scan(args) => scan(&config, args).await,
        Command::Watch => {
            crate::watch::run(&config_path, config).await?;
            Ok(ExitCode::Success)
        }
    }
}

async fn scan(config: &Config, args: ScanArgs) -> anyhow::Result<ExitCode> {
    let opts = ScanOptions {
        dry_run: args.dry_run,
        baseline: args.baseline,
        keep_paths: args.json,
    };
    let report = run_scan(config, opts).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.human());
    }
    for error in &report.errors {
        tracing::error!(error = %error, "scan incomplete");
    }
    Ok(if report.errors.is_empty() {
        ExitCode::Success
    } else {
        ExitCode::Failure
    })
}
