//! Flushing: outbox → API batches → commit → token → publish, per Optimole
//! account.
//!
//! Assets leave the outbox in batches of at most `batch_size`; each batch is
//! removed from the store only after Optimole accepted it (see
//! `api::answer` for what counts as accepted). A batch the server calls too
//! large is split in halves; assets a refusal names move to the visible
//! refused list; any other failure keeps everything owed. When one flush owes more than
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
use crate::exit_codes::UsageError;
use crate::retry::{retry, RetryPolicy};
use crate::secret::ApiKey;
use crate::state::{Pending, Store, TokenState};
use crate::token::Publisher;

mod settlement;

use settlement::{decide, Decision};

/// What flushing achieved so far.
#[derive(Debug, Default)]
pub struct Flushed {
    /// Assets Optimole accepted.
    pub invalidated: Vec<String>,
    /// Domains invalidated whole instead of asset by asset.
    pub domains: Vec<String>,
    /// The token requested (or re-published) by this flush.
    pub token: Option<String>,
    /// Assets Optimole refused by name, moved to the refused list.
    pub refused: Vec<String>,
}

/// Everything needed to talk to one Optimole account.
#[derive(Debug)]
pub struct Lane {
    /// The account's name in the store (`""`: the `[api]` key's).
    pub account: String,
    pub client: Client,
    pub publisher: Publisher,
    /// URL prefixes (`url` and `also`) of the rules whose assets this
    /// account is owed.
    pub prefixes: Vec<String>,
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
                prefixes: config
                    .rules
                    .iter()
                    .filter(|r| r.account == account.id)
                    .flat_map(|r| std::iter::once(&r.url).chain(&r.also).cloned())
                    .collect(),
                account: account.id,
                batch_limit: AtomicUsize::new(usize::MAX),
            })
        })
        .collect()
}

/// Owed assets follow their rule's current account (a rule that got its own
/// key, or a new one, takes its owed assets along: the old key may not be
/// allowed to invalidate them); assets owed to accounts the config no longer
/// has and no rule serves go to the `[api]` account: they must not stay owed
/// forever.
pub fn adopt_orphans(store: &mut Store, lanes: &[Lane]) -> anyhow::Result<()> {
    store.follow_rules(|asset| account_serving(lanes, asset))?;
    let known: Vec<&str> = lanes.iter().map(|l| l.account.as_str()).collect();
    store.adopt_orphans(&known)
}

/// The account of the rule serving `asset` (its longest matching prefix);
/// `None` for an asset no rule serves, or one two accounts serve alike.
fn account_serving<'l>(lanes: &'l [Lane], asset: &str) -> Option<&'l str> {
    let mut best: Option<(usize, &str)> = None;
    let mut tied = false;
    for lane in lanes {
        for prefix in &lane.prefixes {
            let serves = asset
                .strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.starts_with('/'));
            if !serves {
                continue;
            }
            match best {
                Some((len, account)) if len == prefix.len() => {
                    tied |= account != lane.account;
                }
                Some((len, _)) if len > prefix.len() => {}
                _ => {
                    best = Some((prefix.len(), &lane.account));
                    tied = false;
                }
            }
        }
    }
    best.filter(|_| !tied).map(|(_, account)| account)
}

/// A failed account and what went wrong.
#[derive(Debug)]
pub struct LaneError {
    pub account: String,
    pub message: String,
}

/// Flushes every account that has work, except those in `skip`; returns
/// one error per account that failed. A wrong `base_url` (404/405) stops
/// it at once with a [`UsageError`]: every account would get the same.
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
            if let Some(err @ ApiError::Misconfigured { .. }) = api_error(&e) {
                // Every account shares base_url: nothing more is sent.
                let message = format!("{who}{err}");
                store.note_error(&message);
                return Err(UsageError(message).into());
            }
            errors.push(LaneError {
                message: format!("{who}{e:#}"),
                account,
            });
        }
    }
    Ok(errors)
}

/// The run's error for assets refused during it: they make the run fail
/// (exit 1) although the rest went through.
pub fn refused_error(refused: &[String]) -> Option<String> {
    let first = refused.first()?;
    Some(format!(
        "optimole refused {} asset(s) by name (first: {first}); they are kept in the refused list \
         (`optiwatch status`) and not sent again until you run `optiwatch invalidate --refused`",
        refused.len()
    ))
}

/// The API failure behind an error, if one is.
pub fn api_error(err: &anyhow::Error) -> Option<&ApiError> {
    err.chain().find_map(|c| c.downcast_ref::<ApiError>())
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
            let result = retry(self.retry, "invalidate", || {
                client.invalidate_assets(&assets)
            })
            .await;
            match decide(batch, &result) {
                Decision::Settle(batch) => {
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
                Decision::Split(first, second) => {
                    // The server's limit is below ours: remember the size
                    // that is refused, and go on.
                    self.lane
                        .lower_batch_limit((first.len() + second.len()) / 2);
                    let limit = self.lane.batch_limit();
                    let rest: Vec<Pending> = queue.drain(..).flatten().collect();
                    queue.extend(rest.chunks(limit).map(<[Pending]>::to_vec));
                    tracing::warn!(
                        sizes = ?(first.len(), second.len()),
                        "optimole refused the batch size; splitting it (lower [api] batch_size to avoid this)"
                    );
                    queue.push_front(second);
                    queue.push_front(first);
                }
                Decision::Refuse { refused, rest } => {
                    // Set aside where the user sees them, never deleted.
                    let why = match &result {
                        Err(ApiError::Refused {
                            status, message, ..
                        }) => format!("HTTP {status}: {message}"),
                        _ => String::new(),
                    };
                    let moved = self.store.refuse(&self.lane.account, &refused, &why).context(
                        "optimole refused assets by name but the state store could not record it; they stay owed",
                    )?;
                    for asset in &moved {
                        tracing::error!(
                            asset = %asset, error = %why,
                            "optimole refuses this asset; it is kept in the refused list (see `optiwatch status`); re-send it with `optiwatch invalidate --refused`"
                        );
                    }
                    done.refused.extend(moved);
                    if !rest.is_empty() {
                        queue.push_front(rest);
                    }
                }
                Decision::Keep(batch) => {
                    let owed = batch.len() + queue.iter().map(Vec::len).sum::<usize>();
                    let err = result
                        .err()
                        .map_or_else(|| anyhow!("not accepted"), |e| anyhow!(e));
                    return Err(err).context(format!(
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
