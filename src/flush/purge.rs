//! Whole-domain and whole-account invalidations: one call each instead of
//! asset batches (`invalidate --domain`, `--all`, and the escalation of
//! [`super::batches`]); once Optimole accepted one, a token must follow.

use anyhow::anyhow;

use super::Flusher;
use crate::accounts::{Account, Accounts};
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

impl Purge {
    /// The accounts a purge goes to: the one `--account` chose; for `--all`
    /// every account; for `--domain` the accounts whose rules serve that
    /// domain (every account when none does: optiwatch cannot tell).
    pub fn targets<'a>(
        &self,
        accounts: &'a Accounts,
        chosen: Option<&'a Account>,
    ) -> Vec<&'a Account> {
        if let Some(account) = chosen {
            return vec![account];
        }
        let Purge::Domain(domain) = self else {
            return accounts.iter().collect();
        };
        let serving: Vec<&Account> = accounts
            .iter()
            .filter(|a| {
                a.prefixes.iter().any(|p| {
                    url::Url::parse(p)
                        .ok()
                        .and_then(|u| u.host_str().map(|h| h.eq_ignore_ascii_case(domain)))
                        .unwrap_or(false)
                })
            })
            .collect();
        if serving.is_empty() {
            accounts.iter().collect()
        } else {
            serving
        }
    }
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
