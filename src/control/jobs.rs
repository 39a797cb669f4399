//! What passes between the control socket and the daemon's workers: the
//! [`Job`] queues (which outlive a config reload: the next workers take
//! them on) and the live state the workers keep for `status`.

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::protocol::{Invalidation, Live, LiveAccount, Reply};
use crate::commands::scan::report::ScanReport;

/// A request handed to a worker, with where to answer.
#[derive(Debug)]
pub enum Job {
    /// To the detector: reconcile now.
    Scan {
        all_paths: bool,
        reply: oneshot::Sender<Reply>,
    },
    /// To the sender: owe, purge, then answer once sent and covered.
    Invalidate {
        asked: Invalidation,
        reply: oneshot::Sender<Reply>,
    },
    /// To the sender: a fresh token for every account.
    Token { reply: oneshot::Sender<Reply> },
    /// From the detector to the sender, before a scan's reconcile records
    /// anything: count what is sent from now on for this scan (`registered`
    /// says it is counted), wait for its `report`, answer once its work is
    /// sent and covered.
    Wait {
        report: oneshot::Receiver<Result<Box<ScanReport>, String>>,
        registered: oneshot::Sender<()>,
        reply: oneshot::Sender<Reply>,
    },
}

/// A worker's end of its job queue; it survives config reloads (the next
/// worker takes it over).
pub type Jobs = Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>;

/// What the workers tell `status`, updated as they go.
#[derive(Debug, Default)]
pub struct LiveState {
    pub settling: usize,
    pub settling_paths: Vec<String>,
    pub requests_waiting: usize,
    pub accounts: Vec<AccountState>,
}

#[derive(Debug)]
pub struct AccountState {
    pub account: String,
    pub assets_owed: usize,
    pub next_token: Option<Instant>,
    pub hold_until: Option<Instant>,
    pub failing: bool,
}

pub type Shared = Arc<Mutex<LiveState>>;

/// The channels the workers of every config generation share.
pub struct Channels {
    pub detector_tx: mpsc::Sender<Job>,
    pub detector_rx: Jobs,
    pub sender_tx: mpsc::Sender<Job>,
    pub sender_rx: Jobs,
    pub live: Shared,
}

impl Channels {
    pub fn new() -> Channels {
        let (detector_tx, detector_rx) = mpsc::channel(64);
        let (sender_tx, sender_rx) = mpsc::channel(64);
        Channels {
            detector_tx,
            detector_rx: Arc::new(tokio::sync::Mutex::new(detector_rx)),
            sender_tx,
            sender_rx: Arc::new(tokio::sync::Mutex::new(sender_rx)),
            live: Shared::default(),
        }
    }
}

/// The live state as `status` shows it.
pub fn live(shared: &Shared) -> Live {
    let now = Instant::now();
    let secs = |at: Option<Instant>| at.map(|at| at.saturating_duration_since(now).as_secs_f64());
    let state = match shared.lock() {
        Ok(state) => state,
        Err(poisoned) => poisoned.into_inner(),
    };
    Live {
        pid: std::process::id(),
        settling: state.settling,
        settling_paths: state.settling_paths.clone(),
        requests_waiting: state.requests_waiting,
        accounts: state
            .accounts
            .iter()
            .map(|a| LiveAccount {
                account: a.account.clone(),
                assets_owed: a.assets_owed,
                next_token_in_seconds: secs(a.next_token),
                hold_for_seconds: secs(a.hold_until.filter(|at| *at > now)),
                failing: a.failing,
            })
            .collect(),
    }
}

/// Runs `f` on the shared live state (a poisoned lock is still usable:
/// it only holds figures).
pub fn update(shared: &Shared, f: impl FnOnce(&mut LiveState)) {
    let mut state = match shared.lock() {
        Ok(state) => state,
        Err(poisoned) => poisoned.into_inner(),
    };
    f(&mut state);
}
