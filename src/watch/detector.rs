//! The daemon's detecting side: starts the file watches, reconciles the
//! whole tree once (changes made while the daemon was down), then turns
//! settled file events into change sets, exactly as `scan` would, and
//! records them. Rescans replace any event that may have been lost; rule
//! folders watched anew (see [`super::folders`]) are reconciled whole. At
//! every poll tick it also checks that the store file is the one it
//! started with: a daemon whose store was deleted or replaced would record
//! into a file nobody reads again.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, Interval};

use anyhow::bail;

use super::events::{self, FsSignal, Overflow, WATCH_LIMIT_HELP};
use super::folders::{log_renewed, FileId, Folders};
use super::sender::Pulse;
use super::settle::Settler;
use super::sleep_until;
use crate::config::Config;
use crate::rules::RuleSet;
use crate::scan::pass::{self, Baseline, Recording};
use crate::scan::{Detected, Paths, Scope};
use crate::state::Store;

/// Where the paths of a detection pass come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// The settler: quiet for the debounce time.
    Settler,
    /// A reconcile walk, rescan or poll: no event said they are quiet.
    Rescan,
}

pub struct Detector {
    store: Store,
    rules: RuleSet,
    config: Config,
    pulse: watch::Sender<Pulse>,
    settler: Settler,
    folders: Folders,
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
            folders: Folders::polled(rules.rules().len()),
            rules,
            settler: Settler::new(config.watch.debounce),
            store,
            config,
            pulse,
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
        if !self.config.watch.poll {
            let source = events::start(&self.rules, tx, overflow.clone())?;
            self.folders = Folders::watched(source);
        }
        let detected = self.process(Scope::All, Origin::Rescan)?;
        // The walk put the watches on the folders below the rule folders:
        // if the kernel's limit stopped it, say so before "watching".
        if overflow.take_watch_limit() {
            tracing::error!("{WATCH_LIMIT_HELP}");
            self.folders.polled = (0..self.rules.rules().len()).collect();
        }
        // Counted once: a count is a pass over the whole files table.
        let files = self.store.file_count()?;
        tracing::info!(
            folders = detected.folders,
            files,
            rules = self.rules.rules().len(),
            polled = self.folders.polled.len(),
            "watching {} folders and {files} files",
            detected.folders,
        );
        super::systemd::notify(&format!(
            "READY=1\nSTATUS=watching {} folders and {files} files",
            detected.folders,
        ));
        let mut poll = self.poll_timer();
        let mut rescan = false;
        loop {
            let deadline = self.settler.next_deadline();
            tokio::select! {
                _ = shutdown.changed() => return Ok(()),
                signal = rx.recv() => match signal {
                    Some(FsSignal::Paths(paths)) => {
                        crate::metrics::add(&crate::metrics::METRICS.events, paths.len());
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
                self.folders.polled = (0..self.rules.rules().len()).collect();
                rescan = true;
            }
            if overflow.take() {
                tracing::warn!("file events came faster than they were read; rescanning instead");
                rescan = true;
            }
            if std::mem::take(&mut rescan) {
                crate::metrics::add(&crate::metrics::METRICS.rescans, 1);
                self.process(Scope::All, Origin::Rescan)?;
            }
            let busy = !self.settler.is_empty();
            self.pulse
                .send_if_modified(|p| std::mem::replace(&mut p.busy, busy) != busy);
        }
    }

    /// Detects and records the changes in `scope`, then tells the sender.
    /// Paths from the settler are already quiet; a rescan or poll leaves
    /// files changed within the debounce to the settler.
    fn process(&mut self, scope: Scope, origin: Origin) -> anyhow::Result<Detected> {
        // Each changed path is logged at debug level.
        let paths = match tracing::enabled!(tracing::Level::DEBUG) {
            true => Paths::Listed,
            false => Paths::Counted,
        };
        let force = Baseline::WhereDue;
        let mut plan = pass::plan(Some(&self.store), &self.rules, &self.config, force, paths)?;
        // A rescan must not hash a file in the middle of a write. (Never for
        // settled paths: a file with an mtime in the future would be
        // deferred forever.)
        if origin == Origin::Rescan {
            plan.leave_changed_after = Some(self.settler.quiet_before(SystemTime::now()));
        }
        plan.cancel = Some(self.cancel.clone());
        plan.on_folder = self.folders.folder_hook(&self.rules);
        let (detected, chunk_owed) = tokio::task::block_in_place(|| {
            pass::detect(
                Some(&mut self.store),
                &self.rules,
                &plan,
                &scope,
                Recording::InChunks,
            )
        })?;
        let known = detected
            .unavailable
            .iter()
            .all(|i| self.folders.is_missing(*i));
        for error in &detected.errors {
            if known && !detected.unavailable.is_empty() {
                tracing::debug!(error = %error, "still unavailable");
            } else {
                tracing::warn!(error = %error, "part of the tree was not examined; it is tried again on the next event or rescan");
            }
        }
        self.folders.vanished(
            &self.rules,
            &detected.unavailable,
            self.config.watch.poll_interval,
        );
        if detected.cancelled {
            // Stopping: a partial walk must not be recorded (what it did not
            // reach would look deleted).
            return Ok(detected);
        }
        let owed = pass::record(&mut self.store, &detected)?;
        crate::metrics::owed(self.store.owed_count()?, self.store.oldest_owed_at()?);
        let now = Instant::now();
        // Files being written (changed too recently, or while they were
        // read) are looked at again once they settle.
        for path in detected.recent.iter().chain(&detected.unsettled) {
            self.settler.add(path.clone(), now);
        }
        for (what, tally) in [
            ("changed", &detected.changed),
            ("new", &detected.new),
            ("deleted", &detected.deleted),
            ("touched", &detected.touched),
        ] {
            for path in &tally.paths {
                tracing::debug!(path = %crate::display::show_path(path), "{what}");
            }
        }
        if owed + chunk_owed > 0 || !detected.changes.assets.is_empty() {
            self.pulse.send_modify(|p| p.recorded += 1);
        }
        Ok(detected)
    }

    /// A poll tick: checks the store, checks that watched folders are
    /// still there (an unmount ends their watches without a word) and still
    /// the folders watched, and rescans polled rules.
    fn poll(&mut self) -> anyhow::Result<()> {
        self.check_store()?;
        let gone = self.folders.gone(&self.rules, &self.store);
        if !gone.is_empty() {
            self.process(Scope::Paths(gone), Origin::Rescan)?;
        }
        let renewed = self.folders.renew(&self.rules, &self.store, &[]);
        let mut dirs: Vec<PathBuf> = (0..self.rules.rules().len())
            .filter(|i| self.folders.polled.contains(i) || renewed.iter().any(|(r, _)| r == i))
            .map(|i| self.rules.get(i).dir.clone())
            .collect();
        // No event comes from `allow_outside` places: links into them are
        // looked at every tick.
        dirs.extend(self.store.links_read_outside()?);
        if !dirs.is_empty() {
            self.process(Scope::Paths(dirs), Origin::Rescan)?;
        }
        log_renewed(&self.rules, &renewed);
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
            false => self.folders.renew(&self.rules, &self.store, &roots),
        };
        for (i, _) in &renewed {
            paths.push(self.rules.get(*i).dir.clone());
        }
        self.process(Scope::Paths(paths), Origin::Settler)?;
        log_renewed(&self.rules, &renewed);
        Ok(())
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

    /// Ticks every `poll_interval`: it polls, checks the watched folders
    /// and brings back vanished ones. Nothing else wakes an idle daemon.
    fn poll_timer(&self) -> Interval {
        let every = self.config.watch.poll_interval;
        let mut timer = tokio::time::interval_at(Instant::now() + every, every);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        timer
    }
}
