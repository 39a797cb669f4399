//! Handing owed work to the right account when the config changes:
//! owed assets follow their rule to its current account, and work owed to
//! an account the config no longer has goes to its heir (the account now
//! using its key: renamed) or else to the `[api]` account. The store
//! remembers each account name's key source for that.

use std::collections::BTreeSet;

use rusqlite::params;

use super::coverage::{accepted_in, key, meta_number, owe_token_in, TOKEN_KEYS};
use super::{set_meta, Store};
use crate::accounts::AccountId;

impl Store {
    /// Moves each owed asset to the account `serving` names for it (its
    /// rule's current account), marking a token owed for every account that
    /// got assets. Assets `serving` knows no account for stay where they are.
    pub fn follow_rules<'a>(
        &mut self,
        serving: impl Fn(&str) -> Option<&'a AccountId>,
    ) -> anyhow::Result<()> {
        let moves: Vec<(i64, AccountId, AccountId)> = {
            let mut stmt = self
                .conn
                .prepare_cached("SELECT rowid, asset, account FROM outbox ORDER BY rowid")?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, AccountId>(2)?,
                ))
            })?;
            let mut moves = Vec::new();
            for row in rows {
                let (rowid, asset, account) = row?;
                if let Some(to) = serving(&asset).filter(|to| **to != account) {
                    moves.push((rowid, account, to.clone()));
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
        let accounts: BTreeSet<&AccountId> = moves.iter().map(|(_, _, to)| to).collect();
        for account in &accounts {
            owe_token_in(&tx, account)?;
        }
        tx.commit()?;
        let from: BTreeSet<&AccountId> = moves.iter().map(|(_, from, _)| from).collect();
        tracing::info!(
            assets = moves.len(),
            from = %names(from.iter().copied()),
            to = %names(accounts.iter().copied()),
            "owed assets follow their rule to its current account"
        );
        Ok(())
    }

    /// Gives assets and tokens owed to accounts not in `known` to their
    /// heir: the account `heir` names for them (an account that was
    /// renamed), else the default account.
    pub fn adopt_orphans(
        &mut self,
        known: &[&AccountId],
        heir: impl Fn(&AccountId) -> Option<AccountId>,
    ) -> anyhow::Result<()> {
        let orphans: Vec<AccountId> = self
            .accounts_with_work()?
            .into_iter()
            .filter(|a| !known.contains(&a))
            .collect();
        if orphans.is_empty() {
            return Ok(());
        }
        let tx = self.write()?;
        let mut heirs = Vec::new();
        for account in &orphans {
            let to = heir(account).unwrap_or(AccountId::Default);
            tx.execute(
                "UPDATE outbox SET account = ?2 WHERE account = ?1",
                [account, &to],
            )?;
            // What the orphan had accepted and not yet covered needs its
            // heir's next token.
            if let Some(since) = meta_number(&tx, &key("uncovered_since", account))? {
                accepted_in(&tx, &to, since)?;
            }
            for base in TOKEN_KEYS {
                tx.execute("DELETE FROM meta WHERE key = ?1", [key(base, account)])?;
            }
            owe_token_in(&tx, &to)?;
            heirs.push(to);
        }
        tx.commit()?;
        tracing::warn!(
            accounts = %names(&orphans),
            to = %names(&heirs),
            "work owed to accounts no longer in the config goes to the account now using their key, else to the [api] key"
        );
        Ok(())
    }

    /// Remembers which key source each named account uses, so a renamed
    /// account's work finds its heir ([`Store::account_sources`]).
    pub fn remember_sources(&mut self, sources: &[(AccountId, String)]) -> anyhow::Result<()> {
        let mut changed = Vec::new();
        for (id, source) in sources {
            let key = format!("account_source:{}", id.stored());
            if self.meta(&key)?.as_deref() != Some(source.as_str()) {
                changed.push((key, source));
            }
        }
        if changed.is_empty() {
            return Ok(());
        }
        let tx = self.write()?;
        for (key, source) in changed {
            set_meta(&tx, &key, source)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Each account name the store has seen, with its key source.
    pub fn account_sources(&self) -> anyhow::Result<Vec<(AccountId, String)>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT key, value FROM meta WHERE key LIKE 'account_source:%'")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut sources = Vec::new();
        for row in rows {
            let (key, source) = row?;
            let name = key
                .strip_prefix("account_source:")
                .unwrap_or(&key)
                .to_string();
            sources.push((AccountId::from_stored(name), source));
        }
        Ok(sources)
    }
}

/// Accounts as logs name them (`default` for the `[api]` key's).
fn names<'a>(accounts: impl IntoIterator<Item = &'a AccountId>) -> crate::logging::Array {
    crate::logging::array(accounts.into_iter().map(AccountId::to_string))
}
