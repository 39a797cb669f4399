//! Symbolic links inside rule folders, the way a web server serves them.
//!
//! A link whose target (through any number of links) is a file inside a
//! rule folder is an *alias* of that file: the file is hashed once, under
//! its own path, and when it changes or goes, every URL of every alias is
//! invalidated with it. A link to a folder inside the rule folders makes
//! every file below that folder an alias too, without walking it again.
//! A link that leads anywhere else is never read (not even stat'ed past
//! the rule folders) unless its rule lists that place in `allow_outside`;
//! then it is read as if the file or folder were at the link's path.
//! Creating, retargeting or removing a link changes what its URLs serve,
//! so it is a change of those URLs. Link cycles are recorded as such,
//! reported once and skipped.
//!
//! [`Roots`] knows where each rule folder really is (a rule folder may
//! itself be a link: `current -> releases/42`), [`resolve`] follows one
//! link without leaving the allowed places, [`walk`] and [`collect`] are
//! what the scan's walker threads and collector call for each link met, [`alias`] finds the
//! aliases of a path, and [`settle`] turns link changes into URLs once a
//! pass is done.

pub mod alias;
mod at;
pub mod collect;
mod listing;
pub mod resolve;
pub mod settle;
pub mod walk;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::rules::RuleSet;

pub use collect::Pass;
pub use walk::Visited;

/// Most links followed in a row before a link counts as a loop: Linux's
/// own limit (`MAXSYMLINKS`), so nothing the web server serves is missed.
pub const MAX_HOPS: usize = 40;

/// Folder links into allowed places walked in one pass, at most.
const MAX_EXTRA: usize = 10_000;

/// Where each rule folder is right now, taken at the start of a pass.
#[derive(Debug)]
pub struct Roots {
    rules: Vec<Root>,
    /// Folder links into allowed places met during the walk: walked as
    /// roots of their own after the rule folders (link path, real target).
    extra: Mutex<Extra>,
    /// Whether `extra` holds anything (most passes: no), read without the
    /// lock.
    any_extra: AtomicBool,
    /// Links met that were as recorded, counted by walker threads.
    pub quiet: AtomicUsize,
}

#[derive(Debug)]
struct Root {
    /// The configured path, under which files are recorded.
    dir: PathBuf,
    /// Where it really is (the configured path when it cannot be resolved).
    real: PathBuf,
    /// The rule's `allow_outside` places, resolved.
    allowed: Vec<PathBuf>,
}

#[derive(Debug, Default)]
struct Extra {
    /// Every allowed folder link taken as a root this pass.
    taken: Vec<(PathBuf, PathBuf)>,
    /// Those not walked yet.
    waiting: Vec<PathBuf>,
}

/// Where a real path lies, for one link's rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// In a rule folder (any rule's).
    Inside,
    /// In one of the link's rule's `allow_outside` places.
    Allowed,
    /// A folder above a rule folder or allowed place: on the way there.
    Above,
    Outside,
}

impl Roots {
    pub fn new(rules: &RuleSet) -> Roots {
        at::new_pass();
        let real = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        Roots {
            rules: rules
                .rules()
                .iter()
                .map(|r| Root {
                    dir: r.dir.clone(),
                    real: real(&r.dir),
                    allowed: r.allow_outside.iter().map(|p| real(p)).collect(),
                })
                .collect(),
            extra: Mutex::default(),
            any_extra: AtomicBool::new(false),
            quiet: AtomicUsize::new(0),
        }
    }

    /// Where `real` lies for a link of rule `rule`.
    pub fn place(&self, real: &Path, rule: usize) -> Place {
        if self.rules.iter().any(|r| below(real, &r.real).is_some()) {
            return Place::Inside;
        }
        let allowed = self.rules.get(rule).map_or(&[][..], |r| &r.allowed[..]);
        if allowed.iter().any(|a| below(real, a).is_some()) {
            return Place::Allowed;
        }
        let above = |p: &PathBuf| below(p, real).is_some();
        if self.rules.iter().any(|r| above(&r.real)) || allowed.iter().any(above) {
            return Place::Above;
        }
        Place::Outside
    }

    /// The real path of a recorded path (one the walk met without
    /// following links below its root).
    pub fn real_of(&self, recorded: &Path) -> PathBuf {
        if self.any_extra.load(Ordering::Acquire) {
            let extra = self.lock();
            let found = extra
                .taken
                .iter()
                .filter_map(|(link, real)| Some((below(recorded, link)?, link, real)))
                .max_by_key(|(_, link, _)| link.as_os_str().len());
            if let Some((rel, _, real)) = found {
                return join(real, rel);
            }
        }
        let found = self
            .rules
            .iter()
            .filter_map(|r| Some((below(recorded, &r.dir)?, r)))
            .max_by_key(|(_, r)| r.dir.as_os_str().len());
        match found {
            Some((rel, root)) => join(&root.real, rel),
            None => recorded.to_path_buf(),
        }
    }

    /// The recorded path of a real path inside a rule folder: under the
    /// configured folder of the rule whose real folder holds it closest.
    pub fn recorded(&self, real: &Path) -> Option<PathBuf> {
        let (rel, root) = self
            .rules
            .iter()
            .filter_map(|r| Some((below(real, &r.real)?, r)))
            .max_by_key(|(_, r)| r.real.as_os_str().len())?;
        Some(join(&root.dir, rel))
    }

    /// Whether the real folder `real` holds a rule folder (walking it
    /// would walk that rule's files again).
    pub fn holds_a_rule(&self, real: &Path) -> bool {
        self.rules.iter().any(|r| below(&r.real, real).is_some())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Extra> {
        self.extra.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes an allowed folder link as a root to walk. False when walking
    /// it would walk a place again: it holds a rule folder, or the link
    /// was met inside a walk of that place (a cycle through allowed
    /// places), or this pass took too many already.
    pub fn take_extra(&self, link: &Path, real: &Path) -> bool {
        if self.holds_a_rule(real) {
            return false;
        }
        let mut extra = self.lock();
        let cycle = extra
            .taken
            .iter()
            .any(|(l, r)| link.starts_with(l) && (r.starts_with(real) || real.starts_with(r)));
        if cycle || extra.taken.len() >= MAX_EXTRA {
            return false;
        }
        extra.taken.push((link.to_path_buf(), real.to_path_buf()));
        extra.waiting.push(link.to_path_buf());
        self.any_extra.store(true, Ordering::Release);
        true
    }

    /// Allowed folder links waiting to be walked.
    pub fn waiting(&self) -> Vec<PathBuf> {
        std::mem::take(&mut self.lock().waiting)
    }
}

/// The part of `path` below `dir` (empty: `dir` itself), comparing bytes:
/// much cheaper than `Path::starts_with`, and the same for the paths
/// compared here (absolute, without `.`, `..` or doubled slashes: real
/// paths, configured folders and what the walk joined to them).
pub(crate) fn below<'a>(path: &'a Path, dir: &Path) -> Option<&'a [u8]> {
    let dir = dir.as_os_str().as_bytes();
    let rest = path.as_os_str().as_bytes().strip_prefix(dir)?;
    match rest.first() {
        None => Some(rest),
        Some(b'/') => Some(&rest[1..]),
        Some(_) if dir.ends_with(b"/") => Some(rest),
        Some(_) => None,
    }
}

/// `dir` + `rel` (`rel` as [`below`] returned it).
fn join(dir: &Path, rel: &[u8]) -> PathBuf {
    match rel.is_empty() {
        true => dir.to_path_buf(),
        false => dir.join(OsStr::from_bytes(rel)),
    }
}

/// What a rule folder resolves to, when that is another path (it is a
/// link, or a folder on its way is): shown by `check` and `status`.
pub fn resolved_dir(dir: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(dir).ok().filter(|real| real != dir)
}

/// Whether `path`, below rule `rule`'s folder but through links, is
/// reached through folder links into the rule's allowed places only: such
/// a path is walked like the rest of the rule (see `allow_outside`).
pub fn reaches(rules: &RuleSet, rule: usize, path: &Path) -> bool {
    let r = rules.get(rule);
    let Ok(rel) = path.strip_prefix(&r.dir) else {
        return false;
    };
    if r.allow_outside.is_empty() {
        return false;
    }
    let roots = Roots::new(rules);
    let mut at = r.dir.clone();
    let mut parts = rel.components().peekable();
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            break;
        }
        at.push(part);
        if !std::fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink()) {
            continue;
        }
        match resolve::resolve(&roots, rule, &roots.real_of(&at)) {
            resolve::Resolved::At {
                real,
                what: resolve::What::Folder,
                allowed: true,
            } if roots.take_extra(&at, &real) => {}
            _ => return false,
        }
    }
    true
}
