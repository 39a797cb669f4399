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
use super::JsonArg;
use crate::accounts::AccountId;
use crate::api::ApiError;
use crate::config::Config;
use crate::display::{from_cwd, show_path};
use crate::exit_codes::{ExitCode, UsageError};
use crate::flush::{api_error, Flusher, Policy, Purge};
use crate::rules::explain::why_not;
use crate::rules::{RuleSet, Verdict};
use crate::session::{Access, Session};
use crate::state::{Changes, Owed, Store};

#[derive(Debug, Args)]
pub struct InvalidateArgs {
    /// Files (mapped through the rules), full URLs, or 32-character asset hashes
    #[arg(value_name = "PATH|URL|HASH")]
    pub targets: Vec<OsString>,
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

pub async fn run(config: &Config, args: InvalidateArgs) -> anyhow::Result<ExitCode> {
    let report = invalidate(config, &args).await?;
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
            });
        } else if is_asset_hash(text) && !path.exists() {
            assets.push(Owed {
                asset: text.to_string(),
                account: AccountId::Default,
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
                    let r = rules.get(rule);
                    assets.extend(r.owed(alias.strip_prefix(&r.dir).unwrap_or(&alias)));
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
            Ok(r.owed(path.strip_prefix(&r.dir).unwrap_or(path)))
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
        domains: req.domain.clone(),
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
        confirm_all()?;
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
    let purges = req
        .domain
        .iter()
        .map(|d| Purge::Domain(d.clone()))
        .chain(req.all.then_some(Purge::Account));
    let api_account = accounts
        .api_account()
        .context("the config has no [api] account (a bug)")?;
    let mut misconfigured = None;
    for purge in purges {
        let Err(e) = flusher
            .purge(store, api_account, &purge, policy.retry)
            .await
        else {
            continue;
        };
        match api_error(&e) {
            Some(ApiError::Misconfigured { .. }) => {
                misconfigured.get_or_insert(e);
            }
            _ => report.errors.push(format!("{e:#}")),
        }
    }
    if let Some(e) = misconfigured {
        return Err(UsageError(format!("{e:#}")).into());
    }
    report.flush(&mut session, &mut flusher, policy).await?;
    Ok(report)
}

/// `--all` drops every cached image of the account: ask first.
fn confirm_all() -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(UsageError(
            "--all invalidates every cached image of the account: add --yes to confirm (no terminal to ask on)".into(),
        )
        .into());
    }
    eprint!("invalidate EVERY cached image of this Optimole account? [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(UsageError("cancelled: nothing was invalidated".into()).into())
    }
}
