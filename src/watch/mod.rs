//! `optiwatch watch`: the daemon beside the media folder.
//!
//! Two workers share the engine of `scan`: the detector (file events →
//! settle → detect → record) and the sender (outbox → batches → token →
//! publish), each with its own store connection, joined in a `JoinSet`.
//! This module owns their lifetime: start, SIGTERM/SIGINT (stop; whatever
//! was recorded stays in the outbox), SIGHUP (reload the config; a bad one is
//! reported and the old one kept).

mod detector;
mod events;
mod pacing;
mod sender;
mod settle;
mod systemd;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::Config;
use crate::flush::{adopt_orphans, lanes};
use crate::state::{Store, StoreLock};
use detector::Detector;
use sender::{Pulse, Sender};

/// How long workers get to stop before they are aborted.
const STOP_GRACE: Duration = Duration::from_secs(3);

enum Next {
    Stop,
    Restart(Box<Workers>),
}

/// Everything a set of workers needs, built (and so checked) before any
/// running worker is touched: a reload that cannot be built is refused and
/// the old workers go on.
struct Workers {
    config: Config,
    detector: Detector,
    sender: Sender,
    pulse_rx: watch::Receiver<Pulse>,
    cancel: Arc<AtomicBool>,
}

impl Workers {
    fn build(config: Config) -> anyhow::Result<Workers> {
        let lanes = lanes(&config)?;
        let detect_store = Store::open(&config.state)?;
        let mut send_store = Store::open(&config.state)?;
        adopt_orphans(&mut send_store, &lanes)?;
        let (pulse_tx, pulse_rx) = watch::channel(Pulse::default());
        let cancel = Arc::new(AtomicBool::new(false));
        let detector = Detector::new(detect_store, config.clone(), pulse_tx, cancel.clone())?;
        let sender = Sender::new(send_store, lanes, config.clone());
        Ok(Workers {
            config,
            detector,
            sender,
            pulse_rx,
            cancel,
        })
    }
}

/// Runs until SIGTERM or SIGINT (Ok) or a worker fails (Err).
pub async fn run(config_path: &Path, config: Config) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    // Held across reloads (a reload cannot move the store).
    let _lock = StoreLock::acquire(&config.state)?;
    // Bound once: the endpoint stays up across reloads.
    let _metrics = match config.metrics.listen {
        Some(listen) => {
            let listener = crate::metrics::bind(listen).await?;
            tracing::info!(listen = %listen, "serving /metrics and /healthz");
            let max_age = config.metrics.max_owed_age;
            Some(AbortOnDrop(tokio::spawn(crate::metrics::serve(
                listener, max_age,
            ))))
        }
        None => None,
    };
    let mut next_workers = Workers::build(config)?;
    loop {
        let Workers {
            config,
            detector,
            sender,
            pulse_rx,
            cancel,
        } = next_workers;
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut workers = JoinSet::new();
        workers.spawn(sender.run(pulse_rx, stop_rx.clone()));
        workers.spawn(detector.run(stop_rx));

        let next = loop {
            tokio::select! {
                _ = term.recv() => break Next::Stop,
                _ = int.recv() => break Next::Stop,
                _ = hup.recv() => match Config::load(config_path) {
                    Ok(new) if new.state != config.state => tracing::error!(
                        "config reload: `state` changed; restart optiwatch to move the store; keeping the old config"
                    ),
                    Ok(new) => match Workers::build(new) {
                        Ok(built) => {
                            tracing::info!(config = %config_path.display(), "config reloaded");
                            break Next::Restart(Box::new(built));
                        }
                        Err(e) => tracing::error!(error = format!("{e:#}"), "config reload failed; keeping the old config"),
                    },
                    Err(e) => tracing::error!(error = format!("{e:#}"), "config reload failed; keeping the old config"),
                },
                Some(done) = workers.join_next() => {
                    stop(&stop_tx, &cancel, &mut workers).await;
                    return match done {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(e)) => Err(e),
                        Err(e) => Err(anyhow::anyhow!("a worker crashed: {e}")),
                    };
                }
            }
        };
        systemd::notify(match next {
            Next::Stop => "STOPPING=1",
            Next::Restart(_) => "RELOADING=1",
        });
        stop(&stop_tx, &cancel, &mut workers).await;
        match next {
            Next::Stop => {
                tracing::info!("stopped");
                return Ok(());
            }
            Next::Restart(built) => next_workers = *built,
        }
    }
}

/// Asks workers to stop and waits a little; what they recorded is durable,
/// so aborting a slow one loses nothing.
async fn stop(
    stop_tx: &watch::Sender<bool>,
    cancel: &AtomicBool,
    workers: &mut JoinSet<anyhow::Result<()>>,
) {
    let _ = stop_tx.send(true);
    // A reconcile walk in progress gives up instead of running to its end.
    cancel.store(true, Ordering::Relaxed);
    let drained = tokio::time::timeout(STOP_GRACE, async {
        while let Some(done) = workers.join_next().await {
            if let Ok(Err(e)) = done {
                tracing::error!(error = format!("{e:#}"), "worker failed while stopping");
            }
        }
    })
    .await;
    if drained.is_err() {
        workers.abort_all();
        while workers.join_next().await.is_some() {}
    }
}

/// Stops a background task when the daemon returns.
struct AbortOnDrop(tokio::task::JoinHandle<anyhow::Result<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
pub(crate) async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
