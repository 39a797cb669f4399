//! The daemon's sending side: flushes the outbox whenever the detector
//! records something, paces token requests by `[watch] token_interval`, and
//! backs off while Optimole is unreachable. It has its own connection to
//! the state store, so detection never waits for the network.

use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::Instant;

use super::sleep_until;
use crate::api::{ApiError, Client};
use crate::config::Config;
use crate::flush::{Flushed, Flusher};
use crate::retry::RetryPolicy;
use crate::state::{Store, TokenState};
use crate::token::Publisher;

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

pub struct Sender {
    store: Store,
    client: Client,
    publisher: Publisher,
    config: Config,
    hold_since: Option<Instant>,
    not_before: Option<Instant>,
    backoff: Duration,
    failing: bool,
}

impl Sender {
    pub fn new(store: Store, client: Client, config: Config) -> Sender {
        Sender {
            store,
            client,
            publisher: Publisher::new(config.token.clone()),
            config,
            hold_since: None,
            not_before: None,
            backoff: FIRST_BACKOFF,
            failing: false,
        }
    }

    pub async fn run(
        mut self,
        mut pulse: watch::Receiver<Pulse>,
        mut shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        loop {
            let busy = pulse.borrow_and_update().busy;
            let wake = self.cycle(busy).await;
            tokio::select! {
                _ = shutdown.changed() => return Ok(()),
                changed = pulse.changed() => if changed.is_err() { return Ok(()) },
                _ = sleep_until(wake) => {}
            }
        }
    }

    /// One round of sending; returns when to come back on its own.
    async fn cycle(&mut self, busy: bool) -> Option<Instant> {
        let now = Instant::now();
        if let Some(at) = self.not_before.filter(|at| *at > now) {
            return Some(at);
        }
        let hold_expired = self.hold_since.is_some_and(|t| now - t >= MAX_HOLD);
        let full_only = busy && !hold_expired;
        let requests_before = self.client.requests();
        let mut done = Flushed::default();
        let mut wake = None;
        let result = self.send(full_only, &mut done, &mut wake).await;
        if !done.invalidated.is_empty() || done.token.is_some() {
            tracing::info!(
                assets = done.invalidated.len(),
                requests = self.client.requests() - requests_before,
                token = done.token.as_deref().unwrap_or("-"),
                "flushed"
            );
        }
        match result {
            Ok(()) => {
                if self.failing {
                    tracing::info!("optimole accepts requests again");
                }
                self.failing = false;
                self.backoff = FIRST_BACKOFF;
                self.not_before = None;
            }
            Err(err) => {
                let pause = self.failed(&err);
                self.not_before = Some(Instant::now() + pause);
                wake = Some(Instant::now() + pause);
            }
        }
        wake
    }

    async fn send(
        &mut self,
        full_only: bool,
        done: &mut Flushed,
        wake: &mut Option<Instant>,
    ) -> anyhow::Result<()> {
        let mut flusher = Flusher::new(
            &mut self.store,
            &self.client,
            &self.publisher,
            &self.config.api,
            RetryPolicy::once(),
        );
        flusher.assets(full_only, done).await?;
        if self.store.owed_count()? > 0 {
            let since = *self.hold_since.get_or_insert_with(Instant::now);
            *wake = Some(since + MAX_HOLD);
            return Ok(());
        }
        self.hold_since = None;
        if full_only {
            // The burst is still settling: its token comes after it.
            return Ok(());
        }
        if self.store.token_state()? == TokenState::Owed {
            let since = self
                .store
                .token_requested_at()?
                .and_then(|t| SystemTime::now().duration_since(t).ok());
            let interval = self.config.watch.token_interval;
            if let Some(since) = since.filter(|s| *s < interval) {
                *wake = Some(Instant::now() + (interval - since));
                return Ok(());
            }
        }
        let mut flusher = Flusher::new(
            &mut self.store,
            &self.client,
            &self.publisher,
            &self.config.api,
            RetryPolicy::once(),
        );
        flusher.token(done).await
    }

    /// Logs a failure once per change of state and says how long to pause.
    fn failed(&mut self, err: &anyhow::Error) -> Duration {
        self.store.note_error(&format!("{err:#}"));
        let api = err.chain().find_map(|c| c.downcast_ref::<ApiError>());
        if let Some(ApiError::Unauthorized { .. } | ApiError::Rejected { .. }) = api {
            tracing::error!(
                error = format!("{err:#}"),
                pause = ?FATAL_PAUSE,
                "optimole refuses requests; changes keep being collected; fix the key or config, then send SIGHUP"
            );
            self.failing = true;
            return FATAL_PAUSE;
        }
        if !self.failing {
            tracing::warn!(
                error = format!("{err:#}"),
                "sending failed; retrying with backoff, changes stay owed"
            );
        } else {
            tracing::debug!(error = format!("{err:#}"), "still failing");
        }
        self.failing = true;
        let jittered = self
            .backoff
            .min(self.config.watch.max_backoff)
            .mul_f64(0.5 + fastrand::f64() / 2.0);
        let pause = jittered.max(api.and_then(ApiError::retry_after).unwrap_or_default());
        self.backoff = (self.backoff * 2).min(self.config.watch.max_backoff);
        pause
    }
}
