//! The outbox: assets owed to Optimole and the cache token owed after them.
//!
//! An asset is owed at most once (a UNIQUE column), keeps its place in line
//! when it is owed again, and is removed only after Optimole accepted it.
//! The token goes through two remembered steps, owed (must be requested) and
//! fetched (requested, not yet published), so a publishing failure does not
//! cost a second token request.

use rusqlite::{params, Connection, OptionalExtension};

use super::{set_meta, unix_now, Store};

const TOKEN_STATE: &str = "token_state";
const TOKEN_FETCHED: &str = "token_fetched";
const TOKEN_REQUESTED_AT: &str = "token_requested_at";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenState {
    /// Nothing to do.
    Settled,
    /// Assets were invalidated (or are owed); a fresh token must be requested
    /// once the outbox is empty.
    Owed,
    /// A token was received but not yet published.
    Fetched(String),
}

/// Adds assets to the outbox inside the caller's transaction and marks a
/// token owed when any were added. Returns how many were newly owed.
pub(super) fn owe(conn: &Connection, assets: &[String]) -> rusqlite::Result<usize> {
    if assets.is_empty() {
        return Ok(0);
    }
    let now = unix_now();
    let mut added = 0;
    let mut insert =
        conn.prepare_cached("INSERT OR IGNORE INTO outbox (asset, added_at) VALUES (?1, ?2)")?;
    for asset in assets {
        added += insert.execute(params![asset, now])?;
    }
    // New invalidations make any token fetched earlier stale: a new one must
    // be requested after them.
    set_meta(conn, TOKEN_STATE, "owed")?;
    conn.execute("DELETE FROM meta WHERE key = ?1", [TOKEN_FETCHED])?;
    Ok(added)
}

impl Store {
    /// Every owed asset, oldest first.
    pub fn owed(&self) -> anyhow::Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT asset FROM outbox ORDER BY rowid")?;
        let assets = stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(assets)
    }

    /// When the oldest owed asset became owed (unix seconds).
    pub fn oldest_owed_at(&self) -> anyhow::Result<Option<i64>> {
        Ok(self
            .conn
            .query_row("SELECT min(added_at) FROM outbox", [], |r| r.get(0))?)
    }

    pub fn owed_count(&self) -> anyhow::Result<usize> {
        let n: i64 = self
            .conn
            .query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))?;
        Ok(n as usize)
    }

    /// Removes assets Optimole has accepted.
    pub fn settle(&mut self, assets: &[String]) -> anyhow::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut delete = tx.prepare_cached("DELETE FROM outbox WHERE asset = ?1")?;
            for asset in assets {
                delete.execute([asset])?;
            }
        }
        set_meta(&tx, "last_flush_at", &unix_now().to_string())?;
        tx.commit()?;
        Ok(())
    }

    /// When a token was last requested (kept across restarts, so a daemon
    /// restarting in a loop cannot request tokens in a loop).
    pub fn token_requested_at(&self) -> anyhow::Result<Option<std::time::SystemTime>> {
        Ok(self
            .meta(TOKEN_REQUESTED_AT)?
            .and_then(|v| v.parse::<u64>().ok())
            .map(|secs| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)))
    }

    pub fn token_state(&self) -> anyhow::Result<TokenState> {
        Ok(match self.meta(TOKEN_STATE)?.as_deref() {
            Some("owed") => TokenState::Owed,
            Some("fetched") => match self.meta(TOKEN_FETCHED)? {
                Some(token) => TokenState::Fetched(token),
                None => TokenState::Owed,
            },
            _ => TokenState::Settled,
        })
    }

    /// A token is owed without any asset (an explicit `token` command, or a
    /// domain or account-wide invalidation).
    pub fn owe_token(&mut self) -> anyhow::Result<()> {
        let tx = self.conn.transaction()?;
        set_meta(&tx, TOKEN_STATE, "owed")?;
        tx.execute("DELETE FROM meta WHERE key = ?1", [TOKEN_FETCHED])?;
        tx.commit()?;
        Ok(())
    }

    pub fn token_fetched(&mut self, token: &str) -> anyhow::Result<()> {
        let tx = self.conn.transaction()?;
        set_meta(&tx, TOKEN_STATE, "fetched")?;
        set_meta(&tx, TOKEN_FETCHED, token)?;
        set_meta(&tx, TOKEN_REQUESTED_AT, &unix_now().to_string())?;
        tx.commit()?;
        Ok(())
    }

    /// The token reached the site; nothing is owed any more.
    pub fn token_published(&mut self, token: &str) -> anyhow::Result<()> {
        let tx = self.conn.transaction()?;
        // Only settle if no new change made a token owed meanwhile.
        let state: Option<String> = tx
            .query_row(
                "SELECT value FROM meta WHERE key = ?1",
                [TOKEN_STATE],
                |r| r.get(0),
            )
            .optional()?;
        if state.as_deref() == Some("fetched") {
            set_meta(&tx, TOKEN_STATE, "settled")?;
            tx.execute("DELETE FROM meta WHERE key = ?1", [TOKEN_FETCHED])?;
        }
        set_meta(&tx, "last_token", token)?;
        set_meta(&tx, "last_token_at", &unix_now().to_string())?;
        tx.commit()?;
        Ok(())
    }
}
