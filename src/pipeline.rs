//! The pipeline, in data-flow order: send what earlier runs still owe →
//! walk and detect → record (hashes and outbox in one transaction) → flush
//! in batches → token → publish. `run_scan` is the one-shot `scan`; the
//! `watch` daemon reuses [`plan`] and [`detect`] for its reconcile scans and
//! file events, so both modes decide changes the same way.

use std::collections::BTreeSet;

use anyhow::Context;

use crate::config::Config;
use crate::flush::{adopt_orphans, flush_lanes, lanes, refused_error, Flushed};
use crate::report::{show_paths, Counts, ScanReport};
use crate::retry::RetryPolicy;
use crate::rules::{RuleSet, Verdict};
use crate::scan::{scan, Detected, ScanPlan, Scope};
use crate::state::{FileIndex, Store, StoreLock};

#[derive(Debug, Clone, Copy, Default)]
pub struct ScanOptions {
    pub dry_run: bool,
    pub baseline: bool,
    /// List every path in the report (for `--json`).
    pub keep_paths: bool,
    /// Show a progress bar when stderr is a terminal.
    pub progress: bool,
}

/// Decides per rule whether this pass is its baseline (its first scan, or
/// forced), and how detection treats new files.
pub fn plan(
    store: Option<&Store>,
    rules: &RuleSet,
    config: &Config,
    force_baseline: bool,
    keep_paths: bool,
) -> anyhow::Result<ScanPlan> {
    let mut baseline = Vec::with_capacity(rules.rules().len());
    let mut devices = Vec::with_capacity(rules.rules().len());
    for rule in rules.rules() {
        let (done, device) = match store {
            Some(store) => (store.baselined(&rule.dir)?, store.rule_device(&rule.dir)?),
            None => (false, None),
        };
        baseline.push(force_baseline || !done);
        devices.push(device);
    }
    Ok(ScanPlan {
        baseline,
        invalidate_new: config.invalidate_new,
        keep_paths,
        hot_after: None,
        devices,
        progress: None,
        cancel: None,
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
    })
}

/// Reads what the store knows about `scope` and walks it. Blocking: run it
/// off the async threads.
///
/// With `record`, large change sets are recorded in chunks during the walk
/// (see [`crate::scan::scan`]); the second value counts the assets those
/// chunks made owed. The rest is recorded by [`record`].
pub fn detect(
    mut store: Option<&mut Store>,
    rules: &RuleSet,
    plan: &ScanPlan,
    scope: &Scope,
    record_chunks: bool,
) -> anyhow::Result<(Detected, usize)> {
    let started = std::time::Instant::now();
    let index = match (store.as_deref(), scope) {
        (None, _) => Ok(FileIndex::default()),
        (Some(store), Scope::All) => store.load_index(),
        (Some(store), Scope::Paths(paths)) => store.load_index_under(paths),
    }
    .context("cannot read the state store")?;
    tracing::debug!(files = index.len(), took = ?started.elapsed(), "state index loaded");
    let started = std::time::Instant::now();
    let mut owed = 0;
    let mut record_chunk = |chunk: crate::state::Changes| -> anyhow::Result<()> {
        let store = store
            .as_deref_mut()
            .expect("chunks are recorded only with a store");
        owed += store.record(&chunk).with_context(|| {
            format!(
                "cannot record changes in the state store {}",
                store.path().display()
            )
        })?;
        Ok(())
    };
    let sink: Option<crate::scan::Sink<'_>> = match record_chunks {
        true => Some(&mut record_chunk),
        false => None,
    };
    let mut detected = scan(rules, &index, plan, scope, sink);
    tracing::debug!(files = detected.scanned.count, took = ?started.elapsed(), "walk finished");
    if let Some(failure) = detected.failure.take() {
        return Err(failure.context("nothing more was recorded; what was recorded is consistent"));
    }
    if let (Some(store), Scope::Paths(_)) = (store.as_deref(), scope) {
        add_hard_links(store, rules, plan, &mut detected).context("cannot read the state store")?;
        detected.changes.relinked = std::mem::take(&mut detected.new_links);
    }
    crate::links::settle::settle(store.as_deref(), rules, plan, &index, &mut detected)
        .context("cannot read the state store")?;
    Ok((detected, owed))
}

/// Hard links are aliases: every recorded name of a changed inode serves
/// its new bytes. A whole-tree walk meets each name itself; a per-path
/// pass (file events) sees only the name that was written, so the other
/// names still linked to it are found in the store and invalidated and
/// recorded with the same stat data and hash. (A name recorded while its
/// file had one link is found once the pass that met the new name marked
/// it: [`crate::state::Changes::relinked`].)
fn add_hard_links(
    store: &Store,
    rules: &RuleSet,
    plan: &ScanPlan,
    detected: &mut Detected,
) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    for (path, file) in std::mem::take(&mut detected.linked) {
        for alias in store.hard_links(&file.stat)? {
            let done = alias == path || detected.changes.upserts.iter().any(|(p, _)| *p == alias);
            let Verdict::Mapped { rule } = rules.verdict(&alias) else {
                continue;
            };
            // Still the same inode (it may have been replaced since).
            let same = std::fs::symlink_metadata(&alias)
                .is_ok_and(|m| (m.dev(), m.ino()) == (file.stat.dev, file.stat.inode));
            if done || !same {
                continue;
            }
            let r = rules.get(rule);
            if !plan.baseline[rule] {
                let rel = alias.strip_prefix(&r.dir).unwrap_or(&alias);
                detected.changes.assets.extend(r.owed(rel));
                detected.links.seed(&alias);
            }
            tracing::debug!(path = %alias.display(), of = %path.display(), "hard link changed too");
            detected.changed.add(&alias, plan.keep_paths);
            detected.scanned.add(&alias, plan.keep_paths);
            detected.changes.upserts.push((alias, file));
        }
    }
    Ok(())
}

/// Records a detection pass: hashes, outbox and token owed in one
/// transaction. Returns how many assets became owed.
pub fn record(store: &mut Store, detected: &Detected) -> anyhow::Result<usize> {
    crate::failpoint::pause_at("walked");
    let started = std::time::Instant::now();
    let owed = store
        .record(&detected.changes)
        .with_context(|| {
            format!(
                "cannot record the changes in the state store {}; nothing was sent, and the store is as before",
                store.path().display()
            )
        })?;
    tracing::debug!(assets = owed, files = detected.changes.upserts.len(), took = ?started.elapsed(), "changes recorded");
    if !detected.changes.assets.is_empty() {
        crate::failpoint::pause_at("recorded");
    }
    Ok(owed)
}

/// Runs one scan. `Err` means nothing could be attempted (config, key,
/// store); failures after that are in the report's `errors`.
pub async fn run_scan(config: &Config, opts: ScanOptions) -> anyhow::Result<ScanReport> {
    let rules = RuleSet::new(&config.rules)?;
    // A dry run only reads: it needs no lock and must not create the store.
    let _lock = if opts.dry_run {
        None
    } else {
        Some(StoreLock::acquire(&config.state)?)
    };
    let mut store = if opts.dry_run && !config.state.exists() {
        None
    } else {
        Some(Store::open(&config.state)?)
    };
    let lanes = if opts.dry_run {
        Vec::new()
    } else {
        lanes(config)?
    };
    if let Some(store) = store.as_mut().filter(|_| !opts.dry_run) {
        adopt_orphans(store, &lanes)?;
    }
    let mut report = ScanReport {
        dry_run: opts.dry_run,
        ..ScanReport::default()
    };
    let mut flushed = Flushed::default();
    let retry = RetryPolicy::bounded(config.api.retry_for);
    // An account whose flush failed is taken as down for this run: a
    // second attempt would only spend another retry budget.
    let mut down = Vec::new();
    let send = !opts.dry_run && !opts.baseline;

    // What earlier runs left owed goes out before the (possibly long) walk.
    // Tokens wait until after the walk, so one run asks for one per account.
    if let (Some(store), true) = (store.as_mut(), send) {
        if store.owed_count()? > 0 {
            down = flush_lanes(store, &lanes, &config.api, retry, false, &[], &mut flushed).await?;
        }
    }

    let mut plan = plan(
        store.as_ref(),
        &rules,
        config,
        opts.baseline,
        opts.keep_paths,
    )?;
    report.baseline = plan.baseline.iter().any(|b| *b);
    plan.progress = crate::progress::Progress::on_terminal(opts.progress).map(std::sync::Arc::new);
    let (detected, _) = tokio::task::block_in_place(|| {
        detect(store.as_mut(), &rules, &plan, &Scope::All, !opts.dry_run)
    })?;
    if let Some(progress) = &plan.progress {
        progress.finish();
    }
    fill(&mut report, &detected);

    if opts.dry_run {
        let mut would = match &store {
            Some(store) => store.owed()?,
            None => Vec::new(),
        };
        would.extend(detected.changes.assets.iter().map(|o| o.asset.clone()));
        report.would_invalidate = unique(would);
        report.pending = report.would_invalidate.clone();
        report.counts.pending = report.pending.len();
        return Ok(report);
    }
    let store = store.as_mut().expect("only a dry run goes without a store");
    record(store, &detected)?;
    if send {
        let failed =
            flush_lanes(store, &lanes, &config.api, retry, true, &down, &mut flushed).await?;
        down.extend(failed);
    }
    report.errors.extend(down.into_iter().map(|e| e.message));
    report.errors.extend(refused_error(&flushed.refused));
    report.refused = store.refused()?.into_iter().map(|r| r.asset).collect();
    report.counts.refused = report.refused.len();
    report.requests = lanes.iter().map(|l| l.client.requests()).sum();
    report.invalidated = flushed.invalidated;
    report.token = flushed.token;
    report.pending = store.owed()?;
    if !report.errors.is_empty() {
        store.note_error(&report.errors.join("; "));
    }
    report.counts.invalidated = report.invalidated.len();
    report.counts.pending = report.pending.len();
    Ok(report)
}

fn fill(report: &mut ScanReport, detected: &Detected) {
    report.errors.extend(detected.errors.iter().cloned());
    report.errors.extend(detected.unsettled.iter().map(|path| {
        format!(
            "{} changed while it was read (still being written?): nothing was recorded for it; it is tried again next run",
            crate::report::show_path(path)
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
    report.scanned = show_paths(&detected.scanned);
    report.unchanged = show_paths(&detected.unchanged);
    report.touched = show_paths(&detected.touched);
    report.changed = show_paths(&detected.changed);
    report.new = show_paths(&detected.new);
    report.deleted = show_paths(&detected.deleted);
}

/// Keeps the first occurrence of each asset, in order.
fn unique(assets: Vec<String>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    assets
        .into_iter()
        .filter(|a| seen.insert(a.clone()))
        .collect()
}
