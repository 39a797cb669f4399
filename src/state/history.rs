//! History: what Optimole accepted, when, why and in which request, kept
//! in the store for `optiwatch history`.
//!
//! Each asset carries its [`Reason`] in the outbox from the moment it is
//! owed; the row is written in the transaction that removes the asset
//! from the outbox after Optimole accepted it, so history never claims an
//! invalidation that was not accepted. Whole-domain and whole-account
//! invalidations and token requests get a row too. Every accepted request
//! gets the next number of one sequence (`request`), so the rows of one
//! batch share it. Rows are bounded by age and count ([`Store::prune_history`]).

use std::time::Duration;

use rusqlite::{params, Connection};

use super::{set_meta, unix_now, Store};
use crate::accounts::AccountId;

/// The tables, created with the store (schema v6) or by its migration.
pub(super) const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS history (
        id      INTEGER PRIMARY KEY,
        at      INTEGER NOT NULL,
        request INTEGER NOT NULL,
        account TEXT NOT NULL,
        reason  TEXT NOT NULL,
        asset   TEXT NOT NULL,
        path    TEXT
    );
    CREATE INDEX IF NOT EXISTS history_at ON history (at);
    CREATE INDEX IF NOT EXISTS history_account ON history (account, at);
    CREATE TABLE IF NOT EXISTS token_history (
        id      INTEGER PRIMARY KEY,
        at      INTEGER NOT NULL,
        request INTEGER NOT NULL,
        account TEXT NOT NULL,
        token   TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS token_history_at ON token_history (at);
";

/// The outbox columns that carry the reason and the path (schema v6).
pub(super) const OUTBOX_COLUMNS: &str = "
    ALTER TABLE outbox ADD COLUMN reason TEXT NOT NULL DEFAULT '';
    ALTER TABLE outbox ADD COLUMN path TEXT;
";

/// Why an asset was invalidated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    /// Its file's content changed.
    Changed,
    /// Its file was deleted.
    Deleted,
    /// A file seen for the first time (`invalidate_new`).
    New,
    /// A link to a changed file, or another name of it (hard link).
    Alias,
    /// Named on the command line (`invalidate PATH|URL|HASH`).
    Manual,
    /// Refused by name earlier and sent again (`invalidate --refused`).
    Resent,
    /// A whole domain (`invalidate --domain`).
    Domain,
    /// The whole account (`invalidate --all`).
    All,
    /// Owed before this optiwatch kept reasons.
    Unknown,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Changed => "changed",
            Reason::Deleted => "deleted",
            Reason::New => "new",
            Reason::Alias => "alias",
            Reason::Manual => "manual",
            Reason::Resent => "resent",
            Reason::Domain => "domain",
            Reason::All => "all",
            Reason::Unknown => "unknown",
        }
    }

    fn parse(text: &str) -> Reason {
        [
            Reason::Changed,
            Reason::Deleted,
            Reason::New,
            Reason::Alias,
            Reason::Manual,
            Reason::Resent,
            Reason::Domain,
            Reason::All,
        ]
        .into_iter()
        .find(|r| r.as_str() == text)
        .unwrap_or(Reason::Unknown)
    }
}

/// One accepted invalidation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    /// Unix seconds.
    pub at: i64,
    pub request: i64,
    pub account: AccountId,
    pub reason: Reason,
    /// The asset URL (or hash); the domain for [`Reason::Domain`], empty
    /// for [`Reason::All`].
    pub asset: String,
    /// The file it was owed for, when known.
    pub path: Option<String>,
}

/// One token received.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TokenEntry {
    pub at: i64,
    pub request: i64,
    pub account: AccountId,
    /// The token's first characters.
    pub token: String,
}

/// How much of a token history keeps: enough to tell tokens apart.
const TOKEN_PREFIX: usize = 12;

/// The next request number, inside the caller's transaction.
fn next_request(conn: &Connection) -> rusqlite::Result<i64> {
    let last = super::coverage::meta_number(conn, "history_request")?.unwrap_or(0);
    let next = last.saturating_add(1);
    set_meta(conn, "history_request", &next.to_string())?;
    Ok(next)
}

/// Inside the caller's transaction, before accepted assets leave the
/// outbox: one row per asset, all under one new request number.
pub(super) fn accepted(conn: &Connection, assets: &[super::Pending]) -> rusqlite::Result<()> {
    if assets.is_empty() {
        return Ok(());
    }
    let request = next_request(conn)?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO history (at, request, account, reason, asset, path)
         SELECT ?1, ?2, account, reason, asset, path FROM outbox WHERE asset = ?3",
    )?;
    let now = unix_now();
    for p in assets {
        insert.execute(params![now, request, p.asset])?;
    }
    Ok(())
}

/// Inside the caller's transaction: a whole-domain (`domain`) or
/// whole-account (`None`) invalidation Optimole accepted.
pub(super) fn purged(
    conn: &Connection,
    account: &AccountId,
    domain: Option<&str>,
) -> rusqlite::Result<()> {
    let request = next_request(conn)?;
    let reason = match domain {
        Some(_) => Reason::Domain,
        None => Reason::All,
    };
    conn.execute(
        "INSERT INTO history (at, request, account, reason, asset) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            unix_now(),
            request,
            account,
            reason.as_str(),
            domain.unwrap_or("")
        ],
    )?;
    Ok(())
}

/// Inside the caller's transaction: a token Optimole handed out.
pub(super) fn token(conn: &Connection, account: &AccountId, token: &str) -> rusqlite::Result<()> {
    let request = next_request(conn)?;
    let prefix: String = token.chars().take(TOKEN_PREFIX).collect();
    conn.execute(
        "INSERT INTO token_history (at, request, account, token) VALUES (?1, ?2, ?3, ?4)",
        params![unix_now(), request, account, prefix],
    )?;
    Ok(())
}

impl Store {
    /// Accepted invalidations since `since` (unix seconds), oldest first.
    #[cfg(test)]
    pub fn history(&self, since: i64) -> anyhow::Result<Vec<Entry>> {
        let mut rows = Vec::new();
        self.each_history(since, |e| rows.push(e))?;
        Ok(rows)
    }

    /// [`Store::history`] one row at a time: `history --limit 10` over a
    /// million rows holds ten, not a million.
    pub fn each_history(&self, since: i64, mut each: impl FnMut(Entry)) -> anyhow::Result<()> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT at, request, account, reason, asset, path FROM history
             WHERE at >= ?1 ORDER BY at, id",
        )?;
        let rows = stmt.query_map([since], |r| {
            Ok(Entry {
                at: r.get(0)?,
                request: r.get(1)?,
                account: r.get(2)?,
                reason: Reason::parse(&r.get::<_, String>(3)?),
                asset: r.get(4)?,
                path: r.get(5)?,
            })
        })?;
        for row in rows {
            each(row?);
        }
        Ok(())
    }

    /// When Optimole last accepted an invalidation of `account` (unix
    /// seconds), as far as history remembers.
    pub fn last_accepted_at(&self, account: &AccountId) -> anyhow::Result<Option<i64>> {
        Ok(self.conn.query_row(
            "SELECT max(at) FROM history WHERE account = ?1",
            [account],
            |r| r.get(0),
        )?)
    }

    /// Tokens received since `since` (unix seconds), oldest first.
    pub fn token_history(&self, since: i64) -> anyhow::Result<Vec<TokenEntry>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT at, request, account, token FROM token_history
             WHERE at >= ?1 ORDER BY at, id",
        )?;
        let rows = stmt
            .query_map([since], |r| {
                Ok(TokenEntry {
                    at: r.get(0)?,
                    request: r.get(1)?,
                    account: r.get(2)?,
                    token: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<TokenEntry>>>()?;
        Ok(rows)
    }

    /// Drops history rows older than `keep` and, beyond `max_rows`, the
    /// oldest; each delete walks an index (time, or the primary key), so
    /// this costs what it deletes. Returns how
    /// many rows went.
    pub fn prune_history(&mut self, keep: Duration, max_rows: u64) -> anyhow::Result<usize> {
        let cutoff = unix_now().saturating_sub(i64::try_from(keep.as_secs()).unwrap_or(i64::MAX));
        let max_rows = i64::try_from(max_rows).unwrap_or(i64::MAX);
        let tx = self.write()?;
        let mut gone = 0;
        for table in ["history", "token_history"] {
            gone += tx.execute(&format!("DELETE FROM {table} WHERE at < ?1"), [cutoff])?;
            // The newest `max_rows` stay. Ids grow with every row and
            // only the oldest are ever deleted, so the kept ones are a
            // contiguous range: a range delete on the primary key, costing
            // what it deletes, not what it keeps.
            gone += tx.execute(
                &format!("DELETE FROM {table} WHERE id <= (SELECT max(id) FROM {table}) - ?1"),
                [max_rows],
            )?;
        }
        set_meta(&tx, "history_pruned_at", &unix_now().to_string())?;
        tx.commit()?;
        if gone > 0 {
            tracing::debug!(rows = gone, "history pruned");
        }
        Ok(gone)
    }

    /// [`Store::prune_history`] if it last ran more than an hour ago (the
    /// daemon calls this after each flush).
    pub fn prune_history_hourly(&mut self, keep: Duration, max_rows: u64) -> anyhow::Result<()> {
        let last = super::coverage::meta_number(&self.conn, "history_pruned_at")?.unwrap_or(0);
        if unix_now().saturating_sub(last) >= 3600 {
            self.prune_history(keep, max_rows)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::testing::{owe, store};

    const D: &AccountId = &AccountId::Default;

    #[test]
    fn only_settled_assets_enter_history_under_one_request() {
        let (_dir, mut store) = store();
        owe(&mut store, &["a", "b", "c"]);
        let pending = store.owed_by(D).unwrap();
        assert!(store.history(0).unwrap().is_empty(), "owed is not history");
        store.settle(&pending[..2]).unwrap();
        let rows = store.history(0).unwrap();
        let assets: Vec<&str> = rows.iter().map(|e| e.asset.as_str()).collect();
        assert_eq!(assets, ["a", "b"]);
        assert_eq!(rows[0].request, rows[1].request);
        assert_eq!(rows[0].reason, Reason::Changed);
        store.settle(&pending[2..]).unwrap();
        assert_eq!(store.history(0).unwrap()[2].request, rows[0].request + 1);
    }

    #[test]
    fn pruning_keeps_the_newest_rows() {
        let (_dir, mut store) = store();
        for name in ["a", "b", "c", "d"] {
            owe(&mut store, &[name]);
            let pending = store.owed_by(D).unwrap();
            store.settle(&pending).unwrap();
        }
        store.prune_history(Duration::from_secs(3600), 2).unwrap();
        let assets: Vec<String> = store
            .history(0)
            .unwrap()
            .into_iter()
            .map(|e| e.asset)
            .collect();
        assert_eq!(assets, ["c", "d"]);
        store.prune_history(Duration::ZERO, 10).unwrap();
        // Rows of this second stay with keep = 0 (cutoff is "before now").
        assert!(store.history(0).unwrap().len() <= 2);
    }
}
