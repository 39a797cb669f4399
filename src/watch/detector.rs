//! The daemon's detecting side: starts the file watches, reconciles the
//! whole tree once (changes made while the daemon was down), then turns
//! settled file events into change sets, exactly as `scan` would, and
//! records them. Rescans replace any event that may have been lost.
//!
//! A watch follows a folder (an inode), not a name: each rule folder's
//! identity (device and inode) is checked after every event on the folder
//! itself and at every poll tick, and a folder that appeared, came back or
//! was swapped for another is watched anew and reconciled whole. The store
//! file is checked the same way: a daemon whose store was deleted or
//! replaced would record into a file nobody will read again.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, Interval};

use anyhow::bail;

use super::events::{self, EventSource, FsSignal, Overflow, WATCH_LIMIT_HELP};
use super::sender::Pulse;
use super::settle::Settler;
use super::{sleep_until, FileId};
use crate::config::Config;
use crate::pipeline;
use crate::rules::RuleSet;
use crate::scan::{Detected, Scope};
use crate::state::Store;

/// Why a rule folder was watched anew.
enum Renewal {
    /// It had vanished (or was never there) and is there now.
    Back,
    /// Another folder than the one watched is there now.
    Other,
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
    /// Per rule: the folder its watch is on (`None`: not watched).
    watched: Vec<Option<FileId>>,
    source: Option<EventSource>,
    /// The store file the daemon started with.
    store_file: Option<FileId>,
    /// Raised when the daemon stops: a walk in progress gives up.
    cancel: Arc<AtomicBool>,
}

impl Detector {
    pub fn new(
        store: Store,
        config: Config,
        pulse: watch::Sender<Pulse>,
        cancel: Arc<AtomicBool>,
        store_file: Option<FileId>,
    ) -> anyhow::Result<Detector> {
        let rules = RuleSet::new(&config.rules)?;
        Ok(Detector {
            watched: vec![None; rules.rules().len()],
            rules,
            settler: Settler::new(config.watch.debounce),
            store,
            config,
            pulse,
            polled: Vec::new(),
            missing: BTreeSet::new(),
            source: None,
            store_file,
            cancel,
        })
    }

    pub fn store_file(&self) -> Option<FileId> {
        self.store_file
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
            self.watched = source.watched.clone();
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
                    None => bail!("the file watcher stopped delivering events"),
                },
                _ = overflow.wake.notified() => {}
                _ = sleep_until(deadline) => {
                    let settled = self.settler.take_settled(Instant::now());
                    if !settled.is_empty() {
                        self.settled(settled)?;
                    }
                }
                _ = poll.tick() => self.poll()?,
            }
            if overflow.take_watch_limit() {
                tracing::error!("{WATCH_LIMIT_HELP}");
                self.polled = (0..self.rules.rules().len()).collect();
                rescan = true;
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
        for path in &detected.hot {
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

    /// Whether a rule folder is there, on the file system its files were
    /// recorded on (an empty mount point is not).
    fn available(&self, i: usize) -> bool {
        let dir = &self.rules.get(i).dir;
        match std::fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => match self.store.rule_device(dir) {
                Ok(Some(dev)) => dev == std::os::unix::fs::MetadataExt::dev(&meta),
                _ => true,
            },
            _ => false,
        }
    }

    /// A poll tick: checks the store, checks that watched folders are
    /// still there (an unmount ends their watches without a word) and still
    /// the folders watched, and rescans polled rules.
    fn poll(&mut self) -> anyhow::Result<()> {
        self.check_store()?;
        let gone: Vec<PathBuf> = (0..self.rules.rules().len())
            .filter(|i| {
                !self.polled.contains(i) && !self.missing.contains(i) && !self.available(*i)
            })
            .map(|i| self.rules.get(i).dir.clone())
            .collect();
        if !gone.is_empty() {
            self.process(Scope::Paths(gone), false)?;
        }
        let renewed = self.renew_watches(&[]);
        let dirs: Vec<PathBuf> = (0..self.rules.rules().len())
            .filter(|i| self.polled.contains(i) || renewed.iter().any(|(r, _)| r == i))
            .map(|i| self.rules.get(i).dir.clone())
            .collect();
        if !dirs.is_empty() {
            self.process(Scope::Paths(dirs), false)?;
        }
        self.log_renewed(&renewed);
        Ok(())
    }

    /// Detects the changes at settled paths. An event on a rule folder
    /// itself may mean it was moved or deleted and another one put in its
    /// place (even under the same inode number: `rm -rf`, `mkdir`): its
    /// watch is renewed first, then the pass walks it whole.
    fn settled(&mut self, mut paths: Vec<PathBuf>) -> anyhow::Result<()> {
        let roots: Vec<usize> = (0..self.rules.rules().len())
            .filter(|&i| paths.contains(&self.rules.get(i).dir))
            .collect();
        let renewed = match roots.is_empty() {
            true => Vec::new(),
            false => self.renew_watches(&roots),
        };
        for (i, _) in &renewed {
            paths.push(self.rules.get(*i).dir.clone());
        }
        self.process(Scope::Paths(paths), true)?;
        self.log_renewed(&renewed);
        Ok(())
    }

    /// Said once a renewed folder was reconciled: from then on, an edit in
    /// it is seen.
    fn log_renewed(&self, renewed: &[(usize, Renewal)]) {
        for (i, renewal) in renewed {
            let why = match renewal {
                Renewal::Back => "rule folder is back; watched again",
                Renewal::Other => {
                    "rule folder is another folder now (created, moved or replaced); watched again"
                }
            };
            tracing::info!(dir = %self.rules.get(*i).dir.display(), "{why}");
        }
    }

    /// Puts a watch on each rule folder that is there but is not the folder
    /// watched (and on those in `force`): it appeared after the start, came
    /// back after vanishing, or was swapped for another folder (`mv new
    /// media`), whose files the old watch never reports. Returns those
    /// rules: each must be walked whole, which also completes the baseline
    /// of a rule whose folder was never there before.
    fn renew_watches(&mut self, force: &[usize]) -> Vec<(usize, Renewal)> {
        let mut renewed = Vec::new();
        for i in 0..self.rules.rules().len() {
            let missing = self.missing.contains(&i);
            let polled = self.polled.contains(&i);
            let dir = &self.rules.get(i).dir;
            let same = !force.contains(&i) && FileId::of(dir) == self.watched[i];
            if (!missing && (polled || same)) || !self.available(i) {
                continue;
            }
            if !polled {
                let Some(source) = &mut self.source else {
                    continue;
                };
                match source.rewatch(dir) {
                    Some(id) => self.watched[i] = Some(id),
                    // Tried again at the next tick.
                    None => continue,
                }
            }
            self.missing.remove(&i);
            renewed.push((
                i,
                match missing {
                    true => Renewal::Back,
                    false => Renewal::Other,
                },
            ));
        }
        renewed
    }

    /// Fails when the store file the daemon started with was deleted or
    /// replaced: what is recorded from now on would be lost with it.
    fn check_store(&self) -> anyhow::Result<()> {
        let path = &self.config.state;
        if self.store_file.is_some() && FileId::of(path) != self.store_file {
            bail!(
                "the state store {} was deleted or replaced while the daemon ran: \
                 stopping, as what it recorded from now on would be lost; \
                 the next start uses the file at that path",
                path.display()
            );
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
                self.watched[i] = None;
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
