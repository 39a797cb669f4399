//! The detection pass shared by `scan` and the `watch` daemon, in
//! data-flow order: plan (which rules are in their baseline) → detect
//! (read what the store knows about the scope, walk and examine it) →
//! record (hashes and outbox in one transaction). Both modes decide
//! changes here, so they can never disagree about what a change is.

use anyhow::Context;

use super::{scan, Detected, Paths, ScanPlan, Scope, Sink};
use crate::config::Config;
use crate::rules::{RuleSet, Verdict};
use crate::state::{Changes, FileIndex, Reason, Store};

/// Which rules a pass records without invalidating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline {
    /// Those whose folder was never walked whole: a rule's first walk is
    /// its baseline.
    WhereDue,
    /// Every rule (`scan --baseline`).
    Everywhere,
}

/// Whether a pass records large change sets while it walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recording {
    /// In chunks during the walk (memory stays flat); the caller records
    /// the rest with [`record`].
    InChunks,
    /// Not at all (a dry run).
    Off,
}

/// Decides per rule whether this pass is its baseline (its first scan, or
/// forced), and how detection treats new files.
pub fn plan(
    store: Option<&Store>,
    rules: &RuleSet,
    config: &Config,
    force: Baseline,
    paths: Paths,
) -> anyhow::Result<ScanPlan> {
    let mut baseline = Vec::with_capacity(rules.rules().len());
    let mut devices = Vec::with_capacity(rules.rules().len());
    for rule in rules.rules() {
        let (done, device) = match store {
            Some(store) => (store.baselined(&rule.dir)?, store.rule_device(&rule.dir)?),
            None => (false, None),
        };
        baseline.push(force == Baseline::Everywhere || !done);
        devices.push(device);
    }
    Ok(ScanPlan {
        baseline,
        invalidate_new: config.invalidate_new,
        paths,
        leave_changed_after: None,
        devices,
        progress: None,
        cancel: None,
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        on_folder: None,
    })
}

/// Reads what the store knows about `scope` and walks it. Blocking: run it
/// off the async threads.
///
/// With [`Recording::InChunks`], large change sets are recorded in chunks
/// during the walk (see [`super::scan`]); the second value counts the
/// assets those chunks made owed. The rest is recorded by [`record`].
pub fn detect(
    mut store: Option<&mut Store>,
    rules: &RuleSet,
    plan: &ScanPlan,
    scope: &Scope,
    recording: Recording,
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
    let mut record_chunk = |chunk: Changes| -> anyhow::Result<()> {
        // Chunks are recorded only when a store is open (a dry run records
        // nothing); an error rather than a panic if that ever changes.
        let Some(store) = store.as_deref_mut() else {
            anyhow::bail!("changes were to be recorded without a state store (a bug)");
        };
        owed += store.record(&chunk).with_context(|| {
            format!(
                "cannot record changes in the state store {}",
                store.path().display()
            )
        })?;
        Ok(())
    };
    let sink: Option<Sink<'_>> = match recording {
        Recording::InChunks => Some(&mut record_chunk),
        Recording::Off => None,
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
                detected
                    .changes
                    .assets
                    .extend(r.owed(&alias, Reason::Alias));
                detected.links.seed(&alias);
            }
            tracing::debug!(path = %alias.display(), of = %path.display(), "hard link changed too");
            detected.changed.add(&alias, plan.paths.lists_changes());
            detected.scanned.add(&alias, plan.paths.lists_every_file());
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
