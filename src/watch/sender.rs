//! The daemon's sending side: flushes the outbox (through
//! [`crate::flush::Flusher`], like every command) whenever the detector
//! records something, paces token requests by `[watch] token_interval`
//! (see [`super::pacing`]; under sustained change too), and backs off while
//! Optimole is unreachable. Each Optimole account has its own backoff, so
//! one site's revoked key never holds up the others. It has its own
//! connection to the state store, so detection never waits for the network.
//! Requests from the control socket (see [`super::requests`]) wait here
//! for the flush and the token that cover their work; while one waits,
//! tokens go as soon as the assets are accepted, not paced.

use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::Instant;

use super::pacing::{next_request, Intake, Pacing};
use super::requests::Waiters;
use super::sleep_until;
use crate::accounts::{AccountId, Accounts};
use crate::api::ApiError;
use crate::config::{Config, WatchConfig};
use crate::control::jobs::{self as control, AccountState, Jobs, Shared};
use crate::flush::{Batches, Flusher, Outcome, Policy, Sent, TokenWhen};
use crate::retry::RetryPolicy;
use crate::session::Session;
use crate::state::{Store, TokenState};

/// What the detector tells the sender.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pulse {
    /// Bumped whenever changes were recorded.
    pub recorded: u64,
    /// Paths are still settling: more changes are on their way.
    pub busy: bool,
}

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// After a fatal answer (refused key) the key is not tried again for this
/// long, or until SIGHUP.
const FATAL_PAUSE: Duration = Duration::from_secs(3600);

/// One account's backoff while Optimole fails it.
struct Backoff {
    not_before: Option<Instant>,
    pause: Duration,
    failing: bool,
    /// The last failure, and whether Optimole refused the key or the URL
    /// (control requests arriving meanwhile are told).
    error: Option<(String, bool)>,
}

pub struct Sender {
    store: Store,
    accounts: Accounts,
    /// Per account, in the order of `accounts`.
    backoff: Vec<Backoff>,
    flusher: Flusher,
    config: Config,
    jobs: Jobs,
    live: Shared,
    /// Control requests waiting for their outcome.
    waiters: Waiters,
}

impl Sender {
    /// The sender of `session`'s accounts; the daemon holds the session's
    /// lock while it runs.
    pub fn new(
        session: Session,
        config: Config,
        jobs: Jobs,
        live: Shared,
    ) -> anyhow::Result<Sender> {
        let (store, accounts) = session.into_parts()?;
        Ok(Sender {
            backoff: accounts
                .iter()
                .map(|_| Backoff {
                    not_before: None,
                    pause: FIRST_BACKOFF,
                    failing: false,
                    error: None,
                })
                .collect(),
            store,
            accounts,
            flusher: Flusher::new(&config.api),
            config,
            jobs,
            live,
            waiters: Waiters::default(),
        })
    }

    pub async fn run(
        mut self,
        mut pulse: watch::Receiver<Pulse>,
        mut shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        // Held for this worker's life; the next config's sender takes it on.
        let mut jobs = self.jobs.clone().lock_owned().await;
        loop {
            let busy = pulse.borrow_and_update().busy;
            let mut wake: Option<Instant> = None;
            for i in 0..self.backoff.len() {
                if let Some(at) = self.cycle(i, busy).await {
                    wake = Some(wake.map_or(at, |w| w.min(at)));
                }
            }
            self.waiters
                .answer(&self.store, &self.accounts, self.config.api.retry_for);
            self.publish_live(busy);
            tokio::select! {
                _ = shutdown.changed() => return Ok(()),
                changed = pulse.changed() => if changed.is_err() { return Ok(()) },
                Some(job) = jobs.recv() => {
                    let requests = self.accounts.requests();
                    // Accounts held back after a failure: a request is
                    // told as if it had failed itself.
                    let now = Instant::now();
                    let held: Vec<(String, bool)> = self
                        .backoff
                        .iter()
                        .filter(|b| b.not_before.is_some_and(|at| at > now))
                        .filter_map(|b| b.error.clone())
                        .collect();
                    self.waiters
                        .take(job, &mut self.store, &self.accounts, &mut self.flusher, &self.config, requests, &held)
                        .await;
                }
                _ = sleep_until(wake) => {}
            }
        }
    }

    /// What `status` shows of the sender.
    fn publish_live(&self, busy: bool) {
        let watch = &self.config.watch;
        let intake = match busy {
            true => Intake::Busy,
            false => Intake::Quiet,
        };
        let accounts: Vec<AccountState> = self
            .accounts
            .iter()
            .zip(&self.backoff)
            .map(|(account, backoff)| AccountState {
                account: account.id.to_string(),
                assets_owed: self.store.owed_count_by(&account.id).unwrap_or(0),
                next_token: token_at(&self.store, watch, &account.id, intake)
                    .ok()
                    .flatten(),
                hold_until: backoff.not_before,
                failing: backoff.failing,
            })
            .collect();
        let waiting = self.waiters.len();
        control::update(&self.live, |live| {
            live.accounts = accounts;
            live.requests_waiting = waiting;
        });
    }

    /// One round of sending for one account; returns when to come back on
    /// its own.
    async fn cycle(&mut self, i: usize, busy: bool) -> Option<Instant> {
        let now = Instant::now();
        if let Some(at) = self.backoff[i].not_before.filter(|at| *at > now) {
            return Some(at);
        }
        let account = self.accounts.list().get(i)?;
        let requests_before = account.client.requests();
        let watch = &self.config.watch;
        // Tokens are paced on their own clock: assets still owed or paths
        // still settling do not hold back a token for what was accepted.
        let intake = |left: usize| match left > 0 || busy {
            true => Intake::Busy,
            false => Intake::Quiet,
        };
        let due = |store: &Store, left: usize| {
            Ok(token_wait(store, watch, &account.id, intake(left))?.is_some_and(|w| w.is_zero()))
        };
        // A request waits: everything goes now, and its token right after.
        let urgent = !self.waiters.is_empty();
        let policy = Policy {
            retry: RetryPolicy::once(),
            batches: match busy && !urgent {
                true => Batches::Fill,
                false => Batches::All,
            },
            token: match urgent {
                true => TokenWhen::AfterAssets,
                false => TokenWhen::Paced(&due),
            },
        };
        let mut sent = Sent::default();
        let outcome = self
            .flusher
            .run(&mut self.store, account, policy, &mut sent)
            .await;
        if let (Ok(count), Ok(oldest)) = (self.store.owed_count(), self.store.oldest_owed_at()) {
            crate::metrics::owed(count, oldest);
        }
        if let Ok(refused) = self.store.refused_count() {
            crate::metrics::refused(refused);
        }
        if let Ok(oldest) = self.store.oldest_uncovered_at() {
            crate::metrics::uncovered(oldest);
        }
        if let (Ok(owed), Ok(refused), Ok(uncovered)) = (
            self.store.owed_count_by(&account.id),
            self.store.refused_count_by(&account.id),
            self.store.uncovered_since(&account.id),
        ) {
            crate::metrics::accounts::state(&account.id, owed, refused, uncovered);
        }
        let history = &self.config.history;
        if let Err(e) = self
            .store
            .prune_history_hourly(history.keep, history.max_rows)
        {
            tracing::warn!(
                error = format!("{e:#}"),
                "cannot prune the history; it is tried again later"
            );
        }
        if !sent.invalidated.is_empty() || sent.token.is_some() {
            let uncovered = self
                .store
                .uncovered_since(&account.id)
                .ok()
                .flatten()
                .and_then(|t| SystemTime::now().duration_since(t).ok());
            tracing::info!(
                account = %account.id,
                assets = sent.invalidated.len(),
                domains = %crate::logging::array(&sent.domains),
                requests = account.client.requests().wrapping_sub(requests_before),
                token = sent.token.as_deref().unwrap_or("-"),
                uncovered_age = %crate::metrics::age_text(uncovered),
                outcome = if matches!(outcome, Outcome::Failed(_)) { "partial" } else { "ok" },
                "flushed"
            );
        }
        self.waiters.sent(&sent, &outcome);
        let next = match outcome {
            Outcome::Failed(err) => Err(err),
            Outcome::Done => token_at(&self.store, watch, &account.id, intake(0)),
            Outcome::HoldUntil(held) => token_at(&self.store, watch, &account.id, intake(1))
                .map(|at| Some(at.map_or(held, |at| at.min(held)))),
        };
        // A round that sent nothing (a partial batch held back, no token
        // due) proves nothing about Optimole: the account stays failing
        // until a request gets an answer.
        let answered = account.client.requests() != requests_before;
        match next {
            Ok(wake) if self.backoff[i].failing && !answered => wake,
            Ok(wake) => {
                if self.backoff[i].failing {
                    tracing::info!(account = %account.id, "optimole accepts requests again");
                }
                self.backoff[i] = Backoff {
                    not_before: None,
                    pause: FIRST_BACKOFF,
                    failing: false,
                    error: None,
                };
                wake
            }
            Err(err) => {
                let at = later(self.failed(i, &err));
                self.backoff[i].not_before = Some(at);
                Some(at)
            }
        }
    }

    /// Logs a failure once per change of state and says how long to pause.
    fn failed(&mut self, i: usize, err: &anyhow::Error) -> Duration {
        self.store.note_error(&format!("{err:#}"));
        let max_backoff = self.config.watch.max_backoff;
        let account = self.accounts.list().get(i).map(|a| a.id.to_string());
        let account = account.as_deref().unwrap_or("default");
        let state = &mut self.backoff[i];
        let api = crate::flush::api_error(err);
        let fatal = match api {
            Some(ApiError::Unauthorized { .. }) => Some("fix the key"),
            Some(ApiError::Misconfigured { .. }) => Some("fix [api] base_url"),
            _ => None,
        };
        state.error = Some((format!("{err:#}"), fatal.is_some()));
        if let Some(fix) = fatal {
            tracing::error!(
                account = %account,
                error = format!("{err:#}"),
                pause = ?FATAL_PAUSE,
                "optimole refuses requests; changes keep being collected and stay owed; {fix}, then send SIGHUP"
            );
            state.failing = true;
            return FATAL_PAUSE;
        }
        if !state.failing {
            tracing::warn!(account = %account, error = format!("{err:#}"), "sending failed; retrying with backoff, changes stay owed");
        } else {
            tracing::debug!(account = %account, error = format!("{err:#}"), "still failing");
        }
        state.failing = true;
        let jittered = state
            .pause
            .min(max_backoff)
            .mul_f64(0.5 + fastrand::f64() / 2.0);
        // Retry-After is honoured up to max_backoff: a value of u64::MAX
        // seconds or a date in year 9999 must neither overflow the clock
        // nor silence the account until a restart.
        let pause = crate::retry::pause(jittered, api.and_then(ApiError::retry_after), max_backoff);
        state.pause = state.pause.saturating_mul(2).min(max_backoff);
        pause
    }
}

/// `pause` from now; a pause beyond what the clock holds is a day (it is
/// bounded by `[watch] max_backoff` and `FATAL_PAUSE` anyway).
fn later(pause: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(pause)
        .unwrap_or_else(|| now + Duration::from_secs(86_400))
}

/// When the account's next token request is due (`None`: nothing is due;
/// an interval too large to add to the clock never comes due).
fn token_at(
    store: &Store,
    watch: &WatchConfig,
    account: &AccountId,
    intake: Intake,
) -> anyhow::Result<Option<Instant>> {
    Ok(token_wait(store, watch, account, intake)?.and_then(|w| Instant::now().checked_add(w)))
}

/// How long until the account's next token request is due; `None`:
/// nothing is due.
fn token_wait(
    store: &Store,
    watch: &WatchConfig,
    account: &AccountId,
    intake: Intake,
) -> anyhow::Result<Option<Duration>> {
    let pacing = Pacing {
        interval: watch.token_interval,
        last_request: store.token_requested_at(account)?,
        uncovered_since: store.uncovered_since(account)?,
        owed: store.token_state(account)? != TokenState::Settled,
        intake,
    };
    let now = SystemTime::now();
    Ok(next_request(now, &pacing).map(|due| due.duration_since(now).unwrap_or_default()))
}
