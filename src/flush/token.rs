//! Settling an account's owed token: publish the one fetched earlier if
//! nothing was accepted after it was requested, else request a fresh one,
//! remember it, publish it. Remembering it first means a publishing
//! failure does not cost another token request.

use anyhow::{anyhow, Context};

use super::Sent;
use crate::accounts::Account;
use crate::retry::{retry, RetryPolicy};
use crate::state::{Store, TokenState};

/// Settles the account's token, if one is owed; when to call it is the
/// flush policy's business ([`super::TokenWhen`]).
pub(super) async fn settle(
    store: &mut Store,
    account: &Account,
    policy: RetryPolicy,
    sent: &mut Sent,
) -> anyhow::Result<()> {
    let id = &account.id;
    let token = match store.token_state(id)? {
        TokenState::Settled => return Ok(()),
        TokenState::Fetched(token) if !store.token_stale(id)? => token,
        _ => {
            let mark = store.token_mark(id)?;
            let uncovered_age = store
                .uncovered_since(id)?
                .and_then(|t| std::time::SystemTime::now().duration_since(t).ok());
            let client = &account.client;
            let token = retry(policy, "token", || client.token())
                .await
                .map_err(|e| anyhow!(e))
                .context("requesting a cache token failed; it stays owed")?;
            store.token_fetched(id, &token, mark)?;
            crate::metrics::accounts::token(id);
            crate::failpoint::pause_at("token-fetched");
            tracing::info!(
                token = %token,
                uncovered_age = %crate::metrics::age_text(uncovered_age),
                "cache token received"
            );
            token
        }
    };
    sent.token = Some(token.clone());
    account.publisher.publish(&token).await.context(
        "publishing the cache token failed; it stays owed and is published again next time",
    )?;
    crate::failpoint::pause_at("published");
    store.token_published(id, &token)?;
    Ok(())
}
