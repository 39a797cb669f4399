//! The change sources that walk: a scan visits every file of every rule
//! folder (or of the paths file events name), in parallel, and turns what
//! it finds into a change set.
//!
//! [`roots`] decides where a walk starts and how each rule's files are
//! compared; [`walk`] runs the walker threads, which stat, quick-check and
//! hash ([`examine`], [`hash`]) so both walking and hashing use every
//! core; [`collect`] turns their observations into the [`Changes`] the
//! store records. Recorded files that no walker met are deletions, unless
//! they lie under a folder the walk could not read: a missing mount must
//! never look like a deleted media library. [`pass`] is the detection pass
//! `scan` and `watch` share around it.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::SystemTime;

mod collect;
pub mod examine;
pub(crate) mod hash;
pub mod pass;
mod roots;
mod visit;
mod walk;

pub use walk::scan;

use crate::state::{Changes, Hashed, Stat};

/// How a scan treats what it finds.
#[derive(Debug, Clone)]
pub struct ScanPlan {
    /// Per rule (same order as the rule set): record without invalidating,
    /// because this is the rule's first scan or `--baseline` was asked for.
    pub baseline: Vec<bool>,
    pub invalidate_new: bool,
    /// Whether the report lists every path (`--json`) or only counts them.
    pub paths: Paths,
    /// Files changed after this (mtime or ctime) are not read but listed in
    /// [`Detected::recent`]. The daemon's settler decides the moment for
    /// its rescans ([`crate::watch`]), so a file in the middle of a write
    /// is read once it is quiet; the debounce takes effect there.
    pub leave_changed_after: Option<SystemTime>,
    /// Per rule: the file system (`st_dev`) its folder was on when its files
    /// were recorded; a different one now means its files are compared by
    /// content (and, if none is left, "unmounted", not "deleted").
    pub devices: Vec<Option<u64>>,
    /// The terminal progress bar, if one is shown.
    pub progress: Option<Arc<crate::progress::Progress>>,
    /// Raised to abandon the walk (the daemon is stopping). An abandoned
    /// walk is marked [`Detected::cancelled`] and must not be recorded: its
    /// unvisited files would look deleted.
    pub cancel: Option<Arc<AtomicBool>>,
    pub threads: usize,
    /// Told of every folder a rule walk enters, before its entries are
    /// read: the daemon puts its watch on each there, so one walk both
    /// watches and reconciles a tree (see [`crate::watch`]).
    pub on_folder: Option<FolderHook>,
}

/// A callback for each folder a walk enters ([`ScanPlan::on_folder`]).
#[derive(Clone)]
pub struct FolderHook(pub Arc<dyn Fn(&Path) + Send + Sync>);

impl std::fmt::Debug for FolderHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FolderHook")
    }
}

/// Whether a pass lists the paths of each outcome or only counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paths {
    /// Counts only: most files are unchanged on most runs, and listing
    /// them costs memory and a message per file.
    Counted,
    /// The paths that changed, were touched, are new or deleted (what
    /// `scan` shows); scanned and unchanged files are only counted, so the
    /// report stays as small as the change.
    Changes,
    /// Every path, for `scan --json --all-paths` and debug logs.
    Listed,
}

impl Paths {
    /// Whether changed, touched, new and deleted paths are listed.
    pub fn lists_changes(self) -> bool {
        self != Paths::Counted
    }

    /// Whether scanned and unchanged paths are listed too.
    pub fn lists_every_file(self) -> bool {
        self == Paths::Listed
    }
}

/// Paths of one kind of outcome; `paths` stays empty unless listed.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub count: usize,
    pub paths: Vec<PathBuf>,
}

impl Tally {
    /// Counts `path`, and keeps it when `list` (see [`Paths`]).
    pub(crate) fn add(&mut self, path: &Path, list: bool) {
        self.count += 1;
        if list {
            self.paths.push(path.to_path_buf());
        }
    }
}

/// What a scan found, and the change set to record.
#[derive(Debug, Default)]
pub struct Detected {
    pub scanned: Tally,
    pub unchanged: Tally,
    pub touched: Tally,
    pub changed: Tally,
    pub new: Tally,
    pub deleted: Tally,
    /// Files left alone because they changed too recently (only with
    /// [`ScanPlan::leave_changed_after`]).
    pub recent: Vec<PathBuf>,
    /// Files that changed while they were read: nothing was recorded for
    /// them; the daemon looks again once they settle, `scan` reports them.
    pub unsettled: Vec<PathBuf>,
    /// Changed files with more than one hard link: other recorded paths
    /// of the same inode serve the same new bytes (see
    /// [`pass::detect`]).
    pub linked: Vec<(PathBuf, Hashed)>,
    /// New files with more than one hard link (for
    /// [`Changes::relinked`]).
    pub new_links: Vec<Stat>,
    /// The walk was abandoned part-way ([`ScanPlan::cancel`]).
    pub cancelled: bool,
    /// The sink failed; the walk stopped and nothing more may be recorded.
    pub failure: Option<anyhow::Error>,
    /// Rule folders that could not be opened (missing, unmounted).
    pub unavailable: Vec<usize>,
    /// Folders walked (rule folders included).
    pub folders: usize,
    /// Problems that left part of the tree unexamined; the run must fail.
    pub errors: Vec<String>,
    pub changes: Changes,
    /// Links met, changed, and aliases owed (see [`crate::links`]).
    pub links: crate::links::Pass,
}

/// Which part of the tree a scan looks at.
#[derive(Debug, Clone)]
pub enum Scope {
    /// Every rule folder. Recorded files outside every rule are forgotten.
    All,
    /// Just these files or folders (from file events), each inside a rule
    /// folder. A path that no longer exists means its recorded files were
    /// deleted; the index must hold the records under these paths.
    Paths(Vec<PathBuf>),
}

/// Records a chunk of changes; an error stops the walk.
pub type Sink<'a> = &'a mut dyn FnMut(Changes) -> anyhow::Result<()>;
