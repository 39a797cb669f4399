//! The rule folders as the daemon sees them: which are watched, and which
//! folder each watch is on; which are polled; which have vanished.
//!
//! A watch follows a folder (an inode), not its name. So each rule folder's
//! identity is compared with the watched one after every event on the
//! folder itself and at every poll tick; a folder that appeared after the
//! start, came back, or was swapped for another (`mv media.new media`,
//! `rm -rf media && mkdir media`, a symlink switched to another release) is
//! watched anew, and the caller reconciles it whole.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::events::EventSource;
use crate::rules::RuleSet;
use crate::state::Store;

/// A file's identity: one path may come to name another file (a folder
/// swapped for another, a store deleted and created again). File systems
/// reuse inode numbers at once (`rm -rf media && mkdir media` often gets the
/// same one), so the birth time is part of it where the file system keeps
/// one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
    born: Option<std::time::SystemTime>,
}

impl FileId {
    /// What `path` names now (symlinks followed); `None` when nothing is
    /// there or it cannot be looked at.
    pub(crate) fn of(path: &Path) -> Option<FileId> {
        std::fs::metadata(path).ok().map(|m| FileId {
            dev: m.dev(),
            ino: m.ino(),
            born: m.created().ok(),
        })
    }
}

/// Why a rule folder was watched anew.
pub enum Renewal {
    /// It had vanished (or was never there) and is there now.
    Back,
    /// Another folder than the one watched is there now.
    Other,
}

pub struct Folders {
    /// Rules watched by polling (by config, or because watching failed).
    pub polled: Vec<usize>,
    /// Rule folders that vanished (unmounted, moved) or were never there:
    /// checked at every poll tick and watched when they are back.
    missing: BTreeSet<usize>,
    /// Per rule: the folder its watch is on (`None`: not watched).
    watched: Vec<Option<FileId>>,
    source: Option<EventSource>,
}

impl Folders {
    /// Every rule polled, none watched (`[watch] poll`).
    pub fn polled(rules: usize) -> Folders {
        Folders {
            polled: (0..rules).collect(),
            missing: BTreeSet::new(),
            watched: vec![None; rules],
            source: None,
        }
    }

    /// The rules as `source` started watching them.
    pub fn watched(source: EventSource) -> Folders {
        Folders {
            polled: source.unwatched.clone(),
            missing: BTreeSet::new(),
            watched: source.watched.clone(),
            source: Some(source),
        }
    }

    /// What walks call for each folder they enter, so it is watched
    /// ([`EventSource::folder_hook`]); `None` when nothing is watched.
    pub fn folder_hook(&self, rules: &RuleSet) -> Option<crate::scan::FolderHook> {
        let source = self.source.as_ref()?;
        if self.polled.len() >= rules.rules().len() {
            return None;
        }
        let polled = self.polled.iter().map(|i| rules.get(*i).dir.clone());
        Some(source.folder_hook(polled.collect()))
    }

    pub fn is_missing(&self, i: usize) -> bool {
        self.missing.contains(&i)
    }

    /// Watched folders that are no longer there (an unmount ends their
    /// watches without a word).
    pub fn gone(&self, rules: &RuleSet, store: &Store) -> Vec<PathBuf> {
        (0..rules.rules().len())
            .filter(|i| {
                !self.polled.contains(i)
                    && !self.missing.contains(i)
                    && !available(rules, store, *i)
            })
            .map(|i| rules.get(i).dir.clone())
            .collect()
    }

    /// Puts a watch on each rule folder that is there but is not the folder
    /// watched (and on those in `force`): it appeared after the start, came
    /// back after vanishing, or was swapped for another folder, whose files
    /// the old watch never reports. Returns those rules: each must be
    /// walked whole, which also completes the baseline of a rule whose
    /// folder was never there before.
    pub fn renew(
        &mut self,
        rules: &RuleSet,
        store: &Store,
        force: &[usize],
    ) -> Vec<(usize, Renewal)> {
        let mut renewed = Vec::new();
        for i in 0..rules.rules().len() {
            let missing = self.missing.contains(&i);
            let polled = self.polled.contains(&i);
            let dir = &rules.get(i).dir;
            let same = !force.contains(&i) && FileId::of(dir) == self.watched[i];
            if (!missing && (polled || same)) || !available(rules, store, i) {
                continue;
            }
            if !polled {
                let Some(source) = &mut self.source else {
                    continue;
                };
                match source.rewatch(dir) {
                    Some(id) => self.watched[i] = Some(id),
                    // Tried again at the next tick.
                    None => continue,
                }
            }
            self.missing.remove(&i);
            let renewal = match missing {
                true => Renewal::Back,
                false => Renewal::Other,
            };
            renewed.push((i, renewal));
        }
        renewed
    }

    /// Notes rule folders a pass could not open; says so once per folder.
    pub fn vanished(&mut self, rules: &RuleSet, unavailable: &[usize], every: Duration) {
        for &i in unavailable {
            if self.missing.insert(i) {
                let dir = &rules.get(i).dir;
                if let Some(source) = &mut self.source {
                    source.unwatch(dir);
                }
                self.watched[i] = None;
                tracing::warn!(
                    dir = %dir.display(),
                    every = ?every,
                    "rule folder is unavailable; its files are kept as recorded and it is checked until it is back"
                );
            }
        }
    }
}

/// Said once renewed folders were reconciled: from then on, an edit in
/// them is seen.
pub fn log_renewed(rules: &RuleSet, renewed: &[(usize, Renewal)]) {
    for (i, renewal) in renewed {
        let why = match renewal {
            Renewal::Back => "rule folder is back; watched again",
            Renewal::Other => {
                "rule folder is another folder now (created, moved or replaced); watched again"
            }
        };
        tracing::info!(dir = %rules.get(*i).dir.display(), "{why}");
    }
}

/// Whether a rule folder is there to be walked. On another file system
/// than its files were recorded on, it is there if it holds anything: a
/// remounted or moved disk, watched anew and compared by content; an empty
/// folder there is an empty mount point, not a deleted library.
fn available(rules: &RuleSet, store: &Store, i: usize) -> bool {
    let dir = &rules.get(i).dir;
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => match store.rule_device(dir) {
            Ok(Some(dev)) if dev != meta.dev() => {
                std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some())
            }
            _ => true,
        },
        _ => false,
    }
}
