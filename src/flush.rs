//! Flushing: outbox → API batches → commit → token → publish, per Optimole
//! account.
//!
//! Assets leave the outbox in batches of at most `batch_size`; each batch is
//! removed from the store only after Optimole accepted it. A batch the
//! server calls too large is split in halves. When one flush owes more than
//! `[api] domain_threshold` assets of one domain, a single domain
//! invalidation replaces them. Once an account owes no assets but a token,
//! exactly one token is requested, remembered, then published (`watch` also
//! requests paced tokens while assets are owed: [`TokenRule::Now`]).
//! Accounts are flushed one after the other and a failure of one never
//! stops the others.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{anyhow, Context};

use crate::api::{ApiError, Client};
use crate::config::{ApiConfig, Config};
use crate::retry::{retry, RetryPolicy};
use crate::secret::ApiKey;
use crate::state::{Pending, Store, TokenState};
use crate::token::Publisher;

/// What flushing achieved so far.
#[derive(Debug, Default)]
pub struct Flushed {
    /// Assets Optimole accepted.
    pub invalidated: Vec<String>,
    /// Domains invalidated whole instead of asset by asset.
    pub domains: Vec<String>,
    /// The token requested (or re-published) by this flush.
    pub token: Option<String>,
}

/// Everything needed to talk to one Optimole account.
#[derive(Debug)]
pub struct Lane {
    /// The account's name in the store (`""`: the `[api]` key's).
    pub account: String,
    pub client: Client,
    pub publisher: Publisher,
    /// The largest batch the server has not refused as too many assets;
    /// kept for the lane's life so a low server limit costs one refusal,
    /// not one per flush.
    batch_limit: AtomicUsize,
}

impl Lane {
    fn batch_limit(&self) -> usize {
        self.batch_limit.load(Ordering::Relaxed)
    }

    fn lower_batch_limit(&self, below: usize) {
        self.batch_limit.fetch_min(below.max(1), Ordering::Relaxed);
    }
}

fn halves(mut batch: Vec<Pending>) -> (Vec<Pending>, Vec<Pending>) {
    let second = batch.split_off(batch.len() / 2);
    (batch, second)
}

/// One lane per account of the config. Every key is read now, so a missing
/// one is reported before anything is sent.
pub fn lanes(config: &Config) -> anyhow::Result<Vec<Lane>> {
    config
        .accounts()
        .into_iter()
        .map(|account| {
            Ok(Lane {
                client: Client::new(&config.api, ApiKey::load(&account.key)?)?,
                publisher: Publisher::new(account.tokens, config.key_env_vars()),
                account: account.id,
                batch_limit: AtomicUsize::new(usize::MAX),
            })
        })
        .collect()
}

/// Assets owed to accounts the config no longer has go to the `[api]`
/// account: they must not stay owed forever.
pub fn adopt_orphans(store: &mut Store, lanes: &[Lane]) -> anyhow::Result<()> {
    let known: Vec<&str> = lanes.iter().map(|l| l.account.as_str()).collect();
    store.adopt_orphans(&known)
}

/// A failed account and what went wrong.
#[derive(Debug)]
pub struct LaneError {
    pub account: String,
    pub message: String,
}

/// Flushes every account that has work, except those in `skip`; returns
/// one error per account that failed.
pub async fn flush_lanes(
    store: &mut Store,
    lanes: &[Lane],
    api: &ApiConfig,
    retry: RetryPolicy,
    with_token: bool,
    skip: &[LaneError],
    done: &mut Flushed,
) -> anyhow::Result<Vec<LaneError>> {
    let mut errors = Vec::new();
    for account in store.accounts_with_work()? {
        let Some(lane) = lanes.iter().find(|l| l.account == account) else {
            continue;
        };
        if skip.iter().any(|e| e.account == account) {
            continue;
        }
        let mut flusher = Flusher::new(store, lane, api, retry);
        let result = match with_token {
            true => flusher.all(done).await,
            false => flusher.assets(false, done).await,
        };
        if let Err(e) = result {
            let who = if account.is_empty() {
                String::new()
            } else {
                format!("account {account}: ")
            };
            errors.push(LaneError {
                message: format!("{who}{e:#}"),
                account,
            });
        }
    }
    Ok(errors)
}

/// The parts a flush of one account works with.
pub struct Flusher<'a> {
    pub store: &'a mut Store,
    pub lane: &'a Lane,
    pub batch_size: usize,
    pub domain_threshold: Option<usize>,
    pub retry: RetryPolicy,
}

impl<'a> Flusher<'a> {
    pub fn new(
        store: &'a mut Store,
        lane: &'a Lane,
        api: &ApiConfig,
        retry: RetryPolicy,
    ) -> Flusher<'a> {
        Flusher {
            store,
            lane,
            batch_size: api.batch_size,
            domain_threshold: api.domain_threshold,
            retry,
        }
    }

    /// Sends what the account owes, then settles an owed token.
    pub async fn all(&mut self, done: &mut Flushed) -> anyhow::Result<()> {
        self.assets(false, done).await?;
        self.token(done).await
    }

    /// Sends owed assets. With `full_only`, a last batch smaller than
    /// `batch_size` stays owed (more changes are on their way to fill it).
    /// Stops at the first failure that outlasts its retries; whatever was
    /// not accepted stays owed.
    pub async fn assets(&mut self, full_only: bool, done: &mut Flushed) -> anyhow::Result<()> {
        let mut owed = self.store.owed_by(&self.lane.account)?;
        if !full_only {
            owed = self.escalate(owed, done).await?;
        }
        let size = self.batch_size.min(self.lane.batch_limit()).max(1);
        let mut queue: VecDeque<Vec<Pending>> = owed
            .chunks(size)
            .filter(|chunk| !full_only || chunk.len() == size)
            .map(<[Pending]>::to_vec)
            .collect();
        let client = &self.lane.client;
        while let Some(batch) = queue.pop_front() {
            let assets: Vec<String> = batch.iter().map(|p| p.asset.clone()).collect();
            match retry(self.retry, "invalidate", || {
                client.invalidate_assets(&assets)
            })
            .await
            {
                Ok(()) => {
                    crate::failpoint::pause_at("invalidated");
                    self.store.accepted(&self.lane.account)?;
                    self.store.settle(&batch).context(
                        "optimole accepted a batch but the state store could not record it; it will be sent again",
                    )?;
                    tracing::debug!(assets = batch.len(), "invalidated");
                    crate::metrics::add(&crate::metrics::METRICS.invalidated, batch.len() as u64);
                    crate::failpoint::pause_at("settled");
                    done.invalidated.extend(assets);
                }
                Err(ApiError::TooManyAssets { .. }) if batch.len() > 1 => {
                    // The server's limit is below ours: halve, remember the
                    // size that is refused, and go on.
                    self.lane.lower_batch_limit(batch.len() / 2);
                    let limit = self.lane.batch_limit();
                    let rest: Vec<Pending> = queue.drain(..).flatten().collect();
                    queue.extend(rest.chunks(limit).map(<[Pending]>::to_vec));
                    let (first, second) = halves(batch);
                    tracing::warn!(
                        sizes = ?(first.len(), second.len()),
                        "optimole refused the batch size; splitting it (lower [api] batch_size to avoid this)"
                    );
                    queue.push_front(second);
                    queue.push_front(first);
                }
                Err(ApiError::Rejected { message, status }) if batch.len() > 1 => {
                    // Something in the batch is refused for good: bisect to
                    // find it, so it cannot hold up the rest forever.
                    tracing::debug!(status, message = %message, "batch rejected; bisecting");
                    let (first, second) = halves(batch);
                    queue.push_front(second);
                    queue.push_front(first);
                }
                Err(ApiError::Rejected { message, status }) => {
                    tracing::error!(
                        asset = %batch[0].asset, status, message = %message,
                        "optimole rejects this asset for good; it is dropped from the outbox"
                    );
                    self.store.note_error(&format!(
                        "optimole rejected {} (HTTP {status}): {message}; dropped",
                        batch[0].asset
                    ));
                    self.store.settle(&batch)?;
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

    /// Replaces the assets of any domain owing more than the threshold by
    /// one domain invalidation; returns the assets still to send.
    async fn escalate(
        &mut self,
        owed: Vec<Pending>,
        done: &mut Flushed,
    ) -> anyhow::Result<Vec<Pending>> {
        let Some(threshold) = self.domain_threshold else {
            return Ok(owed);
        };
        let mut by_domain: BTreeMap<String, Vec<Pending>> = BTreeMap::new();
        let mut rest = Vec::new();
        for pending in owed {
            match url::Url::parse(&pending.asset)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
            {
                Some(host) => by_domain.entry(host).or_default().push(pending),
                None => rest.push(pending),
            }
        }
        let client = &self.lane.client;
        for (domain, assets) in by_domain {
            if assets.len() <= threshold {
                rest.extend(assets);
                continue;
            }
            retry(self.retry, "invalidate domain", || {
                client.invalidate_domain(&domain)
            })
            .await
            .map_err(|e| anyhow!(e))
            .with_context(|| {
                format!("invalidating domain {domain} failed; its assets stay owed")
            })?;
            self.store.accepted(&self.lane.account)?;
            self.store.settle(&assets)?;
            tracing::info!(domain = %domain, assets = assets.len(), threshold, "escalated to one domain invalidation");
            crate::metrics::add(&crate::metrics::METRICS.invalidated, assets.len() as u64);
            done.domains.push(domain);
            done.invalidated.extend(assets.into_iter().map(|p| p.asset));
        }
        Ok(rest)
    }

    /// Settles an owed token once the account owes no asset (the end of a
    /// scan or command): publishes the one fetched earlier if nothing was
    /// accepted after it was requested, else requests a fresh one.
    pub async fn token(&mut self, done: &mut Flushed) -> anyhow::Result<()> {
        self.token_by(TokenRule::AfterAssets, done).await
    }

    /// Settles an owed token as [`Flusher::token`] does, under `rule`.
    pub async fn token_by(&mut self, rule: TokenRule, done: &mut Flushed) -> anyhow::Result<()> {
        let account = self.lane.account.as_str();
        let state = self.store.token_state(account)?;
        if state == TokenState::Settled {
            return Ok(());
        }
        if rule == TokenRule::AfterAssets && self.store.owed_count_by(account)? > 0 {
            return Ok(());
        }
        let token = match state {
            TokenState::Fetched(token) if !self.store.token_stale(account)? => token,
            _ => {
                let mark = self.store.token_mark(account)?;
                let uncovered_age = self
                    .store
                    .uncovered_since(account)?
                    .and_then(|t| std::time::SystemTime::now().duration_since(t).ok());
                let client = &self.lane.client;
                let token = retry(self.retry, "token", || client.token())
                    .await
                    .map_err(|e| anyhow!(e))
                    .context("requesting a cache token failed; it stays owed")?;
                self.store.token_fetched(account, &token, mark)?;
                crate::failpoint::pause_at("token-fetched");
                tracing::info!(
                    token = %token,
                    uncovered_age = %crate::metrics::age_text(uncovered_age),
                    "cache token received"
                );
                token
            }
        };
        done.token = Some(token.clone());
        self.lane.publisher.publish(&token).await.context(
            "publishing the cache token failed; it stays owed and is published again next time",
        )?;
        crate::failpoint::pause_at("published");
        self.store.token_published(account, &token)?;
        Ok(())
    }
}

/// When a flush may request a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRule {
    /// Only once the account owes no asset: one token after everything.
    AfterAssets,
    /// Now, even while assets are owed or in flight: the token covers what
    /// was accepted before it (the caller paces requests).
    Now,
}
