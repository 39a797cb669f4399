//! The daemon's detecting side: starts the file watches, reconciles the
//! whole tree once (changes made while the daemon was down), then turns
//! settled file events into change sets, exactly as `scan` would, and
//! records them. Rescans replace any event that may have been lost; rule
//! folders watched anew (see [`super::folders`]) are reconciled whole. At
//! every poll tick it also checks that the store file is the one it
//! started with: a daemon whose store was deleted or replaced would record
//! into a file nobody reads again. A `scan` from the control socket is a
//! reconcile on demand: it takes the settling paths along (the deploy that
//! asks is done writing), records, and hands its report to the sender,
//! which answers once the work is sent and covered.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, Interval};

use anyhow::bail;

use super::events::{self, FsSignal, Overflow, WATCH_LIMIT_HELP};
use super::folders::{log_renewed, FileId, Folders, Renewal};
use super::sender::Pulse;
use super::settle::Settler;
use super::sleep_until;
use crate::commands::scan::report::ScanReport;
use crate::config::Config;
use crate::control::jobs::{self as control, Job, Jobs, Shared};
use crate::control::protocol::Reply;
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
    /// A `scan` request: its caller says the writing is done.
    Request,
}

/// What the detector shares with the control socket.
pub struct Control {
    pub jobs: Jobs,
    pub sender: mpsc::Sender<Job>,
    pub live: Shared,
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
    control: Control,
}

impl Detector {
    pub fn new(
        store: Store,
        config: Config,
        pulse: watch::Sender<Pulse>,
        cancel: Arc<AtomicBool>,
        store_file: Option<FileId>,
        control: Control,
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
            control,
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
        // Rules walked for the first time now record their baseline: say
        // so, or a new store looks as if nothing happened.
        let due: Vec<PathBuf> = self
            .rules
            .rules()
            .iter()
            .map(|r| r.dir.clone())
            .filter(|dir| !self.store.baselined(dir).unwrap_or(true))
            .collect();
        let detected = self.process(Scope::All, Origin::Rescan)?;
        // The walk put the watches on the folders below the rule folders:
        // if the kernel's limit stopped it, say so before "watching".
        if overflow.take_watch_limit() {
            tracing::error!("{WATCH_LIMIT_HELP}");
            self.folders.polled = (0..self.rules.rules().len()).collect();
        }
        // Counted once: a count is a pass over the whole files table.
        let files = self.store.file_count()?;
        let recorded = due
            .iter()
            .filter(|dir| self.store.baselined(dir).unwrap_or(false))
            .count();
        if recorded > 0 {
            // Files written in the last moments are recorded once they
            // settle (into the baseline: they are not invalidated).
            let settling = detected.recent.len() + detected.unsettled.len();
            let later = match settling {
                0 => String::new(),
                n => format!(
                    " ({} still being written, added once settled)",
                    plural(n, "more file")
                ),
            };
            tracing::info!(
                rules = recorded,
                files,
                settling,
                folders = detected.folders,
                "recorded a baseline of {} in {}{later}; changes from now on are invalidated",
                plural(files, "file"),
                plural(detected.folders, "folder"),
            );
        }
        let watching = format!(
            "watching {} and {}",
            plural(detected.folders, "folder"),
            plural(files, "file")
        );
        // Requests wait for the start-up reconcile; held for this worker's
        // life, the next config's detector takes them on.
        let mut jobs = self.control.jobs.clone().lock_owned().await;
        tracing::info!(
            folders = detected.folders,
            files,
            rules = self.rules.rules().len(),
            polled = self.folders.polled.len(),
            "{watching}"
        );
        super::systemd::notify(&format!("READY=1\nSTATUS={watching}"));
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
                Some(job) = jobs.recv() => self.request(job).await?,
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
            self.publish_live();
        }
    }

    /// A request from the control socket (only `scan` comes here).
    async fn request(&mut self, job: Job) -> anyhow::Result<()> {
        let Job::Scan { all_paths, reply } = job else {
            tracing::error!("a control request other than scan went to the detector (a bug)");
            return Ok(());
        };
        let paths = match all_paths {
            true => Paths::Listed,
            false => Paths::Changes,
        };
        self.scan(paths, reply).await
    }

    /// A reconcile on demand: what the caller just wrote is read now,
    /// settling or not, so its report lists it and the sender's answer
    /// covers it.
    async fn scan(&mut self, paths: Paths, reply: oneshot::Sender<Reply>) -> anyhow::Result<()> {
        // The sender counts what it sends for this scan from before the
        // reconcile records anything: what it records may go out at once.
        let (report_tx, report) = oneshot::channel();
        let (registered, counted) = oneshot::channel();
        let job = Job::Wait {
            report,
            registered,
            reply,
        };
        // A sender that is gone drops the reply: the client is told.
        if self.control.sender.send(job).await.is_err() || counted.await.is_err() {
            return Ok(());
        }
        // The walk covers every path settling; a rule folder among them is
        // watched anew first, as when it settles.
        let settling = self.settler.take_all();
        tracing::info!(
            settling = settling.len(),
            "scan requested through the control socket"
        );
        let renewed = self.renew_roots(&settling);
        let detected = self.process_listed(Scope::All, Origin::Request, paths)?;
        log_renewed(&self.rules, &renewed);
        if detected.cancelled {
            let _ = report_tx.send(Err(
                "the daemon is stopping; the scan was not finished".into()
            ));
            return Ok(());
        }
        let mut report = ScanReport::default();
        crate::commands::scan::fill(&mut report, &detected, paths);
        let _ = report_tx.send(Ok(Box::new(report)));
        // Wakes the sender to answer, even when nothing was recorded.
        self.pulse.send_modify(|p| p.recorded += 1);
        Ok(())
    }

    fn publish_live(&mut self) {
        let settling = self.settler.len();
        let paths: Vec<String> = self
            .settler
            .first(20)
            .iter()
            .map(|p| crate::display::show_path(p))
            .collect();
        control::update(&self.control.live, |live| {
            live.settling = settling;
            live.settling_paths = paths;
        });
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
        self.process_listed(scope, origin, paths)
    }

    /// [`Detector::process`], listing paths as `paths` says.
    fn process_listed(
        &mut self,
        scope: Scope,
        origin: Origin,
        paths: Paths,
    ) -> anyhow::Result<Detected> {
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
        let logged = log_changes(&detected);
        for (what, tally) in [
            ("changed", &detected.changed),
            ("new", &detected.new),
            ("deleted", &detected.deleted),
            ("touched", &detected.touched),
        ] {
            for path in &tally.paths {
                let shown = crate::display::show_path(path);
                if !logged.contains(&shown) {
                    tracing::debug!(path = %shown, "{what}");
                }
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
        let renewed = self.renew_roots(&paths);
        for (i, _) in &renewed {
            paths.push(self.rules.get(*i).dir.clone());
        }
        self.process(Scope::Paths(paths), Origin::Settler)?;
        log_renewed(&self.rules, &renewed);
        Ok(())
    }

    /// Renews the watches of the rule folders among `paths` (events on a
    /// rule folder itself).
    fn renew_roots(&mut self, paths: &[PathBuf]) -> Vec<(usize, Renewal)> {
        let roots: Vec<usize> = (0..self.rules.rules().len())
            .filter(|&i| paths.contains(&self.rules.get(i).dir))
            .collect();
        match roots.is_empty() {
            true => Vec::new(),
            false => self.folders.renew(&self.rules, &self.store, &roots),
        }
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

/// "1 file", "2 files".
fn plural(n: usize, noun: &str) -> String {
    match n {
        1 => format!("1 {noun}"),
        _ => format!("{n} {noun}s"),
    }
}

/// Changed paths logged at info level per detection pass; the rest are
/// counted in one line (and listed at debug level).
const LOGGED_CHANGES: usize = 20;

/// Logs the paths whose assets this pass made owed, each once with its
/// reason (`changed`, `deleted`, `new`, `alias`), at most
/// [`LOGGED_CHANGES`]; returns the paths logged.
fn log_changes(detected: &Detected) -> std::collections::BTreeSet<String> {
    let mut paths = std::collections::BTreeSet::new();
    let mut logged = std::collections::BTreeSet::new();
    for owed in &detected.changes.assets {
        let Some(path) = &owed.path else { continue };
        if !paths.insert(path.as_str()) || logged.len() >= LOGGED_CHANGES {
            continue;
        }
        let reason = owed.reason.as_str();
        tracing::info!(path = %path, reason, account = %owed.account, "{reason}");
        logged.insert(path.clone());
    }
    if paths.len() > logged.len() {
        tracing::info!(
            more = paths.len() - logged.len(),
            "and {} more changed path(s) (listed with -v)",
            paths.len() - logged.len()
        );
    }
    logged
}
