//! `optiwatch watch`: the daemon beside the media folder.
//!
//! Two workers share the engine of `scan`: the detector (file events →
//! settle → detect → record) and the sender (outbox → batches → token →
//! publish), each with its own store connection, joined in a `JoinSet`.
//! This module owns their lifetime: start, SIGTERM/SIGINT (stop; whatever
//! was recorded stays in the outbox), SIGHUP (reload the config; a bad one is
//! reported and the old one kept). Those signals are the only way the daemon
//! ends well: a worker that ends for any other reason, failing or not, stops
//! the daemon with an error, so a supervisor (systemd's
//! `Restart=on-failure`) sees a failure and restarts it.

mod detector;
mod events;
mod folders;
mod pacing;
mod requests;
mod sender;
mod settle;
mod systemd;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::Config;
use crate::control::jobs::Channels;
use crate::session::{Access, Session};
use detector::Detector;
use folders::FileId;
pub(crate) use sender::{Pulse, Sender};

/// How long workers get to stop before they are aborted.
const STOP_GRACE: Duration = Duration::from_secs(3);

enum Next {
    Stop,
    Restart(Box<Workers>),
}

/// Which worker a result came from.
#[derive(Debug, Clone, Copy)]
enum Role {
    Detector,
    Sender,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Detector => "the detector (file watching)",
            Role::Sender => "the sender",
        })
    }
}

type Joined = JoinSet<(Role, anyhow::Result<()>)>;

/// Everything a set of workers needs, built (and so checked) before any
/// running worker is touched: a reload that cannot be built is refused and
/// the old workers go on.
struct Workers {
    config: Config,
    detector: Detector,
    /// The sender's session: the sender is made only once the old workers
    /// stopped, see [`run`].
    session: Session,
    pulse_rx: watch::Receiver<Pulse>,
    cancel: Arc<AtomicBool>,
}

impl Workers {
    /// `session`: the sender's, on the config's accounts; the detector gets
    /// a connection of its own. `store_file`: the store file the daemon
    /// started with (`None` at start-up: the one opened now); the detector
    /// checks that it stays.
    fn build(
        config: Config,
        session: Session,
        store_file: Option<FileId>,
        channels: &Channels,
    ) -> anyhow::Result<Workers> {
        let detect_store = session.connect()?;
        let store_file = store_file.or_else(|| FileId::of(&config.state));
        let (pulse_tx, pulse_rx) = watch::channel(Pulse::default());
        let cancel = Arc::new(AtomicBool::new(false));
        let detector = Detector::new(
            detect_store,
            config.clone(),
            pulse_tx,
            cancel.clone(),
            store_file,
            detector::Control {
                jobs: channels.detector_rx.clone(),
                sender: channels.sender_tx.clone(),
                live: channels.live.clone(),
            },
        )?;
        Ok(Workers {
            config,
            detector,
            session,
            pulse_rx,
            cancel,
        })
    }
}

/// Runs until SIGTERM or SIGINT (Ok). Anything else that ends it is an
/// error: a worker failed, or ended when it should not have.
pub async fn run(config_path: &Path, config: Config) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    // Lock, store, accounts and adoption; the lock is held across reloads
    // (a reload cannot move the store).
    let session = Session::open(&config, Access::ReadWrite)?;
    let lock = session.lock()?;
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
    // The control socket too; its queues outlive each set of workers.
    let channels = Channels::new();
    // Without it the daemon still does its work; commands beside it then
    // meet the store lock, as with `[watch] control = false`.
    // With [shared] the leader's bridge sends, not this daemon's sender,
    // so nothing here could answer a request: no socket (not yet built).
    let _control = match config.watch.control && config.shared.is_none() {
        true => {
            crate::control::server::start(&crate::control::socket_path(&config.state), &channels)
                .inspect_err(|e| {
                    tracing::error!(
                error = format!("{e:#}"),
                "no control socket: scan, invalidate and token beside the daemon will refuse to run"
            )
                })
                .ok()
        }
        false => None,
    };
    let mut next_workers = Workers::build(config, session, None, &channels)?;
    loop {
        let Workers {
            config,
            detector,
            mut session,
            pulse_rx,
            cancel,
        } = next_workers;
        // Work owed to accounts the config no longer has goes to the [api]
        // account. Only now: until the old workers stopped, the old detector
        // could still record work for such an account. (At start-up the
        // session did it already; this finds nothing more.)
        session.adopt_orphans()?;
        let store_file = detector.store_file();
        // With [shared], the shared store's bridge sends (on the leader).
        let (sender, bridge) = match config.shared {
            Some(_) => (None, Some(session)),
            None => (
                Some(Sender::new(
                    session,
                    config.clone(),
                    channels.sender_rx.clone(),
                    channels.live.clone(),
                )?),
                None,
            ),
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut workers: Joined = JoinSet::new();
        let sender_stop = stop_rx.clone();
        let bridge_config = config.clone();
        workers.spawn(async move {
            let done = match (sender, bridge) {
                (Some(sender), _) => sender.run(pulse_rx, sender_stop).await,
                (None, Some(session)) => {
                    crate::shared::node::run(session, bridge_config, pulse_rx, sender_stop).await
                }
                (None, None) => Ok(()),
            };
            (Role::Sender, done)
        });
        workers.spawn(async move { (Role::Detector, detector.run(stop_rx).await) });

        let next = loop {
            tokio::select! {
                _ = term.recv() => break Next::Stop,
                _ = int.recv() => break Next::Stop,
                _ = hup.recv() => match Config::load(config_path) {
                    Ok(new) if new.state != config.state => tracing::error!(
                        "config reload: `state` changed; restart optiwatch to move the store; keeping the old config"
                    ),
                    Ok(new) => match lock.session(&new).and_then(|s| Workers::build(new, s, store_file, &channels)) {
                        Ok(built) => {
                            tracing::info!(config = %config_path.display(), "config reloaded");
                            break Next::Restart(Box::new(built));
                        }
                        Err(e) => tracing::error!(error = format!("{e:#}"), "config reload failed; keeping the old config"),
                    },
                    Err(e) => tracing::error!(error = format!("{e:#}"), "config reload failed; keeping the old config"),
                },
                Some(done) = workers.join_next() => {
                    // No signal asked for this: whatever ended the worker,
                    // the daemon cannot go on without it.
                    systemd::notify("STOPPING=1");
                    let mut endings = vec![Ending::of(done)];
                    endings.extend(stop(&stop_tx, &cancel, &mut workers).await);
                    return Err(cause(endings));
                }
            }
        };
        systemd::notify(match next {
            Next::Stop => "STOPPING=1",
            Next::Restart(_) => "RELOADING=1",
        });
        for ending in stop(&stop_tx, &cancel, &mut workers).await {
            if let Ending::Failed(e) = ending {
                tracing::error!(error = format!("{e:#}"), "worker failed while stopping");
            }
        }
        match next {
            Next::Stop => {
                tracing::info!("stopped");
                return Ok(());
            }
            Next::Restart(built) => next_workers = *built,
        }
    }
}

/// How a worker ended.
enum Ending {
    Failed(anyhow::Error),
    /// Returned without an error, though nobody asked it to stop.
    Quit(Role),
    /// Aborted by [`stop`].
    Aborted,
}

impl Ending {
    fn of(done: Result<(Role, anyhow::Result<()>), tokio::task::JoinError>) -> Ending {
        match done {
            Ok((role, Err(e))) => Ending::Failed(e.context(format!("{role} failed"))),
            Ok((role, Ok(()))) => Ending::Quit(role),
            Err(e) if e.is_cancelled() => Ending::Aborted,
            Err(e) => Ending::Failed(anyhow!("a worker crashed: {e}")),
        }
    }
}

/// Why the daemon stops: the first failure (a worker that quit is most
/// likely the other one's casualty), else the first worker that quit.
fn cause(endings: Vec<Ending>) -> anyhow::Error {
    let mut quit = None;
    for ending in endings {
        match ending {
            Ending::Failed(e) => return e,
            Ending::Quit(role) => {
                quit.get_or_insert(role);
            }
            Ending::Aborted => {}
        }
    }
    match quit {
        Some(role) => anyhow!(
            "{role} stopped without being asked to; this is a bug in optiwatch, please report it"
        ),
        None => anyhow!(
            "the workers ended without a reason; this is a bug in optiwatch, please report it"
        ),
    }
}

/// Asks workers to stop and waits a little; what they recorded is durable,
/// so aborting a slow one loses nothing. Returns how the workers that did
/// not simply stop as asked ended.
async fn stop(
    stop_tx: &watch::Sender<bool>,
    cancel: &AtomicBool,
    workers: &mut Joined,
) -> Vec<Ending> {
    let _ = stop_tx.send(true);
    // A reconcile walk in progress gives up instead of running to its end.
    cancel.store(true, Ordering::Relaxed);
    let mut endings = Vec::new();
    let drained = tokio::time::timeout(STOP_GRACE, async {
        while let Some(done) = workers.join_next().await {
            match Ending::of(done) {
                // Asked to stop: returning is what it should do.
                Ending::Quit(_) => {}
                ending => endings.push(ending),
            }
        }
    })
    .await;
    if drained.is_err() {
        workers.abort_all();
        while workers.join_next().await.is_some() {}
    }
    endings
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
