//! Turning what the walkers found into the change set: each observation
//! is counted, the files to record and the assets they make owed are
//! gathered, and recorded files no walker met become deletions.

use std::path::{Path, PathBuf};

use super::examine::Observation;
use super::{Detected, ScanPlan};
use crate::rules::{RuleSet, Verdict};
use crate::state::{FileIndex, Reason};

/// One file a walker examined.
pub(super) struct Found {
    pub(super) path: PathBuf,
    pub(super) rule: usize,
    pub(super) observation: Observation,
}

pub(super) fn collect(out: &mut Detected, rules: &RuleSet, plan: &ScanPlan, found: Found) {
    let Found {
        path,
        rule,
        observation,
    } = found;
    let (keep, keep_every) = (plan.paths.lists_changes(), plan.paths.lists_every_file());
    let urls = |path: &Path, reason| rules.get(rule).owed(path, reason);
    match observation {
        Observation::Vanished => return,
        Observation::Recent => {
            out.recent.push(path);
            return;
        }
        Observation::Unsettled => {
            out.unsettled.push(path);
            return;
        }
        Observation::Unreadable(e) => {
            out.errors.push(format!(
                "cannot read {}: {e}; it will be tried again next run",
                crate::display::show_path(&path)
            ));
        }
        Observation::Unchanged => out.unchanged.add(&path, keep_every),
        Observation::Confirmed(file) => {
            out.unchanged.add(&path, keep_every);
            out.changes.upserts.push((path.clone(), file));
        }
        Observation::Touched(file) => {
            out.touched.add(&path, keep);
            out.changes.upserts.push((path.clone(), file));
        }
        Observation::Changed(file) => {
            crate::failpoint::pause_at("walking");
            out.changed.add(&path, keep);
            if !plan.baseline[rule] {
                out.links.seed(&path);
                out.changes.assets.extend(urls(&path, Reason::Changed));
                if file.links > 1 {
                    out.linked.push((path.clone(), file));
                }
            }
            out.changes.upserts.push((path.clone(), file));
        }
        Observation::New(file) => {
            // A baseline's files are counted, not listed: on a first scan
            // every file is new, and the report would grow with the tree.
            out.new.add(&path, keep && !plan.baseline[rule]);
            if file.links > 1 {
                out.new_links.push(file.stat);
            }
            if plan.invalidate_new && !plan.baseline[rule] {
                out.links.seed(&path);
                out.changes.assets.extend(urls(&path, Reason::New));
            }
            out.changes.upserts.push((path.clone(), file));
        }
    }
    out.scanned.add(&path, keep_every);
}

pub(super) fn find_deletions(
    out: &mut Detected,
    rules: &RuleSet,
    index: &FileIndex,
    plan: &ScanPlan,
    unseen_dirs: &[PathBuf],
) {
    for path in index.unseen() {
        let path = path.as_path();
        if unseen_dirs.iter().any(|dir| path.starts_with(dir)) {
            continue;
        }
        match rules.verdict(path) {
            Verdict::Mapped { rule } => {
                out.deleted.add(path, plan.paths.lists_changes());
                if !plan.baseline[rule] {
                    out.links.seed(path);
                    out.changes
                        .assets
                        .extend(rules.get(rule).owed(path, Reason::Deleted));
                }
            }
            // No longer covered by any rule (config changed): forget quietly;
            // such a change is a config edit, not an image change.
            _ => tracing::debug!(path = %path.display(), "no longer covered by a rule; forgotten"),
        }
        out.changes.removals.push(path.to_path_buf());
    }
}
