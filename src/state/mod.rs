//! The state store: one SQLite file holding what optiwatch knows between
//! runs: each file's stat data and content hash, the outbox of assets still
//! owed to Optimole, the assets Optimole refused by name, and whether a
//! cache token is owed.
//!
//! Durability rules live here. A detected change is written to the outbox and
//! its new hash recorded in one transaction before any API call; an asset
//! leaves the outbox only after Optimole accepted it. WAL mode with
//! `synchronous = FULL` keeps a committed transaction through a crash or a
//! power cut.

mod coverage;
mod damage;
mod files;
mod index;
mod link_index;
pub mod links;
mod lock;
mod outbox;
mod refused;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use rusqlite::{Connection, OpenFlags};

pub use coverage::{TokenMark, TokenState};
pub use files::{Changes, Hashed, Stat};
pub use index::{FileIndex, Known};
pub use lock::{holder as lock_holder, StoreLock};
pub use outbox::{Owed, Pending};
pub use refused::Refused;

/// "OPTW": marks the SQLite file as ours, so a foreign database is refused.
const APPLICATION_ID: i32 = 0x4F50_5457;
/// Bumped on every schema change; older binaries refuse newer stores.
pub const SCHEMA_VERSION: i32 = 5;

const SCHEMA: &str = "
    CREATE TABLE files (
        path     BLOB PRIMARY KEY,
        size     INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        inode    INTEGER NOT NULL,
        hash     BLOB NOT NULL,
        ctime_ns INTEGER NOT NULL DEFAULT 0,
        dev      INTEGER NOT NULL DEFAULT 0,
        racy     INTEGER NOT NULL DEFAULT 0,
        links    INTEGER NOT NULL DEFAULT 1
    ) WITHOUT ROWID;
    CREATE INDEX files_links ON files (inode, dev) WHERE links > 1;
    CREATE TABLE outbox (
        asset    TEXT NOT NULL UNIQUE,
        added_at INTEGER NOT NULL,
        account  TEXT NOT NULL DEFAULT '',
        gen      INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE rules_seen (dir BLOB PRIMARY KEY, dev INTEGER) WITHOUT ROWID;
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
";

pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens the store, creating it when the file does not exist yet.
    pub fn open(path: &Path) -> anyhow::Result<Store> {
        ensure_folder(path)?;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("cannot open state store {}", path.display()))?;
        let mut store = Store {
            conn,
            path: path.to_path_buf(),
        };
        store
            .prepare()
            .with_context(|| format!("state store {}", path.display()))?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn prepare(&mut self) -> anyhow::Result<()> {
        self.conn.busy_timeout(Duration::from_secs(10))?;
        if let Some(why) = damage::cut_short(&self.conn, &self.path) {
            return Err(damage::damaged(&self.path, &why));
        }
        let (app_id, version, tables) = match self.identify() {
            Ok(found) => found,
            Err(e) if damage::is_corrupt(&e) => {
                return Err(damage::damaged(&self.path, &e.to_string()))
            }
            Err(e) => return Err(e).context(
                "this file is not an optiwatch state store (not SQLite); point `state` at another path",
            ),
        };
        if app_id == 0 && version == 0 && tables == 0 {
            self.create()?;
        } else if app_id == APPLICATION_ID && version < SCHEMA_VERSION {
            self.migrate(version)?;
        } else if app_id != APPLICATION_ID {
            bail!("this SQLite file is not an optiwatch state store; it was left untouched: point `state` at another path");
        } else if version > SCHEMA_VERSION {
            bail!(
                "the store has schema version {version}, newer than this optiwatch understands ({SCHEMA_VERSION}): upgrade optiwatch; the store was left untouched"
            );
        }
        let mode: String = self
            .conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(mode = %mode, "state store could not switch to WAL mode");
        }
        self.conn.execute_batch("PRAGMA synchronous = FULL;")?;
        Ok(())
    }

    /// The application id, schema version and table count.
    fn identify(&self) -> rusqlite::Result<(i32, i32, i64)> {
        let app_id = self
            .conn
            .query_row("PRAGMA application_id", [], |r| r.get(0))?;
        let version = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let tables = self
            .conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
        Ok((app_id, version, tables))
    }

    /// Brings an older store up to date in one transaction.
    fn migrate(&mut self, from: i32) -> anyhow::Result<()> {
        let tx = self.write()?;
        if from < 2 {
            // v2: assets are owed per Optimole account (per-rule keys), with
            // a generation so a change during a send is not settled by it;
            // rule folders remember their file system.
            tx.execute_batch(
                "ALTER TABLE outbox ADD COLUMN account TEXT NOT NULL DEFAULT '';
                 ALTER TABLE outbox ADD COLUMN gen INTEGER NOT NULL DEFAULT 0;
                 ALTER TABLE rules_seen ADD COLUMN dev INTEGER;",
            )?;
        }
        if from < 3 {
            // v3: the quick-check also compares the inode change time and
            // the device; racy rows are hashed again; rows with hard links
            // find each other. Older rows get ctime 0 and device 0, so each
            // file is hashed once more and then carries full stat data
            // (see `Stat::is_legacy_of`).
            tx.execute_batch(
                "ALTER TABLE files ADD COLUMN ctime_ns INTEGER NOT NULL DEFAULT 0;
                 ALTER TABLE files ADD COLUMN dev INTEGER NOT NULL DEFAULT 0;
                 ALTER TABLE files ADD COLUMN racy INTEGER NOT NULL DEFAULT 0;
                 ALTER TABLE files ADD COLUMN links INTEGER NOT NULL DEFAULT 1;
                 CREATE INDEX files_links ON files (inode, dev) WHERE links > 1;",
            )?;
        }
        if from < 4 {
            // v4: assets Optimole refused by name, kept visible.
            tx.execute_batch(refused::SCHEMA)?;
        }
        if from < 5 {
            // v5: symbolic links and what they resolve to (see `links`).
            tx.execute_batch(links::SCHEMA)?;
        }
        tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION};"))?;
        tx.commit()?;
        tracing::info!(from, to = SCHEMA_VERSION, "state store schema upgraded");
        Ok(())
    }

    fn create(&mut self) -> anyhow::Result<()> {
        let tx = self.write()?;
        tx.execute_batch(SCHEMA)?;
        tx.execute_batch(refused::SCHEMA)?;
        tx.execute_batch(links::SCHEMA)?;
        tx.execute_batch(&format!(
            "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {SCHEMA_VERSION};"
        ))?;
        tx.commit()?;
        Ok(())
    }

    /// Remembers the latest failure for `status`.
    pub fn note_error(&mut self, message: &str) {
        let stamp = unix_now().to_string();
        let result = set_meta(&self.conn, "last_error", message)
            .and_then(|()| set_meta(&self.conn, "last_error_at", &stamp));
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot note the error in the state store");
        }
    }

    /// Size of the store's files (database and write-ahead log).
    pub fn size_bytes(&self) -> u64 {
        ["", "-wal"]
            .iter()
            .filter_map(|suffix| {
                let mut name = self.path.as_os_str().to_owned();
                name.push(suffix);
                std::fs::metadata(name).ok()
            })
            .map(|m| m.len())
            .sum()
    }

    /// A write transaction that takes the write lock up front: with two
    /// connections (the daemon's two workers), a deferred one that read
    /// first could fail on commit with a busy snapshot no timeout covers.
    fn write(&mut self) -> rusqlite::Result<rusqlite::Transaction<'_>> {
        self.conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
    }

    pub(crate) fn meta(&self, key: &str) -> anyhow::Result<Option<String>> {
        use rusqlite::OptionalExtension;
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }
}

/// The store's folder must exist; optiwatch does not guess where to make it.
fn ensure_folder(path: &Path) -> anyhow::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            bail!(
                "folder {} for the state store does not exist: create it or change `state` in the config",
                parent.display()
            );
        }
    }
    Ok(())
}

fn set_meta(conn: &Connection, key: &str, value: &str) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [key, value],
    )?;
    Ok(())
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A schema-2 store (no ctime, device, racy or links) is upgraded in
    /// place and its rows read with ctime and device 0.
    #[test]
    fn a_version_2_store_is_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(&format!(
            "CREATE TABLE files (path BLOB PRIMARY KEY, size INTEGER NOT NULL,
               mtime_ns INTEGER NOT NULL, inode INTEGER NOT NULL, hash BLOB NOT NULL) WITHOUT ROWID;
             CREATE TABLE outbox (asset TEXT NOT NULL UNIQUE, added_at INTEGER NOT NULL,
               account TEXT NOT NULL DEFAULT '', gen INTEGER NOT NULL DEFAULT 0);
             CREATE TABLE rules_seen (dir BLOB PRIMARY KEY, dev INTEGER) WITHOUT ROWID;
             CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
             INSERT INTO files VALUES (x'2f612e6a7067', 3, 7, 9, zeroblob(32));
             PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = 2;"
        ))
        .unwrap();
        drop(conn);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.identify().unwrap().1, SCHEMA_VERSION);
        let index = store.load_index().unwrap();
        let known = index.get(Path::new("/a.jpg")).unwrap();
        let now = Stat {
            size: 3,
            mtime_ns: 7,
            ctime_ns: 8,
            inode: 9,
            dev: 5,
        };
        assert_eq!(
            (known.stat.ctime_ns, known.stat.dev, known.racy),
            (0, 0, false)
        );
        assert!(known.stat.is_legacy_of(&now));
        assert!(!known.stat.is_legacy_of(&Stat { mtime_ns: 6, ..now }));
    }
}
