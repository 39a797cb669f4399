//! Hashing one file with BLAKE3, and telling a file read whole from one
//! that changed while it was read. Small files are read into one reused
//! buffer; large ones are hashed on every core as BLAKE3's tree allows,
//! with `pread` and no memory map (a file truncated under a map would end
//! the process with SIGBUS).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use super::examine::RACY_WINDOW;
use crate::state::{Hashed, Stat};

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
pub fn hash_file(path: &Path) -> io::Result<Read> {
    // O_NOFOLLOW: a file swapped for a symlink after the walk must not lead
    // out of the rule folder (links are resolved by `crate::links`, never
    // by opening them); O_NONBLOCK: one swapped for a FIFO must not hang the
    // scan. Neither changes how a regular file is read.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
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
    let window = i64::try_from(RACY_WINDOW.as_nanos()).unwrap_or(i64::MAX);
    Ok(Read::Whole(Hashed {
        stat,
        hash,
        racy: stat.last_change_ns() >= now.saturating_sub(window),
        links: meta.nlink(),
    }))
}

/// Nanoseconds since the epoch, as stat data has them (0 before it).
pub(crate) fn unix_ns(t: SystemTime) -> i64 {
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
    use std::os::fd::AsRawFd;
    // The whole file is read once, front to back in two halves: a larger
    // readahead window when it is not cached. Only a hint; its result
    // does not matter.
    // SAFETY: the descriptor is open for the call (borrowed from `file`).
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL);
    }
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
            // At most PIECE (1 MiB): fits any usize.
            buffer.resize(usize::try_from(len).unwrap_or(0), 0);
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
        match hash_file(path).unwrap() {
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
        let Read::Whole(h) = hash_file(&path).unwrap() else {
            panic!("moving")
        };
        assert!(h.racy);
        assert_eq!(h.links, 1);
    }
}
