//! Flushing: outbox → API batches → commit → token → publish.
//!
//! Assets leave the outbox in batches of at most `batch_size`; each batch is
//! removed from the store only after Optimole accepted it. A batch the
//! server calls too large is split in halves. Once nothing is owed and a
//! token is, exactly one token is requested, remembered, then published.

use std::collections::VecDeque;

use anyhow::{anyhow, Context};

use crate::api::{ApiError, Client};
use crate::retry::{retry, RetryPolicy};
use crate::state::{Store, TokenState};
use crate::token::Publisher;

/// What one flush achieved; on failure, the error says what stopped it.
#[derive(Debug, Default)]
pub struct Flushed {
    /// Assets Optimole accepted.
    pub invalidated: Vec<String>,
    /// The token requested (and maybe published) by this flush.
    pub token: Option<String>,
}

#[derive(Debug, Clone, Copy)]
pub struct FlushOptions {
    pub batch_size: usize,
    pub retry: RetryPolicy,
    /// Whether to request and publish a token when one is owed.
    pub with_token: bool,
}

/// Sends what the store owes. Stops at the first failure that outlasts its
/// retries; whatever was not accepted stays owed.
pub async fn flush(
    store: &mut Store,
    client: &Client,
    publisher: &Publisher,
    opts: FlushOptions,
    done: &mut Flushed,
) -> anyhow::Result<()> {
    let owed = store.owed()?;
    let mut queue: VecDeque<Vec<String>> = owed
        .chunks(opts.batch_size.max(1))
        .map(<[String]>::to_vec)
        .collect();
    while let Some(batch) = queue.pop_front() {
        match retry(opts.retry, "invalidate", || {
            client.invalidate_assets(&batch)
        })
        .await
        {
            Ok(()) => {
                store
                    .settle(&batch)
                    .context("optimole accepted a batch but the state store could not record it; it will be sent again")?;
                tracing::info!(assets = batch.len(), "invalidated");
                done.invalidated.extend(batch);
            }
            Err(ApiError::TooManyAssets { .. }) if batch.len() > 1 => {
                // The server's limit is below ours: halve and go on.
                let mut first = batch;
                let second = first.split_off(first.len() / 2);
                tracing::warn!(
                    sizes = ?(first.len(), second.len()),
                    "optimole refused the batch size; splitting it (lower [api] batch_size to avoid this)"
                );
                queue.push_front(second);
                queue.push_front(first);
            }
            Err(err) => {
                return Err(anyhow!(err)).context(format!(
                    "invalidating {} asset(s) failed; {} asset(s) stay owed for the next run",
                    batch.len(),
                    batch.len() + queue.iter().map(Vec::len).sum::<usize>()
                ))
            }
        }
    }
    if opts.with_token {
        settle_token(store, client, publisher, opts, done).await?;
    }
    Ok(())
}

async fn settle_token(
    store: &mut Store,
    client: &Client,
    publisher: &Publisher,
    opts: FlushOptions,
    done: &mut Flushed,
) -> anyhow::Result<()> {
    let token = match store.token_state()? {
        TokenState::Settled => return Ok(()),
        TokenState::Fetched(token) => token,
        TokenState::Owed => {
            let token = retry(opts.retry, "token", || client.token())
                .await
                .map_err(|e| anyhow!(e))
                .context("requesting a cache token failed; it stays owed for the next run")?;
            store.token_fetched(&token)?;
            tracing::info!(token = %token, "cache token received");
            token
        }
    };
    done.token = Some(token.clone());
    publisher.publish(&token).await.context(
        "publishing the cache token failed; it stays owed and is published on the next run",
    )?;
    store.token_published(&token)?;
    Ok(())
}
