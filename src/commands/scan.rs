//! `optiwatch scan`: the one-shot run, in data-flow order: send what
//! earlier runs still owe → walk and detect → record (hashes and outbox in
//! one transaction) → flush in batches → token → publish. The detection
//! pass is the daemon's too ([`crate::scan::pass`]); this file adds the
//! flushes around it and the report.

pub(crate) mod report;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use super::Output;
use crate::config::Config;
use crate::control::client;
use crate::control::protocol::{Op, Reply};
use crate::display::show_path;
use crate::exit_codes::ExitCode;
use crate::flush::{refused_error, Flusher, Policy, Sent, TokenWhen};
use crate::progress::Progress;
use crate::rules::RuleSet;
use crate::scan::pass::{detect, plan, record, Baseline, Recording};
use crate::scan::{Detected, Paths, Scope, Tally};
use crate::session::{Access, Session};
use report::{Counts, ScanReport};

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Show what would be invalidated; no API call, no state change
    #[arg(long)]
    pub dry_run: bool,
    /// Print one JSON object on stdout instead of the summary
    #[arg(long)]
    pub json: bool,
    /// With --json: list every scanned and unchanged path too
    #[arg(long, requires = "json")]
    pub all_paths: bool,
    /// Record every file's hash without invalidating anything
    #[arg(long, conflicts_with = "dry_run")]
    pub baseline: bool,
    #[command(flatten)]
    pub wait: super::WaitArg,
}

pub async fn run(config: &Config, args: ScanArgs, output: Output) -> anyhow::Result<ExitCode> {
    let report = match delegated(config, &args).await? {
        Some(report) => report,
        None => scan(config, &args, output).await?,
    };
    if args.json {
        super::json::print(&report)?;
    } else if output != Output::Quiet {
        print!("{}", report.human(output));
    }
    for error in &report.errors {
        tracing::error!(error = %error, "scan incomplete");
    }
    Ok(super::exit_code(&report.errors))
}

/// Beside a running daemon, it does the scan (its reconcile) and answers
/// once the changes it found are sent and covered; `None`: no daemon.
/// Dry runs and baselines stay local (the latter then meets the lock).
async fn delegated(config: &Config, opts: &ScanArgs) -> anyhow::Result<Option<ScanReport>> {
    if opts.dry_run || opts.baseline {
        return Ok(None);
    }
    let op = Op::Scan {
        all_paths: opts.all_paths,
    };
    match client::delegate(config, op, opts.wait.timeout).await? {
        None => Ok(None),
        Some(Reply::Scan { report }) => Ok(Some(*report)),
        Some(other) => Err(client::unexpected(&other)),
    }
}

/// Runs one scan. `Err` means nothing could be attempted (config, key,
/// store); failures after that are in the report's `errors`.
async fn scan(config: &Config, opts: &ScanArgs, output: Output) -> anyhow::Result<ScanReport> {
    let rules = RuleSet::new(&config.rules)?;
    // A dry run only reads: it needs no lock and must not create the store.
    let access = match opts.dry_run {
        true => Access::ReadOnly,
        false => Access::ReadWrite,
    };
    let mut session = Session::open(config, access)?;
    let mut report = ScanReport {
        dry_run: opts.dry_run,
        ..ScanReport::default()
    };
    let mut sent = Sent::default();
    // An account whose flush failed is taken as down for this run (the
    // flusher skips it): a second attempt would only spend another retry
    // budget.
    let mut flusher = Flusher::new(&config.api);
    let policy = Policy::complete(&config.api);
    let mut failed_accounts = Vec::new();
    let send = !opts.dry_run && !opts.baseline;

    // What earlier runs left owed goes out before the (possibly long) walk.
    // Tokens wait until after the walk, so one run asks for one per account.
    if send {
        let (store, accounts) = session.parts()?;
        if store.owed_count()? > 0 {
            let early = Policy {
                token: TokenWhen::Later,
                ..policy
            };
            failed_accounts = flusher.run_all(store, accounts, early, &mut sent).await?;
        }
    }

    let force = match opts.baseline {
        true => Baseline::Everywhere,
        false => Baseline::WhereDue,
    };
    // The report lists what changed; `--all-paths` every file too. The
    // summary has a progress bar on a terminal, unless `-q`.
    let paths = match opts.all_paths {
        true => Paths::Listed,
        false => Paths::Changes,
    };
    let recording = match opts.dry_run {
        true => Recording::Off,
        false => Recording::InChunks,
    };
    let mut plan = plan(session.store(), &rules, config, force, paths)?;
    report.baseline = plan.baseline.iter().any(|b| *b);
    if !opts.json && output != Output::Quiet {
        plan.progress = Progress::on_terminal().map(Arc::new);
    }
    let (detected, _) = tokio::task::block_in_place(|| {
        detect(session.store_mut(), &rules, &plan, &Scope::All, recording)
    })?;
    if let Some(progress) = &plan.progress {
        progress.finish();
    }
    fill(&mut report, &detected, paths);

    if opts.dry_run {
        let mut would = match session.store() {
            Some(store) => store.owed()?,
            None => Vec::new(),
        };
        would.extend(detected.changes.assets.iter().map(|o| o.asset.clone()));
        report.would_invalidate = unique(would);
        report.pending = report.would_invalidate.clone();
        report.counts.pending = report.pending.len();
        return Ok(report);
    }
    let (store, accounts) = session.parts()?;
    record(store, &detected)?;
    if send {
        let failed = flusher.run_all(store, accounts, policy, &mut sent).await?;
        failed_accounts.extend(failed);
    }
    report.errors.extend(failed_accounts);
    report.errors.extend(refused_error(&sent.refused));
    report.refused = store.refused()?.into_iter().map(|r| r.asset).collect();
    report.counts.refused = report.refused.len();
    report.requests = accounts.requests();
    report.invalidated = sent.invalidated;
    report.token = sent.token;
    report.pending = store.owed()?;
    let history = &config.history;
    if let Err(e) = store.prune_history(history.keep, history.max_rows) {
        tracing::warn!(
            error = format!("{e:#}"),
            "cannot prune the history; it is tried again next run"
        );
    }
    if !report.errors.is_empty() {
        store.note_error(&report.errors.join("; "));
    }
    report.counts.invalidated = report.invalidated.len();
    report.counts.pending = report.pending.len();
    Ok(report)
}

pub(crate) fn fill(report: &mut ScanReport, detected: &Detected, paths: Paths) {
    report.errors.extend(detected.errors.iter().cloned());
    report.errors.extend(detected.unsettled.iter().map(|path| {
        format!(
            "{} changed while it was read (still being written?): nothing was recorded for it; it is tried again next run",
            show_path(path)
        )
    }));
    report.counts = Counts {
        scanned: detected.scanned.count,
        unchanged: detected.unchanged.count,
        touched: detected.touched.count,
        changed: detected.changed.count,
        new: detected.new.count,
        deleted: detected.deleted.count,
        ..Counts::default()
    };
    if paths.lists_every_file() {
        report.scanned = Some(show_paths(&detected.scanned));
        report.unchanged = Some(show_paths(&detected.unchanged));
    }
    report.touched = show_paths(&detected.touched);
    report.changed = show_paths(&detected.changed);
    report.new = show_paths(&detected.new);
    report.deleted = show_paths(&detected.deleted);
}

fn show_paths(tally: &Tally) -> Vec<String> {
    tally.paths.iter().map(|p: &PathBuf| show_path(p)).collect()
}

/// Keeps the first occurrence of each asset, in order.
fn unique(assets: Vec<String>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    assets
        .into_iter()
        .filter(|a| seen.insert(a.clone()))
        .collect()
}
