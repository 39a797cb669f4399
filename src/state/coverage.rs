//! Token bookkeeping, per Optimole account: whether a cache token is owed,
//! the one fetched and not yet published, and which accepted invalidations
//! a published token covers.
//!
//! The token goes through two remembered steps, owed (must be requested) and
//! fetched (requested, not yet published), so a publishing failure does not
//! cost a second token request. Coverage is tracked apart from what is
//! owed: every accepted invalidation bumps the account's `accepted` count
//! and, if none was waiting, starts `uncovered_since`. A token request
//! remembers the count at its start (its mark); publishing that token covers
//! exactly the acceptances before the mark, so a token fetched while assets
//! are still owed or in flight is published, and a later one covers the
//! rest. The token stays owed while the account owes assets, so the last
//! token always follows the last accepted invalidation.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension};

use super::{set_meta, unix_now, Store};
use crate::accounts::AccountId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenState {
    /// Nothing to do.
    Settled,
    /// Assets were invalidated (or are owed); a fresh token must be requested
    /// after them.
    Owed,
    /// A token was received but not yet published.
    Fetched(String),
}

/// Where a token request started: the account's accepted count and the
/// time (unix milliseconds). The token covers the acceptances before it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenMark {
    pub accepted: i64,
    pub at_ms: i64,
}

/// Meta keys per account; the default account keeps the plain names.
pub(super) fn key(base: &str, account: &AccountId) -> String {
    match account {
        AccountId::Default => base.to_string(),
        AccountId::Key(name) => format!("{base}:{name}"),
    }
}

/// Every meta key holding one account's token bookkeeping.
pub(super) const TOKEN_KEYS: [&str; 7] = [
    "token_state",
    "token_fetched",
    "token_covers",
    "token_requested_at",
    "token_requested_ms",
    "accepted",
    "uncovered_since",
];

/// A token must follow. A token already fetched stays: it still covers
/// what was accepted before it was requested.
pub(super) fn owe_token_in(conn: &Connection, account: &AccountId) -> rusqlite::Result<()> {
    set_meta(conn, &key("token_state", account), "owed")
}

fn meta_in(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()
}

/// A number kept in meta; a missing or unreadable one counts as absent.
pub(super) fn meta_number(conn: &Connection, key: &str) -> rusqlite::Result<Option<i64>> {
    Ok(meta_in(conn, key)?.and_then(|v| v.trim().parse().ok()))
}

/// Records an accepted invalidation (at `at_ms`) that a token must cover.
pub(super) fn accepted_in(
    conn: &Connection,
    account: &AccountId,
    at_ms: i64,
) -> rusqlite::Result<()> {
    let count = meta_number(conn, &key("accepted", account))?.unwrap_or(0);
    set_meta(
        conn,
        &key("accepted", account),
        &count.saturating_add(1).to_string(),
    )?;
    let since = key("uncovered_since", account);
    let oldest = meta_number(conn, &since)?.map_or(at_ms, |t| t.min(at_ms));
    set_meta(conn, &since, &oldest.to_string())?;
    owe_token_in(conn, account)
}

/// A fresh token must follow (one fetched earlier is dropped).
fn fresh_token_in(conn: &Connection, account: &AccountId) -> rusqlite::Result<()> {
    accepted_in(conn, account, unix_now_ms())?;
    for base in ["token_fetched", "token_covers"] {
        conn.execute("DELETE FROM meta WHERE key = ?1", [key(base, account)])?;
    }
    Ok(())
}

fn unix_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn from_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

impl Store {
    /// When the account's token was last requested (kept across restarts,
    /// so a daemon restarting in a loop cannot request tokens in a loop).
    pub fn token_requested_at(&self, account: &AccountId) -> anyhow::Result<Option<SystemTime>> {
        if let Some(ms) = meta_number(&self.conn, &key("token_requested_ms", account))? {
            return Ok(Some(from_ms(ms)));
        }
        // Stores written before millisecond precision.
        Ok(
            meta_number(&self.conn, &key("token_requested_at", account))?
                .map(|secs| from_ms(secs.saturating_mul(1000))),
        )
    }

    pub fn token_state(&self, account: &AccountId) -> anyhow::Result<TokenState> {
        if let Some(token) = self.meta(&key("token_fetched", account))? {
            return Ok(TokenState::Fetched(token));
        }
        Ok(match self.meta(&key("token_state", account))?.as_deref() {
            Some("owed" | "fetched") => TokenState::Owed,
            _ => TokenState::Settled,
        })
    }

    /// A token is owed on request (the `token` command): a fresh one, so a
    /// token fetched earlier is dropped.
    pub fn owe_token(&mut self, account: &AccountId) -> anyhow::Result<()> {
        let tx = self.write()?;
        fresh_token_in(&tx, account)?;
        tx.commit()?;
        Ok(())
    }

    /// Optimole accepted a whole-domain (`Some(domain)`) or whole-account
    /// (`None`) invalidation, outside the outbox: history records it and a
    /// fresh token is owed, in one transaction.
    pub fn purged(&mut self, account: &AccountId, domain: Option<&str>) -> anyhow::Result<()> {
        let tx = self.write()?;
        super::history::purged(&tx, account, domain)?;
        fresh_token_in(&tx, account)?;
        tx.commit()?;
        Ok(())
    }

    /// Records that Optimole accepted invalidations of `account`: a token
    /// requested from now on must follow. Called before the accepted assets
    /// leave the outbox, so a crash in between errs on the side of one more
    /// token, never one less.
    pub fn accepted(&mut self, account: &AccountId) -> anyhow::Result<()> {
        let tx = self.write()?;
        accepted_in(&tx, account, unix_now_ms())?;
        tx.commit()?;
        Ok(())
    }

    /// Since when the account's oldest accepted invalidation waits for a
    /// published token; `None` when every one is covered.
    pub fn uncovered_since(&self, account: &AccountId) -> anyhow::Result<Option<SystemTime>> {
        Ok(meta_number(&self.conn, &key("uncovered_since", account))?.map(from_ms))
    }

    /// The oldest accepted invalidation of any account still waiting for a
    /// published token.
    pub fn oldest_uncovered_at(&self) -> anyhow::Result<Option<SystemTime>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT value FROM meta WHERE key = 'uncovered_since' OR key LIKE 'uncovered_since:%'",
        )?;
        let oldest = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .filter_map(|v| v.ok().and_then(|v| v.trim().parse::<i64>().ok()))
            .min();
        Ok(oldest.map(from_ms))
    }

    /// Taken right before a token request: what the token will cover.
    pub fn token_mark(&self, account: &AccountId) -> anyhow::Result<TokenMark> {
        Ok(TokenMark {
            accepted: meta_number(&self.conn, &key("accepted", account))?.unwrap_or(0),
            at_ms: unix_now_ms(),
        })
    }

    /// Whether the fetched, unpublished token was requested before some
    /// acceptance: a fresh request would cover more.
    pub fn token_stale(&self, account: &AccountId) -> anyhow::Result<bool> {
        if self.meta(&key("token_fetched", account))?.is_none() {
            return Ok(false);
        }
        let covers = meta_number(&self.conn, &key("token_covers", account))?.unwrap_or(0);
        let accepted = meta_number(&self.conn, &key("accepted", account))?.unwrap_or(0);
        Ok(accepted > covers)
    }

    /// Remembers a token received from Optimole, requested at `mark`. It
    /// covers what was accepted before the mark, whatever is owed now.
    pub fn token_fetched(
        &mut self,
        account: &AccountId,
        token: &str,
        mark: TokenMark,
    ) -> anyhow::Result<()> {
        let tx = self.write()?;
        set_meta(
            &tx,
            &key("token_requested_at", account),
            &(mark.at_ms / 1000).to_string(),
        )?;
        set_meta(
            &tx,
            &key("token_requested_ms", account),
            &mark.at_ms.to_string(),
        )?;
        set_meta(&tx, &key("token_state", account), "fetched")?;
        set_meta(&tx, &key("token_fetched", account), token)?;
        super::history::token(&tx, account, token)?;
        set_meta(
            &tx,
            &key("token_covers", account),
            &mark.accepted.to_string(),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The token reached the site: the acceptances before its mark are
    /// covered. The account's token stays owed while it owes assets or has
    /// acceptances after the mark.
    pub fn token_published(&mut self, account: &AccountId, token: &str) -> anyhow::Result<()> {
        let tx = self.write()?;
        if meta_in(&tx, &key("token_fetched", account))?.as_deref() == Some(token) {
            // A token fetched by an older optiwatch has no mark: it was
            // requested with nothing owed, after every acceptance.
            let accepted = meta_number(&tx, &key("accepted", account))?.unwrap_or(0);
            let covers = meta_number(&tx, &key("token_covers", account))?.unwrap_or(accepted);
            let requested = meta_number(&tx, &key("token_requested_ms", account))?;
            let since = key("uncovered_since", account);
            let all_covered = accepted <= covers;
            if all_covered {
                tx.execute("DELETE FROM meta WHERE key = ?1", [&since])?;
            } else if let Some(at) = requested {
                // What is left was accepted after the request started.
                let left = meta_number(&tx, &since)?.map_or(at, |t| t.max(at));
                set_meta(&tx, &since, &left.to_string())?;
            }
            let owed: i64 = tx.query_row(
                "SELECT count(*) FROM outbox WHERE account = ?1",
                [account],
                |r| r.get(0),
            )?;
            let state = if all_covered && owed == 0 {
                "settled"
            } else {
                "owed"
            };
            set_meta(&tx, &key("token_state", account), state)?;
            for base in ["token_fetched", "token_covers"] {
                tx.execute("DELETE FROM meta WHERE key = ?1", [key(base, account)])?;
            }
        }
        set_meta(&tx, "last_token", token)?;
        // Per account, for the shared store's bridge (crate::shared::node).
        set_meta(&tx, &key("published", account), token)?;
        set_meta(&tx, "last_token_at", &unix_now().to_string())?;
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &AccountId = &AccountId::Default;
    use crate::state::{Changes, Owed};

    use crate::state::testing::store;

    fn owe(store: &mut Store, asset: &str) {
        let assets = vec![Owed {
            asset: asset.into(),
            account: AccountId::Default,
            reason: crate::state::Reason::Manual,
            path: None,
        }];
        store
            .record(&Changes {
                assets,
                ..Changes::default()
            })
            .unwrap();
    }

    /// Optimole accepted everything owed now.
    fn accept_all(store: &mut Store) {
        let owed = store.owed_by(D).unwrap();
        store.accepted(D).unwrap();
        store.settle(&owed).unwrap();
    }

    fn fetch(store: &mut Store, token: &str) {
        let mark = store.token_mark(D).unwrap();
        store.token_fetched(D, token, mark).unwrap();
    }

    #[test]
    fn a_token_fetched_while_assets_are_owed_covers_what_was_accepted_before() {
        let (_dir, mut store) = store();
        owe(&mut store, "a");
        accept_all(&mut store);
        owe(&mut store, "b");
        assert!(store.uncovered_since(D).unwrap().is_some());
        fetch(&mut store, "t1");
        store.token_published(D, "t1").unwrap();
        // "a" is covered; "b" is owed, so a token still is.
        assert_eq!(store.uncovered_since(D).unwrap(), None);
        assert_eq!(store.token_state(D).unwrap(), TokenState::Owed);
        accept_all(&mut store);
        assert!(store.uncovered_since(D).unwrap().is_some());
        fetch(&mut store, "t2");
        store.token_published(D, "t2").unwrap();
        assert_eq!(store.token_state(D).unwrap(), TokenState::Settled);
        assert_eq!(store.uncovered_since(D).unwrap(), None);
        assert_eq!(store.oldest_uncovered_at().unwrap(), None);
    }

    #[test]
    fn an_acceptance_during_the_request_waits_for_the_next_token() {
        let (_dir, mut store) = store();
        owe(&mut store, "a");
        accept_all(&mut store);
        let mark = store.token_mark(D).unwrap();
        owe(&mut store, "b");
        accept_all(&mut store);
        store.token_fetched(D, "t1", mark).unwrap();
        assert!(store.token_stale(D).unwrap());
        store.token_published(D, "t1").unwrap();
        assert_eq!(store.token_state(D).unwrap(), TokenState::Owed);
        let left = store.uncovered_since(D).unwrap().unwrap();
        assert!(left >= from_ms(mark.at_ms), "not older than the request");
    }

    #[test]
    fn a_fetched_token_survives_new_changes_and_the_token_command_replaces_it() {
        let (_dir, mut store) = store();
        owe(&mut store, "a");
        accept_all(&mut store);
        fetch(&mut store, "t1");
        owe(&mut store, "b");
        assert_eq!(
            store.token_state(D).unwrap(),
            TokenState::Fetched("t1".into())
        );
        assert!(!store.token_stale(D).unwrap());
        store.owe_token(D).unwrap();
        assert_eq!(store.token_state(D).unwrap(), TokenState::Owed);
        assert!(store.uncovered_since(D).unwrap().is_some());
    }

    #[test]
    fn the_request_time_has_milliseconds_and_old_stores_are_read() {
        let (_dir, mut store) = store();
        assert_eq!(store.token_requested_at(D).unwrap(), None);
        set_meta(&store.conn, "token_requested_at", "1700000000").unwrap();
        assert_eq!(
            store.token_requested_at(D).unwrap(),
            Some(from_ms(1_700_000_000_000))
        );
        store
            .token_fetched(
                D,
                "t",
                TokenMark {
                    accepted: 0,
                    at_ms: 1_700_000_000_123,
                },
            )
            .unwrap();
        assert_eq!(
            store.token_requested_at(D).unwrap(),
            Some(from_ms(1_700_000_000_123))
        );
        // A value nobody can parse counts as never.
        set_meta(&store.conn, "token_requested_ms", "soon").unwrap();
        set_meta(&store.conn, "token_requested_at", "-").unwrap();
        assert_eq!(store.token_requested_at(D).unwrap(), None);
    }
}
