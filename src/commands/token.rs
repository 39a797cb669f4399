//! `optiwatch token`: a fresh token for every account, published as
//! configured, after anything still owed (so the token comes after it).

use super::sent::SendReport;
use super::{JsonArg, Output};
use crate::config::Config;
use crate::control::client;
use crate::control::protocol::Op;
use crate::exit_codes::ExitCode;
use crate::flush::{Flusher, Policy};
use crate::session::{Access, Session};

#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    #[command(flatten)]
    pub json: JsonArg,
    #[command(flatten)]
    pub wait: super::WaitArg,
}

pub async fn run(config: &Config, args: TokenArgs, output: Output) -> anyhow::Result<ExitCode> {
    // Beside a running daemon it asks for the token, at once.
    let report = match client::delegate(config, Op::Token, args.wait.timeout).await? {
        Some(reply) => client::sent_report(reply)?,
        None => token(config).await?,
    };
    let args = args.json;
    if !args.json && output == Output::Quiet {
        super::log_errors(&report.errors);
        return Ok(super::exit_code(&report.errors));
    }
    if !args.json && report.errors.is_empty() {
        println!("{}", report.token.as_deref().unwrap_or_default());
        return Ok(ExitCode::Success);
    }
    super::emit(args.json, &report, || report.human(), &report.errors)
}

/// `optiwatch token`: a fresh token, published as configured. Anything
/// still owed is sent first, so the token comes after it.
/// (Every account's: each site gets its own fresh token.)
async fn token(config: &Config) -> anyhow::Result<SendReport> {
    let mut session = Session::open(config, Access::ReadWrite)?;
    let (store, accounts) = session.parts()?;
    for account in accounts {
        store.owe_token(&account.id)?;
    }
    let mut report = SendReport::default();
    let mut flusher = Flusher::new(&config.api);
    report
        .flush(&mut session, &mut flusher, Policy::complete(&config.api))
        .await?;
    Ok(report)
}
