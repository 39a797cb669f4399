//! What one walker thread does with each entry: filter, stat, examine
//! and report a file ([`visit`]), or hand a symbolic link to
//! [`crate::links::walk::visit`] ([`visit_links`]); the results go to the
//! collector in batches ([`super::walk`]).

use std::path::Path;
use std::sync::atomic::Ordering;

use ignore::WalkState;

use super::collect::Found;
use super::examine::{self, Compare, Observation};
use super::roots::error_path;
use super::walk::{Batch, Counters, Message};
use super::ScanPlan;
use crate::rules::RuleSet;
use crate::state::{FileIndex, Stat};

/// How a walker reads files: per rule how
/// recorded stat data is trusted, and after when (ns since the epoch) a
/// change is too recent to read now.
#[derive(Clone, Copy)]
pub(super) struct How<'a> {
    pub(super) compare: &'a [Compare],
    pub(super) recent_after: Option<i64>,
    pub(super) links: &'a crate::links::Roots,
    /// Told of each folder entered ([`super::ScanPlan::on_folder`]); only
    /// for walks of rule folders, not of places links lead to.
    pub(super) on_folder: Option<&'a super::FolderHook>,
}

/// One walker callback: filter, stat, detect, report.
pub(super) fn visit(
    rules: &RuleSet,
    index: &FileIndex,
    entry: Result<ignore::DirEntry, ignore::Error>,
    plan: &ScanPlan,
    how: How<'_>,
    counters: &Counters,
    batch: &mut Batch,
) -> WalkState {
    let cancelled = plan
        .cancel
        .as_ref()
        .is_some_and(|c| c.load(Ordering::Relaxed));
    if cancelled || counters.stop.load(Ordering::Relaxed) {
        return WalkState::Quit;
    }
    let entry = match entry {
        Ok(entry) => entry,
        Err(err) => {
            let path = error_path(&err);
            batch.push(Message::Failed {
                path,
                error: format!("cannot read part of a rule folder: {err}; it was left as recorded"),
            });
            return WalkState::Continue;
        }
    };
    // Symlinks are never followed by the walk (see `crate::links`), and
    // sockets, FIFOs and devices are no images.
    match entry.file_type() {
        Some(t) if t.is_file() => {}
        Some(t) if t.is_dir() => {
            // Before its entries are read: whatever is written there from
            // now on is reported, whatever was written before is walked.
            if let Some(hook) = how.on_folder {
                (hook.0)(entry.path());
            }
            counters.folders.fetch_add(1, Ordering::Relaxed);
            return WalkState::Continue;
        }
        Some(t) if t.is_symlink() => {
            visit_links(rules, index, &[entry.path()], plan, how, batch);
            return WalkState::Continue;
        }
        _ => return WalkState::Continue,
    }
    let path = entry.path();
    let Some((rule, rel)) = rules.owner(path) else {
        return WalkState::Continue;
    };
    if !rules.get(rule).wants(rel) {
        return WalkState::Continue;
    }
    if let Some(progress) = &plan.progress {
        progress.walked();
    }
    let known = index.get(path);
    let compare = how.compare.get(rule).copied().unwrap_or(Compare::Content);
    let observation = match entry.metadata().map(|meta| Stat::of(&meta)) {
        Ok(stat) if examine::unchanged_by_stat(known, &stat, compare) => Observation::Unchanged,
        // The ctime too: a writer that restores the mtime (`cp -p`) may
        // have finished a moment ago.
        Ok(stat) if how.recent_after.is_some_and(|t| stat.last_change_ns() > t) => {
            Observation::Recent
        }
        Ok(_) => examine::examine(path, known),
        Err(err) if err.io_error().map(|e| e.kind()) == Some(std::io::ErrorKind::NotFound) => {
            Observation::Vanished
        }
        Err(err) => Observation::Unreadable(std::io::Error::other(err.to_string())),
    };
    if let Observation::Changed(file)
    | Observation::New(file)
    | Observation::Touched(file)
    | Observation::Confirmed(file) = &observation
    {
        if let Some(progress) = &plan.progress {
            progress.hashed(file.stat.size);
        }
        crate::metrics::add(&crate::metrics::METRICS.hashed, 1);
    }
    if let (Some(entry), false) = (known, matches!(observation, Observation::Vanished)) {
        entry.mark_seen();
    }
    if !plan.paths.lists_every_file() && matches!(observation, Observation::Unchanged) {
        counters.quiet_unchanged.fetch_add(1, Ordering::Relaxed);
        return WalkState::Continue;
    }
    let found = Found {
        path: path.to_path_buf(),
        rule,
        observation,
    };
    if !batch.push(Message::Found(found)) {
        return WalkState::Quit;
    }
    WalkState::Continue
}

/// Links met by a walker or named by the scope: see [`crate::links::walk::visit`].
pub(super) fn visit_links(
    rules: &RuleSet,
    index: &FileIndex,
    paths: &[impl AsRef<Path>],
    plan: &ScanPlan,
    how: How<'_>,
    batch: &mut Batch,
) {
    for path in paths {
        let Some((rule, _)) = rules.owner(path.as_ref()) else {
            continue;
        };
        let compare = how.compare.get(rule).copied().unwrap_or(Compare::Content);
        let visited =
            crate::links::walk::visit(path.as_ref(), rule, rules, index, plan, how.links, compare);
        if let Some(visited) = visited {
            batch.push(Message::Link(Box::new(visited)));
        }
    }
}
