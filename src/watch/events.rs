//! The file-event change source: notify's recommended watcher (inotify on
//! Linux), recursive over every rule folder, bridged into tokio through a
//! bounded channel.
//!
//! The bridge never blocks notify's thread and never drops a change
//! silently: when the channel is full, an overflow flag is raised and the
//! daemon rescans instead. Kernel queue overflows (notify's rescan flag) and
//! watcher errors become rescans too.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{ErrorKind, RecursiveMode, Watcher};
use tokio::sync::{mpsc, Notify};

use crate::rules::RuleSet;

/// Messages from the watcher thread to the daemon.
#[derive(Debug)]
pub enum FsSignal {
    /// Something happened at these paths.
    Paths(Vec<PathBuf>),
    /// Events may have been lost: reconcile everything.
    Rescan,
    /// The kernel's inotify watch limit was reached: poll from now on.
    WatchLimit,
}

/// Raised when the channel was full; read and cleared by the daemon.
#[derive(Debug, Default)]
pub struct Overflow {
    flag: AtomicBool,
    pub wake: Notify,
}

impl Overflow {
    pub fn take(&self) -> bool {
        self.flag.swap(false, Ordering::AcqRel)
    }

    fn raise(&self) {
        self.flag.store(true, Ordering::Release);
        self.wake.notify_one();
    }
}

/// Live watches; dropping it stops them.
pub struct EventSource {
    watcher: notify::RecommendedWatcher,
    /// Rules that could not be watched and must be polled instead.
    pub unwatched: Vec<usize>,
}

impl EventSource {
    /// Watches a rule folder again (it came back after vanishing).
    pub fn rewatch(&mut self, dir: &Path) -> bool {
        let _ = self.watcher.unwatch(dir);
        match self.watcher.watch(dir, RecursiveMode::Recursive) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch rule folder yet");
                false
            }
        }
    }

    /// Drops the watch of a vanished folder: if it was moved away, its
    /// events would otherwise keep arriving under its old name.
    pub fn unwatch(&mut self, dir: &Path) {
        let _ = self.watcher.unwatch(dir);
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
    let handler = move |result: notify::Result<notify::Event>| {
        let signal = match result {
            Ok(event) if event.need_rescan() => FsSignal::Rescan,
            Ok(event) if ignored(&event.kind) => return,
            Ok(event) => FsSignal::Paths(event.paths),
            Err(e) if matches!(e.kind, ErrorKind::MaxFilesWatch) => FsSignal::WatchLimit,
            Err(e) => {
                tracing::warn!(error = %e, "file watcher error; rescanning to be safe");
                FsSignal::Rescan
            }
        };
        match tx.try_send(signal) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => overflow.raise(),
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    };
    // Symlinked folders are watched only when a rule follows symlinks; the
    // scan of each event path still checks every rule's own setting.
    let follow = rules.rules().iter().any(|r| r.follow_symlinks);
    let config = notify::Config::default().with_follow_symlinks(follow);
    let mut watcher = notify::RecommendedWatcher::new(handler, config)?;
    let mut unwatched = Vec::new();
    for (i, rule) in rules.rules().iter().enumerate() {
        if let Err(e) = watcher.watch(&rule.dir, RecursiveMode::Recursive) {
            if matches!(e.kind, ErrorKind::MaxFilesWatch) {
                tracing::error!(dir = %rule.dir.display(), "{WATCH_LIMIT_HELP}");
            } else {
                tracing::error!(dir = %rule.dir.display(), error = %e, "cannot watch rule folder; polling it instead");
            }
            unwatched.push(i);
        }
    }
    Ok(EventSource { watcher, unwatched })
}

/// Events that cannot mean a content change: reads, opens, closes after
/// reading.
fn ignored(kind: &EventKind) -> bool {
    matches!(kind, EventKind::Access(a) if !matches!(a, AccessKind::Close(AccessMode::Write)))
}
