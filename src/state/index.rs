//! The in-memory index a scan compares against: every recorded file's
//! stat data and hash, read from the store once per scan so the walk never
//! queries SQLite per file.
//!
//! It is compact because it is the largest thing optiwatch holds (a
//! million files): entries sit in one vector, their paths in one byte
//! arena, and a hash table of 4-byte entry numbers finds them. That is
//! 80 bytes per entry plus the path, against ~250 for a
//! `HashMap<PathBuf, _>`. Devices are few, so an entry holds a 2-byte
//! number into a table of them instead of the 8-byte `st_dev`.

use std::ffi::OsStr;
use std::hash::BuildHasher;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use hashbrown::HashTable;

use super::Stat;

#[derive(Debug)]
struct IndexEntry {
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    inode: u64,
    hash: [u8; 32],
    path_at: u64,
    path_len: u32,
    /// Number in [`FileIndex::devices`]; [`NO_DEVICE`] when that is full.
    device: u16,
    racy: bool,
    /// Set by whichever walker thread meets the file; entries left unseen
    /// after a walk are candidates for deletion.
    seen: AtomicBool,
}

/// Stands for a device the table had no room for: such entries compare
/// unequal to every stat, so their files are hashed (correct, just slower).
const NO_DEVICE: u16 = u16::MAX;

/// What the store recorded about one file, as a scan compares it.
#[derive(Debug, Clone, Copy)]
pub struct Known<'a> {
    pub stat: Stat,
    pub hash: &'a [u8; 32],
    /// Recorded too soon after a change to trust its stat data.
    pub racy: bool,
    entry: &'a IndexEntry,
}

impl Known<'_> {
    pub fn mark_seen(&self) {
        self.entry.seen.store(true, Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
pub struct FileIndex {
    entries: Vec<IndexEntry>,
    paths: Vec<u8>,
    /// Every `st_dev` the entries name; rarely more than a few.
    devices: Vec<u64>,
    table: HashTable<u32>,
    /// foldhash (hashbrown's default): several times faster than SipHash
    /// on paths, and seeded per process.
    hasher: hashbrown::DefaultHashBuilder,
    /// The recorded symbolic links the pass needs.
    pub links: super::links::LinkIndex,
}

impl FileIndex {
    /// An empty index with room for `files` entries and `path_bytes` of
    /// paths, so loading never reallocates.
    pub fn with_capacity(files: usize, path_bytes: usize) -> FileIndex {
        FileIndex {
            entries: Vec::with_capacity(files),
            paths: Vec::with_capacity(path_bytes),
            devices: Vec::new(),
            table: HashTable::with_capacity(files),
            hasher: Default::default(),
            links: Default::default(),
        }
    }

    /// Adds a file; a path already in the index is kept as it is (queries
    /// for overlapping folders return some rows twice).
    pub fn insert(&mut self, path: &[u8], stat: Stat, hash: [u8; 32], racy: bool) {
        if self.get(Path::new(OsStr::from_bytes(path))).is_some() {
            return;
        }
        // Both fit unless the index held over 4 billion files (hundreds of
        // GB of memory first) or the store a path over 4 GiB (damaged):
        // such an entry is left out, so its file reads as new, rather than
        // ending the process.
        let (Ok(number), Ok(path_len)) =
            (u32::try_from(self.entries.len()), u32::try_from(path.len()))
        else {
            return;
        };
        let path_at = self.paths.len() as u64;
        self.paths.extend_from_slice(path);
        let device = self.device_number(stat.dev);
        self.entries.push(IndexEntry {
            size: stat.size,
            mtime_ns: stat.mtime_ns,
            ctime_ns: stat.ctime_ns,
            inode: stat.inode,
            hash,
            path_at,
            path_len,
            device,
            racy,
            seen: AtomicBool::new(false),
        });
        let hasher = &self.hasher;
        let (entries, paths) = (&self.entries, &self.paths);
        let key = |n: &u32| hasher.hash_one(path_of(entries, paths, *n as usize));
        self.table.insert_unique(hasher.hash_one(path), number, key);
    }

    fn device_number(&mut self, dev: u64) -> u16 {
        // The last device is the likeliest: rows come sorted by path.
        if let Some(n) = self.devices.iter().rposition(|d| *d == dev) {
            // Below NO_DEVICE (a u16), as the check below keeps the table.
            return u16::try_from(n).unwrap_or(NO_DEVICE);
        }
        if self.devices.len() >= usize::from(NO_DEVICE) {
            return NO_DEVICE;
        }
        self.devices.push(dev);
        u16::try_from(self.devices.len() - 1).unwrap_or(NO_DEVICE)
    }

    fn known<'a>(&'a self, entry: &'a IndexEntry) -> Known<'a> {
        let dev = match self.devices.get(usize::from(entry.device)) {
            Some(dev) => *dev,
            // No real stat has both this device and inode 0 (see NO_DEVICE).
            None => u64::MAX,
        };
        Known {
            stat: Stat {
                size: entry.size,
                mtime_ns: entry.mtime_ns,
                ctime_ns: entry.ctime_ns,
                inode: if entry.device == NO_DEVICE {
                    0
                } else {
                    entry.inode
                },
                dev,
            },
            hash: &entry.hash,
            racy: entry.racy,
            entry,
        }
    }

    pub fn get(&self, path: &Path) -> Option<Known<'_>> {
        let bytes = path.as_os_str().as_bytes();
        let found = self.table.find(self.hasher.hash_one(bytes), |n| {
            path_of(&self.entries, &self.paths, *n as usize) == bytes
        })?;
        Some(self.known(&self.entries[*found as usize]))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Every recorded file, and whether a walk has marked it as seen.
    pub fn files(&self) -> impl Iterator<Item = (&Path, bool)> {
        self.entries.iter().enumerate().map(|(n, e)| {
            let bytes = path_of(&self.entries, &self.paths, n);
            (
                Path::new(OsStr::from_bytes(bytes)),
                e.seen.load(Ordering::Relaxed),
            )
        })
    }

    /// Recorded files that no walk has marked as seen.
    pub fn unseen(&self) -> impl Iterator<Item = &Path> {
        self.files().filter(|(_, seen)| !seen).map(|(path, _)| path)
    }
}

fn path_of<'a>(entries: &[IndexEntry], paths: &'a [u8], n: usize) -> &'a [u8] {
    let e = &entries[n];
    &paths[e.path_at as usize..e.path_at as usize + e.path_len as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_entries_and_lists_the_unseen() {
        let stat = |n| Stat {
            size: n,
            mtime_ns: 0,
            ctime_ns: 1,
            inode: n,
            dev: n % 3,
        };
        let mut index = FileIndex::with_capacity(0, 0);
        for n in 0..1000u64 {
            index.insert(
                format!("/m/{n}.jpg").as_bytes(),
                stat(n),
                [n as u8; 32],
                n == 7,
            );
        }
        assert_eq!(index.len(), 1000);
        let e = index.get(Path::new("/m/7.jpg")).unwrap();
        assert_eq!((e.stat, e.hash[0], e.racy), (stat(7), 7, true));
        assert!(!index.get(Path::new("/m/8.jpg")).unwrap().racy);
        assert!(index.get(Path::new("/m/7.jp")).is_none());
        index.insert(b"/m/7.jpg", stat(99), [0; 32], false);
        assert_eq!(index.len(), 1000, "a second insert of a path is ignored");
        for n in 1..1000 {
            index
                .get(Path::new(&format!("/m/{n}.jpg")))
                .unwrap()
                .mark_seen();
        }
        let unseen: Vec<&Path> = index.unseen().collect();
        assert_eq!(unseen, vec![Path::new("/m/0.jpg")]);
    }

    #[test]
    fn an_entry_stays_80_bytes() {
        assert_eq!(std::mem::size_of::<IndexEntry>(), 80);
    }

    #[test]
    fn entries_beyond_the_device_table_never_match_a_stat() {
        let mut index = FileIndex::with_capacity(0, 0);
        index.devices = (0..u64::from(NO_DEVICE)).collect();
        let stat = Stat {
            size: 1,
            mtime_ns: 2,
            ctime_ns: 3,
            inode: 4,
            dev: 1 << 40,
        };
        index.insert(b"/far", stat, [0; 32], false);
        assert_ne!(index.get(Path::new("/far")).unwrap().stat, stat);
    }
}
