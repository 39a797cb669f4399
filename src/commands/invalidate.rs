//! `optiwatch invalidate`: the manual change source.
//!
//! What a person names on the command line (files, URLs, asset hashes) goes
//! through the same outbox as detected changes, so it is batched, retried
//! and never lost like everything else; whole-domain and whole-account
//! invalidations are single calls followed by a fresh token.

use std::ffi::OsString;
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use anyhow::Context;
use clap::Args;

use super::sent::SendReport;
use super::{JsonArg, Output};
use crate::accounts::AccountId;
use crate::api::ApiError;
use crate::config::Config;
use crate::control::client;
use crate::control::protocol::{Asset, Invalidation, Op};
use crate::display::{from_cwd, show_path};
use crate::exit_codes::{ExitCode, UsageError};
use crate::flush::{api_error, Flusher, Policy, Purge};
use crate::rules::explain::why_not;
use crate::rules::{RuleSet, Verdict};
use crate::session::{Access, Session};
use crate::state::{Changes, Owed, Reason, Store};

#[derive(Debug, Args)]
pub struct InvalidateArgs {
    /// Files (mapped through the rules), full URLs, or 32-character asset hashes
    #[arg(value_name = "PATH|URL|HASH")]
    pub targets: Vec<OsString>,
    /// Invalidate every cached image of this origin host name, e.g. example.com (repeatable)
    #[arg(long, value_name = "DOMAIN")]
    pub domain: Vec<String>,
    /// Invalidate every cached image of every account (or of --account's)
    #[arg(long)]
    pub all: bool,
    /// With --all and --domain: only this account (`default` is the [api] key's)
    #[arg(long, value_name = "NAME")]
    pub account: Option<String>,
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
    #[command(flatten)]
    pub wait: super::WaitArg,
}

pub async fn run(
    config: &Config,
    args: InvalidateArgs,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let report = invalidate(config, &args).await?;
    if !args.json.json && output == Output::Quiet {
        super::log_errors(&report.errors);
        return Ok(super::exit_code(&report.errors));
    }
    super::emit(args.json.json, &report, || report.human(), &report.errors)
}

/// Resolves every target to owed assets; a path no rule maps is a usage
/// error. A URL goes to the account of the rule serving it (the `[api]`
/// account if none does), a hash to the `[api]` account.
///
/// A path's recorded aliases (links leading to it, see
/// [`crate::links::alias::served_with`]) are owed with it: the web server
/// serves the same bytes there.
pub fn resolve_targets(
    rules: &RuleSet,
    store: Option<&Store>,
    targets: &[OsString],
) -> anyhow::Result<Vec<Owed>> {
    let mut assets = Vec::new();
    for target in targets {
        let text = target.to_str().unwrap_or("");
        let path = from_cwd(target)?;
        let is_url = text.starts_with("https://") || text.starts_with("http://");
        if is_url && !path.exists() {
            url::Url::parse(text)
                .map_err(|e| UsageError(format!("{text:?} is not a valid URL: {e}")))?;
            let account = rules
                .rules()
                .iter()
                .find(|r| {
                    r.prefixes
                        .iter()
                        .any(|p| text.starts_with(&format!("{p}/")))
                })
                .map(|r| r.account.clone())
                .unwrap_or(AccountId::Default);
            assets.push(Owed {
                asset: text.to_string(),
                account,
                reason: Reason::Manual,
                path: None,
            });
        } else if is_asset_hash(text) && !path.exists() {
            assets.push(Owed {
                asset: text.to_string(),
                account: AccountId::Default,
                reason: Reason::Manual,
                path: None,
            });
        } else {
            // `..`, `.` and links resolved, from any working directory.
            let cwd = std::env::current_dir().context("cannot read the current directory")?;
            let path = crate::paths::resolve(&cwd, target, rules);
            assets.extend(urls_of(rules, &path)?);
            let served = match store {
                Some(store) => crate::links::alias::served_with(store, &path)?,
                None => Vec::new(),
            };
            for alias in served {
                if let Verdict::Mapped { rule } = rules.verdict(&alias) {
                    assets.extend(rules.get(rule).owed(&alias, Reason::Manual));
                }
            }
        }
    }
    Ok(assets)
}

/// Optimole's asset id: 32 letters and digits.
fn is_asset_hash(text: &str) -> bool {
    text.len() == 32 && text.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn urls_of(rules: &RuleSet, path: &Path) -> anyhow::Result<Vec<Owed>> {
    match rules.verdict(path) {
        Verdict::Mapped { rule } => {
            let r = rules.get(rule);
            Ok(r.owed(path, Reason::Manual))
        }
        other => Err(UsageError(format!(
            "{}: {}; run `optiwatch urls` on it for details",
            show_path(path),
            why_not(rules, &other)
        ))
        .into()),
    }
}

async fn invalidate(config: &Config, req: &InvalidateArgs) -> anyhow::Result<SendReport> {
    if req.targets.is_empty() && req.domain.is_empty() && !req.all && !req.refused {
        return Err(UsageError(
            "nothing to invalidate: name files, URLs or asset hashes, or use --domain, --all or --refused"
                .into(),
        )
        .into());
    }
    if req.account.is_some() && !req.all && req.domain.is_empty() {
        return Err(UsageError(
            "--account chooses the account of --all or --domain: add one of them (files and URLs go to the account of the rule serving them)".into(),
        )
        .into());
    }
    let mut domains = Vec::new();
    for text in &req.domain {
        let (host, note) = super::host::bare_host(text)?;
        if let Some(note) = note {
            tracing::info!("{note}");
        }
        domains.push(host);
    }
    let rules = RuleSet::new(&config.rules)?;
    let owed = {
        let session = crate::links::alias::recorded(config);
        resolve_targets(
            &rules,
            session.as_ref().and_then(|s| s.store()),
            &req.targets,
        )?
    };
    let mut report = SendReport {
        assets: owed.iter().map(|o| o.asset.clone()).collect(),
        domains: domains.clone(),
        all: req.all,
        dry_run: req.dry_run,
        ..SendReport::default()
    };
    if req.dry_run {
        if req.refused {
            if let Some(store) = Session::open(config, Access::ReadOnly)?.store() {
                report
                    .assets
                    .extend(store.refused()?.into_iter().map(|r| r.asset));
            }
        }
        return Ok(report);
    }
    if req.all && !req.yes {
        confirm_all(req.account.as_deref())?;
    }
    // Beside a running daemon: it owes, sends and answers.
    let op = Op::Invalidate(Invalidation {
        assets: owed.iter().map(Asset::from).collect(),
        domains: domains.clone(),
        all: req.all,
        account: req.account.clone(),
        refused: req.refused,
    });
    if let Some(reply) = client::delegate(config, op, req.wait.timeout).await? {
        return client::sent_report(reply);
    }
    let mut session = Session::open(config, Access::ReadWrite)?;
    if req.refused {
        let again = session.writable()?.owe_refused()?;
        tracing::info!(assets = again.len(), "refused assets are owed again");
        report.assets.extend(again);
        // A refused asset of an account the config no longer has goes to
        // the [api] key's, like any other owed asset.
        session.adopt_orphans()?;
    }
    let (store, accounts) = session.parts()?;
    // Named assets become owed first, so a failure below keeps them.
    store.record(&Changes {
        assets: owed,
        ..Changes::default()
    })?;
    let mut flusher = Flusher::new(&config.api);
    let policy = Policy::complete(&config.api);
    let purges = domains
        .iter()
        .map(|d| Purge::Domain(d.clone()))
        .chain(req.all.then_some(Purge::Account));
    let chosen = match &req.account {
        Some(name) => Some(accounts.by_name(name).map_err(UsageError)?),
        None => None,
    };
    let mut misconfigured = None;
    for purge in purges {
        for account in purge.targets(accounts, chosen) {
            let Err(e) = flusher.purge(store, account, &purge, policy.retry).await else {
                continue;
            };
            let who = format!("account {}: ", account.id);
            match api_error(&e) {
                Some(ApiError::Misconfigured { .. }) => {
                    misconfigured.get_or_insert(e);
                }
                _ => report.errors.push(format!("{who}{e:#}")),
            }
        }
    }
    if let Some(e) = misconfigured {
        return Err(UsageError(format!("{e:#}")).into());
    }
    report.flush(&mut session, &mut flusher, policy).await?;
    Ok(report)
}

/// `--all` drops every cached image of the account: ask first.
fn confirm_all(account: Option<&str>) -> anyhow::Result<()> {
    let whose = match account {
        Some(name) => format!("the Optimole account {name}"),
        None => "every Optimole account of the config".to_string(),
    };
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(UsageError(
            format!("--all invalidates every cached image of {whose}: add --yes to confirm (no terminal to ask on)"),
        )
        .into());
    }
    eprint!("invalidate EVERY cached image of {whose}? [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(UsageError("cancelled: nothing was invalidated".into()).into())
    }
}
