//! The file-event change source: notify's recommended watcher (inotify on
//! Linux), bridged into tokio through a bounded channel.
//!
//! Every folder gets a watch of its own (not recursive): the rule folder
//! when watching starts, each folder below it when a walk enters it
//! ([`EventSource::folder_hook`], before its entries are read), so the
//! reconcile walk at start-up is the only walk (notify's recursive mode
//! walks and stats the whole tree once more). A folder created later is
//! reported by its parent's watch; the pass over it walks it, which
//! watches it and finds what was written before that.
//!
//! The bridge never blocks notify's thread and never drops a change
//! silently: when the channel is full, an overflow flag is raised and the
//! daemon rescans instead. Kernel queue overflows (notify's rescan flag) and
//! watcher errors become rescans too. Running out of inotify watches (a
//! folder created later could not be watched) raises a flag of its own,
//! never queued, so it cannot be lost in a full channel.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{ErrorKind, RecursiveMode, Watcher};
use tokio::sync::{mpsc, Notify};

use super::folders::FileId;
use crate::rules::RuleSet;
use crate::scan::FolderHook;

/// Messages from the watcher thread to the daemon.
#[derive(Debug)]
pub enum FsSignal {
    /// Something happened at these paths.
    Paths(Vec<PathBuf>),
    /// Events may have been lost: reconcile everything.
    Rescan,
}

/// Flags the watcher thread raises without queueing anything (they must
/// not be lost when the channel is full); read and cleared by the daemon.
#[derive(Debug, Default)]
pub struct Overflow {
    /// The channel was full: events were dropped.
    flag: AtomicBool,
    /// The kernel's inotify watch limit was reached: some folder is not
    /// watched, so polling must take over.
    watch_limit: AtomicBool,
    pub wake: Notify,
}

impl Overflow {
    pub fn take(&self) -> bool {
        self.flag.swap(false, Ordering::AcqRel)
    }

    pub fn take_watch_limit(&self) -> bool {
        self.watch_limit.swap(false, Ordering::AcqRel)
    }

    fn raise(&self, flag: &AtomicBool) {
        flag.store(true, Ordering::Release);
        self.wake.notify_one();
    }
}

/// Rule folders that are symlinks (`media -> releases/2`). notify drops a
/// symlink it is asked to watch recursively (it never follows links), so the link's target is watched instead and its events are
/// renamed back under the rule folder.
#[derive(Debug, Default)]
struct Aliases(Mutex<Vec<(PathBuf, PathBuf)>>, Mutex<Switches>);

/// Links on the way to rule folders (`current -> releases/42` for `dir =
/// current/uploads`): the folder holding each is watched (not its
/// subfolders), so switching the link is seen at once and reported as an
/// event on the rule folder (see [`crate::links`]).
#[derive(Debug, Default)]
struct Switches {
    /// (link, rule folder behind it)
    links: Vec<(PathBuf, PathBuf)>,
    /// Folders watched for them, not recursively.
    parents: Vec<PathBuf>,
    /// Every rule folder: a folder inside one is watched already.
    dirs: Vec<PathBuf>,
}

impl Aliases {
    fn list(&self) -> MutexGuard<'_, Vec<(PathBuf, PathBuf)>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn switches(&self) -> MutexGuard<'_, Switches> {
        self.1
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Watches the folder holding each link on the way to `dir`.
    fn watch_switches(&self, watcher: &mut notify::RecommendedWatcher, dir: &Path) {
        let mut switches = self.switches();
        for link in dir.ancestors() {
            let is_link = std::fs::symlink_metadata(link).is_ok_and(|m| m.file_type().is_symlink());
            let Some(parent) = link.parent().filter(|_| is_link) else {
                continue;
            };
            if !switches.links.iter().any(|(l, d)| l == link && d == dir) {
                switches.links.push((link.to_path_buf(), dir.to_path_buf()));
            }
            let covered = switches.dirs.iter().any(|d| parent.starts_with(d));
            if covered || switches.parents.iter().any(|p| p == parent) {
                continue;
            }
            match watcher.watch(parent, RecursiveMode::NonRecursive) {
                Ok(()) => switches.parents.push(parent.to_path_buf()),
                Err(e) => {
                    tracing::warn!(link = %link.display(), error = %e, "cannot watch the folder of a link on the way to a rule folder; its switch is seen at the next poll tick")
                }
            }
        }
    }

    /// Event paths in a folder watched for a link: the link itself stands
    /// for its rule folder, anything else there is not ours.
    fn switched(&self, paths: &mut Vec<PathBuf>) {
        let switches = self.switches();
        if switches.parents.is_empty() {
            return;
        }
        let mut out = Vec::with_capacity(paths.len());
        for path in paths.drain(..) {
            let dirs: Vec<PathBuf> = switches
                .links
                .iter()
                .filter(|(link, _)| *link == path)
                .map(|(_, dir)| dir.clone())
                .collect();
            let theirs = path
                .parent()
                .is_some_and(|p| switches.parents.iter().any(|w| w == p));
            if !dirs.is_empty() {
                out.extend(dirs);
            } else if !theirs {
                out.push(path);
            }
        }
        *paths = out;
    }

    /// Event paths under a link's target, renamed under its rule folder.
    fn rename(&self, paths: &mut [PathBuf]) {
        let list = self.list();
        for path in paths {
            let renamed = list.iter().find_map(|(target, dir)| {
                path.strip_prefix(target)
                    .ok()
                    .map(|rel| match rel.as_os_str().is_empty() {
                        true => dir.clone(),
                        false => dir.join(rel),
                    })
            });
            if let Some(renamed) = renamed {
                *path = renamed;
            }
        }
    }

    /// What watching `dir` means watching.
    fn watched(&self, dir: &Path) -> PathBuf {
        let list = self.list();
        list.iter()
            .find(|(_, d)| d == dir)
            .map_or_else(|| dir.to_path_buf(), |(target, _)| target.clone())
    }

    /// Watches a rule folder (a symlink one through its target).
    fn watch(&self, watcher: &mut notify::RecommendedWatcher, dir: &Path) -> notify::Result<()> {
        let link = std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink());
        let target = match link {
            true => std::fs::canonicalize(dir).map_err(notify::Error::io_watch)?,
            false => dir.to_path_buf(),
        };
        watcher.watch(&target, RecursiveMode::NonRecursive)?;
        self.watch_switches(watcher, dir);
        let mut list = self.list();
        list.retain(|(_, d)| d != dir);
        if link {
            list.push((target, dir.to_path_buf()));
        }
        Ok(())
    }

    fn unwatch(&self, watcher: &mut notify::RecommendedWatcher, dir: &Path) {
        let _ = watcher.unwatch(&self.watched(dir));
        self.list().retain(|(_, d)| d != dir);
    }
}

/// The watcher, shared with the walker threads that put watches on the
/// folders they enter.
struct Shared {
    watcher: Mutex<notify::RecommendedWatcher>,
    /// Folders watched by walks, so a rule folder's are dropped with it.
    folders: Mutex<std::collections::HashSet<PathBuf>>,
    overflow: Arc<Overflow>,
}

impl Shared {
    fn watcher(&self) -> MutexGuard<'_, notify::RecommendedWatcher> {
        self.watcher
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn folders(&self) -> MutexGuard<'_, std::collections::HashSet<PathBuf>> {
        self.folders
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Watches a folder a walk entered. Always asks the kernel again (a
    /// folder deleted and created again under the same path is another
    /// folder).
    fn add(&self, dir: &Path) -> bool {
        match self.watcher().watch(dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                self.folders().insert(dir.to_path_buf());
                true
            }
            Err(e) if matches!(e.kind, ErrorKind::MaxFilesWatch) => {
                self.overflow.raise(&self.overflow.watch_limit);
                false
            }
            // Gone again already: its parent's watch reported that.
            Err(e) => {
                tracing::debug!(dir = %dir.display(), error = %e, "cannot watch folder");
                true
            }
        }
    }

    /// Drops the watches walks put below `dir` (or below `target`, what a
    /// symlinked rule folder leads to).
    fn drop_below(&self, dir: &Path, target: &Path) {
        let below: Vec<PathBuf> = self
            .folders()
            .extract_if(|p| p.starts_with(dir) || p.starts_with(target))
            .collect();
        let mut watcher = self.watcher();
        for path in below {
            let _ = watcher.unwatch(&path);
        }
    }
}

/// Live watches; dropping it stops them.
pub struct EventSource {
    shared: Arc<Shared>,
    aliases: Arc<Aliases>,
    /// Rules that could not be watched and must be polled instead.
    pub unwatched: Vec<usize>,
    /// Per rule: the folder its watch was put on, `None` when it was not
    /// watched (absent: watched when it appears; or in `unwatched`).
    pub watched: Vec<Option<FileId>>,
}

impl EventSource {
    /// Watches a rule folder again (it appeared, came back after
    /// vanishing, or is another folder now); returns the folder the watch
    /// is on. Its identity is taken before the watch: if the folder is
    /// swapped in between, the next check sees the difference.
    pub fn rewatch(&mut self, dir: &Path) -> Option<FileId> {
        self.unwatch(dir);
        let id = FileId::of(dir)?;
        match self.aliases.watch(&mut self.shared.watcher(), dir) {
            Ok(()) => Some(id),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch rule folder yet");
                None
            }
        }
    }

    /// Drops the watch of a vanished folder: if it was moved away, its
    /// events would otherwise keep arriving under its old name.
    pub fn unwatch(&mut self, dir: &Path) {
        let target = self.aliases.watched(dir);
        self.aliases.unwatch(&mut self.shared.watcher(), dir);
        self.shared.drop_below(dir, &target);
    }

    /// What walks call for each folder they enter: a watch on it, unless
    /// it is in a polled rule folder (`polled`). After the kernel's watch
    /// limit was reached once, the walk asks no more (the daemon polls).
    pub fn folder_hook(&self, polled: Vec<PathBuf>) -> FolderHook {
        let shared = self.shared.clone();
        let full = AtomicBool::new(false);
        FolderHook(Arc::new(move |dir: &Path| {
            if full.load(Ordering::Relaxed) || polled.iter().any(|p| dir.starts_with(p)) {
                return;
            }
            if !shared.add(dir) {
                full.store(true, Ordering::Relaxed);
            }
        }))
    }
}

pub const WATCH_LIMIT_HELP: &str =
    "the kernel's inotify watch limit (fs.inotify.max_user_watches) is reached: \
raise it with `sysctl fs.inotify.max_user_watches=1048576` (and in /etc/sysctl.d/ to keep it); \
meanwhile the folder is polled";

/// Starts watching every rule folder. Folders that cannot be watched are
/// listed in `unwatched` with the reason logged.
pub fn start(
    rules: &RuleSet,
    tx: mpsc::Sender<FsSignal>,
    overflow: Arc<Overflow>,
) -> anyhow::Result<EventSource> {
    let aliases = Arc::new(Aliases::default());
    aliases.switches().dirs = rules.rules().iter().map(|r| r.dir.clone()).collect();
    let renamer = aliases.clone();
    let overflow_flags = overflow.clone();
    let handler = move |result: notify::Result<notify::Event>| {
        let signal = match result {
            Ok(event) if event.need_rescan() => FsSignal::Rescan,
            Ok(event) if ignored(&event.kind) => return,
            Ok(mut event) => {
                renamer.switched(&mut event.paths);
                if event.paths.is_empty() {
                    return;
                }
                renamer.rename(&mut event.paths);
                FsSignal::Paths(event.paths)
            }
            Err(e) if matches!(e.kind, ErrorKind::MaxFilesWatch) => {
                overflow.raise(&overflow.watch_limit);
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "file watcher error; rescanning to be safe");
                FsSignal::Rescan
            }
        };
        match tx.try_send(signal) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => overflow.raise(&overflow.flag),
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    };
    // Links inside rule folders are aliases (see `crate::links`): the
    // folders they lead to are watched as themselves, never again through
    // the link.
    let config = notify::Config::default().with_follow_symlinks(false);
    let shared = Arc::new(Shared {
        watcher: Mutex::new(notify::RecommendedWatcher::new(handler, config)?),
        folders: Mutex::default(),
        overflow: overflow_flags,
    });
    let mut watcher = shared.watcher();
    let mut unwatched = Vec::new();
    let mut watched = Vec::new();
    for (i, rule) in rules.rules().iter().enumerate() {
        let id = FileId::of(&rule.dir);
        let result = match id {
            Some(_) => aliases.watch(&mut watcher, &rule.dir),
            None => Err(notify::Error::path_not_found()),
        };
        watched.push(id.filter(|_| result.is_ok()));
        if let Err(e) = result {
            if matches!(e.kind, ErrorKind::PathNotFound) {
                // Reported by the reconcile pass; watched once it appears.
                continue;
            }
            if matches!(e.kind, ErrorKind::MaxFilesWatch) {
                tracing::error!(dir = %rule.dir.display(), "{WATCH_LIMIT_HELP}");
            } else {
                tracing::error!(dir = %rule.dir.display(), error = %e, "cannot watch rule folder; polling it instead");
            }
            unwatched.push(i);
        }
    }
    drop(watcher);
    Ok(EventSource {
        shared,
        aliases,
        unwatched,
        watched,
    })
}

/// Events that cannot mean a content change: reads, opens, closes after
/// reading.
fn ignored(kind: &EventKind) -> bool {
    matches!(kind, EventKind::Access(a) if !matches!(a, AccessKind::Close(AccessMode::Write)))
}
