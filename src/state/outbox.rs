//! The outbox: assets owed to Optimole and the cache token owed after them,
//! per Optimole account.
//!
//! An asset is owed at most once (a UNIQUE column), keeps its place in line
//! when it is owed again, and is removed only after Optimole accepted it.
//! The token goes through two remembered steps, owed (must be requested) and
//! fetched (requested, not yet published), so a publishing failure does not
//! cost a second token request. An account is named by where its key comes
//! from; `""` is the `[api]` key's account.
//!
//! Coverage is tracked apart from what is owed: every accepted invalidation
//! bumps the account's `accepted` count and, if none was waiting, starts
//! `uncovered_since`. A token request remembers the count at its start (its
//! mark); publishing that token covers exactly the acceptances before the
//! mark, so a token fetched while assets are still owed or in flight is
//! published and a later one covers the rest.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};

use super::{set_meta, unix_now, Store};

/// An asset owed to one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owed {
    pub asset: String,
    pub account: String,
}

/// An owed asset as read for sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub asset: String,
    pub gen: i64,
}

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
fn key(base: &str, account: &str) -> String {
    if account.is_empty() {
        base.to_string()
    } else {
        format!("{base}:{account}")
    }
}

/// Every meta key holding one account's token bookkeeping.
const TOKEN_KEYS: [&str; 7] = [
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
fn owe_token_in(conn: &Connection, account: &str) -> rusqlite::Result<()> {
    set_meta(conn, &key("token_state", account), "owed")
}

fn meta_in(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()
}

/// A number kept in meta; a missing or unreadable one counts as absent.
fn meta_number(conn: &Connection, key: &str) -> rusqlite::Result<Option<i64>> {
    Ok(meta_in(conn, key)?.and_then(|v| v.trim().parse().ok()))
}

/// Records an accepted invalidation (at `at_ms`) that a token must cover.
fn accepted_in(conn: &Connection, account: &str, at_ms: i64) -> rusqlite::Result<()> {
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

fn unix_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn from_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Adds assets to the outbox inside the caller's transaction and marks a
/// token owed for each account that got any. Returns how many were newly
/// owed.
pub(super) fn owe(conn: &Connection, assets: &[Owed]) -> rusqlite::Result<usize> {
    let now = unix_now();
    let mut added = 0;
    let mut insert = conn.prepare_cached(
        "INSERT OR IGNORE INTO outbox (asset, added_at, account) VALUES (?1, ?2, ?3)",
    )?;
    // Owed again while it may be on its way: a new generation, so settling
    // the send in flight does not settle this change too.
    let mut again = conn.prepare_cached("UPDATE outbox SET gen = gen + 1 WHERE asset = ?1")?;
    for owed in assets {
        let inserted = insert.execute(params![owed.asset, now, owed.account])?;
        if inserted == 0 {
            again.execute([&owed.asset])?;
        }
        added += inserted;
    }
    // A token must follow these once they are accepted (a token fetched
    // earlier still covers what was accepted before it).
    let accounts: BTreeSet<&str> = assets.iter().map(|o| o.account.as_str()).collect();
    for account in accounts {
        owe_token_in(conn, account)?;
    }
    Ok(added)
}

impl Store {
    /// Every owed asset of every account, oldest first.
    pub fn owed(&self) -> anyhow::Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT asset FROM outbox ORDER BY rowid")?;
        let assets = stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(assets)
    }

    /// The assets one account owes, oldest first, each with the generation
    /// that [`Store::settle`] must be given back.
    pub fn owed_by(&self, account: &str) -> anyhow::Result<Vec<Pending>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT asset, gen FROM outbox WHERE account = ?1 ORDER BY rowid")?;
        let assets = stmt
            .query_map([account], |r| {
                Ok(Pending {
                    asset: r.get(0)?,
                    gen: r.get(1)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<Pending>>>()?;
        Ok(assets)
    }

    /// Accounts with assets or a token owed.
    pub fn accounts_with_work(&self) -> anyhow::Result<BTreeSet<String>> {
        let mut accounts = BTreeSet::new();
        let mut stmt = self
            .conn
            .prepare_cached("SELECT DISTINCT account FROM outbox")?;
        for account in stmt.query_map([], |r| r.get::<_, String>(0))? {
            accounts.insert(account?);
        }
        let mut stmt = self.conn.prepare_cached(
            "SELECT key FROM meta WHERE (key = 'token_state' OR key LIKE 'token_state:%') AND value != 'settled'",
        )?;
        for k in stmt.query_map([], |r| r.get::<_, String>(0))? {
            let k = k?;
            accounts.insert(
                k.strip_prefix("token_state")
                    .unwrap_or("")
                    .trim_start_matches(':')
                    .to_string(),
            );
        }
        Ok(accounts)
    }

    /// Gives assets and tokens owed to accounts not in `known` to the
    /// default account.
    pub fn adopt_orphans(&mut self, known: &[&str]) -> anyhow::Result<()> {
        let orphans: Vec<String> = self
            .accounts_with_work()?
            .into_iter()
            .filter(|a| !known.contains(&a.as_str()))
            .collect();
        if orphans.is_empty() {
            return Ok(());
        }
        let tx = self.write()?;
        for account in &orphans {
            tx.execute(
                "UPDATE outbox SET account = '' WHERE account = ?1",
                [account],
            )?;
            // What the orphan had accepted and not yet covered needs the
            // [api] account's next token.
            if let Some(since) = meta_number(&tx, &key("uncovered_since", account))? {
                accepted_in(&tx, "", since)?;
            }
            for base in TOKEN_KEYS {
                tx.execute("DELETE FROM meta WHERE key = ?1", [key(base, account)])?;
            }
            owe_token_in(&tx, "")?;
        }
        tx.commit()?;
        tracing::warn!(accounts = ?orphans, "work owed to accounts no longer in the config goes to the [api] key");
        Ok(())
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

    pub fn owed_count_by(&self, account: &str) -> anyhow::Result<usize> {
        let n: i64 = self.conn.query_row(
            "SELECT count(*) FROM outbox WHERE account = ?1",
            [account],
            |r| r.get(0),
        )?;
        Ok(n as usize)
    }

    /// Removes assets Optimole has accepted, unless they were owed again
    /// (a newer generation) while they were being sent.
    pub fn settle(&mut self, assets: &[Pending]) -> anyhow::Result<()> {
        let tx = self.write()?;
        {
            let mut delete =
                tx.prepare_cached("DELETE FROM outbox WHERE asset = ?1 AND gen = ?2")?;
            for p in assets {
                delete.execute(params![p.asset, p.gen])?;
            }
        }
        set_meta(&tx, "last_flush_at", &unix_now().to_string())?;
        tx.commit()?;
        Ok(())
    }

    /// When the account's token was last requested (kept across restarts,
    /// so a daemon restarting in a loop cannot request tokens in a loop).
    pub fn token_requested_at(&self, account: &str) -> anyhow::Result<Option<SystemTime>> {
        if let Some(ms) = meta_number(&self.conn, &key("token_requested_ms", account))? {
            return Ok(Some(from_ms(ms)));
        }
        // Stores written before millisecond precision.
        Ok(
            meta_number(&self.conn, &key("token_requested_at", account))?
                .map(|secs| from_ms(secs.saturating_mul(1000))),
        )
    }

    pub fn token_state(&self, account: &str) -> anyhow::Result<TokenState> {
        if let Some(token) = self.meta(&key("token_fetched", account))? {
            return Ok(TokenState::Fetched(token));
        }
        Ok(match self.meta(&key("token_state", account))?.as_deref() {
            Some("owed" | "fetched") => TokenState::Owed,
            _ => TokenState::Settled,
        })
    }

    /// A token is owed for an invalidation Optimole accepted outside the
    /// outbox (a domain or account-wide invalidation), or on request (the
    /// `token` command): a fresh one, so a token fetched earlier is dropped.
    pub fn owe_token(&mut self, account: &str) -> anyhow::Result<()> {
        let tx = self.write()?;
        accepted_in(&tx, account, unix_now_ms())?;
        for base in ["token_fetched", "token_covers"] {
            tx.execute("DELETE FROM meta WHERE key = ?1", [key(base, account)])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Records that Optimole accepted invalidations of `account`: a token
    /// requested from now on must follow. Called before the accepted assets
    /// leave the outbox, so a crash in between errs on the side of one more
    /// token, never one less.
    pub fn accepted(&mut self, account: &str) -> anyhow::Result<()> {
        let tx = self.write()?;
        accepted_in(&tx, account, unix_now_ms())?;
        tx.commit()?;
        Ok(())
    }

    /// Since when the account's oldest accepted invalidation waits for a
    /// published token; `None` when every one is covered.
    pub fn uncovered_since(&self, account: &str) -> anyhow::Result<Option<SystemTime>> {
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
    pub fn token_mark(&self, account: &str) -> anyhow::Result<TokenMark> {
        Ok(TokenMark {
            accepted: meta_number(&self.conn, &key("accepted", account))?.unwrap_or(0),
            at_ms: unix_now_ms(),
        })
    }

    /// Whether the fetched, unpublished token was requested before some
    /// acceptance: a fresh request would cover more.
    pub fn token_stale(&self, account: &str) -> anyhow::Result<bool> {
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
        account: &str,
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
    pub fn token_published(&mut self, account: &str, token: &str) -> anyhow::Result<()> {
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
        set_meta(&tx, "last_token_at", &unix_now().to_string())?;
        tx.commit()?;
        Ok(())
    }
}
