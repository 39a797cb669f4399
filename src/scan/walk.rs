//! The parallel walk: walker threads filter, stat and examine each file
//! and send what they found in batches to one collector thread, which
//! builds the change set ([`super::collect`]) and hands big ones to the
//! sink chunk by chunk while the walk goes on.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;

use super::collect::{collect, find_deletions, Found};
use super::hash::unix_ns;
use super::roots::{self, walker};
use super::visit::{visit, visit_links, How};
use super::{Detected, ScanPlan, Scope, Sink};
use crate::rules::RuleSet;
use crate::state::{Changes, FileIndex};

/// Counted by walker threads without a message to the collector.
#[derive(Default)]
pub(super) struct Counters {
    /// Unchanged files are most files on most runs: without `--json` they
    /// are only counted, never sent to the collector.
    pub(super) quiet_unchanged: AtomicUsize,
    pub(super) folders: AtomicUsize,
    /// Raised when the sink failed: the walk stops.
    pub(super) stop: AtomicBool,
}

pub(super) enum Message {
    Found(Found),
    /// A link that differs from its record (see [`crate::links`]); boxed,
    /// so file messages (most of them) stay small.
    Link(Box<crate::links::Visited>),
    Failed {
        path: Option<PathBuf>,
        error: String,
    },
}

/// A big change set is handed to the sink in chunks of this many files
/// while the walk goes on, so memory stays flat and recording overlaps
/// walking. Each chunk holds the files' new hashes and the assets they make
/// owed, so any prefix of chunks is a consistent state.
const CHUNK: usize = 10_000;

/// Batches of messages waiting for the collector, at most.
const BACKLOG: usize = 16;

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
    let mut unseen_dirs: Vec<PathBuf> = Vec::new();
    let start = roots::roots(rules, plan, scope, &mut out, &mut unseen_dirs);
    let roots = &start.roots;
    let compare = &start.compare;
    let recent_after = plan.leave_changed_after.map(unix_ns);
    let links = &crate::links::Roots::new(rules);
    let scope_links = &start.links;
    // Bounded: walkers wait while the collector records a chunk, instead
    // of piling up messages (an icon theme sends one per link too).
    let (tx, rx) = mpsc::sync_channel::<Vec<Message>>(BACKLOG);
    let counters = Counters::default();
    std::thread::scope(|scope| {
        let counters = &counters;
        scope.spawn(move || {
            let how = How {
                compare,
                recent_after,
                links,
                on_folder: None,
            };
            if let Some(walker) = walker(rules, roots, plan.threads) {
                // Only rule folders' own walk tells the watcher of folders.
                let own = How {
                    on_folder: plan.on_folder.as_ref(),
                    ..how
                };
                walker.run(|| {
                    let mut batch = Batch::new(tx.clone());
                    Box::new(move |entry| {
                        visit(rules, index, entry, plan, own, counters, &mut batch)
                    })
                });
            }
            // Links named by the scope, then folders in allowed places
            // that links lead to (walked under the links' paths).
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
                let Some(walker) = walker(rules, &group, plan.threads) else {
                    break;
                };
                walker.run(|| {
                    let mut batch = Batch::new(tx.clone());
                    Box::new(move |entry| {
                        visit(rules, index, entry, plan, how, counters, &mut batch)
                    })
                });
            }
        });
        for message in rx.into_iter().flatten() {
            match message {
                Message::Found(_) | Message::Link(_) if out.failure.is_some() => {}
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
                    // An error without a path leaves every folder unseen.
                    unseen_dirs.extend(path.map_or_else(|| roots.clone(), |p| vec![p]));
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
    roots::settle_moved(rules, index, &start, &mut out, &mut unseen_dirs);
    find_deletions(&mut out, rules, index, plan, &unseen_dirs);
    crate::links::collect::finish(&mut out, rules, plan, index, links, roots, &unseen_dirs);
    // Whatever pass walked a rule folder whole completes its baseline (a
    // whole-tree pass, or a pass over the folder itself: the daemon walks a
    // folder that appeared after its start so). Passes over parts of it do
    // not: what they did not reach would be taken as new later.
    for (i, rule) in rules.rules().iter().enumerate() {
        if plan.baseline[i] && roots.contains(&rule.dir) && !unseen_dirs.contains(&rule.dir) {
            out.changes.baselined.push(rule.dir.clone());
        }
    }
    if plan.paths.lists_changes() {
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

/// One walker thread's messages, sent in batches: one channel send (and
/// at most one wake-up of the collector) per 256 files instead of per file.
/// Dropped with its walker thread, which sends the rest.
pub(super) struct Batch {
    tx: mpsc::SyncSender<Vec<Message>>,
    messages: Vec<Message>,
}

impl Batch {
    const SIZE: usize = 256;

    pub(super) fn new(tx: mpsc::SyncSender<Vec<Message>>) -> Batch {
        Batch {
            tx,
            messages: Vec::new(),
        }
    }

    /// False once the collector is gone.
    pub(super) fn push(&mut self, message: Message) -> bool {
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::config::Config;
    use crate::scan::pass::Baseline;
    use crate::scan::Paths;

    /// The settler's cutoff is the walk's only notion of "too recent": a
    /// file changed after it is listed, not read; one changed before it is
    /// read as usual.
    #[test]
    fn a_walk_leaves_files_changed_after_the_cutoff_unread() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("media")).unwrap();
        let file = dir.path().join("media/a.jpg");
        std::fs::write(&file, b"x").unwrap();
        let text = "[[rules]]\ndir = \"media\"\nurl = \"https://example.com/m\"\n";
        let config = Config::parse(text, &dir.path().join("watcher.toml")).unwrap();
        let rules = RuleSet::new(&config.rules).unwrap();
        let mut plan =
            super::super::pass::plan(None, &rules, &config, Baseline::WhereDue, Paths::Counted)
                .unwrap();
        let hour = Duration::from_secs(3600);

        plan.leave_changed_after = Some(SystemTime::now() - hour);
        let found = scan(&rules, &FileIndex::default(), &plan, &Scope::All, None);
        assert_eq!(found.recent, vec![file.clone()]);
        assert!(found.changes.upserts.is_empty(), "not read");

        plan.leave_changed_after = Some(SystemTime::now() + hour);
        let found = scan(&rules, &FileIndex::default(), &plan, &Scope::All, None);
        assert!(found.recent.is_empty());
        assert_eq!(found.new.count, 1, "read and recorded");
    }
}
