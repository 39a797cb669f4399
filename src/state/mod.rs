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

mod adoption;
mod coverage;
mod damage;
mod files;
mod history;
mod index;
mod link_index;
pub mod links;
mod load;
mod lock;
mod outbox;
mod refused;
mod schema;
mod shared_view;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use rusqlite::{Connection, OpenFlags};

pub use coverage::TokenState;
pub use files::{Changes, Hashed, Stat};
pub use history::{Entry, Reason, TokenEntry};
pub use index::{FileIndex, Known};
pub use lock::{holder as lock_holder, StoreLock};
pub use outbox::{Owed, Pending};
pub use refused::Refused;
use schema::Found;
pub use schema::OutdatedStore;

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
    /// Opens the store for reading and writing, creating it when the file
    /// does not exist yet and upgrading an older schema.
    pub fn open(path: &Path) -> anyhow::Result<Store> {
        ensure_folder(path)?;
        let mut store = Store::connect(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        )?;
        store
            .prepare()
            .with_context(|| format!("state store {}", path.display()))?;
        Ok(store)
    }

    /// Opens the store for reading only: it is never created, upgraded or
    /// written (SQLite opens it read-only). `None` when there is no store
    /// yet (no file, or the empty file a failed first run left); an older
    /// schema is an [`OutdatedStore`] error.
    pub fn open_read_only(path: &Path) -> anyhow::Result<Option<Store>> {
        if !path.exists() {
            return Ok(None);
        }
        let store = Store::connect(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let found = store
            .check()
            .with_context(|| format!("state store {}", path.display()))?;
        match found {
            Found::Empty => Ok(None),
            Found::Current => Ok(Some(store)),
            Found::Older(found) => Err(OutdatedStore { found })
                .with_context(|| format!("state store {}", path.display())),
        }
    }

    fn connect(path: &Path, flags: OpenFlags) -> anyhow::Result<Store> {
        let conn = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .with_context(|| format!("cannot open state store {}", path.display()))?;
        conn.busy_timeout(Duration::from_secs(10))?;
        Ok(Store {
            conn,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn prepare(&mut self) -> anyhow::Result<()> {
        match self.check()? {
            Found::Empty => self.create()?,
            Found::Older(version) => self.migrate(version)?,
            Found::Current => {}
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

/// A fresh store in a temporary folder, and helpers to owe assets, for the
/// store's unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::{outbox, Owed, Store};
    use crate::accounts::AccountId;

    pub fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        (dir, store)
    }

    /// Owed assets as read for a send, generation 0.
    pub fn pending(assets: &[&str]) -> Vec<super::Pending> {
        assets
            .iter()
            .map(|a| super::Pending {
                asset: a.to_string(),
                gen: 0,
            })
            .collect()
    }

    /// Owes `assets` to the default account in one transaction.
    pub fn owe(store: &mut Store, assets: &[&str]) {
        let owed: Vec<Owed> = assets
            .iter()
            .map(|a| Owed {
                asset: a.to_string(),
                account: AccountId::Default,
                reason: super::Reason::Changed,
                path: Some(format!("/site/{a}")),
            })
            .collect();
        let tx = store.write().unwrap();
        outbox::owe(&tx, &owed).unwrap();
        tx.commit().unwrap();
    }
}
