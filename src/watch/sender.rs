//! The daemon's sending side: flushes the outbox whenever the detector
//! records something, paces token requests by `[watch] token_interval` (see
//! [`super::pacing`]; under sustained change too), and backs off while
//! Optimole is unreachable. Each Optimole account is its own
//! lane with its own backoff, so one site's revoked key never holds up the
//! others. It has its own connection to the state store, so detection never
//! waits for the network.

use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::Instant;

use super::pacing::{next_request, Intake, Pacing};
use super::sleep_until;
use crate::api::ApiError;
use crate::config::Config;
use crate::flush::{Flushed, Flusher, Lane, TokenRule};
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

/// During a burst only full batches go out; a partial one waits at most this
/// long for more changes to fill it.
const MAX_HOLD: Duration = Duration::from_secs(2);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// After a fatal answer (refused key) the key is not tried again for this
/// long, or until SIGHUP.
const FATAL_PAUSE: Duration = Duration::from_secs(3600);

/// One account's sending state.
struct LaneState {
    lane: Lane,
    hold_since: Option<Instant>,
    not_before: Option<Instant>,
    backoff: Duration,
    failing: bool,
}

pub struct Sender {
    store: Store,
    lanes: Vec<LaneState>,
    config: Config,
}

impl Sender {
    pub fn new(session: Session, config: Config) -> anyhow::Result<Sender> {
        let (store, lanes) = session.into_parts()?;
        Ok(Sender {
            store,
            lanes: lanes
                .into_iter()
                .map(|lane| LaneState {
                    lane,
                    hold_since: None,
                    not_before: None,
                    backoff: FIRST_BACKOFF,
                    failing: false,
                })
                .collect(),
            config,
        })
    }

    pub async fn run(
        mut self,
        mut pulse: watch::Receiver<Pulse>,
        mut shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        loop {
            let busy = pulse.borrow_and_update().busy;
            let mut wake: Option<Instant> = None;
            for i in 0..self.lanes.len() {
                if let Some(at) = self.cycle(i, busy).await {
                    wake = Some(wake.map_or(at, |w| w.min(at)));
                }
            }
            tokio::select! {
                _ = shutdown.changed() => return Ok(()),
                changed = pulse.changed() => if changed.is_err() { return Ok(()) },
                _ = sleep_until(wake) => {}
            }
        }
    }

    /// One round of sending for one account; returns when to come back on
    /// its own.
    async fn cycle(&mut self, i: usize, busy: bool) -> Option<Instant> {
        let now = Instant::now();
        let state = &self.lanes[i];
        if let Some(at) = state.not_before.filter(|at| *at > now) {
            return Some(at);
        }
        let hold_expired = state.hold_since.is_some_and(|t| now - t >= MAX_HOLD);
        let full_only = busy && !hold_expired;
        let requests_before = state.lane.client.requests();
        let mut done = Flushed::default();
        let mut wake = None;
        let result = self.send(i, busy, full_only, &mut done, &mut wake).await;
        if let (Ok(count), Ok(oldest)) = (self.store.owed_count(), self.store.oldest_owed_at()) {
            crate::metrics::owed(count, oldest);
        }
        if let Ok(refused) = self.store.refused_count() {
            crate::metrics::refused(refused);
        }
        if let Ok(oldest) = self.store.oldest_uncovered_at() {
            crate::metrics::uncovered(oldest);
        }
        let state = &mut self.lanes[i];
        if !done.invalidated.is_empty() || done.token.is_some() {
            let uncovered = self
                .store
                .uncovered_since(&state.lane.account)
                .ok()
                .flatten()
                .and_then(|t| SystemTime::now().duration_since(t).ok());
            tracing::info!(
                account = %display(&state.lane.account),
                assets = done.invalidated.len(),
                domains = ?done.domains,
                requests = state.lane.client.requests().wrapping_sub(requests_before),
                token = done.token.as_deref().unwrap_or("-"),
                uncovered_age = %crate::metrics::age_text(uncovered),
                outcome = if result.is_ok() { "ok" } else { "partial" },
                "flushed"
            );
        }
        match result {
            Ok(()) => {
                if state.failing {
                    tracing::info!(account = %display(&state.lane.account), "optimole accepts requests again");
                }
                state.failing = false;
                state.backoff = FIRST_BACKOFF;
                state.not_before = None;
            }
            Err(err) => {
                let pause = self.failed(i, &err);
                let at = later(pause);
                self.lanes[i].not_before = Some(at);
                wake = Some(at);
            }
        }
        wake
    }

    async fn send(
        &mut self,
        i: usize,
        busy: bool,
        full_only: bool,
        done: &mut Flushed,
        wake: &mut Option<Instant>,
    ) -> anyhow::Result<()> {
        let state = &mut self.lanes[i];
        let account = state.lane.account.clone();
        let mut flusher = Flusher::new(
            &mut self.store,
            &state.lane,
            &self.config.api,
            RetryPolicy::once(),
        );
        flusher.assets(full_only, done).await?;
        let owed = self.store.owed_count_by(&account)? > 0;
        if owed {
            let since = *state.hold_since.get_or_insert_with(Instant::now);
            *wake = Some(since + MAX_HOLD);
        } else {
            state.hold_since = None;
        }
        // Tokens are paced on their own clock: assets still owed or paths
        // still settling do not hold back a token for what was accepted.
        let intake = if owed || busy {
            Intake::Busy
        } else {
            Intake::Quiet
        };
        if self
            .token_wait(&account, intake)?
            .is_some_and(|w| w.is_zero())
        {
            let state = &self.lanes[i];
            let mut flusher = Flusher::new(
                &mut self.store,
                &state.lane,
                &self.config.api,
                RetryPolicy::once(),
            );
            flusher.token_by(TokenRule::Now, done).await?;
        }
        // (An interval too large to add to the clock never comes due.)
        if let Some(at) = self
            .token_wait(&account, intake)?
            .and_then(|w| Instant::now().checked_add(w))
        {
            *wake = Some(wake.map_or(at, |w| w.min(at)));
        }
        Ok(())
    }

    /// How long until the account's next token request is due; `None`:
    /// nothing is due.
    fn token_wait(&self, account: &str, intake: Intake) -> anyhow::Result<Option<Duration>> {
        let pacing = Pacing {
            interval: self.config.watch.token_interval,
            last_request: self.store.token_requested_at(account)?,
            uncovered_since: self.store.uncovered_since(account)?,
            owed: self.store.token_state(account)? != TokenState::Settled,
            intake,
        };
        let now = SystemTime::now();
        Ok(next_request(now, &pacing).map(|due| due.duration_since(now).unwrap_or_default()))
    }

    /// Logs a failure once per change of state and says how long to pause.
    fn failed(&mut self, i: usize, err: &anyhow::Error) -> Duration {
        self.store.note_error(&format!("{err:#}"));
        let max_backoff = self.config.watch.max_backoff;
        let state = &mut self.lanes[i];
        let account = display(&state.lane.account);
        let api = crate::flush::api_error(err);
        let fatal = match api {
            Some(ApiError::Unauthorized { .. }) => Some("fix the key"),
            Some(ApiError::Misconfigured { .. }) => Some("fix [api] base_url"),
            _ => None,
        };
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
            .backoff
            .min(max_backoff)
            .mul_f64(0.5 + fastrand::f64() / 2.0);
        // Retry-After is honoured up to max_backoff: a value of u64::MAX
        // seconds or a date in year 9999 must neither overflow the clock
        // nor silence the lane until a restart.
        let pause = crate::retry::pause(jittered, api.and_then(ApiError::retry_after), max_backoff);
        state.backoff = state.backoff.saturating_mul(2).min(max_backoff);
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

/// An account as logs show it: `default` for the `[api]` key's.
fn display(account: &str) -> &str {
    if account.is_empty() {
        "default"
    } else {
        account
    }
}
