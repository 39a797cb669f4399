//! The command line: the clap definitions, resolving settings once
//! (flag > environment > config file > default), and dispatching to the
//! command in [`crate::commands`], which renders its result and picks the
//! exit code.

use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand};

use crate::commands::check::CheckArgs;
use crate::commands::history::HistoryArgs;
use crate::commands::init::InitArgs;
use crate::commands::invalidate::InvalidateArgs;
use crate::commands::scan::ScanArgs;
use crate::commands::urls::UrlsArgs;
use crate::commands::{self, JsonArg};
use crate::config::{lookup, Config};
use crate::exit_codes::{self, ExitCode};
use crate::logging::{self, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "optiwatch",
    version,
    about = "Keeps Optimole's image CDN in step with the origin."
)]
pub struct Cli {
    /// Config file [default: $OPTIWATCH_CONFIG, then ./watcher.toml, then /etc/optiwatch/watcher.toml]
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// More detail: logs at debug (-vv trace); scan lists every changed path
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Quiet: no summary on stdout, only errors; logs at warn (-qq: errors only)
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
    /// Write a commented config for a media folder or WordPress install
    Init(InitArgs),
    /// Find changed images, invalidate them at Optimole, publish a fresh token
    Scan(ScanArgs),
    /// Run as a daemon: watch the rule folders and invalidate changes as they settle
    Watch,
    /// Invalidate named files (mapped through the rules), URLs or asset hashes
    Invalidate(InvalidateArgs),
    /// Request a fresh cache token and publish it as configured
    Token(crate::commands::token::TokenArgs),
    /// Show the URLs each path maps to and which rule matched, or why none did
    Urls(UrlsArgs),
    /// Files tracked, assets and token owed, last flush, last error
    Status(JsonArg),
    /// What Optimole accepted, when, why and in which request
    #[command(
        long_about = "What Optimole accepted, when, why and in which request: one line per \
invalidated asset, newest last (time in RFC 3339 UTC, reason, account, URL, path), then the \
tokens received. Reasons: changed, deleted, new, alias (a link to, or another name of, a \
changed file), manual (invalidate PATH|URL|HASH), resent (invalidate --refused), domain, all. \
--json prints one object: {\"version\":1,\"entries\":[..],\"tokens\":[..]}."
    )]
    History(HistoryArgs),
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
    crate::secret::protect_at_start(&lookup::best_guess(cli.config.as_deref()));
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
    let log_format = cli.log_format;
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            match log_format {
                logging::LogFormat::Human => eprintln!("error: {e:#}"),
                // A log shipper reading stderr gets the last word as JSON too.
                logging::LogFormat::Json => eprintln!("{}", logging::error_line(&format!("{e:#}"))),
            }
            exit_codes::for_error(&e)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // These need no config: they describe the command line itself, or
    // write the config.
    let command = match cli.command {
        Command::Init(args) => return commands::init::run(args),
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "optiwatch", &mut std::io::stdout());
            return Ok(ExitCode::Success);
        }
        Command::Man => {
            crate::manpage::render(Cli::command(), &mut std::io::stdout().lock())?;
            return Ok(ExitCode::Success);
        }
        command => command,
    };
    let config_path = lookup::locate(cli.config.as_deref())?;
    let config = Config::load(&config_path)?;
    let output = commands::Output::from_flags(cli.verbose, cli.quiet);
    match command {
        Command::Scan(args) => commands::scan::run(&config, args, output).await,
        Command::Watch => commands::watch::run(&config_path, config).await,
        Command::Invalidate(args) => commands::invalidate::run(&config, args, output).await,
        Command::Token(args) => commands::token::run(&config, args, output).await,
        Command::Urls(args) => commands::urls::run(&config, args),
        Command::Status(args) => commands::status::run(&config, args),
        Command::History(args) => commands::history::run(&config, args),
        Command::Check(args) => commands::check::run(&config, args).await,
        Command::Init(_) | Command::Completions { .. } | Command::Man => {
            // Returned by the match above, before any config is loaded: a
            // fact of this function, not of any input.
            unreachable!("handled above")
        }
    }
}
