//! The outbox: assets owed to Optimole, per Optimole account (the token
//! owed after them is kept in [`super::coverage`]).
//!
//! An asset is owed at most once (a UNIQUE column), keeps its place in line
//! when it is owed again, and is removed only after Optimole accepted it.
//! An account is kept as [`AccountId::stored`] names it (`''` for the
//! default account, as stores written before per-rule keys have it).
//! Each owed asset carries why it is owed and its file, which
//! [`super::history`] keeps once it is accepted; handing owed work to
//! another account is [`super::adoption`]'s.

use std::collections::BTreeSet;

use rusqlite::types::{FromSql, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{params, Connection};

use super::coverage::owe_token_in;
use super::history::Reason;
use super::{set_meta, unix_now, Store};
use crate::accounts::AccountId;

/// An asset owed to one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owed {
    pub asset: String,
    pub account: AccountId,
    /// Why it is owed; history keeps it once Optimole accepted the asset.
    pub reason: Reason,
    /// The file it is owed for, as shown to users (none for URLs and
    /// hashes named on the command line).
    pub path: Option<String>,
}

impl ToSql for AccountId {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.stored()))
    }
}

impl FromSql for AccountId {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        String::column_result(value).map(AccountId::from_stored)
    }
}

/// An owed asset as read for sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub asset: String,
    pub gen: i64,
}

/// Adds assets to the outbox inside the caller's transaction and marks a
/// token owed for each account that got any. Returns how many were newly
/// owed.
pub(super) fn owe(conn: &Connection, assets: &[Owed]) -> rusqlite::Result<usize> {
    let now = unix_now();
    let mut added = 0;
    let mut insert = conn.prepare_cached(
        "INSERT OR IGNORE INTO outbox (asset, added_at, account, reason, path)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    // Owed again while it may be on its way: a new generation, so settling
    // the send in flight does not settle this change too; the latest
    // reason is the one history keeps.
    let mut again = conn.prepare_cached(
        "UPDATE outbox SET gen = gen + 1, reason = ?2, path = coalesce(?3, path) WHERE asset = ?1",
    )?;
    for owed in assets {
        let reason = owed.reason.as_str();
        let inserted = insert.execute(params![owed.asset, now, owed.account, reason, owed.path])?;
        if inserted == 0 {
            again.execute(params![owed.asset, reason, owed.path])?;
        }
        super::refused::forget(conn, &owed.asset)?;
        added += inserted;
    }
    // A token must follow these once they are accepted (a token fetched
    // earlier still covers what was accepted before it).
    let accounts: BTreeSet<&AccountId> = assets.iter().map(|o| &o.account).collect();
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
    pub fn owed_by(&self, account: &AccountId) -> anyhow::Result<Vec<Pending>> {
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
    pub fn accounts_with_work(&self) -> anyhow::Result<BTreeSet<AccountId>> {
        let mut accounts = BTreeSet::new();
        let mut stmt = self
            .conn
            .prepare_cached("SELECT DISTINCT account FROM outbox")?;
        for account in stmt.query_map([], |r| r.get::<_, AccountId>(0))? {
            accounts.insert(account?);
        }
        let mut stmt = self.conn.prepare_cached(
            "SELECT key FROM meta WHERE (key = 'token_state' OR key LIKE 'token_state:%') AND value != 'settled'",
        )?;
        for k in stmt.query_map([], |r| r.get::<_, String>(0))? {
            let k = k?;
            accounts.insert(AccountId::from_stored(
                k.strip_prefix("token_state")
                    .unwrap_or("")
                    .trim_start_matches(':')
                    .to_string(),
            ));
        }
        Ok(accounts)
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

    pub fn owed_count_by(&self, account: &AccountId) -> anyhow::Result<usize> {
        let n: i64 = self.conn.query_row(
            "SELECT count(*) FROM outbox WHERE account = ?1",
            [account],
            |r| r.get(0),
        )?;
        Ok(n as usize)
    }

    /// Removes assets Optimole has accepted, unless they were owed again
    /// (a newer generation) while they were being sent; history records
    /// each (accepted, whatever its generation) in the same transaction.
    pub fn settle(&mut self, assets: &[Pending]) -> anyhow::Result<()> {
        let tx = self.write()?;
        super::history::accepted(&tx, assets)?;
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
}

#[cfg(test)]
mod tests {
    use crate::accounts::AccountId;
    use crate::state::testing::{owe, store};

    #[test]
    fn a_send_settles_only_the_generation_it_carried() {
        let (_dir, mut store) = store();
        owe(&mut store, &["a", "b"]);
        let sent = store.owed_by(&AccountId::Default).unwrap();
        // `a` changes again while the batch is on its way.
        owe(&mut store, &["a"]);
        store.settle(&sent).unwrap();
        assert_eq!(
            store.owed().unwrap(),
            ["a"],
            "the newer change of a stays owed"
        );
        let again = store.owed_by(&AccountId::Default).unwrap();
        assert_eq!(again[0].gen, sent[0].gen + 1);
        store.settle(&again).unwrap();
        assert!(store.owed().unwrap().is_empty());
    }
}
