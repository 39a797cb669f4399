//! The in-memory index a scan compares against: every recorded file's
//! stat data and hash, read from the store once per scan so the walk never
//! queries SQLite per file.
//!
//! It is compact because it is the largest thing optiwatch holds (a
//! million files). Paths are split into a folder (kept once, in a small
//! folder table) and a name (kept in one byte arena); an entry holds the
//! stat fields most files need in 32 bits (size below 4 GiB, an inode
//! number below 2^32, the folder's device) and the first 128 bits of the
//! BLAKE3 hash: 44 bytes, plus the name and 4-byte entry numbers in a hash
//! table. 128 bits are BLAKE3's security level anyway (the store keeps all
//! 256): a changed file that compares equal needs a second preimage on
//! them, 2^128 work. Files whose fields do
//! not fit are "wide": their full stat data sits in a side table, so they
//! cost more but compare exactly alike. Which folder an entry is in follows
//! from its number: the store returns rows sorted by path, so a folder's
//! files come in runs, and a short table of runs maps numbers to folders.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::hash::BuildHasher;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use hashbrown::HashTable;

use super::Stat;

/// One recorded file; 4-byte aligned, so 44 bytes.
#[derive(Debug)]
struct IndexEntry {
    /// The first half of the recorded BLAKE3 hash.
    hash: [u8; 16],
    /// i64 nanoseconds, split so the entry needs only 4-byte alignment.
    mtime_ns: [u32; 2],
    ctime_ns: [u32; 2],
    /// The low 32 bits; the whole value of a wide entry is in
    /// [`FileIndex::wide`].
    size: u32,
    inode: u32,
    /// Where the name starts in [`FileIndex::names`].
    name_at: u32,
}

/// The stat fields of an entry that did not fit its 32-bit fields, or
/// whose device is not its folder's.
#[derive(Debug, Clone, Copy)]
struct Wide {
    size: u64,
    inode: u64,
    dev: u64,
}

#[derive(Debug)]
struct Folder {
    /// The folder's path with its trailing `/`, in [`FileIndex::folder_bytes`].
    at: usize,
    len: usize,
    /// The device of the first file recorded in it; files on another one
    /// (a file bind-mounted over another) are wide.
    dev: u64,
}

/// What the store recorded about one file, as a scan compares it.
#[derive(Debug, Clone, Copy)]
pub struct Known<'a> {
    pub stat: Stat,
    /// The first 128 bits of the recorded hash (see [`Known::same_content`]).
    pub hash: &'a [u8; 16],
    /// Recorded too soon after a change to trust its stat data.
    pub racy: bool,
    seen: &'a AtomicU64,
    bit: u64,
}

impl Known<'_> {
    /// Whether a file just read (`hash`) has the recorded content.
    pub fn same_content(&self, hash: &[u8; 32]) -> bool {
        hash[..16] == self.hash[..]
    }

    pub fn mark_seen(&self) {
        self.seen.fetch_or(self.bit, Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
pub struct FileIndex {
    entries: Vec<IndexEntry>,
    /// Names, each after its length (one byte; 255 and a 4-byte length for
    /// longer ones).
    names: Vec<u8>,
    folders: Vec<Folder>,
    folder_bytes: Vec<u8>,
    folder_table: HashTable<u32>,
    /// (first entry, folder) of each run of entries in one folder, in
    /// entry order.
    runs: Vec<(u32, u32)>,
    /// Entry numbers, found by folder and name.
    table: HashTable<u32>,
    /// One bit per entry each.
    racy: Vec<u64>,
    seen: Vec<AtomicU64>,
    wide_bits: Vec<u64>,
    wide: HashMap<u32, Wide>,
    /// foldhash (hashbrown's default): several times faster than SipHash
    /// on paths, and seeded per process.
    hasher: hashbrown::DefaultHashBuilder,
    /// The recorded symbolic links the pass needs.
    pub links: super::links::LinkIndex,
}

/// A path as the index keys it: the folder with its trailing `/`, and the
/// name (a path without `/` is all name).
fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|b| *b == b'/') {
        Some(i) => path.split_at(i + 1),
        None => (&[], path),
    }
}

fn bit(bits: &[u64], n: usize) -> bool {
    bits.get(n / 64).is_some_and(|w| w & (1 << (n % 64)) != 0)
}

/// Nanosecond times kept as two u32 halves: the casts below reinterpret
/// the same 64 bits (no value is lost either way).
fn join_ns(parts: [u32; 2]) -> i64 {
    (u64::from(parts[0]) | (u64::from(parts[1]) << 32)) as i64
}

fn split_ns(ns: i64) -> [u32; 2] {
    let bits = ns as u64;
    [bits as u32, (bits >> 32) as u32]
}

impl FileIndex {
    /// An empty index with room for `files` entries, so loading never
    /// grows the hash table (growing it holds the old and the new one).
    pub fn with_capacity(files: usize) -> FileIndex {
        FileIndex {
            entries: Vec::with_capacity(files),
            table: HashTable::with_capacity(files),
            ..FileIndex::default()
        }
    }

    /// Adds a file; a path already in the index is kept as it is (queries
    /// for overlapping folders return some rows twice).
    pub fn insert(&mut self, path: &[u8], stat: Stat, hash: [u8; 32], racy: bool) {
        if self.get(Path::new(OsStr::from_bytes(path))).is_some() {
            return;
        }
        self.insert_new(path, stat, hash, racy);
    }

    /// Adds a file the index does not hold yet (rows of one query over
    /// the whole table, whose paths are unique), without looking it up.
    pub fn insert_new(&mut self, path: &[u8], stat: Stat, hash: [u8; 32], racy: bool) {
        let (folder_path, name) = split(path);
        // All fit unless the index held over 4 billion files or 4 GiB of
        // names (hundreds of GB of memory first) or the store a name over
        // 4 GiB (damaged): such an entry is left out, so its file reads as
        // new, rather than ending the process.
        let (Ok(number), Ok(name_at), Ok(name_len)) = (
            u32::try_from(self.entries.len()),
            u32::try_from(self.names.len()),
            u32::try_from(name.len()),
        ) else {
            return;
        };
        let Some(folder) = self.folder_number(folder_path, stat.dev) else {
            return;
        };
        match u8::try_from(name_len) {
            Ok(short) if short < u8::MAX => self.names.push(short),
            _ => {
                self.names.push(u8::MAX);
                self.names.extend_from_slice(&name_len.to_le_bytes());
            }
        }
        self.names.extend_from_slice(name);
        let wide = Wide {
            size: stat.size,
            inode: stat.inode,
            dev: stat.dev,
        };
        let (size, inode) = (u32::try_from(stat.size), u32::try_from(stat.inode));
        let folder_dev = self.folders.get(folder as usize).map(|f| f.dev);
        let is_wide = size.is_err() || inode.is_err() || folder_dev != Some(stat.dev);
        let mut half = [0; 16];
        half.copy_from_slice(&hash[..16]);
        self.entries.push(IndexEntry {
            hash: half,
            mtime_ns: split_ns(stat.mtime_ns),
            ctime_ns: split_ns(stat.ctime_ns),
            size: size.unwrap_or(u32::MAX),
            inode: inode.unwrap_or(u32::MAX),
            name_at,
        });
        let n = number as usize;
        if n.is_multiple_of(64) {
            self.racy.push(0);
            self.seen.push(AtomicU64::new(0));
            self.wide_bits.push(0);
        }
        let (word, mask) = (n / 64, 1u64 << (n % 64));
        if racy {
            self.racy[word] |= mask;
        }
        if is_wide {
            self.wide_bits[word] |= mask;
            self.wide.insert(number, wide);
        }
        if self.runs.last().is_none_or(|(_, f)| *f != folder) {
            self.runs.push((number, folder));
        }
        let key = self.key(folder, name);
        let (entries, names, runs, hasher) = (&self.entries, &self.names, &self.runs, &self.hasher);
        self.table.insert_unique(key, number, |m| {
            let m = *m as usize;
            hasher.hash_one((folder_of(runs, m), name_of(entries, names, m)))
        });
    }

    /// The folder's number; a new folder gets the next one, on `dev`.
    fn folder_number(&mut self, path: &[u8], dev: u64) -> Option<u32> {
        // Rows come sorted by path: most are in the last row's folder.
        if let Some(&(_, last)) = self.runs.last() {
            if folder_path(&self.folders, &self.folder_bytes, last) == path {
                return Some(last);
            }
        }
        let hash = self.hasher.hash_one(path);
        let (folders, bytes) = (&self.folders, &self.folder_bytes);
        let found = self
            .folder_table
            .find(hash, |f| folder_path(folders, bytes, *f) == path);
        if let Some(f) = found {
            return Some(*f);
        }
        let number = u32::try_from(self.folders.len()).ok()?;
        self.folders.push(Folder {
            at: self.folder_bytes.len(),
            len: path.len(),
            dev,
        });
        self.folder_bytes.extend_from_slice(path);
        let (folders, bytes, hasher) = (&self.folders, &self.folder_bytes, &self.hasher);
        self.folder_table.insert_unique(hash, number, |f| {
            hasher.hash_one(folder_path(folders, bytes, *f))
        });
        Some(number)
    }

    fn key(&self, folder: u32, name: &[u8]) -> u64 {
        self.hasher.hash_one((folder, name))
    }

    fn folder_of(&self, n: usize) -> u32 {
        folder_of(&self.runs, n)
    }

    fn name_of(&self, n: usize) -> &[u8] {
        name_of(&self.entries, &self.names, n)
    }

    fn known(&self, n: usize) -> Known<'_> {
        let entry = &self.entries[n];
        let folder = &self.folders[self.folder_of(n) as usize];
        let (size, inode, dev) = match bit(&self.wide_bits, n) {
            true => match u32::try_from(n).ok().and_then(|n| self.wide.get(&n)) {
                Some(w) => (w.size, w.inode, w.dev),
                None => (u64::MAX, 0, u64::MAX),
            },
            false => (u64::from(entry.size), u64::from(entry.inode), folder.dev),
        };
        Known {
            stat: Stat {
                size,
                mtime_ns: join_ns(entry.mtime_ns),
                ctime_ns: join_ns(entry.ctime_ns),
                inode,
                dev,
            },
            hash: &entry.hash,
            racy: bit(&self.racy, n),
            seen: &self.seen[n / 64],
            bit: 1 << (n % 64),
        }
    }

    pub fn get(&self, path: &Path) -> Option<Known<'_>> {
        let (folder_path_bytes, name) = split(path.as_os_str().as_bytes());
        let (folders, bytes) = (&self.folders, &self.folder_bytes);
        let folder = *self
            .folder_table
            .find(self.hasher.hash_one(folder_path_bytes), |f| {
                folder_path(folders, bytes, *f) == folder_path_bytes
            })?;
        let found = self.table.find(self.key(folder, name), |n| {
            self.name_of(*n as usize) == name && self.folder_of(*n as usize) == folder
        })?;
        Some(self.known(*found as usize))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Every recorded file, and whether a walk has marked it as seen.
    pub fn files(&self) -> impl Iterator<Item = (PathBuf, bool)> + '_ {
        (0..self.entries.len()).map(|n| {
            let mut path =
                folder_path(&self.folders, &self.folder_bytes, self.folder_of(n)).to_vec();
            path.extend_from_slice(self.name_of(n));
            let seen = self.seen[n / 64].load(Ordering::Relaxed) & (1 << (n % 64)) != 0;
            (
                PathBuf::from(std::ffi::OsString::from(OsStr::from_bytes(&path))),
                seen,
            )
        })
    }

    /// Recorded files that no walk has marked as seen.
    pub fn unseen(&self) -> impl Iterator<Item = PathBuf> + '_ {
        self.files().filter(|(_, seen)| !seen).map(|(path, _)| path)
    }
}

fn folder_path<'a>(folders: &[Folder], bytes: &'a [u8], f: u32) -> &'a [u8] {
    let folder = &folders[f as usize];
    &bytes[folder.at..folder.at + folder.len]
}

fn folder_of(runs: &[(u32, u32)], n: usize) -> u32 {
    let run = runs.partition_point(|(first, _)| *first as usize <= n);
    runs.get(run.saturating_sub(1)).map_or(0, |r| r.1)
}

fn name_of<'a>(entries: &[IndexEntry], names: &'a [u8], n: usize) -> &'a [u8] {
    let at = entries[n].name_at as usize;
    let (len, start) = match names[at] {
        u8::MAX => {
            let mut four = [0; 4];
            four.copy_from_slice(&names[at + 1..at + 5]);
            (u32::from_le_bytes(four) as usize, at + 5)
        }
        short => (usize::from(short), at + 1),
    };
    &names[start..start + len]
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
        let mut index = FileIndex::with_capacity(0);
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
        let unseen: Vec<PathBuf> = index.unseen().collect();
        assert_eq!(unseen, vec![PathBuf::from("/m/0.jpg")]);
    }

    #[test]
    fn an_entry_stays_44_bytes() {
        assert_eq!(std::mem::size_of::<IndexEntry>(), 44);
    }

    /// Fields beyond 32 bits, a file on another device than its folder's
    /// first file, names of any length, paths without a folder: all read
    /// back exactly, and every path is listed whole.
    #[test]
    fn wide_and_odd_entries_read_back_exactly() {
        let mut index = FileIndex::with_capacity(0);
        let narrow = Stat {
            size: 1,
            mtime_ns: -5,
            ctime_ns: i64::MAX,
            inode: 4,
            dev: 9,
        };
        let wide = Stat {
            size: 1 << 40,
            mtime_ns: i64::MIN,
            ctime_ns: 3,
            inode: u64::MAX,
            dev: 1 << 40,
        };
        let long = format!("/m/{}.jpg", "x".repeat(300));
        let paths = [
            "/m/a.jpg",
            "/m/b.jpg",
            "/m/sub/c.jpg",
            "/m/d.jpg",
            "/e.jpg",
            "rel",
            &long,
        ];
        for (i, path) in paths.iter().enumerate() {
            let stat = if i % 2 == 1 { wide } else { narrow };
            index.insert(path.as_bytes(), stat, [i as u8; 32], i == 3);
        }
        for (i, path) in paths.iter().enumerate() {
            let known = index.get(Path::new(path)).unwrap();
            let stat = if i % 2 == 1 { wide } else { narrow };
            assert_eq!(
                (known.stat, known.hash[0], known.racy),
                (stat, i as u8, i == 3),
                "{path}"
            );
        }
        assert!(index.get(Path::new("/m/sub/a.jpg")).is_none());
        assert!(index.get(Path::new("/a.jpg")).is_none());
        let listed: Vec<PathBuf> = index.files().map(|(p, _)| p).collect();
        let want: Vec<PathBuf> = paths.iter().map(PathBuf::from).collect();
        assert_eq!(listed, want);
    }
}
