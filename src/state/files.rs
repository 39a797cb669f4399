//! What the store remembers about each file (stat data and BLAKE3 hash), the
//! in-memory index a scan compares against, and the one transaction that
//! records a detected change set together with the assets it makes owed.

use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::{outbox, FileIndex, Owed, Store};

/// The stat data of the quick-check: a file whose size, mtime, inode change
/// time (both to the nanosecond), inode and device are unchanged is taken as
/// unchanged without hashing. The ctime is what makes this safe: a writer
/// can restore the mtime (`cp --preserve=timestamps`, `rsync -t`, `tar -x`)
/// but not the ctime, which every write, rename, `chmod` and `chown` sets to
/// the current time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub inode: u64,
    pub dev: u64,
}

impl Stat {
    pub fn of(meta: &std::fs::Metadata) -> Stat {
        let ns = |secs: i64, nsec: i64| secs.saturating_mul(1_000_000_000).saturating_add(nsec);
        Stat {
            size: meta.len(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
            inode: meta.ino(),
            dev: meta.dev(),
        }
    }

    /// Whether `self` was recorded by a version without ctime and device
    /// (schema 2; both read as 0) for the file `now` describes: then the
    /// stat data did not change, it only became complete.
    pub fn is_legacy_of(&self, now: &Stat) -> bool {
        self.ctime_ns == 0
            && self.dev == 0
            && (self.size, self.mtime_ns, self.inode) == (now.size, now.mtime_ns, now.inode)
    }

    /// The later of mtime and ctime: what the racy rule looks at.
    pub fn last_change_ns(&self) -> i64 {
        self.mtime_ns.max(self.ctime_ns)
    }
}

/// A file that was read: what the store records about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hashed {
    /// Taken from the open file before reading it.
    pub stat: Stat,
    pub hash: [u8; 32],
    /// Its stat data was taken so soon after its last change that a write
    /// in the same timestamp tick could leave it equal (git's "racy"
    /// entries): the next pass must hash the file again instead of
    /// trusting the quick-check.
    pub racy: bool,
    /// Hard links (`st_nlink`): with more than one, other recorded paths may
    /// serve the same bytes.
    pub links: u64,
}

pub(super) const COLUMNS: &str = "path, size, mtime_ns, ctime_ns, inode, dev, racy, hash";

/// Rows of queries for overlapping folders (a path may come twice).
fn read_rows(mut rows: rusqlite::Rows<'_>, index: &mut FileIndex) -> anyhow::Result<()> {
    while let Some(row) = rows.next()? {
        let (path, stat, hash, racy) = decode(row)?;
        index.insert(path, stat, hash, racy);
    }
    Ok(())
}

/// One row of [`COLUMNS`]: path, stat data, hash, racy.
pub(super) fn decode<'r>(
    row: &'r rusqlite::Row<'_>,
) -> anyhow::Result<(&'r [u8], Stat, [u8; 32], bool)> {
    let path = row.get_ref(0)?.as_blob()?;
    let hash: [u8; 32] = row
        .get_ref(7)?
        .as_blob()?
        .try_into()
        .map_err(|_| anyhow::anyhow!("a stored hash is not 32 bytes: the store is damaged"))?;
    let stat = Stat {
        // SQLite has no u64: these were written `as i64` and are read
        // back bit for bit; a damaged value only fails the quick-check.
        size: row.get::<_, i64>(1)? as u64,
        mtime_ns: row.get(2)?,
        ctime_ns: row.get(3)?,
        inode: row.get::<_, i64>(4)? as u64,
        dev: row.get::<_, i64>(5)? as u64,
    };
    let racy = row.get::<_, i64>(6)? != 0;
    Ok((path, stat, hash, racy))
}

/// Everything one detection pass decided, written in one transaction.
#[derive(Debug, Default)]
pub struct Changes {
    /// New or updated stat data and hash.
    pub upserts: Vec<(PathBuf, Hashed)>,
    /// Files no longer tracked (deleted, or no longer covered by a rule).
    pub removals: Vec<PathBuf>,
    /// Assets to add to the outbox.
    pub assets: Vec<Owed>,
    /// Rule folders whose first scan (their baseline) this pass completes.
    pub baselined: Vec<PathBuf>,
    /// Rule folders' file systems (`st_dev`) to remember.
    pub devices: Vec<(PathBuf, u64)>,
    /// Files that got another name (hard link) since some of their names
    /// were recorded: those rows are marked as linked, so a change through
    /// any name finds them (see [`Store::hard_links`]). Costs one pass over
    /// the table; only per-path passes need it (a whole walk re-records
    /// every name, whose ctime the new link changed).
    pub relinked: Vec<Stat>,
    /// Symbolic links recorded or forgotten (see [`super::links`]).
    pub links: super::links::LinkChanges,
}

impl Store {
    /// Every recorded file.
    pub fn load_index(&self) -> anyhow::Result<FileIndex> {
        let files: i64 = self
            .conn
            .query_row("SELECT count(*) FROM files", [], |r| r.get(0))?;
        let mut stmt = self.conn.prepare(&format!("SELECT {COLUMNS} FROM files"))?;
        let files = usize::try_from(files).unwrap_or(0);
        let mut index = super::load::pipelined(stmt.query([])?, files)?;
        index.links = self.load_links(None)?;
        Ok(index)
    }

    /// The recorded files at or below each of `paths`.
    pub fn load_index_under(&self, paths: &[PathBuf]) -> anyhow::Result<FileIndex> {
        let mut index = FileIndex::default();
        // Everything below `p` sorts between `p/` and `p0` ('0' follows '/').
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM files WHERE path = ?1 OR (path >= ?2 AND path < ?3)"
        ))?;
        for path in paths {
            let exact = path.as_os_str().as_bytes();
            let low = [exact, b"/"].concat();
            let high = [exact, b"0"].concat();
            let rows = stmt.query(rusqlite::params![exact, low, high])?;
            read_rows(rows, &mut index)?;
        }
        index.links = self.load_links(Some(paths))?;
        Ok(index)
    }

    /// How many files are recorded at or below `dir`.
    pub fn file_count_under(&self, dir: &Path) -> anyhow::Result<usize> {
        let exact = dir.as_os_str().as_bytes();
        let low = [exact, b"/"].concat();
        let high = [exact, b"0"].concat();
        let n: i64 = self.conn.query_row(
            "SELECT count(*) FROM files WHERE path = ?1 OR (path >= ?2 AND path < ?3)",
            rusqlite::params![exact, low, high],
            |r| r.get(0),
        )?;
        Ok(n as usize)
    }

    /// How many files are recorded.
    pub fn file_count(&self) -> anyhow::Result<usize> {
        let n: i64 = self
            .conn
            .query_row("SELECT count(*) FROM files", [], |r| r.get(0))?;
        Ok(n as usize)
    }

    /// Other recorded paths that are hard links of the file `stat` describes
    /// (same device and inode), found through the index of multi-link rows.
    pub fn hard_links(&self, stat: &Stat) -> anyhow::Result<Vec<PathBuf>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT path FROM files WHERE links > 1 AND inode = ?1 AND dev = ?2")?;
        let rows = stmt.query_map(rusqlite::params![stat.inode as i64, stat.dev as i64], |r| {
            r.get::<_, Vec<u8>>(0)
        })?;
        let mut paths = Vec::new();
        for row in rows {
            paths.push(PathBuf::from(std::ffi::OsString::from_vec(row?)));
        }
        Ok(paths)
    }

    /// The file system a rule folder was on when last scanned.
    pub fn rule_device(&self, dir: &Path) -> anyhow::Result<Option<u64>> {
        use rusqlite::OptionalExtension;
        let dev: Option<Option<i64>> = self
            .conn
            .query_row(
                "SELECT dev FROM rules_seen WHERE dir = ?1",
                [dir.as_os_str().as_bytes()],
                |r| r.get(0),
            )
            .optional()?;
        Ok(dev.flatten().map(|d| d as u64))
    }

    /// Rule folders that already had their baseline scan.
    pub fn baselined(&self, dir: &Path) -> anyhow::Result<bool> {
        let n: i64 = self.conn.query_row(
            "SELECT count(*) FROM rules_seen WHERE dir = ?1",
            [dir.as_os_str().as_bytes()],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    /// Records a change set. Assets go to the outbox, and a token becomes
    /// owed, in the same transaction as the hashes, so a crash right after
    /// can never leave a recorded change without its invalidation.
    /// Returns how many assets were newly owed.
    pub fn record(&mut self, changes: &Changes) -> anyhow::Result<usize> {
        let tx = self
            .conn
            .transaction()
            .context("cannot start a transaction on the state store")?;
        {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO files (path, size, mtime_ns, ctime_ns, inode, dev, racy, links, hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT(path) DO UPDATE SET size = excluded.size,
                   mtime_ns = excluded.mtime_ns, ctime_ns = excluded.ctime_ns,
                   inode = excluded.inode, dev = excluded.dev, racy = excluded.racy,
                   links = excluded.links, hash = excluded.hash",
            )?;
            for (path, file) in &changes.upserts {
                let stat = &file.stat;
                upsert.execute(rusqlite::params![
                    path.as_os_str().as_bytes(),
                    stat.size as i64,
                    stat.mtime_ns,
                    stat.ctime_ns,
                    stat.inode as i64,
                    stat.dev as i64,
                    i64::from(file.racy),
                    i64::try_from(file.links).unwrap_or(i64::MAX),
                    &file.hash[..],
                ])?;
            }
            let mut remove = tx.prepare_cached("DELETE FROM files WHERE path = ?1")?;
            for path in &changes.removals {
                remove.execute([path.as_os_str().as_bytes()])?;
            }
            let mut seen =
                tx.prepare_cached("INSERT OR IGNORE INTO rules_seen (dir) VALUES (?1)")?;
            for dir in &changes.baselined {
                seen.execute([dir.as_os_str().as_bytes()])?;
            }
            for files in changes.relinked.chunks(200) {
                let pairs = vec!["(?, ?)"; files.len()].join(", ");
                let sql = format!(
                    "UPDATE files SET links = 2 WHERE links <= 1 AND (inode, dev) IN (VALUES {pairs})"
                );
                let values: Vec<i64> = files
                    .iter()
                    .flat_map(|s| [s.inode as i64, s.dev as i64])
                    .collect();
                tx.execute(&sql, rusqlite::params_from_iter(values))?;
            }
            let mut device = tx.prepare_cached("UPDATE rules_seen SET dev = ?2 WHERE dir = ?1")?;
            for (dir, dev) in &changes.devices {
                device.execute(rusqlite::params![dir.as_os_str().as_bytes(), *dev as i64])?;
            }
        }
        super::links::record(&tx, &changes.links)?;
        let owed = outbox::owe(&tx, &changes.assets)?;
        tx.commit()
            .context("cannot commit the change set to the state store")?;
        Ok(owed)
    }
}
