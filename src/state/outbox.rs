//! The outbox: assets owed to Optimole and the cache token owed after them,
//! per Optimole account.
//!
//! An asset is owed at most once (a UNIQUE column), keeps its place in line
//! when it is owed again, and is removed only after Optimole accepted it.
//! The token goes through two remembered steps, owed (must be requested) and
//! fetched (requested, not yet published), so a publishing failure does not
//! cost a second token request. An account is named by where its key comes
//! from; `""` is the `[api]` key's account.

use std::collections::BTreeSet;

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
    /// once the account's outbox is empty.
    Owed,
    /// A token was received but not yet published.
    Fetched(String),
}

/// Meta keys per account; the default account keeps the plain names.
fn key(base: &str, account: &str) -> String {
    if account.is_empty() {
        base.to_string()
    } else {
        format!("{base}:{account}")
    }
}

fn owe_token_in(conn: &Connection, account: &str) -> rusqlite::Result<()> {
    set_meta(conn, &key("token_state", account), "owed")?;
    conn.execute(
        "DELETE FROM meta WHERE key = ?1",
        [key("token_fetched", account)],
    )?;
    Ok(())
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
        super::refused::forget(conn, &owed.asset)?;
        added += inserted;
    }
    // New invalidations make any token fetched earlier stale: a new one must
    // be requested after them.
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

    /// Moves each owed asset to the account `serving` names for it (its
    /// rule's current account), marking a token owed for every account that
    /// got assets. Assets `serving` knows no account for stay where they are.
    pub fn follow_rules<'a>(
        &mut self,
        serving: impl Fn(&str) -> Option<&'a str>,
    ) -> anyhow::Result<()> {
        let moves: Vec<(i64, String, String)> = {
            let mut stmt = self
                .conn
                .prepare_cached("SELECT rowid, asset, account FROM outbox ORDER BY rowid")?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })?;
            let mut moves = Vec::new();
            for row in rows {
                let (rowid, asset, account) = row?;
                if let Some(to) = serving(&asset).filter(|to| *to != account) {
                    moves.push((rowid, account, to.to_string()));
                }
            }
            moves
        };
        if moves.is_empty() {
            return Ok(());
        }
        let tx = self.write()?;
        {
            let mut update =
                tx.prepare_cached("UPDATE outbox SET account = ?2 WHERE rowid = ?1")?;
            for (rowid, _, to) in &moves {
                update.execute(params![rowid, to])?;
            }
        }
        let accounts: BTreeSet<&str> = moves.iter().map(|(_, _, to)| to.as_str()).collect();
        for account in &accounts {
            owe_token_in(&tx, account)?;
        }
        tx.commit()?;
        let from: BTreeSet<&str> = moves.iter().map(|(_, from, _)| from.as_str()).collect();
        tracing::info!(
            assets = moves.len(),
            from = ?from,
            to = ?accounts,
            "owed assets follow their rule to its current account"
        );
        Ok(())
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
            tx.execute(
                "DELETE FROM meta WHERE key IN (?1, ?2)",
                [key("token_state", account), key("token_fetched", account)],
            )?;
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
    pub fn token_requested_at(
        &self,
        account: &str,
    ) -> anyhow::Result<Option<std::time::SystemTime>> {
        Ok(self
            .meta(&key("token_requested_at", account))?
            .and_then(|v| v.parse::<u64>().ok())
            .map(|secs| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)))
    }

    pub fn token_state(&self, account: &str) -> anyhow::Result<TokenState> {
        Ok(match self.meta(&key("token_state", account))?.as_deref() {
            Some("owed") => TokenState::Owed,
            Some("fetched") => match self.meta(&key("token_fetched", account))? {
                Some(token) => TokenState::Fetched(token),
                None => TokenState::Owed,
            },
            _ => TokenState::Settled,
        })
    }

    /// A token is owed without any asset (an explicit `token` command, or a
    /// domain or account-wide invalidation).
    pub fn owe_token(&mut self, account: &str) -> anyhow::Result<()> {
        let tx = self.write()?;
        owe_token_in(&tx, account)?;
        tx.commit()?;
        Ok(())
    }

    /// Remembers a token received from Optimole. Returns false (and keeps
    /// the token owed) when assets became owed while it was requested: the
    /// token then predates their invalidation and another one is needed.
    pub fn token_fetched(&mut self, account: &str, token: &str) -> anyhow::Result<bool> {
        let tx = self.write()?;
        set_meta(
            &tx,
            &key("token_requested_at", account),
            &unix_now().to_string(),
        )?;
        let owed: i64 = tx.query_row(
            "SELECT count(*) FROM outbox WHERE account = ?1",
            [account],
            |r| r.get(0),
        )?;
        let current = owed == 0;
        if current {
            set_meta(&tx, &key("token_state", account), "fetched")?;
            set_meta(&tx, &key("token_fetched", account), token)?;
        }
        tx.commit()?;
        Ok(current)
    }

    /// The token reached the site. Settles the account's token unless a new
    /// change made another one owed meanwhile.
    pub fn token_published(&mut self, account: &str, token: &str) -> anyhow::Result<()> {
        let tx = self.write()?;
        let fetched: Option<String> = tx
            .query_row(
                "SELECT value FROM meta WHERE key = ?1",
                [key("token_fetched", account)],
                |r| r.get(0),
            )
            .optional()?;
        if fetched.as_deref() == Some(token) {
            set_meta(&tx, &key("token_state", account), "settled")?;
            tx.execute(
                "DELETE FROM meta WHERE key = ?1",
                [key("token_fetched", account)],
            )?;
        }
        set_meta(&tx, "last_token", token)?;
        set_meta(&tx, "last_token_at", &unix_now().to_string())?;
        tx.commit()?;
        Ok(())
    }
}
