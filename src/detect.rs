//! Detection: decides whether one file really changed since it was recorded.
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

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    /// Modified moments ago and maybe still being written: not read now,
    /// handed back to be looked at once it settles.
    Hot,
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

/// Examines `path`, whose stat data the caller already has (from the walk),
/// against what the store recorded.
///
/// `hot_after`: a file changed after this (mtime or ctime, in ns) is reported as
/// [`Observation::Hot`] instead of being read: the daemon's rescans use it
/// so a file in the middle of being written is left to settle first.
pub fn examine(
    path: &Path,
    stat: Stat,
    known: Option<Known<'_>>,
    hot_after: Option<i64>,
    follow_symlinks: bool,
    compare: Compare,
) -> Observation {
    if let Some(entry) = known {
        if compare == Compare::Stat && !entry.racy && entry.stat == stat {
            return Observation::Unchanged;
        }
    }
    // The ctime too: a writer that restores the mtime (`cp -p`) may have
    // finished a moment ago.
    if hot_after.is_some_and(|t| stat.last_change_ns() > t) {
        return Observation::Hot;
    }
    let file = match hash_file(path, follow_symlinks) {
        Ok(Read::Whole(file)) => file,
        Ok(Read::Moving) => return Observation::Unsettled,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Observation::Vanished,
        Err(e) => return Observation::Unreadable(e),
    };
    match known {
        None => Observation::New(file),
        Some(entry) if *entry.hash != file.hash => Observation::Changed(file),
        Some(entry) if entry.stat != file.stat && !entry.stat.is_legacy_of(&file.stat) => {
            Observation::Touched(file)
        }
        Some(entry) if entry.stat != file.stat || entry.racy != file.racy => {
            Observation::Confirmed(file)
        }
        Some(_) => Observation::Unchanged,
    }
}

/// The outcome of reading a file.
#[derive(Debug)]
pub enum Read {
    Whole(Hashed),
    /// It changed while it was read; the hash means nothing.
    Moving,
}

/// Hashes a file and returns the stat data taken from the same open handle
/// *before* reading. The handle is stat'ed again after reading: if size,
/// mtime or ctime moved, or the file got shorter than its size said, the
/// file is [`Read::Moving`]. A write during hashing that moves none of them
/// (same tick, same size) is caught by the racy rule on the next pass.
pub fn hash_file(path: &Path, follow_symlinks: bool) -> io::Result<Read> {
    // O_NOFOLLOW: a file swapped for a symlink after the walk must not lead
    // out of the rule folder (unless the rule follows symlinks on purpose);
    // O_NONBLOCK: one swapped for a FIFO must not hang the scan. Neither
    // changes how a regular file is read.
    let nofollow = if follow_symlinks { 0 } else { libc::O_NOFOLLOW };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nofollow | libc::O_NONBLOCK)
        .open(path)?;
    // Taken before the stat: a change after this moment gets a timestamp
    // no older than this minus the file system's granularity.
    let now = unix_ns(SystemTime::now());
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let stat = Stat::of(&meta);
    crate::failpoint::pause_at("hashing");
    let hash = if stat.size < LARGE {
        hash_small(&file, stat.size)?
    } else {
        hash_large(&file, stat.size)?
    };
    let Some(hash) = hash else {
        return Ok(Read::Moving);
    };
    let after = Stat::of(&file.metadata()?);
    let moved =
        (after.size, after.mtime_ns, after.ctime_ns) != (stat.size, stat.mtime_ns, stat.ctime_ns);
    if moved {
        return Ok(Read::Moving);
    }
    let window = RACY_WINDOW.as_nanos() as i64;
    Ok(Read::Whole(Hashed {
        stat,
        hash,
        racy: stat.last_change_ns() >= now.saturating_sub(window),
        links: meta.nlink(),
    }))
}

fn unix_ns(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

thread_local! {
    /// One read buffer per thread, reused for every file (a fresh zeroed
    /// buffer per file cost more than the hashing).
    static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Reads the whole of a small file (`size` said at open) and hashes it;
/// `None` if it turned out longer or shorter.
fn hash_small(file: &File, size: u64) -> io::Result<Option<[u8; 32]>> {
    use std::io::Read;
    BUFFER.with(|buffer| {
        let mut buffer = buffer.borrow_mut();
        buffer.clear();
        // One byte more than expected tells a grown file apart.
        file.take(size + 1).read_to_end(&mut buffer)?;
        if buffer.len() as u64 != size {
            return Ok(None);
        }
        Ok(Some(*blake3::hash(&buffer).as_bytes()))
    })
}

/// Files at least this big are hashed on every core.
const LARGE: u64 = 4 << 20;

/// What each task of a large file reads and hashes at once: a power of two
/// (as BLAKE3's subtrees must be), small enough to stay in the CPU cache
/// between the read and the hashing.
const PIECE: u64 = 1 << 20;

/// Hashes a large file on all cores without a memory map (a file truncated
/// under a map ends the process with SIGBUS). BLAKE3 is a tree hash: the
/// file is split the way BLAKE3 splits its input, each piece is read with
/// `pread` and hashed on a rayon thread, and the pieces' chaining values are
/// merged up to the root, so reading is spread over the cores as much as
/// hashing is. `None` if the file got shorter than `size`.
fn hash_large(file: &File, size: u64) -> io::Result<Option<[u8; 32]>> {
    use blake3::hazmat::{left_subtree_len, merge_subtrees_root, Mode};
    let left = left_subtree_len(size);
    let (l, r) = rayon_core::join(
        || subtree(file, 0, left),
        || subtree(file, left, size - left),
    );
    match (l?, r?) {
        (Some(l), Some(r)) => Ok(Some(*merge_subtrees_root(&l, &r, Mode::Hash).as_bytes())),
        _ => Ok(None),
    }
}

/// The chaining value of `len` bytes at `offset` (a multiple of [`PIECE`]).
fn subtree(file: &File, offset: u64, len: u64) -> io::Result<Option<[u8; 32]>> {
    use blake3::hazmat::{left_subtree_len, merge_subtrees_non_root, HasherExt, Mode};
    if len <= PIECE {
        return BUFFER.with(|buffer| {
            let mut buffer = buffer.borrow_mut();
            buffer.resize(len as usize, 0);
            match file.read_exact_at(&mut buffer, offset) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
                Err(e) => return Err(e),
            }
            let mut hasher = blake3::Hasher::new();
            hasher.set_input_offset(offset);
            hasher.update(&buffer);
            Ok(Some(hasher.finalize_non_root()))
        });
    }
    let left = left_subtree_len(len);
    let (l, r) = rayon_core::join(
        || subtree(file, offset, left),
        || subtree(file, offset + left, len - left),
    );
    match (l?, r?) {
        (Some(l), Some(r)) => Ok(Some(merge_subtrees_non_root(&l, &r, Mode::Hash))),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn hash_of(path: &Path) -> [u8; 32] {
        match hash_file(path, false).unwrap() {
            Read::Whole(h) => h.hash,
            Read::Moving => panic!("the file did not change"),
        }
    }

    #[test]
    fn large_files_hash_as_blake3_does() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        // Around the piece and threshold sizes, and uneven tails.
        for size in [
            LARGE - 1,
            LARGE,
            LARGE + 1,
            LARGE + PIECE + 1023,
            3 * LARGE + 1025,
            8 * LARGE,
        ] {
            let data: Vec<u8> = (0..size).map(|n| (n * 7 % 251) as u8).collect();
            std::fs::File::create(&path)
                .unwrap()
                .write_all(&data)
                .unwrap();
            assert_eq!(hash_of(&path), *blake3::hash(&data).as_bytes(), "{size}");
        }
    }

    #[test]
    fn a_file_just_written_is_racy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"x").unwrap();
        let Read::Whole(h) = hash_file(&path, false).unwrap() else {
            panic!("moving")
        };
        assert!(h.racy);
        assert_eq!(h.links, 1);
    }
}
