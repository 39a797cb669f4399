//! The recorded links a pass works with, in memory: found by path (the
//! walk compares each link it meets with its row) and by target (the
//! aliases of a changed file). Like [`super::FileIndex`], entries sit in
//! one vector and their paths and targets in one byte arena.

use std::ffi::OsStr;
use std::hash::BuildHasher;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use hashbrown::HashTable;

use super::links::{Kind, LinkRow};

#[derive(Debug)]
struct Entry {
    path_at: usize,
    path_len: u32,
    target_len: u32,
    kind: Kind,
    /// Loaded because the pass visits its place (a row not met there is
    /// a removed link).
    walked: bool,
    seen: AtomicBool,
}

/// The recorded links a pass works with: found by path (the walk compares
/// each link it meets) and by target (a changed file's aliases). Paths
/// and targets sit in one byte arena.
#[derive(Debug, Default)]
pub struct LinkIndex {
    entries: Vec<Entry>,
    bytes: Vec<u8>,
    by_path: HashTable<u32>,
    /// Entry numbers sorted by target, for lookups by target.
    by_target: Vec<u32>,
    hasher: hashbrown::DefaultHashBuilder,
    /// Rule folders whose links were recorded once.
    pub(super) baselined: Vec<PathBuf>,
}

/// A recorded link as the walk sees it.
#[derive(Debug, Clone, Copy)]
pub struct KnownLink<'a> {
    pub kind: Kind,
    pub target: &'a Path,
    entry: &'a Entry,
}

impl KnownLink<'_> {
    pub fn mark_seen(&self) {
        self.entry.seen.store(true, Ordering::Relaxed);
    }
}

impl LinkIndex {
    pub(super) fn insert(&mut self, path: &[u8], kind: Kind, target: &[u8], walked: bool) {
        if let Some(n) = self.find(path) {
            self.entries[n].walked |= walked;
            return;
        }
        let (Ok(path_len), Ok(target_len), Ok(number)) = (
            u32::try_from(path.len()),
            u32::try_from(target.len()),
            u32::try_from(self.entries.len()),
        ) else {
            return;
        };
        let path_at = self.bytes.len();
        self.bytes.extend_from_slice(path);
        self.bytes.extend_from_slice(target);
        self.entries.push(Entry {
            path_at,
            path_len,
            target_len,
            kind,
            walked,
            seen: AtomicBool::new(false),
        });
        let hash = self.hasher.hash_one(path);
        let hasher = &self.hasher;
        let (entries, bytes) = (&self.entries, &self.bytes);
        let key = |n: &u32| hasher.hash_one(path_of(entries, bytes, *n as usize));
        self.by_path.insert_unique(hash, number, key);
    }

    fn find(&self, path: &[u8]) -> Option<usize> {
        let hash = self.hasher.hash_one(path);
        self.by_path
            .find(hash, |n| {
                path_of(&self.entries, &self.bytes, *n as usize) == path
            })
            .map(|n| *n as usize)
    }

    /// Sorts the target lookup; called once loading is done.
    pub(super) fn finish(&mut self) {
        // `insert` keeps every entry number within u32.
        let mut order: Vec<u32> =
            (0..u32::try_from(self.entries.len()).unwrap_or(u32::MAX)).collect();
        order.sort_unstable_by(|a, b| {
            target_of(&self.entries, &self.bytes, *a as usize).cmp(target_of(
                &self.entries,
                &self.bytes,
                *b as usize,
            ))
        });
        self.by_target = order;
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn get(&self, path: &Path) -> Option<KnownLink<'_>> {
        let n = self.find(path.as_os_str().as_bytes())?;
        let entry = &self.entries[n];
        Some(KnownLink {
            kind: entry.kind,
            target: Path::new(OsStr::from_bytes(target_of(&self.entries, &self.bytes, n))),
            entry,
        })
    }

    /// Whether the links under rule folder `dir` were recorded once.
    pub fn baselined(&self, dir: &Path) -> bool {
        self.baselined.iter().any(|d| d == dir)
    }

    fn row(&self, n: usize) -> LinkRow {
        LinkRow {
            path: Path::new(OsStr::from_bytes(path_of(&self.entries, &self.bytes, n))).into(),
            kind: self.entries[n].kind,
            target: Path::new(OsStr::from_bytes(target_of(&self.entries, &self.bytes, n))).into(),
        }
    }

    /// Links whose target is exactly `target`.
    pub fn links_to<'a>(&'a self, target: &'a Path) -> impl Iterator<Item = LinkRow> + 'a {
        let bytes = target.as_os_str().as_bytes();
        let start = self
            .by_target
            .partition_point(|n| target_of(&self.entries, &self.bytes, *n as usize) < bytes);
        self.by_target[start..]
            .iter()
            .take_while(move |n| target_of(&self.entries, &self.bytes, **n as usize) == bytes)
            .map(|n| self.row(*n as usize))
    }

    /// Every row, with whether the pass visits its place and met it.
    pub fn rows(&self) -> impl Iterator<Item = (LinkRow, bool, bool)> + '_ {
        self.entries
            .iter()
            .enumerate()
            .map(|(n, e)| (self.row(n), e.walked, e.seen.load(Ordering::Relaxed)))
    }
}

fn path_of<'a>(entries: &[Entry], bytes: &'a [u8], n: usize) -> &'a [u8] {
    let e = &entries[n];
    &bytes[e.path_at..e.path_at + e.path_len as usize]
}

fn target_of<'a>(entries: &[Entry], bytes: &'a [u8], n: usize) -> &'a [u8] {
    let e = &entries[n];
    let at = e.path_at + e.path_len as usize;
    &bytes[at..at + e.target_len as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_links_by_path_and_by_target() {
        let mut index = LinkIndex::default();
        index.insert(b"/m/a.svg", Kind::File, b"/m/x.svg", true);
        index.insert(b"/m/b.svg", Kind::File, b"/m/x.svg", true);
        index.insert(b"/m/c.svg", Kind::File, b"/m/y.svg", false);
        index.insert(b"/m/a.svg", Kind::File, b"/m/x.svg", false);
        index.finish();
        assert_eq!(index.len(), 3);
        let to_x: Vec<PathBuf> = index
            .links_to(Path::new("/m/x.svg"))
            .map(|r| r.path)
            .collect();
        assert_eq!(
            to_x,
            vec![PathBuf::from("/m/a.svg"), PathBuf::from("/m/b.svg")]
        );
        assert_eq!(index.links_to(Path::new("/m/x")).count(), 0);
        let c = index.get(Path::new("/m/c.svg")).unwrap();
        assert_eq!((c.kind, c.target), (Kind::File, Path::new("/m/y.svg")));
        c.mark_seen();
        let walked: Vec<(bool, bool)> = index.rows().map(|(_, w, s)| (w, s)).collect();
        assert_eq!(walked, vec![(true, false), (true, false), (false, true)]);
    }
}
