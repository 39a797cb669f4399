//! `optiwatch token`: a fresh token for every account, published as
//! configured, after anything still owed (so the token comes after it).

use super::sent::SendReport;
use super::{JsonArg, Output};
use crate::config::Config;
use crate::exit_codes::ExitCode;
use crate::flush::{Flusher, Policy};
use crate::session::{Access, Session};

pub async fn run(config: &Config, args: JsonArg, output: Output) -> anyhow::Result<ExitCode> {
    let report = token(config).await?;
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
