//! Detection: decides whether one file really changed since it was recorded.
//!
//! The stat quick-check (size, mtime to the nanosecond, inode) clears most
//! files without reading them; any other file is hashed with BLAKE3 and the
//! hash, not the mtime, decides. Scans and (later) file events both come
//! through here, so the two can never disagree about what a change is.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::state::{IndexEntry, Stat};

/// What detection concluded about one file.
#[derive(Debug)]
pub enum Observation {
    /// Stat data unchanged: not read at all.
    Unchanged,
    /// Stat data changed, content did not (a `touch`): record the new stat.
    Touched { stat: Stat, hash: [u8; 32] },
    /// Content differs from the recorded hash.
    Changed { stat: Stat, hash: [u8; 32] },
    /// Never recorded before.
    New { stat: Stat, hash: [u8; 32] },
    /// Modified moments ago and maybe still being written: not read now,
    /// handed back to be looked at once it settles.
    Hot,
    /// Gone between listing and opening: handled like a deletion.
    Vanished,
    /// Could not be read (permissions, I/O error): left as it was recorded
    /// and tried again next time.
    Unreadable(io::Error),
}

/// Examines `path`, whose stat data the caller already has (from the walk),
/// against what the store recorded.
///
/// `hot_after`: a file modified after this (mtime in ns) is reported as
/// [`Observation::Hot`] instead of being read: the daemon's rescans use it
/// so a file in the middle of being written is left to settle first.
pub fn examine(
    path: &Path,
    stat: Stat,
    known: Option<&IndexEntry>,
    hot_after: Option<i64>,
    follow_symlinks: bool,
) -> Observation {
    if let Some(entry) = known {
        if entry.stat == stat {
            return Observation::Unchanged;
        }
    }
    if hot_after.is_some_and(|t| stat.mtime_ns > t) {
        return Observation::Hot;
    }
    let (stat, hash) = match hash_file(path, follow_symlinks) {
        Ok(pair) => pair,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Observation::Vanished,
        Err(e) => return Observation::Unreadable(e),
    };
    match known {
        None => Observation::New { stat, hash },
        Some(entry) if entry.hash == hash => Observation::Touched { stat, hash },
        Some(_) => Observation::Changed { stat, hash },
    }
}

/// Hashes a file and returns the stat data taken from the same open handle
/// *before* reading. If the file changes while it is read, the recorded stat
/// is older than the content, so the next pass sees a different stat and
/// hashes again: a write during hashing can cause a re-hash, never a miss.
pub fn hash_file(path: &Path, follow_symlinks: bool) -> io::Result<(Stat, [u8; 32])> {
    // O_NOFOLLOW: a file swapped for a symlink after the walk must not lead
    // out of the rule folder (unless the rule follows symlinks on purpose);
    // O_NONBLOCK: one swapped for a FIFO must not hang the scan. Neither
    // changes how a regular file is read.
    let nofollow = if follow_symlinks { 0 } else { libc::O_NOFOLLOW };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nofollow | libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let stat = Stat::of(&meta);
    let mut hasher = blake3::Hasher::new();
    if stat.size < LARGE {
        hash_small(&mut hasher, file)?;
    } else {
        hash_large(&mut hasher, file)?;
    }
    Ok((stat, *hasher.finalize().as_bytes()))
}

thread_local! {
    /// One read buffer per walker thread, reused for every small file
    /// (a fresh zeroed buffer per file cost more than the hashing).
    static BUFFER: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(LARGE as usize));
}

fn hash_small(hasher: &mut blake3::Hasher, mut file: std::fs::File) -> io::Result<()> {
    use std::io::Read;
    BUFFER.with(|buffer| {
        let mut buffer = buffer.borrow_mut();
        buffer.clear();
        file.read_to_end(&mut buffer)?;
        hasher.update(&buffer);
        Ok(())
    })
}

/// Files at least this big are memory-mapped and hashed on every core.
const LARGE: u64 = 4 << 20;

/// Hashes a large file through a memory map on all cores (BLAKE3 is a tree
/// hash), as fast as `b3sum`. The one risk of mapping: a file truncated
/// while it is hashed ends the process with SIGBUS. That is rare (a file of
/// 4 MiB or more cut short within the fraction of a second its hashing
/// takes) and, like any crash, loses nothing: what was recorded is durable
/// and the next run finds the rest again.
fn hash_large(hasher: &mut blake3::Hasher, file: std::fs::File) -> io::Result<()> {
    // SAFETY: the map is read-only and dropped before returning; see above
    // for what a concurrent truncation does.
    let map = unsafe { memmap2::MmapOptions::new().map(&file)? };
    hasher.update_rayon(&map);
    Ok(())
}
