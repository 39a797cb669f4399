//! The one-shot pipeline behind `optiwatch scan`, in data-flow order:
//! send what earlier runs still owe → walk and detect → record (hashes and
//! outbox in one transaction) → flush in batches → token → publish.

use std::collections::BTreeSet;

use anyhow::Context;

use crate::api::Client;
use crate::config::Config;
use crate::flush::{flush, FlushOptions, Flushed};
use crate::report::{show_paths, Counts, ScanReport};
use crate::retry::RetryPolicy;
use crate::rules::RuleSet;
use crate::scan::{scan, ScanPlan};
use crate::secret::ApiKey;
use crate::state::{FileIndex, Store};
use crate::token::Publisher;

#[derive(Debug, Clone, Copy, Default)]
pub struct ScanOptions {
    pub dry_run: bool,
    pub baseline: bool,
    /// List every path in the report (for `--json`).
    pub keep_paths: bool,
}

/// Runs one scan. `Err` means nothing could be attempted (config, key,
/// store); failures after that are in the report's `errors`.
pub async fn run_scan(config: &Config, opts: ScanOptions) -> anyhow::Result<ScanReport> {
    let rules = RuleSet::new(&config.rules)?;
    // A dry run must not even create the store.
    let mut store = if opts.dry_run && !config.state.exists() {
        None
    } else {
        Some(Store::open(&config.state)?)
    };
    let client = if opts.dry_run {
        None
    } else {
        Some(Client::new(&config.api, ApiKey::load(&config.api.key)?)?)
    };
    let publisher = Publisher::new(config.token.clone());
    let flush_opts = FlushOptions {
        batch_size: config.api.batch_size,
        retry: RetryPolicy::bounded(config.api.retry_for),
        with_token: true,
    };
    let mut report = ScanReport {
        dry_run: opts.dry_run,
        ..ScanReport::default()
    };
    let mut flushed = Flushed::default();
    // After a failed flush the API is taken as down for this run: a second
    // attempt would only spend another retry budget.
    let mut api_down = false;

    // What earlier runs left owed goes out before the (possibly long) walk.
    // The token waits until after the walk, so one run asks for one token.
    if let (Some(store), Some(client), false) = (store.as_mut(), client.as_ref(), opts.baseline) {
        if store.owed_count()? > 0 {
            let early = FlushOptions {
                with_token: false,
                ..flush_opts
            };
            if let Err(e) = flush(store, client, &publisher, early, &mut flushed).await {
                report.errors.push(format!("{e:#}"));
                api_down = true;
            }
        }
    }

    let started = std::time::Instant::now();
    let index = match &store {
        Some(store) => store.load_index().context("cannot read the state store")?,
        None => FileIndex::default(),
    };
    let mut baseline = Vec::with_capacity(rules.rules().len());
    for rule in rules.rules() {
        let done = match &store {
            Some(store) => store.baselined(&rule.dir)?,
            None => false,
        };
        baseline.push(opts.baseline || !done);
    }
    let plan = ScanPlan {
        baseline,
        invalidate_new: config.invalidate_new,
        keep_paths: opts.keep_paths,
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
    };
    report.baseline = plan.baseline.iter().any(|b| *b);
    tracing::debug!(files = index.len(), took = ?started.elapsed(), "state index loaded");
    let started = std::time::Instant::now();
    let detected = tokio::task::block_in_place(|| scan(&rules, &index, &plan));
    tracing::debug!(files = detected.scanned.count, took = ?started.elapsed(), "walk finished");
    drop(index);
    report.errors.extend(detected.errors.iter().cloned());
    report.counts = Counts {
        scanned: detected.scanned.count,
        unchanged: detected.unchanged.count,
        touched: detected.touched.count,
        changed: detected.changed.count,
        new: detected.new.count,
        deleted: detected.deleted.count,
        ..Counts::default()
    };
    report.scanned = show_paths(&detected.scanned);
    report.unchanged = show_paths(&detected.unchanged);
    report.touched = show_paths(&detected.touched);
    report.changed = show_paths(&detected.changed);
    report.new = show_paths(&detected.new);
    report.deleted = show_paths(&detected.deleted);

    let Some(store) = store.as_mut() else {
        report.would_invalidate = unique(detected.changes.assets);
        report.pending = report.would_invalidate.clone();
        report.counts.pending = report.pending.len();
        return Ok(report);
    };
    if opts.dry_run {
        let mut would = store.owed()?;
        would.extend(detected.changes.assets);
        report.would_invalidate = unique(would);
        report.pending = report.would_invalidate.clone();
        report.counts.pending = report.pending.len();
        return Ok(report);
    }

    let started = std::time::Instant::now();
    let owed = store
        .record(&detected.changes)
        .context("cannot record the scan in the state store; nothing was sent")?;
    tracing::debug!(assets = owed, files = detected.changes.upserts.len(), took = ?started.elapsed(), "change set recorded");

    if let (Some(client), false) = (client.as_ref(), opts.baseline || api_down) {
        if let Err(e) = flush(store, client, &publisher, flush_opts, &mut flushed).await {
            report.errors.push(format!("{e:#}"));
        }
    }
    report.requests = client.as_ref().map_or(0, Client::requests);
    report.invalidated = flushed.invalidated;
    report.token = flushed.token;
    report.pending = store.owed()?;
    report.counts.invalidated = report.invalidated.len();
    report.counts.pending = report.pending.len();
    Ok(report)
}

/// Keeps the first occurrence of each asset, in order.
fn unique(assets: Vec<String>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    assets
        .into_iter()
        .filter(|a| seen.insert(a.clone()))
        .collect()
}
