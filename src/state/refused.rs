//! The refused list: assets Optimole refused by name. They leave the outbox
//! (so they cannot hold up the rest, or the account's token, forever) but
//! are never dropped: `status`, `/metrics` and `scan --json` show them, and
//! `invalidate --refused` puts them back in the outbox. An asset owed again
//! by a new change leaves the list, since it is on its way once more.

use rusqlite::{params, Connection};

use super::{unix_now, Store};
use crate::accounts::AccountId;

/// The table, created with the store (schema v4) or by its migration.
pub(super) const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS refused (
        asset      TEXT PRIMARY KEY,
        account    TEXT NOT NULL DEFAULT '',
        refused_at INTEGER NOT NULL,
        message    TEXT NOT NULL
    ) WITHOUT ROWID;
";

/// One refused asset, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Refused {
    pub asset: String,
    /// The account it was owed to, by name (`default` for the `[api]` one).
    pub account: AccountId,
    /// Unix seconds (RFC 3339 in `--json`).
    #[serde(serialize_with = "crate::rfc3339::serialize")]
    pub refused_at: i64,
    /// Optimole's answer.
    pub message: String,
}

/// Inside the caller's transaction: assets owed again leave the list.
pub(super) fn forget(conn: &Connection, asset: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM refused WHERE asset = ?1")?
        .execute([asset])?;
    Ok(())
}

impl Store {
    /// Moves assets Optimole refused from the outbox to the refused list, in
    /// one transaction. An asset owed again while it was being sent (a newer
    /// generation) stays owed: that change was not refused yet. Returns the
    /// assets moved.
    pub fn refuse(
        &mut self,
        account: &AccountId,
        assets: &[super::Pending],
        message: &str,
    ) -> anyhow::Result<Vec<String>> {
        let now = unix_now();
        let tx = self.write()?;
        let mut moved = Vec::new();
        {
            let mut delete =
                tx.prepare_cached("DELETE FROM outbox WHERE asset = ?1 AND gen = ?2")?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO refused (asset, account, refused_at, message) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(asset) DO UPDATE SET account = excluded.account,
                     refused_at = excluded.refused_at, message = excluded.message",
            )?;
            for p in assets {
                if delete.execute(params![p.asset, p.gen])? > 0 {
                    insert.execute(params![p.asset, account, now, message])?;
                    moved.push(p.asset.clone());
                }
            }
        }
        tx.commit()?;
        Ok(moved)
    }

    /// Every refused asset, oldest refusal first.
    pub fn refused(&self) -> anyhow::Result<Vec<Refused>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT asset, account, refused_at, message FROM refused ORDER BY refused_at, asset",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok(Refused {
                    asset: r.get(0)?,
                    account: r.get(1)?,
                    refused_at: r.get(2)?,
                    message: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<Refused>>>()?;
        Ok(rows)
    }

    pub fn refused_count(&self) -> anyhow::Result<usize> {
        let n: i64 = self
            .conn
            .query_row("SELECT count(*) FROM refused", [], |r| r.get(0))?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    pub fn refused_count_by(&self, account: &AccountId) -> anyhow::Result<usize> {
        let n: i64 = self.conn.query_row(
            "SELECT count(*) FROM refused WHERE account = ?1",
            [account],
            |r| r.get(0),
        )?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// `invalidate --refused`: every refused asset is owed again (to the
    /// account it was refused for) and leaves the list, in one
    /// transaction. Returns them.
    pub fn owe_refused(&mut self) -> anyhow::Result<Vec<String>> {
        let owed: Vec<super::Owed> = self
            .refused()?
            .into_iter()
            .map(|r| super::Owed {
                asset: r.asset,
                account: r.account,
                reason: super::Reason::Resent,
                path: None,
            })
            .collect();
        let tx = self.write()?;
        super::outbox::owe(&tx, &owed)?;
        tx.commit()?;
        Ok(owed.into_iter().map(|o| o.asset).collect())
    }
}

#[cfg(test)]
mod tests {
    use crate::accounts::AccountId;
    use crate::state::Store;

    const D: &AccountId = &AccountId::Default;

    use crate::state::testing::{owe, store};

    #[test]
    fn a_refused_asset_is_kept_visible_until_owed_again() {
        let (_dir, mut store) = store();
        owe(&mut store, &["a", "b"]);
        let pending = store.owed_by(D).unwrap();
        let a = vec![pending[0].clone()];
        assert_eq!(store.refuse(D, &a, "HTTP 422: bad a").unwrap(), ["a"]);
        assert_eq!(store.owed().unwrap(), ["b"]);
        let refused = store.refused().unwrap();
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].message, "HTTP 422: bad a");

        // Owed again by a new change: it leaves the list.
        owe(&mut store, &["a"]);
        assert_eq!(store.refused_count().unwrap(), 0);

        // `invalidate --refused` moves everything back.
        let pending = store.owed_by(D).unwrap();
        store.refuse(D, &pending, "HTTP 422").unwrap();
        assert_eq!(store.owed_count().unwrap(), 0);
        assert_eq!(store.refused_count().unwrap(), 2);
        let mut back = store.owe_refused().unwrap();
        back.sort();
        assert_eq!(back, ["a", "b"]);
        assert_eq!(store.refused_count().unwrap(), 0);
        assert_eq!(store.owed_count().unwrap(), 2);
    }

    #[test]
    fn a_v2_store_gains_the_refused_list() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = Store::open(&path).unwrap();
        store
            .conn
            .execute_batch(
                "DROP TABLE refused; DROP INDEX files_links;
                 ALTER TABLE files DROP COLUMN ctime_ns; ALTER TABLE files DROP COLUMN dev;
                 ALTER TABLE files DROP COLUMN racy; ALTER TABLE files DROP COLUMN links;
                 PRAGMA user_version = 2;",
            )
            .unwrap();
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.refused_count().unwrap(), 0);
    }

    #[test]
    fn a_change_owed_again_during_the_send_is_not_refused() {
        let (_dir, mut store) = store();
        owe(&mut store, &["a"]);
        let sent = store.owed_by(D).unwrap();
        owe(&mut store, &["a"]);
        assert!(store.refuse(D, &sent, "HTTP 422").unwrap().is_empty());
        assert_eq!(store.owed().unwrap(), ["a"]);
        assert_eq!(store.refused_count().unwrap(), 0);
    }
}
