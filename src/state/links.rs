//! What the store remembers about symbolic links inside rule folders: each
//! link's path, what it resolved to and how (see [`Kind`]), and which rule
//! folders had their links recorded once (their link baseline). Targets
//! are kept here, never hashed here: a link's content is its target's row
//! in `files`, so a target is hashed once however many links lead to it.
//!
//! The in-memory [`LinkIndex`] is what a pass compares against and where
//! it looks up which links lead to a changed file.

use std::ffi::OsStr;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

pub use super::link_index::LinkIndex;
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
    // Bytes, not `Path::strip_prefix` (component by component: a baseline
    // does this for every link); recorded paths are normalised.
    let (path, target) = (path.as_os_str().as_bytes(), target.as_os_str().as_bytes());
    let inside = path
        .iter()
        .rposition(|b| *b == b'/')
        .filter(|slash| *slash > 0)
        .and_then(|slash| target.strip_prefix(&path[..=slash]))
        .filter(|rel| !rel.is_empty());
    inside.unwrap_or(target)
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

/// Writes link changes inside the caller's transaction.
pub(super) fn record(tx: &rusqlite::Connection, changes: &LinkChanges) -> rusqlite::Result<()> {
    let mut upsert = tx.prepare_cached(
        "INSERT INTO links (path, kind, target) VALUES (?1, ?2, ?3)
         ON CONFLICT(path) DO UPDATE SET kind = excluded.kind, target = excluded.target",
    )?;
    // In key order: B-tree pages fill up instead of splitting at random
    // (a baseline writes every link).
    let mut rows: Vec<&LinkRow> = changes.upserts.iter().collect();
    rows.sort_unstable_by(|a, b| a.path.as_os_str().cmp(b.path.as_os_str()));
    for row in rows {
        upsert.execute(rusqlite::params![
            row.path.as_os_str().as_bytes(),
            // A fieldless enum's discriminant.
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
}
