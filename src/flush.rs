//! Flushing: outbox → API batches → commit → token → publish.
//!
//! Assets leave the outbox in batches of at most `batch_size`; each batch is
//! removed from the store only after Optimole accepted it. A batch the
//! server calls too large is split in halves. Once nothing is owed and a
//! token is, exactly one token is requested, remembered, then published.

use std::collections::VecDeque;

use anyhow::{anyhow, Context};

use crate::api::{ApiError, Client};
use crate::config::ApiConfig;
use crate::retry::{retry, RetryPolicy};
use crate::state::{Store, TokenState};
use crate::token::Publisher;

/// What flushing achieved so far.
#[derive(Debug, Default)]
pub struct Flushed {
    /// Assets Optimole accepted.
    pub invalidated: Vec<String>,
    /// The token requested (or re-published) by this flush.
    pub token: Option<String>,
}

/// The parts a flush works with, borrowed for its duration.
pub struct Flusher<'a> {
    pub store: &'a mut Store,
    pub client: &'a Client,
    pub publisher: &'a Publisher,
    pub batch_size: usize,
    pub retry: RetryPolicy,
}

impl<'a> Flusher<'a> {
    pub fn new(
        store: &'a mut Store,
        client: &'a Client,
        publisher: &'a Publisher,
        api: &ApiConfig,
        retry: RetryPolicy,
    ) -> Flusher<'a> {
        Flusher {
            store,
            client,
            publisher,
            batch_size: api.batch_size,
            retry,
        }
    }

    /// Sends what the outbox owes, then settles an owed token.
    pub async fn all(&mut self, done: &mut Flushed) -> anyhow::Result<()> {
        self.assets(false, done).await?;
        self.token(done).await
    }

    /// Sends owed assets. With `full_only`, a last batch smaller than
    /// `batch_size` stays owed (more changes are on their way to fill it).
    /// Stops at the first failure that outlasts its retries; whatever was
    /// not accepted stays owed.
    pub async fn assets(&mut self, full_only: bool, done: &mut Flushed) -> anyhow::Result<()> {
        let size = self.batch_size.max(1);
        let mut queue: VecDeque<Vec<String>> = self
            .store
            .owed()?
            .chunks(size)
            .filter(|chunk| !full_only || chunk.len() == size)
            .map(<[String]>::to_vec)
            .collect();
        while let Some(batch) = queue.pop_front() {
            let client = self.client;
            match retry(self.retry, "invalidate", || {
                client.invalidate_assets(&batch)
            })
            .await
            {
                Ok(()) => {
                    crate::failpoint::pause_at("invalidated");
                    self.store.settle(&batch).context(
                        "optimole accepted a batch but the state store could not record it; it will be sent again",
                    )?;
                    tracing::debug!(assets = batch.len(), "invalidated");
                    crate::failpoint::pause_at("settled");
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
                    let owed = batch.len() + queue.iter().map(Vec::len).sum::<usize>();
                    return Err(anyhow!(err)).context(format!(
                        "invalidating {} asset(s) failed; {owed} asset(s) stay owed",
                        batch.len()
                    ));
                }
            }
        }
        Ok(())
    }

    /// Requests one token if one is owed and nothing else is, and publishes
    /// it (or publishes the one fetched earlier and not yet published).
    pub async fn token(&mut self, done: &mut Flushed) -> anyhow::Result<()> {
        let token = match self.store.token_state()? {
            TokenState::Settled => return Ok(()),
            TokenState::Owed if self.store.owed_count()? > 0 => return Ok(()),
            TokenState::Fetched(token) => token,
            TokenState::Owed => {
                let client = self.client;
                let token = retry(self.retry, "token", || client.token())
                    .await
                    .map_err(|e| anyhow!(e))
                    .context("requesting a cache token failed; it stays owed")?;
                self.store.token_fetched(&token)?;
                crate::failpoint::pause_at("token-fetched");
                tracing::info!(token = %token, "cache token received");
                token
            }
        };
        done.token = Some(token.clone());
        self.publisher.publish(&token).await.context(
            "publishing the cache token failed; it stays owed and is published again next time",
        )?;
        crate::failpoint::pause_at("published");
        self.store.token_published(&token)?;
        Ok(())
    }
}
