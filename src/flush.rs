//! Flushing: outbox → API batches → commit → token → publish, per Optimole
//! account, with one entry point: [`Flusher::run`] (one account) and
//! [`Flusher::run_all`] (every account with work, for the commands). The
//! sequence, assets first and then the token, is written only here; the
//! caller's [`Policy`] says which batches may go and when a token may.
//!
//! Assets leave the outbox in batches (see [`batches`]); each batch is
//! removed from the store only after Optimole accepted it. Once an account
//! owes no assets but a token, exactly one token is requested, remembered,
//! then published (see [`token`]; `watch` also requests paced tokens while
//! assets are owed: [`TokenWhen::Paced`]). Accounts are flushed one after
//! the other and a failure of one never stops the others. Whole-domain and
//! whole-account invalidations ([`Purge`]) go through here too.

mod batches;
mod purge;
mod settlement;
mod token;

use batches::Take;
pub use purge::Purge;

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;

use crate::accounts::{Account, AccountId, Accounts};
use crate::api::ApiError;
use crate::config::ApiConfig;
use crate::exit_codes::UsageError;
use crate::retry::RetryPolicy;
use crate::state::Store;

/// While more changes are on their way, a partial batch waits at most this
/// long for them to fill it ([`Batches::Fill`]).
pub const MAX_HOLD: Duration = Duration::from_secs(2);

/// What one flush may send.
#[derive(Clone, Copy)]
pub struct Policy<'a> {
    pub retry: RetryPolicy,
    pub batches: Batches,
    pub token: TokenWhen<'a>,
}

/// Which owed assets go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batches {
    /// All of them (replaced by one domain invalidation where
    /// `[api] domain_threshold` asks for it).
    All,
    /// Full batches only while more changes are on their way (the daemon
    /// while paths settle); a partial batch goes once it waited
    /// [`MAX_HOLD`].
    Fill,
}

/// When a flush may request the account's token.
#[derive(Clone, Copy)]
pub enum TokenWhen<'a> {
    /// Not in this flush: more is on its way (a scan sends what earlier
    /// runs owed before its walk, and asks for one token after it).
    Later,
    /// Once the account owes no asset: one token after everything.
    AfterAssets,
    /// Whenever `due` says so, asked after the assets went out with the
    /// number the account still owes, even while some are owed or in
    /// flight: the token covers what was accepted before it (the daemon's
    /// pacing).
    Paced(&'a (dyn Fn(&Store, usize) -> anyhow::Result<bool> + Sync)),
}

impl Policy<'static> {
    /// A command's flush: everything, then the token, retrying within
    /// `[api] retry_for`.
    pub fn complete(api: &ApiConfig) -> Policy<'static> {
        Policy {
            retry: RetryPolicy::bounded(api.retry_for),
            batches: Batches::All,
            token: TokenWhen::AfterAssets,
        }
    }
}

/// How a flush of one account ended.
#[derive(Debug)]
pub enum Outcome {
    /// What the policy allowed went out; nothing is held back.
    Done,
    /// Assets are held back (a partial batch waiting to be filled, or owed
    /// anew during the flush): flush again by this time.
    HoldUntil(Instant),
    /// A failure outlasted its retries; what was not accepted stays owed.
    Failed(anyhow::Error),
}

/// What flushing achieved, added up over the flushes it is passed to.
#[derive(Debug, Default)]
pub struct Sent {
    /// Assets Optimole accepted.
    pub invalidated: Vec<String>,
    /// Domains invalidated whole instead of asset by asset.
    pub domains: Vec<String>,
    /// The token requested (or re-published).
    pub token: Option<String>,
    /// Assets Optimole refused by name, moved to the refused list.
    pub refused: Vec<String>,
}

/// Flushes accounts, remembering what it learnt about each for its life.
#[derive(Debug)]
pub struct Flusher {
    batch_size: usize,
    domain_threshold: Option<usize>,
    /// Per account: the largest batch the server has not refused as too
    /// many assets (a low server limit costs one refusal, not one per
    /// flush), and since when a partial batch is held back.
    learnt: Vec<(AccountId, Learnt)>,
    /// Accounts that failed in a [`Flusher::run_all`]: later ones skip
    /// them (another try would only spend another retry budget).
    failed: BTreeSet<AccountId>,
}

#[derive(Debug, Clone, Copy)]
struct Learnt {
    batch_limit: usize,
    held_since: Option<Instant>,
}

impl Flusher {
    pub fn new(api: &ApiConfig) -> Flusher {
        Flusher {
            batch_size: api.batch_size,
            domain_threshold: api.domain_threshold,
            learnt: Vec::new(),
            failed: BTreeSet::new(),
        }
    }

    /// Flushes one account under `policy`: its assets, then its token.
    pub async fn run(
        &mut self,
        store: &mut Store,
        account: &Account,
        policy: Policy<'_>,
        sent: &mut Sent,
    ) -> Outcome {
        match self.steps(store, account, policy, sent).await {
            Ok(outcome) => outcome,
            Err(e) => Outcome::Failed(e),
        }
    }

    async fn steps(
        &mut self,
        store: &mut Store,
        account: &Account,
        policy: Policy<'_>,
        sent: &mut Sent,
    ) -> anyhow::Result<Outcome> {
        let held_since = self.learnt(&account.id).held_since;
        let take = match policy.batches {
            Batches::Fill if held_since.is_none_or(|since| since.elapsed() < MAX_HOLD) => {
                Take::FullBatches
            }
            _ => Take::Everything,
        };
        let before = sent.invalidated.len();
        let result = self.assets(store, account, take, policy.retry, sent).await;
        log_accepted(account, sent.invalidated.get(before..).unwrap_or_default());
        result?;
        let left = store.owed_count_by(&account.id)?;
        let outcome = if left > 0 {
            let since = *self
                .learnt_mut(&account.id)
                .held_since
                .get_or_insert_with(Instant::now);
            Outcome::HoldUntil(since + MAX_HOLD)
        } else {
            self.learnt_mut(&account.id).held_since = None;
            Outcome::Done
        };
        let token_now = match policy.token {
            TokenWhen::Later => false,
            TokenWhen::AfterAssets => left == 0,
            TokenWhen::Paced(due) => due(store, left)?,
        };
        if token_now {
            token::settle(store, account, policy.retry, sent).await?;
        }
        Ok(outcome)
    }

    /// Flushes every account with work, one after the other, except those
    /// that failed in an earlier call; returns one error per account that
    /// failed now. A wrong `base_url` (404/405) stops it at once with a
    /// [`UsageError`]: every account would get the same.
    pub async fn run_all(
        &mut self,
        store: &mut Store,
        accounts: &Accounts,
        policy: Policy<'_>,
        sent: &mut Sent,
    ) -> anyhow::Result<Vec<String>> {
        let mut errors = Vec::new();
        for id in store.accounts_with_work()? {
            let Some(account) = accounts.get(&id) else {
                continue;
            };
            if self.failed.contains(&id) {
                continue;
            }
            let Outcome::Failed(e) = self.run(store, account, policy, sent).await else {
                continue;
            };
            let who = match &id {
                AccountId::Default => String::new(),
                AccountId::Key(name) => format!("account {name}: "),
            };
            if let Some(err @ ApiError::Misconfigured { .. }) = api_error(&e) {
                // Every account shares base_url: nothing more is sent.
                let message = format!("{who}{err}");
                store.note_error(&message);
                return Err(UsageError(message).into());
            }
            self.failed.insert(id);
            errors.push(format!("{who}{e:#}"));
        }
        Ok(errors)
    }

    fn learnt(&mut self, account: &AccountId) -> Learnt {
        *self.learnt_mut(account)
    }

    fn learnt_mut(&mut self, account: &AccountId) -> &mut Learnt {
        let at = match self.learnt.iter().position(|(id, _)| id == account) {
            Some(at) => at,
            None => {
                let fresh = Learnt {
                    batch_limit: usize::MAX,
                    held_since: None,
                };
                self.learnt.push((account.clone(), fresh));
                self.learnt.len() - 1
            }
        };
        &mut self.learnt[at].1
    }
}

/// Assets logged at info level per flush; the rest are counted.
const LOGGED_ASSETS: usize = 20;

/// Logs what Optimole accepted in one flush of one account: the first
/// [`LOGGED_ASSETS`] URLs, then how many more.
fn log_accepted(account: &Account, assets: &[String]) {
    if assets.is_empty() {
        return;
    }
    let shown = &assets[..assets.len().min(LOGGED_ASSETS)];
    tracing::info!(
        account = %account.id,
        assets = assets.len(),
        urls = %crate::logging::array(shown),
        more = assets.len() - shown.len(),
        "invalidated"
    );
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
