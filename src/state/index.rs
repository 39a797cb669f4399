//! The in-memory index a scan compares against: every recorded file's
//! stat data and hash, read from the store once per scan so the walk never
//! queries SQLite per file.
//!
//! It is compact because it is the largest thing optiwatch holds (a
//! million files): entries sit in one vector, their paths in one byte
//! arena, and a hash table of 4-byte entry numbers finds them. That is
//! about 72 bytes per entry plus the path, against ~250 for a
//! `HashMap<PathBuf, _>`.

use std::ffi::OsStr;
use std::hash::BuildHasher;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use hashbrown::HashTable;

use super::Stat;

#[derive(Debug)]
pub struct IndexEntry {
    pub stat: Stat,
    pub hash: [u8; 32],
    path_at: u64,
    path_len: u32,
    /// Set by whichever walker thread meets the file; entries left unseen
    /// after a walk are candidates for deletion.
    seen: AtomicBool,
}

impl IndexEntry {
    pub fn mark_seen(&self) {
        self.seen.store(true, Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
pub struct FileIndex {
    entries: Vec<IndexEntry>,
    paths: Vec<u8>,
    table: HashTable<u32>,
    /// foldhash (hashbrown's default): several times faster than SipHash
    /// on paths, and seeded per process.
    hasher: hashbrown::DefaultHashBuilder,
}

impl FileIndex {
    /// An empty index with room for `files` entries and `path_bytes` of
    /// paths, so loading never reallocates.
    pub fn with_capacity(files: usize, path_bytes: usize) -> FileIndex {
        FileIndex {
            entries: Vec::with_capacity(files),
            paths: Vec::with_capacity(path_bytes),
            table: HashTable::with_capacity(files),
            hasher: Default::default(),
        }
    }

    /// Adds a file; a path already in the index is kept as it is (queries
    /// for overlapping folders return some rows twice).
    pub fn insert(&mut self, path: &[u8], stat: Stat, hash: [u8; 32]) {
        if self.get(Path::new(OsStr::from_bytes(path))).is_some() {
            return;
        }
        let number = u32::try_from(self.entries.len()).expect("fewer than 4 billion files");
        let path_at = self.paths.len() as u64;
        self.paths.extend_from_slice(path);
        self.entries.push(IndexEntry {
            stat,
            hash,
            path_at,
            path_len: path.len() as u32,
            seen: AtomicBool::new(false),
        });
        let hasher = &self.hasher;
        let (entries, paths) = (&self.entries, &self.paths);
        let key = |n: &u32| hasher.hash_one(path_of(entries, paths, *n as usize));
        self.table.insert_unique(hasher.hash_one(path), number, key);
    }

    pub fn get(&self, path: &Path) -> Option<&IndexEntry> {
        let bytes = path.as_os_str().as_bytes();
        let found = self.table.find(self.hasher.hash_one(bytes), |n| {
            path_of(&self.entries, &self.paths, *n as usize) == bytes
        })?;
        Some(&self.entries[*found as usize])
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Recorded files that no walk has marked as seen.
    pub fn unseen(&self) -> impl Iterator<Item = (&Path, &IndexEntry)> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| !e.seen.load(Ordering::Relaxed))
            .map(|(n, e)| {
                let bytes = path_of(&self.entries, &self.paths, n);
                (Path::new(OsStr::from_bytes(bytes)), e)
            })
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
            inode: n,
        };
        let mut index = FileIndex::with_capacity(0, 0);
        for n in 0..1000u64 {
            index.insert(format!("/m/{n}.jpg").as_bytes(), stat(n), [n as u8; 32]);
        }
        assert_eq!(index.len(), 1000);
        let e = index.get(Path::new("/m/7.jpg")).unwrap();
        assert_eq!((e.stat.size, e.hash[0]), (7, 7));
        assert!(index.get(Path::new("/m/7.jp")).is_none());
        index.insert(b"/m/7.jpg", stat(99), [0; 32]);
        assert_eq!(index.len(), 1000, "a second insert of a path is ignored");
        for n in 1..1000 {
            index
                .get(Path::new(&format!("/m/{n}.jpg")))
                .unwrap()
                .mark_seen();
        }
        let unseen: Vec<&Path> = index.unseen().map(|(p, _)| p).collect();
        assert_eq!(unseen, vec![Path::new("/m/0.jpg")]);
    }
}
