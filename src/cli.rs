//! The command line: clap definitions, resolving settings once
//! (flag > environment > config file > default), and turning each command's
//! result into output and an exit code.

use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::config::Config;
use crate::exit_codes::{self, ExitCode};
use crate::logging::{self, LogFormat};
use crate::pipeline::{run_scan, ScanOptions};
use crate::rules::RuleSet;
use crate::{check, explain, manual, status};

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
    /// Invalidate named files (mapped through the rules), URLs or asset hashes
    Invalidate(InvalidateArgs),
    /// Request a fresh cache token and publish it as configured
    Token(JsonArg),
    /// Show the URLs each path maps to and which rule matched, or why none did
    Urls(UrlsArgs),
    /// Files tracked, assets and token owed, last flush, last error
    Status(JsonArg),
    /// Check the config, rule folders, API key, store and token destinations
    Check(CheckArgs),
    /// Print a shell completion script
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff)
    Man,
}

#[derive(Debug, Args)]
pub struct JsonArg {
    /// Print one JSON object on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InvalidateArgs {
    /// Files (mapped through the rules), full URLs, or 32-character asset hashes
    #[arg(value_name = "PATH|URL|HASH")]
    pub targets: Vec<std::ffi::OsString>,
    /// Invalidate every cached image of this origin domain (repeatable)
    #[arg(long, value_name = "DOMAIN")]
    pub domain: Vec<String>,
    /// Invalidate every cached image of the account
    #[arg(long)]
    pub all: bool,
    /// Send the assets Optimole refused by name again (see `status`)
    #[arg(long)]
    pub refused: bool,
    /// Do not ask before --all
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Show what would be sent; send nothing
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub json: JsonArg,
}

#[derive(Debug, Args)]
pub struct UrlsArgs {
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<std::ffi::OsString>,
    #[command(flatten)]
    pub json: JsonArg,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Also make one harmless authenticated request (see README)
    #[arg(long)]
    pub online: bool,
    #[command(flatten)]
    pub json: JsonArg,
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
    // Before the runtime starts any thread: keys leave the environment.
    crate::secret::protect_at_start(cli.config.as_deref().unwrap_or(Path::new("watcher.toml")));
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
    // These two need no config: they describe the command line itself.
    match &cli.command {
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(*shell, &mut cmd, "optiwatch", &mut std::io::stdout());
            return Ok(ExitCode::Success);
        }
        Command::Man => {
            crate::manpage::render(Cli::command(), &mut std::io::stdout().lock())?;
            return Ok(ExitCode::Success);
        }
        _ => {}
    }
    let config = Config::load(&config_path)?;
    match cli.command {
        Command::Scan(args) => scan(&config, args).await,
        Command::Watch => match crate::watch::run(&config_path, config).await {
            Ok(()) => Ok(ExitCode::Success),
            // A daemon's last word goes to its log (journald, log shippers).
            Err(e) => {
                crate::watch::log_stop(&e);
                Ok(exit_codes::for_error(&e))
            }
        },
        Command::Invalidate(args) => {
            let request = manual::InvalidateRequest {
                targets: args.targets,
                domains: args.domain,
                all: args.all,
                refused: args.refused,
                yes: args.yes,
                dry_run: args.dry_run,
            };
            let report = manual::invalidate(&config, request).await?;
            emit(args.json.json, &report, || report.human(), &report.errors)
        }
        Command::Token(args) => {
            let report = manual::token(&config).await?;
            if !args.json && report.errors.is_empty() {
                println!("{}", report.token.as_deref().unwrap_or_default());
                return Ok(ExitCode::Success);
            }
            emit(args.json, &report, || report.human(), &report.errors)
        }
        Command::Urls(args) => {
            let rules = RuleSet::new(&config.rules)?;
            let found = explain::explain(&rules, &args.paths)?;
            let unmapped: Vec<String> = found
                .iter()
                .filter(|e| e.urls.is_empty())
                .map(|e| e.path.clone())
                .collect();
            emit(args.json.json, &found, || explain::human(&found), &unmapped)
        }
        Command::Status(args) => {
            let status = status::status(&config)?;
            emit(args.json, &status, || status.human(), &[])
        }
        Command::Check(args) => {
            let findings = check::check(&config, args.online).await;
            let failed: Vec<String> = findings
                .iter()
                .filter(|f| !f.ok)
                .map(|f| f.detail.clone())
                .collect();
            emit(
                args.json.json,
                &findings,
                || check::human(&findings),
                &failed,
            )
        }
        Command::Completions { .. } | Command::Man => unreachable!("handled above"),
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
        println!("{}", serde_json::to_string(value)?);
    } else {
        print!("{}", text());
    }
    Ok(if failures.is_empty() {
        ExitCode::Success
    } else {
        ExitCode::Failure
    })
}

async fn scan(config: &Config, args: ScanArgs) -> anyhow::Result<ExitCode> {
    let opts = ScanOptions {
        dry_run: args.dry_run,
        baseline: args.baseline,
        keep_paths: args.json,
        progress: !args.json,
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
