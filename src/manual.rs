//! The manual change source: `optiwatch invalidate` and `optiwatch token`.
//!
//! What a person names on the command line (files, URLs, asset hashes) goes
//! through the same outbox as detected changes, so it is batched, retried
//! and never lost like everything else; whole-domain and whole-account
//! invalidations are single calls followed by a fresh token.

use std::ffi::OsString;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use serde::Serialize;

use crate::api::ApiError;
use crate::config::Config;
use crate::exit_codes::UsageError;
use crate::flush::{adopt_orphans, api_error, flush_lanes, lanes, refused_error, Flushed, Lane};
use crate::retry::{retry, RetryPolicy};
use crate::rules::{RuleSet, Verdict};
use crate::state::{Changes, Owed, Store, StoreLock};

#[derive(Debug, Default)]
pub struct InvalidateRequest {
    pub targets: Vec<OsString>,
    pub domains: Vec<String>,
    pub all: bool,
    /// Send the refused list again (see `state::refused`).
    pub refused: bool,
    pub yes: bool,
    pub dry_run: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct ManualReport {
    /// Assets (URLs or hashes) sent, or with `dry_run` to be sent.
    pub assets: Vec<String>,
    pub domains: Vec<String>,
    pub all: bool,
    pub dry_run: bool,
    /// Assets Optimole accepted.
    pub invalidated: Vec<String>,
    pub requests: u32,
    pub token: Option<String>,
    pub pending: Vec<String>,
    /// Assets Optimole refused by name, after this run.
    pub refused: Vec<String>,
    pub errors: Vec<String>,
}

/// Resolves every target to owed assets; a path no rule maps is a usage
/// error. A URL goes to the account of the rule serving it (the `[api]`
/// account if none does), a hash to the `[api]` account.
pub fn resolve_targets(rules: &RuleSet, targets: &[OsString]) -> anyhow::Result<Vec<Owed>> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let mut assets = Vec::new();
    for target in targets {
        let text = target.to_str().unwrap_or("");
        let path = cwd.join(target);
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
                .unwrap_or_default();
            assets.push(Owed {
                asset: text.to_string(),
                account,
            });
        } else if is_asset_hash(text) && !path.exists() {
            assets.push(Owed {
                asset: text.to_string(),
                account: String::new(),
            });
        } else {
            // `..`, `.` and links resolved, from any working directory.
            assets.extend(urls_of(rules, &crate::paths::resolve(&cwd, target, rules))?);
        }
    }
    Ok(assets)
}

/// Optimole's asset id: 32 letters and digits.
fn is_asset_hash(text: &str) -> bool {
    text.len() == 32 && text.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn urls_of(rules: &RuleSet, path: &Path) -> anyhow::Result<Vec<Owed>> {
    let path = normalize(path);
    match rules.verdict(&path) {
        Verdict::Mapped { rule } => {
            let r = rules.get(rule);
            Ok(r.owed(path.strip_prefix(&r.dir).unwrap_or(&path)))
        }
        other => Err(UsageError(format!(
            "{}: {}; run `optiwatch urls` on it for details",
            crate::report::show_path(&path),
            crate::explain::why_not(rules, &other)
        ))
        .into()),
    }
}

/// Drops `.` components (no file system access: the file may be gone).
fn normalize(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect()
}

pub async fn invalidate(config: &Config, req: InvalidateRequest) -> anyhow::Result<ManualReport> {
    if req.targets.is_empty() && req.domains.is_empty() && !req.all && !req.refused {
        return Err(UsageError(
            "nothing to invalidate: name files, URLs or asset hashes, or use --domain, --all or --refused"
                .into(),
        )
        .into());
    }
    let rules = RuleSet::new(&config.rules)?;
    let owed = resolve_targets(&rules, &req.targets)?;
    let mut report = ManualReport {
        assets: owed.iter().map(|o| o.asset.clone()).collect(),
        domains: req.domains.clone(),
        all: req.all,
        dry_run: req.dry_run,
        ..ManualReport::default()
    };
    if req.dry_run {
        if req.refused && config.state.exists() {
            let store = Store::open(&config.state)?;
            report
                .assets
                .extend(store.refused()?.into_iter().map(|r| r.asset));
        }
        return Ok(report);
    }
    if req.all && !req.yes {
        confirm_all()?;
    }
    let (_lock, mut store, lanes) = open(config)?;
    if req.refused {
        let again = store.owe_refused()?;
        tracing::info!(assets = again.len(), "refused assets are owed again");
        report.assets.extend(again);
        // A refused asset of an account the config no longer has goes to
        // the [api] key's, like any other owed asset.
        adopt_orphans(&mut store, &lanes)?;
    }
    let client = &lanes[0].client;
    let policy = RetryPolicy::bounded(config.api.retry_for);
    // Named assets become owed first, so a failure below keeps them.
    store.record(&Changes {
        assets: owed,
        ..Changes::default()
    })?;
    let mut wide = Vec::new();
    for domain in &req.domains {
        wide.push(
            retry(policy, "invalidate domain", || {
                client.invalidate_domain(domain)
            })
            .await
            .map_err(|e| anyhow!(e))
            .with_context(|| format!("invalidating domain {domain} failed")),
        );
    }
    if req.all {
        wide.push(
            retry(policy, "invalidate all", || client.invalidate_all())
                .await
                .map_err(|e| anyhow!(e))
                .context("invalidating the whole account failed"),
        );
    }
    for result in wide {
        match result {
            Ok(()) => store.owe_token("")?,
            Err(e) if matches!(api_error(&e), Some(ApiError::Misconfigured { .. })) => {
                return Err(UsageError(format!("{e:#}")).into());
            }
            Err(e) => report.errors.push(format!("{e:#}")),
        }
    }
    flush_and_report(&mut store, &lanes, config, policy, &mut report).await?;
    Ok(report)
}

/// The lock, the store and a lane per account, for a manual command.
fn open(config: &Config) -> anyhow::Result<(StoreLock, Store, Vec<Lane>)> {
    let lock = StoreLock::acquire(&config.state)?;
    let mut store = Store::open(&config.state)?;
    let lanes = lanes(config)?;
    adopt_orphans(&mut store, &lanes)?;
    Ok((lock, store, lanes))
}

/// `optiwatch token`: a fresh token, published as configured. Anything
/// still owed is sent first, so the token comes after it.
/// (Every account's: each site gets its own fresh token.)
pub async fn token(config: &Config) -> anyhow::Result<ManualReport> {
    let (_lock, mut store, lanes) = open(config)?;
    for lane in &lanes {
        store.owe_token(&lane.account)?;
    }
    let mut report = ManualReport::default();
    let policy = RetryPolicy::bounded(config.api.retry_for);
    flush_and_report(&mut store, &lanes, config, policy, &mut report).await?;
    Ok(report)
}

async fn flush_and_report(
    store: &mut Store,
    lanes: &[Lane],
    config: &Config,
    policy: RetryPolicy,
    report: &mut ManualReport,
) -> anyhow::Result<()> {
    let mut flushed = Flushed::default();
    let failed = flush_lanes(store, lanes, &config.api, policy, true, &[], &mut flushed).await?;
    report.errors.extend(failed.into_iter().map(|e| e.message));
    report.errors.extend(refused_error(&flushed.refused));
    report.invalidated = flushed.invalidated;
    report.token = flushed.token;
    report.requests = lanes.iter().map(|l| l.client.requests()).sum();
    report.pending = store.owed()?;
    report.refused = store.refused()?.into_iter().map(|r| r.asset).collect();
    Ok(())
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

impl ManualReport {
    pub fn human(&self) -> String {
        let mut out = String::new();
        if self.dry_run {
            out.push_str("dry run: would invalidate\n");
            for asset in &self.assets {
                out.push_str(&format!("  {asset}\n"));
            }
            for domain in &self.domains {
                out.push_str(&format!("  every image of domain {domain}\n"));
            }
            if self.all {
                out.push_str("  every image of the account\n");
            }
            return out;
        }
        out.push_str(&format!(
            "invalidated {} asset(s){}{}; {} API request(s); {} asset(s) still owed\n",
            self.invalidated.len(),
            if self.domains.is_empty() {
                String::new()
            } else {
                format!(", domain(s) {}", self.domains.join(", "))
            },
            if self.all { ", the whole account" } else { "" },
            self.requests,
            self.pending.len()
        ));
        if !self.refused.is_empty() {
            out.push_str(&format!(
                "{} asset(s) refused by optimole (see `optiwatch status`)\n",
                self.refused.len()
            ));
        }
        if let Some(token) = &self.token {
            out.push_str(&format!("cache token: {token}\n"));
        }
        out
    }
}
