//! Links met by a scan's walker threads. The walk itself never follows
//! a link; [`visit`] resolves each one it meets (see [`super::resolve`])
//! and compares it with its recorded row, and only a difference goes to
//! the collector (see [`super::collect`]). A link read as a file of its
//! own (into an allowed place) is examined here like any file.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use super::resolve::{resolve, Resolved, What};
use super::Roots;
use crate::rules::{RuleSet, Verdict};
use crate::scan::examine::{self, Compare, Observation};
use crate::scan::hash::unix_ns;
use crate::scan::ScanPlan;
use crate::state::links::Kind;
use crate::state::{FileIndex, Stat};

/// A link's resolution: what it is and where it leads.
pub type Resolution = (Kind, PathBuf);

/// A link a walker met that differs from its record (or must be decided
/// by the collector).
#[derive(Debug)]
pub struct Visited {
    pub path: PathBuf,
    pub rule: usize,
    /// `None` when it could not be followed: kept as recorded.
    pub now: Option<Resolution>,
    pub was: Option<Resolution>,
    /// A link read as a file of its own: what detection saw through it.
    pub own: Option<Observation>,
    pub error: Option<String>,
}

/// Called by a walker thread for the link at `path` (a recorded path).
/// `None`: nothing to tell the collector (as recorded, or gone).
pub fn visit(
    path: &Path,
    rule: usize,
    rules: &RuleSet,
    index: &FileIndex,
    plan: &ScanPlan,
    roots: &Roots,
    compare: Compare,
) -> Option<Visited> {
    let known = index.links.get(path);
    // Built only for a link that differs (an unchanged re-scan meets
    // every link as recorded).
    let was = || known.map(|k| (k.kind, k.target.to_path_buf()));
    let link = roots.real_of(path);
    let recent_after = plan.leave_changed_after.map(unix_ns);
    let resolved = resolve(roots, rule, &link);
    if let Resolved::Failed(e) = &resolved {
        if e.kind() == std::io::ErrorKind::NotFound {
            // The link itself went: its row is removed as unseen.
            return None;
        }
    }
    if let Some(known) = known {
        known.mark_seen();
    }
    let mut own = None;
    let now = match resolved {
        Resolved::Failed(e) => {
            if let Some(file) = index.get(path) {
                file.mark_seen();
            }
            return Some(Visited {
                path: path.to_path_buf(),
                rule,
                now: None,
                was: was(),
                own: None,
                error: Some(format!(
                    "cannot follow link {}: {e}; it was left as recorded",
                    crate::display::show_path(path)
                )),
            });
        }
        Resolved::At {
            real,
            what: What::File(stat),
            allowed,
        } => {
            let recorded = match allowed {
                false => roots.recorded(&real),
                true => None,
            };
            match recorded {
                Some(target) if matches!(rules.verdict(&target), Verdict::Mapped { .. }) => {
                    (Kind::File, target)
                }
                // In an allowed place, or a file its own rule does not
                // track: read through the link, as its own file.
                target => {
                    let file = index.get(path);
                    let stat = match stat {
                        Some(stat) => Ok(stat),
                        None => std::fs::symlink_metadata(&real).map(|m| Stat::of(&m)),
                    };
                    let seen = match stat {
                        Ok(stat) if examine::unchanged_by_stat(file, &stat, compare) => {
                            Observation::Unchanged
                        }
                        // The ctime too: a writer that restores the mtime
                        // (`cp -p`) may have finished a moment ago.
                        Ok(stat) if recent_after.is_some_and(|t| stat.last_change_ns() > t) => {
                            Observation::Recent
                        }
                        Ok(_) => examine::examine(&real, file),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Observation::Vanished,
                        Err(e) => Observation::Unreadable(e),
                    };
                    if let (Some(file), false) = (file, matches!(seen, Observation::Vanished)) {
                        file.mark_seen();
                    }
                    own = Some(seen);
                    (Kind::Own, target.unwrap_or(real))
                }
            }
        }
        Resolved::At {
            real,
            what: What::Folder,
            allowed: false,
        } => match roots.recorded(&real) {
            // A link inside the folder it leads to: endless.
            Some(target) if path.starts_with(&target) => (Kind::Loop, target),
            Some(target) => (Kind::Folder, target),
            None => (Kind::Outside, real),
        },
        Resolved::At {
            real,
            what: What::Folder,
            allowed: true,
        } => match roots.take_extra(path, &real) {
            true => (Kind::OwnFolder, real),
            false => (Kind::Loop, real),
        },
        Resolved::At { real, .. } => (Kind::Other, real),
        Resolved::Missing { real, allowed } => {
            let target = match allowed {
                false => roots.recorded(&real).unwrap_or(real),
                true => real,
            };
            (Kind::Missing, target)
        }
        Resolved::Outside { real } => (Kind::Outside, real),
        Resolved::Loop => (Kind::Loop, PathBuf::new()),
    };
    let folder_like =
        matches!(now.0, Kind::Folder) || (now.0 == Kind::Loop && !now.1.as_os_str().is_empty());
    let quiet_own = match &own {
        None => true,
        Some(Observation::Unchanged) => !plan.paths.lists_every_file(),
        Some(_) => false,
    };
    let as_recorded = known.is_some_and(|k| k.kind == now.0 && k.target == now.1.as_path());
    if as_recorded && !folder_like && quiet_own {
        roots.quiet.fetch_add(1, Ordering::Relaxed);
        return None;
    }
    Some(Visited {
        path: path.to_path_buf(),
        rule,
        now: Some(now),
        was: was(),
        own,
        error: None,
    })
}
