//! The shared outbox and token bookkeeping. An asset is owed once per
//! content: each row keeps the hash of the change that made it owed
//! (all zeros for a removal), so the same change recorded by every node of
//! a replicated tree is one row, and a node that records it after the
//! leader already sent it finds its hash in `sent` and owes nothing. A
//! different hash while the asset is owed raises its generation, exactly
//! like the SQLite outbox, so settling the send in flight keeps the newer
//! change owed.
//!
//! Settling and every token step take the leader's fence and run
//! [`super::lease::check`] in the same transaction.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;

use super::{lease, SharedStore};
use crate::accounts::AccountId;

/// An asset a node saw change, with the content hash that made it owed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwedChange {
    pub asset: String,
    pub account: AccountId,
    /// BLAKE3 of the new content; all zeros when the file went away.
    pub hash: [u8; 32],
}

/// An owed asset as read for sending: its generation and hash go back to
/// [`SharedStore::settle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingAsset {
    pub asset: String,
    pub gen: i64,
    pub hash: Vec<u8>,
}

/// The newest token the leader published, and its sequence number: a node
/// publishes it locally when the number moved since it last did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedToken {
    pub token: String,
    pub seq: i64,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl SharedStore {
    /// Records changes in one transaction; returns how many assets became
    /// owed or owed anew (a different hash). Accounts that got any owe a
    /// token.
    pub async fn owe(&mut self, changes: &[OwedChange]) -> anyhow::Result<u64> {
        if changes.is_empty() {
            return Ok(0);
        }
        let assets: Vec<&str> = changes.iter().map(|c| c.asset.as_str()).collect();
        let accounts: Vec<&str> = changes.iter().map(|c| c.account.stored()).collect();
        let hashes: Vec<&[u8]> = changes.iter().map(|c| &c.hash[..]).collect();
        let node = self.node.clone();
        let tx = self.client().transaction().await?;
        // One statement for the whole set: the last change of an asset in
        // the set wins; a hash already sent or already owed is no news.
        let rows = tx
            .query(
                "WITH input AS (
                    SELECT DISTINCT ON (asset) asset, account, hash
                    FROM unnest($1::text[], $2::text[], $3::bytea[]) WITH ORDINALITY
                         AS t(asset, account, hash, ord)
                    ORDER BY asset, ord DESC
                 ), fresh AS (
                    SELECT i.* FROM input i
                    WHERE NOT EXISTS (SELECT 1 FROM sent s WHERE s.asset = i.asset AND s.hash = i.hash)
                 )
                 INSERT INTO owed (asset, account, hash, by_node)
                 SELECT asset, account, hash, $4 FROM fresh
                 ON CONFLICT (asset) DO UPDATE
                    SET hash = excluded.hash, gen = owed.gen + 1, by_node = excluded.by_node
                    WHERE owed.hash <> excluded.hash
                 RETURNING account",
                &[&assets, &accounts, &hashes, &node],
            )
            .await
            .context("cannot record changes in the shared store")?;
        let mut owing: Vec<String> = rows
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        owing.sort();
        owing.dedup();
        if !owing.is_empty() {
            tx.execute(
                "INSERT INTO tokens (account, state) SELECT unnest($1::text[]), 'owed'
                 ON CONFLICT (account) DO UPDATE SET state = 'owed'",
                &[&owing],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(u64::try_from(rows.len()).unwrap_or(u64::MAX))
    }

    /// The assets `account` owes, oldest first.
    pub async fn owed_by(&mut self, account: &AccountId) -> anyhow::Result<Vec<PendingAsset>> {
        let rows = self
            .client()
            .query(
                "SELECT asset, gen, hash FROM owed WHERE account = $1 ORDER BY seq",
                &[&account.stored()],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                Ok(PendingAsset {
                    asset: r.try_get(0)?,
                    gen: r.try_get(1)?,
                    hash: r.try_get(2)?,
                })
            })
            .collect::<Result<_, tokio_postgres::Error>>()?)
    }

    /// Every owed asset with its account, oldest first.
    pub async fn owed_all(&mut self) -> anyhow::Result<Vec<(AccountId, PendingAsset)>> {
        let rows = self
            .client()
            .query(
                "SELECT account, asset, gen, hash FROM owed ORDER BY seq",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                Ok((
                    AccountId::from_stored(r.try_get(0)?),
                    PendingAsset {
                        asset: r.try_get(1)?,
                        gen: r.try_get(2)?,
                        hash: r.try_get(3)?,
                    },
                ))
            })
            .collect::<Result<_, tokio_postgres::Error>>()?)
    }

    pub async fn owed_count(&mut self) -> anyhow::Result<i64> {
        Ok(self
            .client()
            .query_one("SELECT count(*) FROM owed", &[])
            .await?
            .try_get(0)?)
    }

    /// Accounts with assets or a token owed.
    pub async fn accounts_with_work(&mut self) -> anyhow::Result<Vec<AccountId>> {
        let rows = self
            .client()
            .query(
                "SELECT account FROM owed UNION SELECT account FROM tokens WHERE state <> 'settled'
                 ORDER BY 1",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| Ok(AccountId::from_stored(r.try_get(0)?)))
            .collect::<Result<_, tokio_postgres::Error>>()?)
    }

    /// Optimole accepted `assets`: they leave the outbox (unless owed anew
    /// meanwhile) and their hashes become the last sent; the account's
    /// accepted count grows so a token must follow. Only with the current
    /// fence ([`lease::Fenced`] otherwise, and nothing changes).
    pub async fn settle(
        &mut self,
        fence: i64,
        account: &AccountId,
        assets: &[PendingAsset],
    ) -> anyhow::Result<()> {
        let names: Vec<&str> = assets.iter().map(|p| p.asset.as_str()).collect();
        let gens: Vec<i64> = assets.iter().map(|p| p.gen).collect();
        let hashes: Vec<&[u8]> = assets.iter().map(|p| p.hash.as_slice()).collect();
        let node = self.node.clone();
        let tx = self.client().transaction().await?;
        lease::check(&tx, fence).await?;
        tx.execute(
            "DELETE FROM owed o USING unnest($1::text[], $2::bigint[]) AS t(asset, gen)
             WHERE o.asset = t.asset AND o.gen = t.gen",
            &[&names, &gens],
        )
        .await?;
        tx.execute(
            "INSERT INTO sent (asset, hash, fence, node) SELECT DISTINCT ON (asset) asset, hash, $3, $4
               FROM unnest($1::text[], $2::bytea[]) AS t(asset, hash)
             ON CONFLICT (asset) DO UPDATE SET hash = excluded.hash, at = now(),
               fence = excluded.fence, node = excluded.node",
            &[&names, &hashes, &fence, &node],
        )
        .await?;
        accepted_in(&tx, account).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The newest token published for `account`, if any.
    pub async fn published_token(
        &mut self,
        account: &AccountId,
    ) -> anyhow::Result<Option<PublishedToken>> {
        let row = self
            .client()
            .query_opt(
                "SELECT published, published_seq FROM tokens WHERE account = $1 AND published IS NOT NULL",
                &[&account.stored()],
            )
            .await?;
        Ok(row
            .map(|r| {
                Ok::<_, tokio_postgres::Error>(PublishedToken {
                    token: r.try_get(0)?,
                    seq: r.try_get(1)?,
                })
            })
            .transpose()?)
    }

    /// Whether `account` owes a token (to request) or has one fetched.
    pub async fn token_owed(&mut self, account: &AccountId) -> anyhow::Result<bool> {
        let row = self
            .client()
            .query_opt(
                "SELECT state FROM tokens WHERE account = $1",
                &[&account.stored()],
            )
            .await?;
        let state = row.map(|r| r.try_get::<_, String>(0)).transpose()?;
        Ok(state.is_some_and(|s| s != "settled"))
    }

    /// The accepted count before a token request: what the token covers.
    pub async fn token_mark(&mut self, account: &AccountId) -> anyhow::Result<i64> {
        let row = self
            .client()
            .query_opt(
                "SELECT accepted FROM tokens WHERE account = $1",
                &[&account.stored()],
            )
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?.unwrap_or(0))
    }

    /// A token fetched at `mark` was published by this leader: the newest
    /// token for every node; the account's token is settled when nothing
    /// was accepted after the mark and nothing is owed.
    pub async fn token_published(
        &mut self,
        fence: i64,
        account: &AccountId,
        token: &str,
        mark: i64,
    ) -> anyhow::Result<()> {
        let tx = self.client().transaction().await?;
        lease::check(&tx, fence).await?;
        let owed: i64 = tx
            .query_one(
                "SELECT count(*) FROM owed WHERE account = $1",
                &[&account.stored()],
            )
            .await?
            .try_get(0)?;
        tx.execute(
            "INSERT INTO tokens (account) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&account.stored()],
        )
        .await?;
        tx.execute(
            "UPDATE tokens SET published = $2, published_seq = published_seq + 1,
                published_at = now(), fetched = NULL, covers = NULL,
                state = CASE WHEN accepted <= $3::bigint AND $4::bigint = 0 THEN 'settled' ELSE 'owed' END,
                uncovered_since_ms = CASE WHEN accepted <= $3::bigint THEN NULL ELSE uncovered_since_ms END
             WHERE account = $1",
            &[&account.stored(), &token, &mark, &owed],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// An accepted invalidation a token must cover.
async fn accepted_in(
    tx: &tokio_postgres::Transaction<'_>,
    account: &AccountId,
) -> anyhow::Result<()> {
    tx.execute(
        "INSERT INTO tokens (account, state, accepted, uncovered_since_ms) VALUES ($1, 'owed', 1, $2)
         ON CONFLICT (account) DO UPDATE SET state = 'owed', accepted = tokens.accepted + 1,
           uncovered_since_ms = least(tokens.uncovered_since_ms, excluded.uncovered_since_ms)",
        &[&account.stored(), &now_ms()],
    )
    .await?;
    Ok(())
}
