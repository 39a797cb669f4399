//! The daemon's detecting side: starts the file watches, reconciles the
//! whole tree once (changes made while the daemon was down), then turns
//! settled file events into change sets, exactly as `scan` would, and
//! records them. Rescans replace any event that may have been lost.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, Interval};

use super::events::{self, EventSource, FsSignal, Overflow, WATCH_LIMIT_HELP};
use super::sender::Pulse;
use super::settle::Settler;
use super::sleep_until;
use crate::config::Config;
use crate::pipeline;
use crate::rules::RuleSet;
use crate::scan::{Detected, Scope};
use crate::state::Store;

/// Where a rule folder is, as a poll tick sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Same,
    Moved,
    Missing,
}

pub struct Detector {
    store: Store,
    rules: RuleSet,
    config: Config,
    pulse: watch::Sender<Pulse>,
    settler: Settler,
    /// Rules watched by polling (by config, or because watching failed).
    polled: Vec<usize>,
    /// Rule folders that vanished (unmounted, moved): checked at every poll
    /// tick and watched again when they are back.
    missing: BTreeSet<usize>,
    source: Option<EventSource>,
    /// Raised when the daemon stops: a walk in progress gives up.
    cancel: Arc<AtomicBool>,
}

impl Detector {
    pub fn new(
        store: Store,
        config: Config,
        pulse: watch::Sender<Pulse>,
        cancel: Arc<AtomicBool>,
    ) -> anyhow::Result<Detector> {
        Ok(Detector {
            rules: RuleSet::new(&config.rules)?,
            settler: Settler::new(config.watch.debounce),
            store,
            config,
            pulse,
            polled: Vec::new(),
            missing: BTreeSet::new(),
            source: None,
            cancel,
        })
    }

    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        // Room for bursts; when full, the watcher thread raises the overflow
        // flag instead of blocking, and the daemon rescans.
        let (tx, mut rx) = mpsc::channel(self.config.watch.event_queue);
        let overflow = Arc::new(Overflow::default());
        // Watches start before the reconcile walk, so nothing that changes
        // during the walk is missed.
        if self.config.watch.poll {
            self.polled = (0..self.rules.rules().len()).collect();
        } else {
            let source = events::start(&self.rules, tx, overflow.clone())?;
            self.polled = source.unwatched.clone();
            self.source = Some(source);
        }
        let detected = self.process(Scope::All, false)?;
        tracing::info!(
            folders = detected.folders,
            files = self.store.file_count()?,
            rules = self.rules.rules().len(),
            polled = self.polled.len(),
            "watching {} folders and {} files",
            detected.folders,
            self.store.file_count()?
        );
        super::systemd::notify(&format!(
            "READY=1\nSTATUS=watching {} folders and {} files",
            detected.folders,
            self.store.file_count()?
        ));
        let mut poll = self.poll_timer();
        let mut rescan = false;
        loop {
            let deadline = self.settler.next_deadline();
            tokio::select! {
                _ = shutdown.changed() => return Ok(()),
                signal = rx.recv() => match signal {
                    Some(FsSignal::Paths(paths)) => {
                        crate::metrics::add(&crate::metrics::METRICS.events, paths.len() as u64);
                        let now = Instant::now();
                        for path in paths {
                            tracing::trace!(path = %path.display(), "file event");
                            self.settler.add(path, now);
                        }
                    }
                    Some(FsSignal::Rescan) => rescan = true,
                    Some(FsSignal::WatchLimit) => {
                        tracing::error!("{WATCH_LIMIT_HELP}");
                        self.polled = (0..self.rules.rules().len()).collect();
                        rescan = true;
                    }
                    None => return Ok(()),
                },
                _ = overflow.wake.notified() => {}
                _ = sleep_until(deadline) => {
                    let settled = self.settler.take_settled(Instant::now());
                    if !settled.is_empty() {
                        self.process(Scope::Paths(settled), true)?;
                    }
                }
                _ = poll.tick() => self.poll()?,
            }
            if overflow.take() {
                tracing::warn!("file events came faster than they were read; rescanning instead");
                rescan = true;
            }
            if std::mem::take(&mut rescan) {
                crate::metrics::add(&crate::metrics::METRICS.rescans, 1);
                self.process(Scope::All, false)?;
            }
            let busy = !self.settler.is_empty();
            self.pulse
                .send_if_modified(|p| std::mem::replace(&mut p.busy, busy) != busy);
        }
    }

    /// Detects and records the changes in `scope`, then tells the sender.
    /// `settled`: the paths come from the settler, already quiet; otherwise
    /// (rescans, polls) files modified moments ago are deferred to it.
    fn process(&mut self, scope: Scope, settled: bool) -> anyhow::Result<Detected> {
        let debug = tracing::enabled!(tracing::Level::DEBUG);
        let mut plan = pipeline::plan(Some(&self.store), &self.rules, &self.config, false, debug)?;
        // A rescan must not hash a file in the middle of a write: files
        // modified within the debounce time go through the settler instead.
        // (Never for settled paths: a file with an mtime in the future would
        // be deferred forever.)
        if !settled {
            let hot_since = std::time::SystemTime::now() - self.config.watch.debounce;
            plan.hot_after = hot_since
                .duration_since(std::time::UNIX_EPOCH)
                .ok()
                .map(|d| d.as_nanos() as i64);
        }
        plan.cancel = Some(self.cancel.clone());
        let (detected, chunk_owed) = tokio::task::block_in_place(|| {
            pipeline::detect(Some(&mut self.store), &self.rules, &plan, &scope, true)
        })?;
        let known = detected
            .unavailable
            .iter()
            .all(|i| self.missing.contains(i));
        for error in &detected.errors {
            if known && !detected.unavailable.is_empty() {
                tracing::debug!(error = %error, "still unavailable");
            } else {
                tracing::warn!(error = %error, "part of the tree was not examined; it is tried again on the next event or rescan");
            }
        }
        self.vanished(&detected);
        if detected.cancelled {
            // Stopping: a partial walk must not be recorded (what it did not
            // reach would look deleted).
            return Ok(detected);
        }
        let owed = pipeline::record(&mut self.store, &detected)?;
        crate::metrics::owed(self.store.owed_count()?, self.store.oldest_owed_at()?);
        let now = Instant::now();
        // Files being written (hot, or changed while read) are looked at
        // again once they settle.
        for path in detected.hot.iter().chain(&detected.unsettled) {
            self.settler.add(path.clone(), now);
        }
        for (what, tally) in [
            ("changed", &detected.changed),
            ("new", &detected.new),
            ("deleted", &detected.deleted),
            ("touched", &detected.touched),
        ] {
            for path in &tally.paths {
                tracing::debug!(path = %crate::report::show_path(path), "{what}");
            }
        }
        if owed + chunk_owed > 0 || !detected.changes.assets.is_empty() {
            self.pulse.send_modify(|p| p.recorded += 1);
        }
        Ok(detected)
    }

    /// Whether a rule folder is there, and on the file system its files were
    /// recorded on. On another one it is `Moved` if it holds anything (a
    /// pass compares its files by content) and `Missing` if it is empty (an
    /// empty mount point).
    fn available(&self, i: usize) -> Place {
        let dir = &self.rules.get(i).dir;
        match std::fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => match self.store.rule_device(dir) {
                Ok(Some(dev)) if dev != std::os::unix::fs::MetadataExt::dev(&meta) => {
                    match std::fs::read_dir(dir).map(|mut d| d.next().is_some()) {
                        Ok(true) => Place::Moved,
                        _ => Place::Missing,
                    }
                }
                _ => Place::Same,
            },
            _ => Place::Missing,
        }
    }

    /// A poll tick: rescans polled rules, checks that watched folders are
    /// still there (an unmount ends their watches without a word), and
    /// brings back vanished folders.
    fn poll(&mut self) -> anyhow::Result<()> {
        let mut gone: Vec<PathBuf> = Vec::new();
        for i in 0..self.rules.rules().len() {
            if self.polled.contains(&i) || self.missing.contains(&i) {
                continue;
            }
            let place = self.available(i);
            let dir = &self.rules.get(i).dir;
            // Remounted: the old watches went with the old mount. Watched
            // again before the pass compares it by content, so nothing
            // written meanwhile is missed.
            if let (Place::Moved, Some(source)) = (place, &mut self.source) {
                source.rewatch(dir);
            }
            if place != Place::Same {
                gone.push(dir.clone());
            }
        }
        if !gone.is_empty() {
            self.process(Scope::Paths(gone), false)?;
        }
        let back: Vec<usize> = self
            .missing
            .iter()
            .copied()
            .filter(|&i| self.available(i) != Place::Missing)
            .collect();
        for &i in &back {
            self.missing.remove(&i);
            let dir = &self.rules.get(i).dir;
            let watched = match &mut self.source {
                Some(source) if !self.polled.contains(&i) => source.rewatch(dir),
                _ => true,
            };
            if watched {
                tracing::info!(dir = %dir.display(), "rule folder is back; watched again");
            } else {
                self.missing.insert(i);
            }
        }
        let dirs: Vec<PathBuf> = self
            .polled
            .iter()
            .chain(&back)
            .map(|&i| self.rules.get(i).dir.clone())
            .collect();
        if !dirs.is_empty() {
            self.process(Scope::Paths(dirs), false)?;
        }
        Ok(())
    }

    /// Notes rule folders a pass could not open; says so once per folder.
    fn vanished(&mut self, detected: &Detected) {
        for &i in &detected.unavailable {
            if self.missing.insert(i) {
                let dir = &self.rules.get(i).dir;
                if let Some(source) = &mut self.source {
                    source.unwatch(dir);
                }
                tracing::warn!(
                    dir = %dir.display(),
                    every = ?self.config.watch.poll_interval,
                    "rule folder is unavailable; its files are kept as recorded and it is checked until it is back"
                );
            }
        }
    }

    /// Ticks every `poll_interval`: it polls, checks the watched folders
    /// and brings back vanished ones. Nothing else wakes an idle daemon.
    fn poll_timer(&self) -> Interval {
        let every = self.config.watch.poll_interval;
        let mut timer = tokio::time::interval_at(Instant::now() + every, every);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        timer
    }
}
