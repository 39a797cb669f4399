//! Links on the collector's side of a scan pass. [`collect`] takes what a
//! walker sent, [`expand`] adds the aliases of changed files to the same
//! change set as their new hashes, and [`finish`] ends the walk: links not
//! met are gone, folder links in a cycle become loops, rule folders get
//! their links baselined.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use super::alias::{self, View};
use super::walk::{Resolution, Visited};
use super::Roots;
use crate::rules::{RuleSet, Verdict};
use crate::scan::examine::Observation;
use crate::scan::{Detected, ScanPlan};
use crate::state::links::{Kind, LinkRow};
use crate::state::{FileIndex, Reason};

/// A change of a link, turned into URLs once the pass is done (see
/// [`super::settle`]).
#[derive(Debug, Clone)]
pub struct Change {
    pub path: PathBuf,
    pub was: Option<Resolution>,
    pub now: Option<Resolution>,
}

/// What a pass found about links.
#[derive(Debug, Default)]
pub struct Pass {
    /// Links met.
    pub count: usize,
    /// Files whose new content (or absence) their aliases serve too.
    pub seeds: Vec<PathBuf>,
    /// Link changes whose URLs are owed.
    pub changed: Vec<Change>,
    /// Folder links met, decided once every one is known (cycles).
    folders: Vec<(PathBuf, usize, Option<Resolution>, Resolution)>,
    /// Links found in a cycle or a loop this pass (reported once).
    pub loops: Vec<(PathBuf, PathBuf)>,
    /// Alias paths whose URLs became owed.
    pub aliases: usize,
}

impl Pass {
    /// A file whose change or deletion its aliases serve too.
    pub fn seed(&mut self, path: &Path) {
        self.seeds.push(path.to_path_buf());
    }
}

/// Called by the collector for a link a walker sent. Returns the file
/// observation of a link read as its own file, for the caller to collect
/// like any file.
pub fn collect(
    out: &mut Detected,
    rules: &RuleSet,
    plan: &ScanPlan,
    index: &FileIndex,
    visited: Visited,
) -> Option<(PathBuf, usize, Observation)> {
    let Visited {
        path,
        rule,
        now,
        was,
        own,
        error,
    } = visited;
    out.links.count += 1;
    out.errors.extend(error);
    let own = own.map(|o| (path.clone(), rule, o));
    match now {
        None => {}
        Some(now)
            if now.0 == Kind::Folder || (now.0 == Kind::Loop && !now.1.as_os_str().is_empty()) =>
        {
            out.links.folders.push((path, rule, was, now));
        }
        Some(now) => decide(out, rules, plan, index, path, Some(rule), was, Some(now)),
    }
    own
}

/// [`decide`] for a recorded link row, which is what it `was`.
fn decide_recorded(
    out: &mut Detected,
    rules: &RuleSet,
    plan: &ScanPlan,
    index: &FileIndex,
    row: LinkRow,
    now: Option<Resolution>,
) {
    let rule = rules.owner(&row.path).map(|(rule, _)| rule);
    let was = Some((row.kind, row.target));
    decide(out, rules, plan, index, row.path, rule, was, now);
}

/// Records a link's new state, and owes its URLs when what it serves
/// changed (and its rule has a baseline of links).
#[allow(clippy::too_many_arguments)]
fn decide(
    out: &mut Detected,
    rules: &RuleSet,
    plan: &ScanPlan,
    index: &FileIndex,
    path: PathBuf,
    rule: Option<usize>,
    was: Option<Resolution>,
    now: Option<Resolution>,
) {
    if was == now {
        return;
    }
    let newly_loop =
        matches!(&now, Some((Kind::Loop, _))) && !matches!(&was, Some((Kind::Loop, _)));
    if newly_loop {
        let target = now.as_ref().map(|n| n.1.clone()).unwrap_or_default();
        out.links.loops.push((path.clone(), target));
    }
    let quiet = match rule {
        None => true,
        Some(rule) => plan.baseline[rule] || !index.links.baselined(&rules.get(rule).dir),
    };
    // Same target, seen another way: it appeared or went (its own change
    // owes the aliases' URLs, see `expand`), or the config now reads it
    // (`allow_outside`, `include`: a config edit, not an image change).
    // Only the row changes.
    let silent = match (&was, &now) {
        (Some((a, t)), Some((b, u))) => {
            let plain = |k: &Kind| !matches!(k, Kind::Loop | Kind::Other);
            t == u && plain(a) && plain(b)
        }
        _ => false,
    };
    if quiet || silent {
        match now {
            Some((kind, target)) => out
                .changes
                .links
                .upserts
                .push(LinkRow { path, kind, target }),
            None => out.changes.links.removals.push(path),
        }
        return;
    }
    out.links.changed.push(Change { path, was, now });
}

/// Owes the URLs of every alias of the files seeded so far. Called before
/// each chunk of changes is recorded, so aliases are owed in the same
/// transaction as the new hash that makes them stale.
pub fn expand(out: &mut Detected, rules: &RuleSet, plan: &ScanPlan, index: &FileIndex) {
    let view = View {
        index: &index.links,
        extra: &[],
    };
    for seed in std::mem::take(&mut out.links.seeds) {
        let (found, stopped) = alias::aliases(&seed, &view);
        if stopped {
            tracing::warn!(path = %seed.display(), limit = alias::MAX_ALIASES, "too many links lead to this file; only the first aliases are invalidated");
        }
        owe(out, rules, plan, &found);
    }
}

/// Owes the URLs of `paths` (each in the rule that owns it).
pub(super) fn owe(out: &mut Detected, rules: &RuleSet, plan: &ScanPlan, paths: &[PathBuf]) {
    for path in paths {
        if let Verdict::Mapped { rule } = rules.verdict(path) {
            if plan.baseline[rule] {
                continue;
            }
            out.changes
                .assets
                .extend(rules.get(rule).owed(path, Reason::Alias));
            out.links.aliases += 1;
        }
    }
}

/// Ends a walk: links not met under the walked places are gone, folder
/// links are checked for cycles, rule folders walked whole get their links
/// baselined, and the last seeds are expanded.
pub fn finish(
    out: &mut Detected,
    rules: &RuleSet,
    plan: &ScanPlan,
    index: &FileIndex,
    roots: &Roots,
    walked: &[PathBuf],
    unseen_dirs: &[PathBuf],
) {
    out.links.count += roots.quiet.load(Ordering::Relaxed);
    let mut graph: Vec<(PathBuf, PathBuf)> = Vec::new();
    for (row, visited, seen) in index.links.rows() {
        if visited && !seen {
            if unseen_dirs.iter().any(|dir| row.path.starts_with(dir)) {
                continue;
            }
            decide_recorded(out, rules, plan, index, row, None);
        } else if !seen
            && (row.kind == Kind::Folder
                || (row.kind == Kind::Loop && !row.target.as_os_str().is_empty()))
        {
            graph.push((row.path, row.target));
        }
    }
    let folders = std::mem::take(&mut out.links.folders);
    graph.extend(
        folders
            .iter()
            .map(|(p, _, _, now)| (p.clone(), now.1.clone())),
    );
    let in_cycle = alias::cycles(&graph);
    for (path, rule, was, (kind, target)) in folders {
        let kind = match in_cycle.contains(&path) {
            true => Kind::Loop,
            false => kind,
        };
        decide(
            out,
            rules,
            plan,
            index,
            path,
            Some(rule),
            was,
            Some((kind, target)),
        );
    }
    // Rows not visited this pass that a new link closed a cycle with.
    for (row, visited, seen) in index.links.rows() {
        if !visited && !seen && row.kind == Kind::Folder && in_cycle.contains(&row.path) {
            let now = Some((Kind::Loop, row.target.clone()));
            decide_recorded(out, rules, plan, index, row, now);
        }
    }
    for rule in rules.rules() {
        let whole = walked.contains(&rule.dir) && !unseen_dirs.contains(&rule.dir);
        if whole && !index.links.baselined(&rule.dir) {
            out.changes.links.baselined.push(rule.dir.clone());
        }
    }
    expand(out, rules, plan, index);
}
