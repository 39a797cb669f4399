//! Sending one account's owed assets in batches of at most `batch_size`.
//! Each answer settles, splits, sets aside or keeps its batch (see
//! [`super::settlement`]); the first failure that outlasts its retries
//! stops the rest, which stays owed. When one flush owes more than
//! `[api] domain_threshold` assets of one domain, a single domain
//! invalidation replaces them.

use std::collections::{BTreeMap, VecDeque};

use anyhow::{anyhow, Context};

use super::purge::send_purge;
use super::settlement::{decide, Decision};
use super::{Flusher, Purge, Sent};
use crate::accounts::Account;
use crate::api::ApiError;
use crate::retry::{retry, RetryPolicy};
use crate::state::{Pending, Store};

/// Which of the owed assets a flush takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Take {
    /// Every one (after escalation).
    Everything,
    /// Full batches only: more changes are on their way to fill the last.
    FullBatches,
}

impl Flusher {
    /// Sends what `take` says of the owed assets. Stops at the first
    /// failure that outlasts its retries; whatever was not accepted stays
    /// owed.
    pub(super) async fn assets(
        &mut self,
        store: &mut Store,
        account: &Account,
        take: Take,
        policy: RetryPolicy,
        sent: &mut Sent,
    ) -> anyhow::Result<()> {
        let mut owed = store.owed_by(&account.id)?;
        if take == Take::Everything {
            owed = self.escalate(store, account, owed, policy, sent).await?;
        }
        let size = self
            .batch_size
            .min(self.learnt(&account.id).batch_limit)
            .max(1);
        let mut queue: VecDeque<Vec<Pending>> = owed
            .chunks(size)
            .filter(|chunk| take == Take::Everything || chunk.len() == size)
            .map(<[Pending]>::to_vec)
            .collect();
        let client = &account.client;
        while let Some(batch) = queue.pop_front() {
            let assets: Vec<String> = batch.iter().map(|p| p.asset.clone()).collect();
            let result = retry(policy, "invalidate", || client.invalidate_assets(&assets)).await;
            match decide(batch, &result) {
                Decision::Settle(batch) => {
                    crate::failpoint::pause_at("invalidated");
                    store.accepted(&account.id)?;
                    store.settle(&batch).context(
                        "optimole accepted a batch but the state store could not record it; it will be sent again",
                    )?;
                    tracing::debug!(assets = batch.len(), "invalidated");
                    crate::metrics::add(&crate::metrics::METRICS.invalidated, batch.len());
                    crate::metrics::accounts::invalidated(&account.id, batch.len());
                    crate::failpoint::pause_at("settled");
                    sent.invalidated.extend(assets);
                }
                Decision::Split(first, second) => {
                    // The server's limit is below ours: remember the size
                    // that is refused, and go on.
                    let learnt = self.learnt_mut(&account.id);
                    learnt.batch_limit = learnt
                        .batch_limit
                        .min(((first.len() + second.len()) / 2).max(1));
                    let limit = learnt.batch_limit;
                    let rest: Vec<Pending> = queue.drain(..).flatten().collect();
                    queue.extend(rest.chunks(limit).map(<[Pending]>::to_vec));
                    tracing::warn!(
                        sizes = %crate::logging::array([first.len(), second.len()]),
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
                    let moved = store.refuse(&account.id, &refused, &why).context(
                        "optimole refused assets by name but the state store could not record it; they stay owed",
                    )?;
                    for asset in &moved {
                        tracing::error!(
                            asset = %asset, error = %why,
                            "optimole refuses this asset; it is kept in the refused list (see `optiwatch status`); re-send it with `optiwatch invalidate --refused`"
                        );
                    }
                    sent.refused.extend(moved);
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
        store: &mut Store,
        account: &Account,
        owed: Vec<Pending>,
        policy: RetryPolicy,
        sent: &mut Sent,
    ) -> anyhow::Result<Vec<Pending>> {
        let Some(threshold) = self.domain_threshold else {
            return Ok(owed);
        };
        let (by_domain, rest) = over_threshold(owed, threshold);
        for (domain, assets) in by_domain {
            send_purge(account, &Purge::Domain(domain.clone()), policy)
                .await
                .map_err(|e| anyhow!(e))
                .with_context(|| {
                    format!("invalidating domain {domain} failed; its assets stay owed")
                })?;
            store.accepted(&account.id)?;
            store.settle(&assets)?;
            tracing::info!(domain = %domain, assets = assets.len(), threshold, "escalated to one domain invalidation");
            crate::metrics::add(&crate::metrics::METRICS.invalidated, assets.len());
            crate::metrics::accounts::invalidated(&account.id, assets.len());
            sent.domains.push(domain);
            sent.invalidated.extend(assets.into_iter().map(|p| p.asset));
        }
        Ok(rest)
    }
}

/// Splits owed assets into the domains owing more than `threshold` (each
/// replaced by one domain invalidation) and the rest, in their order.
fn over_threshold(
    owed: Vec<Pending>,
    threshold: usize,
) -> (Vec<(String, Vec<Pending>)>, Vec<Pending>) {
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
    let mut over = Vec::new();
    for (domain, assets) in by_domain {
        if assets.len() > threshold {
            over.push((domain, assets));
        } else {
            rest.extend(assets);
        }
    }
    (over, rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::testing::pending as owed;

    #[test]
    fn only_domains_above_the_threshold_escalate() {
        let (over, rest) = over_threshold(
            owed(&[
                "https://a.com/1.jpg",
                "https://b.com/1.jpg",
                "https://a.com/2.jpg",
                "0123456789abcdef0123456789abcdef",
                "https://a.com/3.jpg",
            ]),
            2,
        );
        assert_eq!(over.len(), 1);
        assert_eq!(over[0].0, "a.com");
        assert_eq!(over[0].1.len(), 3);
        let rest: Vec<&str> = rest.iter().map(|p| p.asset.as_str()).collect();
        assert_eq!(
            rest,
            ["0123456789abcdef0123456789abcdef", "https://b.com/1.jpg"]
        );
        let (over, rest) = over_threshold(owed(&["https://a.com/1.jpg", "https://a.com/2.jpg"]), 2);
        assert!(over.is_empty(), "at the threshold nothing escalates");
        assert_eq!(rest.len(), 2);
    }
}
