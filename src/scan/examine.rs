//! Examining one file: decides whether it really changed since it was
//! recorded.
//!
//! The stat quick-check (size, mtime and ctime to the nanosecond, inode,
//! device) clears most files without reading them; any other file is hashed
//! with BLAKE3 and the hash, not the stat data, decides. Two rules keep the
//! quick-check honest: a file recorded within [`RACY_WINDOW`] of its last
//! change is "racy" and hashed again next time (a write in the same
//! timestamp tick would leave its stat data equal), and a file that changed
//! while it was read is not recorded at all ([`Observation::Unsettled`]).
//! Scans and file events both come through here, so the two can never
//! disagree about what a change is.

use std::io;
use std::path::Path;
use std::time::Duration;

use super::hash::{hash_file, Read};
use crate::state::{Hashed, Known, Stat};

/// What detection concluded about one file.
#[derive(Debug)]
pub enum Observation {
    /// Stat data unchanged: not read at all (or a racy file whose content
    /// is still what was recorded, and still racy).
    Unchanged,
    /// A racy file's content and stat data are what was recorded, and it is
    /// no longer racy: recorded again so the next pass can trust it.
    Confirmed(Hashed),
    /// Stat data changed, content did not (a `touch`, `chmod`): record the
    /// new stat.
    Touched(Hashed),
    /// Content differs from the recorded hash.
    Changed(Hashed),
    /// Never recorded before.
    New(Hashed),
    /// Changed moments ago and maybe still being written: not read now,
    /// handed back to be looked at once it is quiet (only when the walk was
    /// asked to, [`super::ScanPlan::leave_changed_after`]; never by
    /// [`examine`]).
    Recent,
    /// Changed while it was being read (its size, mtime or ctime differ
    /// after reading, or it got shorter): still being written, so nothing
    /// read is recorded; looked at again once it settles.
    Unsettled,
    /// Gone between listing and opening: handled like a deletion.
    Vanished,
    /// Could not be read (permissions, I/O error): left as it was recorded
    /// and tried again next time.
    Unreadable(io::Error),
}

/// How far a rule's recorded stat data can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    /// Equal stat data means equal content (the quick-check).
    Stat,
    /// Read every file and compare hashes only: the rule folder is on
    /// another device than when its files were recorded (a remount, a disk
    /// moved), so inode numbers and times say nothing.
    Content,
}

/// A file whose last change (mtime or ctime) is this close to the moment
/// its stat data was taken, or later, is racy. 2 s covers the coarsest
/// common timestamps (FAT's 2 s, ext3's and many NFS/SMB mounts' 1 s) and
/// the few milliseconds of the kernel's coarse clock on fine-grained ones.
pub const RACY_WINDOW: Duration = Duration::from_secs(2);

/// The stat quick-check: whether the recorded stat data clears the file
/// (`stat`, from the walk) without reading it. Never for a racy record or
/// a rule compared by content.
pub fn unchanged_by_stat(known: Option<Known<'_>>, stat: &Stat, compare: Compare) -> bool {
    known.is_some_and(|entry| compare == Compare::Stat && !entry.racy && entry.stat == *stat)
}

/// Reads `path`, which the quick-check did not clear, and compares its
/// content with what the store recorded.
pub fn examine(path: &Path, known: Option<Known<'_>>) -> Observation {
    let file = match hash_file(path) {
        Ok(Read::Whole(file)) => file,
        Ok(Read::Moving) => return Observation::Unsettled,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Observation::Vanished,
        Err(e) => return Observation::Unreadable(e),
    };
    match known {
        None => Observation::New(file),
        Some(entry) if !entry.same_content(&file.hash) => Observation::Changed(file),
        Some(entry) if entry.stat != file.stat && !entry.stat.is_legacy_of(&file.stat) => {
            Observation::Touched(file)
        }
        Some(entry) if entry.stat != file.stat || entry.racy != file.racy => {
            Observation::Confirmed(file)
        }
        Some(_) => Observation::Unchanged,
    }
}
