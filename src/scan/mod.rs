//! The scan walk: the change source that visits every file of every rule
//! folder, in parallel, and turns what it finds into a change set.
//!
//! Walker threads stat, quick-check and hash (so both walking and hashing
//! use every core); one collector thread turns their observations into the
//! [`Changes`] the store records. Recorded files that no walker met are
//! deletions, unless they lie under a folder the walk could not read: a
//! missing mount must never look like a deleted media library.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

use ignore::WalkState;

mod roots;

use roots::{error_path, walker};

use crate::detect::{self, Compare, Observation};
use crate::rules::{RuleSet, Verdict};
use crate::state::{Changes, FileIndex, Hashed, Stat};

/// How a scan treats what it finds.
#[derive(Debug, Clone)]
pub struct ScanPlan {
    /// Per rule (same order as the rule set): record without invalidating,
    /// because this is the rule's first scan or `--baseline` was asked for.
    pub baseline: Vec<bool>,
    pub invalidate_new: bool,
    /// Keep every path for the report (`--json`); counts only otherwise.
    pub keep_paths: bool,
    /// Files changed after this (mtime or ctime, ns since the epoch) are not read
    /// but listed in [`Detected::hot`] (see [`detect::examine`]).
    pub hot_after: Option<i64>,
    /// Per rule: the file system (`st_dev`) its folder was on when its files
    /// were recorded; a different one now means its files are compared by
    /// content (and, if none is left, "unmounted", not "deleted").
    pub devices: Vec<Option<u64>>,
    /// The terminal progress bar, if one is shown.
    pub progress: Option<Arc<crate::progress::Progress>>,
    /// Raised to abandon the walk (the daemon is stopping). An abandoned
    /// walk is marked [`Detected::cancelled`] and must not be recorded: its
    /// unvisited files would look deleted.
    pub cancel: Option<Arc<AtomicBool>>,
    pub threads: usize,
}

/// Paths of one kind of outcome; `paths` stays empty unless asked for.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub count: usize,
    pub paths: Vec<PathBuf>,
}

impl Tally {
    pub(crate) fn add(&mut self, path: &Path, keep: bool) {
        self.count += 1;
        if keep {
            self.paths.push(path.to_path_buf());
        }
    }
}

/// What a scan found, and the change set to record.
#[derive(Debug, Default)]
pub struct Detected {
    pub scanned: Tally,
    pub unchanged: Tally,
    pub touched: Tally,
    pub changed: Tally,
    pub new: Tally,
    pub deleted: Tally,
    /// Files left alone because they were being modified (only with
    /// [`ScanPlan::hot_after`]).
    pub hot: Vec<PathBuf>,
    /// Files that changed while they were read: nothing was recorded for
    /// them; the daemon looks again once they settle, `scan` reports them.
    pub unsettled: Vec<PathBuf>,
    /// Changed files with more than one hard link: other recorded paths
    /// of the same inode serve the same new bytes (see
    /// [`crate::pipeline::detect`]).
    pub linked: Vec<(PathBuf, Hashed)>,
    /// New files with more than one hard link (for
    /// [`Changes::relinked`]).
    pub new_links: Vec<Stat>,
    /// The walk was abandoned part-way ([`ScanPlan::cancel`]).
    pub cancelled: bool,
    /// The sink failed; the walk stopped and nothing more may be recorded.
    pub failure: Option<anyhow::Error>,
    /// Rule folders that could not be opened (missing, unmounted).
    pub unavailable: Vec<usize>,
    /// Folders walked (rule folders included).
    pub folders: usize,
    /// Problems that left part of the tree unexamined; the run must fail.
    pub errors: Vec<String>,
    pub changes: Changes,
    /// Links met, changed, and aliases owed (see [`crate::links`]).
    pub links: crate::links::Pass,
}

/// Counted by walker threads without a message to the collector.
#[derive(Default)]
struct Counters {
    /// Unchanged files are most files on most runs: without `--json` they
    /// are only counted, never sent to the collector.
    quiet_unchanged: AtomicUsize,
    folders: AtomicUsize,
    /// Raised when the sink failed: the walk stops.
    stop: AtomicBool,
}

struct Found {
    path: PathBuf,
    rule: usize,
    observation: Observation,
}

enum Message {
    Found(Found),
    /// A link that differs from its record (see [`crate::links`]); boxed,
    /// so file messages (most of them) stay small.
    Link(Box<crate::links::Visited>),
    Failed {
        path: Option<PathBuf>,
        error: String,
    },
}

/// Which part of the tree a scan looks at.
#[derive(Debug, Clone)]
pub enum Scope {
    /// Every rule folder. Recorded files outside every rule are forgotten.
    All,
    /// Just these files or folders (from file events), each inside a rule
    /// folder. A path that no longer exists means its recorded files were
    /// deleted; the index must hold the records under these paths.
    Paths(Vec<PathBuf>),
}

/// Walks `scope` and compares what is there with `index`.
/// A big change set is handed to the sink in chunks of this many files
/// while the walk goes on, so memory stays flat and recording overlaps
/// walking. Each chunk holds the files' new hashes and the assets they make
/// owed, so any prefix of chunks is a consistent state.
const CHUNK: usize = 10_000;

/// Batches of messages waiting for the collector, at most.
const BACKLOG: usize = 16;

/// Records a chunk of changes; an error stops the walk.
pub type Sink<'a> = &'a mut dyn FnMut(Changes) -> anyhow::Result<()>;

/// Walks `scope` and compares what is there with `index`. With a sink,
/// large change sets are recorded chunk by chunk during the walk; what is
/// left (and every deletion) is in the returned [`Detected::changes`].
pub fn scan(
    rules: &RuleSet,
    index: &FileIndex,
    plan: &ScanPlan,
    scope: &Scope,
    mut sink: Option<Sink<'_>>,
) -> Detected {
    let mut out = Detected::default();
    // Folders whose content is unknown this time: nothing under them counts
    // as deleted.
    let mut blind: Vec<PathBuf> = Vec::new();
    let start = roots::roots(rules, plan, scope, &mut out, &mut blind);
    let roots = &start.roots;
    let compare = &start.compare;
    let links = &crate::links::Roots::new(rules);
    let scope_links = &start.links;
    // Bounded: walkers wait while the collector records a chunk, instead
    // of piling up messages (an icon theme sends one per link too).
    let (tx, rx) = mpsc::sync_channel::<Vec<Message>>(BACKLOG);
    let counters = Counters::default();
    // Rules that follow symlinks need a walker that does; the rest (the
    // default) get one that never does.
    let (follow, stay): (Vec<PathBuf>, Vec<PathBuf>) = roots.iter().cloned().partition(|root| {
        rules
            .owner(root)
            .is_some_and(|(i, _)| rules.get(i).follow_symlinks)
    });
    std::thread::scope(|scope| {
        let counters = &counters;
        scope.spawn(move || {
            for (group, follow) in [(stay, false), (follow, true)] {
                if let Some(walker) = walker(rules, &group, follow, plan.threads) {
                    walker.run(|| {
                        let mut batch = Batch::new(tx.clone());
                        Box::new(move |entry| {
                            let how = How {
                                follow,
                                compare,
                                links,
                            };
                            visit(rules, index, entry, plan, how, counters, &mut batch)
                        })
                    });
                }
            }
            // Links named by the scope, then folders in allowed places
            // that links lead to (walked under the links' paths).
            let how = How {
                follow: false,
                compare,
                links,
            };
            visit_links(
                rules,
                index,
                scope_links,
                plan,
                how,
                &mut Batch::new(tx.clone()),
            );
            loop {
                let group = links.waiting();
                let Some(walker) = walker(rules, &group, false, plan.threads) else {
                    break;
                };
                walker.run(|| {
                    let mut batch = Batch::new(tx.clone());
                    Box::new(move |entry| {
                        let how = How {
                            follow: false,
                            compare,
                            links,
                        };
                        visit(rules, index, entry, plan, how, counters, &mut batch)
                    })
                });
            }
        });
        for message in rx.into_iter().flatten() {
            match message {
                Message::Found(_) if out.failure.is_some() => {}
                Message::Link(_) if out.failure.is_some() => {}
                Message::Found(_) | Message::Link(_) => {
                    match message {
                        Message::Found(found) => collect(&mut out, rules, plan, found),
                        Message::Link(link) => {
                            let own =
                                crate::links::collect::collect(&mut out, rules, plan, index, *link);
                            if let Some((path, rule, observation)) = own {
                                collect(
                                    &mut out,
                                    rules,
                                    plan,
                                    Found {
                                        path,
                                        rule,
                                        observation,
                                    },
                                );
                            }
                        }
                        Message::Failed { .. } => {}
                    }
                    if out.changes.upserts.len() + out.changes.links.upserts.len() >= CHUNK {
                        if let Some(sink) = sink.as_mut() {
                            crate::links::collect::expand(&mut out, rules, plan, index);
                            let chunk = Changes {
                                upserts: std::mem::take(&mut out.changes.upserts),
                                assets: std::mem::take(&mut out.changes.assets),
                                links: std::mem::take(&mut out.changes.links),
                                ..Changes::default()
                            };
                            if let Err(e) = sink(chunk) {
                                out.failure = Some(e);
                                counters.stop.store(true, Ordering::Relaxed);
                            }
                        }
                    }
                }
                Message::Failed { path, error } => {
                    out.errors.push(error);
                    // An error without a path makes every folder blind.
                    blind.extend(path.map_or_else(|| roots.clone(), |p| vec![p]));
                }
            }
        }
    });

    out.cancelled = plan
        .cancel
        .as_ref()
        .is_some_and(|c| c.load(Ordering::Relaxed));
    out.folders = counters.folders.into_inner();
    let quiet = counters.quiet_unchanged.into_inner();
    out.unchanged.count += quiet;
    out.scanned.count += quiet;
    roots::settle_moved(rules, index, &start, &mut out, &mut blind);
    find_deletions(&mut out, rules, index, plan, &blind);
    crate::links::collect::finish(&mut out, rules, plan, index, links, roots, &blind);
    // Whatever pass walked a rule folder whole completes its baseline (a
    // whole-tree pass, or a pass over the folder itself: the daemon walks a
    // folder that appeared after its start so). Passes over parts of it do
    // not: what they did not reach would be taken as new later.
    for (i, rule) in rules.rules().iter().enumerate() {
        if plan.baseline[i] && roots.contains(&rule.dir) && !blind.contains(&rule.dir) {
            out.changes.baselined.push(rule.dir.clone());
        }
    }
    if plan.keep_paths {
        for tally in [
            &mut out.scanned,
            &mut out.unchanged,
            &mut out.touched,
            &mut out.changed,
            &mut out.new,
            &mut out.deleted,
        ] {
            tally.paths.sort();
        }
    }
    out
}

/// How a walker reads files: whether it follows symlinks, and per rule how
/// recorded stat data is trusted.
#[derive(Clone, Copy)]
struct How<'a> {
    follow: bool,
    compare: &'a [Compare],
    links: &'a crate::links::Roots,
}

/// One walker callback: filter, stat, detect, report.
fn visit(
    rules: &RuleSet,
    index: &FileIndex,
    entry: Result<ignore::DirEntry, ignore::Error>,
    plan: &ScanPlan,
    how: How<'_>,
    counters: &Counters,
    batch: &mut Batch,
) -> WalkState {
    let cancelled = plan
        .cancel
        .as_ref()
        .is_some_and(|c| c.load(Ordering::Relaxed));
    if cancelled || counters.stop.load(Ordering::Relaxed) {
        return WalkState::Quit;
    }
    let entry = match entry {
        Ok(entry) => entry,
        Err(err) => {
            let path = error_path(&err);
            batch.push(Message::Failed {
                path,
                error: format!("cannot read part of a rule folder: {err}; it was left as recorded"),
            });
            return WalkState::Continue;
        }
    };
    // Symlinks are not followed (unless the rule says so: then the walker
    // reports their targets' types), and sockets, FIFOs and devices are no
    // images.
    match entry.file_type() {
        Some(t) if t.is_file() => {}
        Some(t) if t.is_dir() => {
            counters.folders.fetch_add(1, Ordering::Relaxed);
            return WalkState::Continue;
        }
        Some(t) if t.is_symlink() => {
            visit_links(rules, index, &[entry.path()], plan, how, batch);
            return WalkState::Continue;
        }
        _ => return WalkState::Continue,
    }
    let path = entry.path();
    let Some((rule, rel)) = rules.owner(path) else {
        return WalkState::Continue;
    };
    if !rules.get(rule).wants(rel) {
        return WalkState::Continue;
    }
    if let Some(progress) = &plan.progress {
        progress.walked();
    }
    let known = index.get(path);
    let compare = how.compare.get(rule).copied().unwrap_or(Compare::Content);
    let observation = match entry.metadata() {
        Ok(meta) => detect::examine(
            path,
            Stat::of(&meta),
            known,
            plan.hot_after,
            how.follow,
            compare,
        ),
        Err(err) if err.io_error().map(|e| e.kind()) == Some(std::io::ErrorKind::NotFound) => {
            Observation::Vanished
        }
        Err(err) => Observation::Unreadable(std::io::Error::other(err.to_string())),
    };
    if let Observation::Changed(file)
    | Observation::New(file)
    | Observation::Touched(file)
    | Observation::Confirmed(file) = &observation
    {
        if let Some(progress) = &plan.progress {
            progress.hashed(file.stat.size);
        }
        crate::metrics::add(&crate::metrics::METRICS.hashed, 1);
    }
    if let (Some(entry), false) = (known, matches!(observation, Observation::Vanished)) {
        entry.mark_seen();
    }
    if !plan.keep_paths && matches!(observation, Observation::Unchanged) {
        counters.quiet_unchanged.fetch_add(1, Ordering::Relaxed);
        return WalkState::Continue;
    }
    let found = Found {
        path: path.to_path_buf(),
        rule,
        observation,
    };
    if !batch.push(Message::Found(found)) {
        return WalkState::Quit;
    }
    WalkState::Continue
}

/// Links met by a walker or named by the scope: see [`crate::links::walk::visit`].
fn visit_links(
    rules: &RuleSet,
    index: &FileIndex,
    paths: &[impl AsRef<Path>],
    plan: &ScanPlan,
    how: How<'_>,
    batch: &mut Batch,
) {
    for path in paths {
        let Some((rule, _)) = rules.owner(path.as_ref()) else {
            continue;
        };
        let compare = how.compare.get(rule).copied().unwrap_or(Compare::Content);
        let visited =
            crate::links::walk::visit(path.as_ref(), rule, rules, index, plan, how.links, compare);
        if let Some(visited) = visited {
            batch.push(Message::Link(Box::new(visited)));
        }
    }
}

/// One walker thread's messages, sent in batches: one channel send (and
/// at most one wake-up of the collector) per 256 files instead of per file.
/// Dropped with its walker thread, which sends the rest.
struct Batch {
    tx: mpsc::SyncSender<Vec<Message>>,
    messages: Vec<Message>,
}

impl Batch {
    const SIZE: usize = 256;

    fn new(tx: mpsc::SyncSender<Vec<Message>>) -> Batch {
        Batch {
            tx,
            messages: Vec::new(),
        }
    }

    /// False once the collector is gone.
    fn push(&mut self, message: Message) -> bool {
        self.messages.push(message);
        self.messages.len() < Self::SIZE || self.send()
    }

    fn send(&mut self) -> bool {
        self.messages.is_empty() || self.tx.send(std::mem::take(&mut self.messages)).is_ok()
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        self.send();
    }
}

fn collect(out: &mut Detected, rules: &RuleSet, plan: &ScanPlan, found: Found) {
    let Found {
        path,
        rule,
        observation,
    } = found;
    let keep = plan.keep_paths;
    let urls = |path: &Path| {
        let rule_ref = rules.get(rule);
        rule_ref.owed(path.strip_prefix(&rule_ref.dir).unwrap_or(path))
    };
    match observation {
        Observation::Vanished => return,
        Observation::Hot => {
            out.hot.push(path);
            return;
        }
        Observation::Unsettled => {
            out.unsettled.push(path);
            return;
        }
        Observation::Unreadable(e) => {
            out.errors.push(format!(
                "cannot read {}: {e}; it will be tried again next run",
                crate::report::show_path(&path)
            ));
        }
        Observation::Unchanged => out.unchanged.add(&path, keep),
        Observation::Confirmed(file) => {
            out.unchanged.add(&path, keep);
            out.changes.upserts.push((path.clone(), file));
        }
        Observation::Touched(file) => {
            out.touched.add(&path, keep);
            out.changes.upserts.push((path.clone(), file));
        }
        Observation::Changed(file) => {
            crate::failpoint::pause_at("walking");
            out.changed.add(&path, keep);
            if !plan.baseline[rule] {
                out.links.seed(&path);
                out.changes.assets.extend(urls(&path));
                if file.links > 1 {
                    out.linked.push((path.clone(), file));
                }
            }
            out.changes.upserts.push((path.clone(), file));
        }
        Observation::New(file) => {
            out.new.add(&path, keep);
            if file.links > 1 {
                out.new_links.push(file.stat);
            }
            if plan.invalidate_new && !plan.baseline[rule] {
                out.links.seed(&path);
                out.changes.assets.extend(urls(&path));
            }
            out.changes.upserts.push((path.clone(), file));
        }
    }
    out.scanned.add(&path, keep);
}

fn find_deletions(
    out: &mut Detected,
    rules: &RuleSet,
    index: &FileIndex,
    plan: &ScanPlan,
    blind: &[PathBuf],
) {
    for path in index.unseen() {
        if blind.iter().any(|dir| path.starts_with(dir)) {
            continue;
        }
        match rules.verdict(path) {
            Verdict::Mapped { rule } => {
                out.deleted.add(path, plan.keep_paths);
                if !plan.baseline[rule] {
                    out.links.seed(path);
                    let r = rules.get(rule);
                    out.changes
                        .assets
                        .extend(r.owed(path.strip_prefix(&r.dir).unwrap_or(path)));
                }
            }
            // No longer covered by any rule (config changed): forget quietly;
            // such a change is a config edit, not an image change.
            _ => tracing::debug!(path = %path.display(), "no longer covered by a rule; forgotten"),
        }
        out.changes.removals.push(path.to_path_buf());
    }
}
