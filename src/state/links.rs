//! What the store remembers about symbolic links inside rule folders: each
//! link's path, what it resolved to and how (see [`Kind`]), and which rule
//! folders had their links recorded once (their link baseline). Targets
//! are kept here, never hashed here: a link's content is its target's row
//! in `files`, so a target is hashed once however many links lead to it.
//!
//! The in-memory [`LinkIndex`] is what a pass compares against and where
//! it looks up which links lead to a changed file.

use std::ffi::OsStr;
use std::hash::BuildHasher;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use hashbrown::HashTable;

use super::Store;

/// Schema v5: links and the rule folders whose links were recorded.
///
/// `target` is kept relative to the link's folder when it is inside it
/// (most links lead to a file beside them), and there is no index on it: a
/// pass reads every row once instead. An icon theme has as many links as
/// files; this keeps their rows at a third of the size and the baseline
/// that writes them close to one without links.
pub(super) const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS links (
        path   BLOB PRIMARY KEY,
        kind   INTEGER NOT NULL,
        target BLOB NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS links_seen (dir BLOB PRIMARY KEY) WITHOUT ROWID;
";

/// `target` as stored for the link at `path`: relative to the link's
/// folder when inside it.
fn stored_target<'a>(path: &Path, target: &'a Path) -> &'a [u8] {
    let inside = path
        .parent()
        .and_then(|folder| target.strip_prefix(folder).ok())
        .filter(|rel| !rel.as_os_str().is_empty());
    match inside {
        Some(rel) => rel.as_os_str().as_bytes(),
        None => target.as_os_str().as_bytes(),
    }
}

/// The target of the link at `path` as [`stored_target`] stored it.
fn full_target(path: &[u8], stored: &[u8]) -> Vec<u8> {
    if stored.is_empty() || stored.starts_with(b"/") {
        return stored.to_vec();
    }
    let folder = Path::new(OsStr::from_bytes(path))
        .parent()
        .unwrap_or(Path::new("/"));
    folder
        .join(OsStr::from_bytes(stored))
        .into_os_string()
        .into_vec()
}

/// What a link resolved to. Stored as its number: never renumber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An alias of a file inside a rule folder (`target`: its recorded path).
    File = 0,
    /// An alias of every file below a folder inside a rule folder.
    Folder = 1,
    /// Nothing is there (yet); `target` is where it would be.
    Missing = 2,
    /// Leads outside every rule folder and allowed place: never read.
    Outside = 3,
    /// Read as a file of its own under the link's path: its target is in
    /// an `allow_outside` place, or is a file its rule does not track.
    Own = 4,
    /// A folder in an `allow_outside` place, walked under the link's path.
    OwnFolder = 5,
    /// Part of a cycle, or too many links in a row: skipped. `target` is
    /// the folder of a link in a cycle, empty after too many hops.
    Loop = 6,
    /// A FIFO, socket or device, or unreadable: skipped.
    Other = 7,
}

impl Kind {
    fn from_number(n: i64) -> Kind {
        match n {
            0 => Kind::File,
            1 => Kind::Folder,
            2 => Kind::Missing,
            3 => Kind::Outside,
            4 => Kind::Own,
            5 => Kind::OwnFolder,
            6 => Kind::Loop,
            _ => Kind::Other,
        }
    }

    /// Whether URLs through this link serve a target inside the rule
    /// folders: the link is one of its target's aliases.
    pub fn aliases(self) -> bool {
        matches!(self, Kind::File | Kind::Folder | Kind::Missing)
    }
}

/// One link as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkRow {
    pub path: PathBuf,
    pub kind: Kind,
    pub target: PathBuf,
}

/// Link rows to write, in the transaction of the files they belong with.
#[derive(Debug, Default)]
pub struct LinkChanges {
    pub upserts: Vec<LinkRow>,
    pub removals: Vec<PathBuf>,
    /// Rule folders whose every link this pass recorded.
    pub baselined: Vec<PathBuf>,
}

impl LinkChanges {
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removals.is_empty() && self.baselined.is_empty()
    }
}

/// Writes link changes inside the caller's transaction.
pub(super) fn record(tx: &rusqlite::Connection, changes: &LinkChanges) -> rusqlite::Result<()> {
    let mut upsert = tx.prepare_cached(
        "INSERT INTO links (path, kind, target) VALUES (?1, ?2, ?3)
         ON CONFLICT(path) DO UPDATE SET kind = excluded.kind, target = excluded.target",
    )?;
    for row in &changes.upserts {
        upsert.execute(rusqlite::params![
            row.path.as_os_str().as_bytes(),
            row.kind as i64,
            stored_target(&row.path, &row.target),
        ])?;
    }
    let mut remove = tx.prepare_cached("DELETE FROM links WHERE path = ?1")?;
    for path in &changes.removals {
        remove.execute([path.as_os_str().as_bytes()])?;
    }
    let mut seen = tx.prepare_cached("INSERT OR IGNORE INTO links_seen (dir) VALUES (?1)")?;
    for dir in &changes.baselined {
        seen.execute([dir.as_os_str().as_bytes()])?;
    }
    Ok(())
}

/// `path = p OR path below p`, as two range bounds (`'0'` follows `'/'`).
fn below(p: &Path) -> (Vec<u8>, Vec<u8>) {
    let exact = p.as_os_str().as_bytes();
    ([exact, b"/"].concat(), [exact, b"0"].concat())
}

impl Store {
    /// Every link row, for a pass over `scope` (`None`: everything): rows
    /// at or below a scope path are the ones the pass visits; the others
    /// are there to find a changed file's aliases.
    pub fn load_links(&self, scope: Option<&[PathBuf]>) -> anyhow::Result<LinkIndex> {
        let mut index = LinkIndex::default();
        let mut dirs = self.conn.prepare_cached("SELECT dir FROM links_seen")?;
        for dir in dirs.query_map([], |r| r.get::<_, Vec<u8>>(0))? {
            index
                .baselined
                .push(PathBuf::from(std::ffi::OsString::from_vec(dir?)));
        }
        let mut all = self
            .conn
            .prepare_cached("SELECT path, kind, target FROM links")?;
        let mut rows = all.query([])?;
        while let Some(row) = rows.next()? {
            let path = row.get_ref(0)?.as_blob()?;
            let kind = Kind::from_number(row.get(1)?);
            let target = full_target(path, row.get_ref(2)?.as_blob()?);
            let at = Path::new(OsStr::from_bytes(path));
            let walked = scope.is_none_or(|paths| paths.iter().any(|p| at.starts_with(p)));
            index.insert(path, kind, &target, walked);
        }
        index.finish();
        Ok(index)
    }

    /// Recorded files and links at or below `dir`, for the URLs a folder
    /// link serves.
    pub fn paths_below(&self, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
        let (low, high) = below(dir);
        let mut out = Vec::new();
        for table in ["files", "links"] {
            let mut stmt = self.conn.prepare_cached(&format!(
                "SELECT path FROM {table} WHERE path >= ?1 AND path < ?2"
            ))?;
            for path in stmt.query_map(rusqlite::params![low, high], |r| r.get::<_, Vec<u8>>(0))? {
                out.push(PathBuf::from(std::ffi::OsString::from_vec(path?)));
            }
        }
        Ok(out)
    }

    /// Links read as files or folders of their own (into `allow_outside`
    /// places, see [`Kind::Own`]).
    pub fn links_read_outside(&self) -> anyhow::Result<Vec<PathBuf>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT path FROM links WHERE kind IN (4, 5)")?;
        let mut out = Vec::new();
        for path in stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))? {
            out.push(PathBuf::from(std::ffi::OsString::from_vec(path?)));
        }
        Ok(out)
    }

    /// How many links are recorded at or below `dir`.
    pub fn link_count_under(&self, dir: &Path) -> anyhow::Result<usize> {
        let (low, high) = below(dir);
        let n: i64 = self.conn.query_row(
            "SELECT count(*) FROM links WHERE path = ?1 OR (path >= ?2 AND path < ?3)",
            rusqlite::params![dir.as_os_str().as_bytes(), low, high],
            |r| r.get(0),
        )?;
        Ok(n as usize)
    }
}

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
    baselined: Vec<PathBuf>,
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
    fn insert(&mut self, path: &[u8], kind: Kind, target: &[u8], walked: bool) {
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
    fn finish(&mut self) {
        let mut order: Vec<u32> = (0..self.entries.len() as u32).collect();
        order.sort_unstable_by(|a, b| {
            target_of(&self.entries, &self.bytes, *a as usize).cmp(target_of(
                &self.entries,
                &self.bytes,
                *b as usize,
            ))
        });
        self.by_target = order;
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
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
    fn targets_beside_a_link_are_stored_short() {
        let link = Path::new("/m/a/l.svg");
        for (target, stored) in [
            ("/m/a/x.svg", "x.svg"),
            ("/m/a/b/x.svg", "b/x.svg"),
            ("/m/x.svg", "/m/x.svg"),
            ("/m/a", "/m/a"),
            ("", ""),
        ] {
            assert_eq!(stored_target(link, Path::new(target)), stored.as_bytes());
            let path = link.as_os_str().as_bytes();
            assert_eq!(full_target(path, stored.as_bytes()), target.as_bytes());
        }
    }

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
