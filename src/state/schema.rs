//! The store's schema: creating it in a new file, telling an optiwatch
//! store from a damaged or foreign file, and upgrading one an older
//! optiwatch wrote (only a read-write open upgrades; a read-only one
//! reports [`OutdatedStore`]).

use anyhow::{bail, Context};

use super::{damage, history, links, refused, Store};

/// "OPTW": marks the SQLite file as ours, so a foreign database is refused.
const APPLICATION_ID: i32 = 0x4F50_5457;
/// Bumped on every schema change; older binaries refuse newer stores.
pub const SCHEMA_VERSION: i32 = 6;

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
        gen      INTEGER NOT NULL DEFAULT 0,
        reason   TEXT NOT NULL DEFAULT '',
        path     TEXT
    );
    CREATE TABLE rules_seen (dir BLOB PRIMARY KEY, dev INTEGER) WITHOUT ROWID;
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
";

/// A store written by an older optiwatch, met by a read-only command: only
/// a command that writes upgrades it.
#[derive(Debug, thiserror::Error)]
#[error(
    "the state store has schema version {found}, older than this optiwatch's ({SCHEMA_VERSION}); \
     read-only commands do not upgrade it: run `optiwatch scan` (or start `optiwatch watch`) once"
)]
pub struct OutdatedStore {
    pub found: i32,
}

/// What a store file holds, as far as opening it is concerned.
pub(super) enum Found {
    /// A new (empty) SQLite file.
    Empty,
    Current,
    Older(i32),
}

impl Store {
    /// Tells a store (or a new file) from a damaged or foreign one; reads only.
    pub(super) fn check(&self) -> anyhow::Result<Found> {
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
            Ok(Found::Empty)
        } else if app_id != APPLICATION_ID {
            bail!("this SQLite file is not an optiwatch state store; it was left untouched: point `state` at another path");
        } else if version > SCHEMA_VERSION {
            bail!(
                "the store has schema version {version}, newer than this optiwatch understands ({SCHEMA_VERSION}): upgrade optiwatch; the store was left untouched"
            );
        } else if version < SCHEMA_VERSION {
            Ok(Found::Older(version))
        } else {
            Ok(Found::Current)
        }
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
    pub(super) fn migrate(&mut self, from: i32) -> anyhow::Result<()> {
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
        if from < 6 {
            // v6: why each asset is owed, and the history of what Optimole
            // accepted (see `history`).
            // (A store whose version was set back by hand may have them.)
            let has_reason: bool = tx.query_row(
                "SELECT count(*) > 0 FROM pragma_table_info('outbox') WHERE name = 'reason'",
                [],
                |r| r.get(0),
            )?;
            if !has_reason {
                tx.execute_batch(history::OUTBOX_COLUMNS)?;
            }
            tx.execute_batch(history::SCHEMA)?;
        }
        tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION};"))?;
        tx.commit()?;
        tracing::info!(from, to = SCHEMA_VERSION, "state store schema upgraded");
        Ok(())
    }

    pub(super) fn create(&mut self) -> anyhow::Result<()> {
        let tx = self.write()?;
        tx.execute_batch(SCHEMA)?;
        tx.execute_batch(refused::SCHEMA)?;
        tx.execute_batch(links::SCHEMA)?;
        tx.execute_batch(history::SCHEMA)?;
        tx.execute_batch(&format!(
            "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {SCHEMA_VERSION};"
        ))?;
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use rusqlite::Connection;

    use super::*;
    use crate::state::{Changes, Stat};

    /// Writes a schema-2 store (no ctime, device, racy or links) holding
    /// `/a.jpg`.
    fn version_2_store(path: &Path) {
        let conn = Connection::open(path).unwrap();
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
    }

    /// A schema-2 store is upgraded in place and its rows read with ctime
    /// and device 0.
    #[test]
    fn a_version_2_store_is_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        version_2_store(&path);
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

    #[test]
    fn a_read_only_open_never_creates_upgrades_or_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        assert!(Store::open_read_only(&path).unwrap().is_none());
        assert!(!path.exists(), "not created");
        // The empty file the lock of a failed first run leaves.
        std::fs::write(&path, b"").unwrap();
        assert!(Store::open_read_only(&path).unwrap().is_none());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "not written");
        std::fs::remove_file(&path).unwrap();

        version_2_store(&path);
        let err = Store::open_read_only(&path).unwrap_err();
        assert!(err.chain().any(|c| c.is::<OutdatedStore>()), "{err:#}");
        assert!(
            format!("{err:#}").contains("run `optiwatch scan`"),
            "{err:#}"
        );
        let conn = Connection::open(&path).unwrap();
        let version: i32 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, 2, "not upgraded");
        drop(conn);

        drop(Store::open(&path).unwrap());
        let mut store = Store::open_read_only(&path).unwrap().unwrap();
        assert_eq!(store.file_count().unwrap(), 1, "read");
        let forget = Changes {
            removals: vec![PathBuf::from("/a.jpg")],
            ..Changes::default()
        };
        assert!(store.record(&forget).is_err(), "writes are refused");
        assert_eq!(store.file_count().unwrap(), 1);
    }
}
