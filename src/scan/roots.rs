//! Where a walk starts and how: the rule folders (or event paths) to walk,
//! which of them cannot be seen right now ("unseen": missing, unmounted,
//! reached only through a symlink), which must be compared by content
//! (moved to another device), and the parallel walker itself.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use ignore::{WalkBuilder, WalkParallel};

use super::examine::Compare;
use super::{Detected, ScanPlan, Scope};
use crate::rules::RuleSet;
use crate::state::FileIndex;

/// A parallel walker over `roots`, or `None` when there are none.
pub(super) fn walker(rules: &RuleSet, roots: &[PathBuf], threads: usize) -> Option<WalkParallel> {
    let (first, rest) = roots.split_first()?;
    let mut builder = WalkBuilder::new(first);
    for root in rest {
        builder.add(root);
    }
    builder
        .standard_filters(false)
        .follow_links(false)
        .threads(threads.max(1));
    let all_dirs: std::collections::HashSet<PathBuf> =
        rules.rules().iter().map(|r| r.dir.clone()).collect();
    // Another rule's folder inside this one is walked as its own root (a
    // set: with hundreds of rules, a comparison per rule and entry adds up).
    builder.filter_entry(move |e| e.depth() == 0 || !all_dirs.contains(e.path()));
    Some(builder.build_parallel())
}

/// Where a walk starts, and how each rule's files are compared.
pub(super) struct Start {
    pub roots: Vec<PathBuf>,
    /// Per rule (same order as the rule set).
    pub compare: Vec<Compare>,
    /// Rules whose folder is on another device than when their files were
    /// recorded, with the device it is on now: compared by content, and
    /// the new device is remembered only once a walk of the whole folder
    /// showed it holds the same library (see `scan`).
    pub moved: Vec<(usize, u64)>,
    /// Paths of the scope that are symbolic links (see [`crate::links`]).
    pub links: Vec<PathBuf>,
}

/// The walk's starting points. A rule folder that cannot be opened makes
/// everything under it unseen (reported, never taken as deleted); a target
/// path that is gone (or is now a symlink) is simply not walked, so what was
/// recorded under it counts as deleted.
pub(super) fn roots(
    rules: &RuleSet,
    plan: &ScanPlan,
    scope: &Scope,
    out: &mut Detected,
    unseen_dirs: &mut Vec<PathBuf>,
) -> Start {
    let mut start = Start {
        roots: Vec::new(),
        compare: vec![Compare::Stat; rules.rules().len()],
        moved: Vec::new(),
        links: Vec::new(),
    };
    let mut rule_ok: Vec<Option<bool>> = vec![None; rules.rules().len()];
    let mut check_rule = |i: usize, out: &mut Detected, start: &mut Start| -> bool {
        *rule_ok[i].get_or_insert_with(|| {
            let dir = &rules.get(i).dir;
            let recorded = plan.devices.get(i).copied().flatten();
            let problem = match std::fs::metadata(dir) {
                // On another file system than when its files were recorded
                // (a remount, a disk moved, or an empty mount point): inode
                // numbers and times say nothing now, so every file is read
                // and its hash alone decides.
                Ok(meta)
                    if meta.is_dir()
                        && recorded.is_some_and(|d| d != meta.dev())
                        && !plan.baseline[i] =>
                {
                    start.compare[i] = Compare::Content;
                    start.moved.push((i, meta.dev()));
                    return true;
                }
                Ok(meta) if meta.is_dir() => {
                    if recorded != Some(meta.dev()) {
                        out.changes.devices.push((dir.clone(), meta.dev()));
                    }
                    return true;
                }
                Ok(_) => "it is not a folder: fix `dir` in the config".to_string(),
                Err(e) => format!("{e}: check `dir` in the config and that it is mounted"),
            };
            out.errors.push(format!(
                "cannot use rule folder {}: {problem}; its files were left as recorded",
                dir.display()
            ));
            out.unavailable.push(i);
            false
        })
    };
    match scope {
        Scope::All => {
            for (i, rule) in rules.rules().iter().enumerate() {
                if check_rule(i, out, &mut start) {
                    start.roots.push(rule.dir.clone());
                } else {
                    unseen_dirs.push(rule.dir.clone());
                }
            }
        }
        Scope::Paths(paths) => {
            let mut paths = paths.clone();
            // A walk skips other rules' folders inside it: they are walked
            // as roots of their own, or their files would look deleted.
            let nested: Vec<PathBuf> = rules
                .rules()
                .iter()
                .map(|r| r.dir.clone())
                .filter(|d| paths.iter().any(|p| d != p && d.starts_with(p)))
                .collect();
            paths.extend(nested);
            paths.sort();
            paths.dedup();
            // Taken roots that hold the current path (sorted by components,
            // a folder comes right before what is in it), with their rules.
            let mut holding: Vec<(PathBuf, usize)> = Vec::new();
            for path in paths {
                while holding.last().is_some_and(|(r, _)| !path.starts_with(r)) {
                    holding.pop();
                }
                let Some((rule, _)) = rules.owner(&path) else {
                    continue;
                };
                if holding.iter().any(|(_, owner)| *owner == rule) {
                    continue;
                }
                if !check_rule(rule, out, &mut start) {
                    unseen_dirs.push(path);
                    continue;
                }
                let dir = &rules.get(rule).dir;
                let reachable =
                    !through_symlink(dir, &path) || crate::links::reaches(rules, rule, &path);
                // A rule folder itself may be a symlink (`media ->
                // releases/2`): it is walked, as in a whole-tree pass.
                let meta = match path == *dir {
                    true => std::fs::metadata(&path),
                    false => std::fs::symlink_metadata(&path),
                };
                match meta {
                    Ok(meta) if reachable && (meta.is_dir() || meta.is_file()) => {
                        holding.push((path.clone(), rule));
                        start.roots.push(path);
                    }
                    Ok(meta) if reachable && meta.file_type().is_symlink() => {
                        start.links.push(path)
                    }
                    _ => {}
                }
            }
        }
    }
    start
}

/// Settles the rules whose folder moved to another device, after the walk
/// compared their files by content. A folder where none of the recorded
/// files is left (an empty mount point: the disk is not mounted; or another
/// disk altogether) is taken as unavailable: nothing under it counts as
/// deleted and its device is not remembered, so the next run compares
/// again. Otherwise it holds the same library: missing files are deletions
/// and the new device is remembered. Decided only when the walk covered the
/// whole folder.
pub(super) fn settle_moved(
    rules: &RuleSet,
    index: &FileIndex,
    start: &Start,
    out: &mut Detected,
    unseen_dirs: &mut Vec<PathBuf>,
) {
    for &(i, dev) in &start.moved {
        let dir = &rules.get(i).dir;
        if !start.roots.contains(dir) {
            continue;
        }
        let (mut recorded, mut found) = (0usize, 0usize);
        for (path, seen) in index.files() {
            if rules.owner(&path).is_some_and(|(owner, _)| owner == i) {
                recorded += 1;
                found += usize::from(seen);
            }
        }
        if recorded > 0 && found == 0 {
            out.errors.push(format!(
                "cannot use rule folder {}: it is on another file system than when its {recorded} \
                 files were recorded, and none of them is there (not mounted?): mount it; its files \
                 were left as recorded",
                dir.display()
            ));
            out.unavailable.push(i);
            unseen_dirs.push(dir.clone());
        } else {
            tracing::info!(dir = %dir.display(), files = recorded, found, "rule folder is on another file system now; its files were compared by content");
            out.changes.devices.push((dir.clone(), dev));
        }
    }
}

/// Whether a folder between `dir` and `path` is a symlink: such a path is
/// not inside the rule folder for a rule that does not follow symlinks
/// (a walk would never reach it).
fn through_symlink(dir: &Path, path: &Path) -> bool {
    let Ok(rel) = path.strip_prefix(dir) else {
        return false;
    };
    let mut at = dir.to_path_buf();
    let mut parts = rel.components().peekable();
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            return false;
        }
        at.push(part);
        if std::fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink()) {
            return true;
        }
    }
    false
}

pub(super) fn error_path(err: &ignore::Error) -> Option<PathBuf> {
    match err {
        ignore::Error::WithPath { path, .. } => Some(path.clone()),
        ignore::Error::WithDepth { err, .. } | ignore::Error::WithLineNumber { err, .. } => {
            error_path(err)
        }
        ignore::Error::Loop { child, .. } => Some(child.clone()),
        _ => None,
    }
}
