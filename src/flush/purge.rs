//! Whole-domain and whole-account invalidations: one call each instead of
//! asset batches (`invalidate --domain`, `--all`, and the escalation of
//! [`super::batches`]); once Optimole accepted one, a token must follow.

use anyhow::anyhow;

use super::Flusher;
use crate::accounts::Account;
use crate::api::ApiError;
use crate::retry::{retry, RetryPolicy};
use crate::state::Store;

/// A whole-domain or whole-account invalidation: one call, then a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purge {
    /// Every cached image of this origin domain.
    Domain(String),
    /// Every cached image of the account.
    Account,
}

impl Flusher {
    /// Invalidates a whole domain or the whole account, retrying under
    /// `retry`; once Optimole accepted it, the account owes a fresh token.
    pub async fn purge(
        &mut self,
        store: &mut Store,
        account: &Account,
        purge: &Purge,
        retry: RetryPolicy,
    ) -> anyhow::Result<()> {
        let result = send_purge(account, purge, retry).await;
        result.map_err(|e| {
            anyhow!(e).context(match purge {
                Purge::Domain(domain) => format!("invalidating domain {domain} failed"),
                Purge::Account => "invalidating the whole account failed".to_string(),
            })
        })?;
        let domain = match purge {
            Purge::Domain(domain) => Some(domain.as_str()),
            Purge::Account => None,
        };
        store.purged(&account.id, domain)
    }
}

/// One whole-domain or whole-account call, retried under `policy`.
pub(super) async fn send_purge(
    account: &Account,
    purge: &Purge,
    policy: RetryPolicy,
) -> Result<(), ApiError> {
    let client = &account.client;
    match purge {
        Purge::Domain(domain) => {
            retry(policy, "invalidate domain", || {
                client.invalidate_domain(domain)
            })
            .await
        }
        Purge::Account => retry(policy, "invalidate all", || client.invalidate_all()).await,
    }
}
