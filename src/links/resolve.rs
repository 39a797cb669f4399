//! Follows one symbolic link the way the kernel would, one path component
//! at a time, without ever looking at anything outside the rule folders
//! and the rule's allowed places: the moment the path leaves them, the
//! rest is worked out on paper and the link is reported as leading
//! outside. Folders above a rule folder are passed through without a
//! look (their real path is known). At most [`MAX_HOPS`] links are
//! followed in a row; more is a loop.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::at::{self, Entry};
use super::{Place, Roots, MAX_HOPS};
use crate::state::Stat;

/// Where a link leads.
#[derive(Debug)]
pub enum Resolved {
    /// Something is there, in a rule folder or (`allowed`) in one of the
    /// rule's allowed places.
    At {
        real: PathBuf,
        what: What,
        allowed: bool,
    },
    /// Nothing is there; `real` is where it would be.
    Missing { real: PathBuf, allowed: bool },
    /// Outside every rule folder and allowed place: not looked at.
    Outside { real: PathBuf },
    /// More than [`MAX_HOPS`] links in a row.
    Loop,
    /// A folder on the way could not be read.
    Failed(io::Error),
}

#[derive(Debug)]
pub enum What {
    /// A regular file, with its stat data when it was at hand.
    File(Option<Stat>),
    Folder,
    /// A FIFO, socket or device.
    Other,
}

/// One part of a path still to be followed.
enum Part {
    Root,
    Up,
    Name(OsString),
}

fn parts(text: &Path, into: &mut Vec<Part>) {
    let bytes = text.as_os_str().as_bytes();
    if !bytes.is_empty() && bytes != b"." && bytes != b".." && !bytes.contains(&b'/') {
        // Most links: a name beside them.
        into.push(Part::Name(text.as_os_str().to_os_string()));
        return;
    }
    // A stack: the next part to follow is the last one.
    let mut new: Vec<Part> = Vec::new();
    for c in text.components() {
        match c {
            Component::RootDir | Component::Prefix(_) => new.push(Part::Root),
            Component::CurDir => {}
            Component::ParentDir => new.push(Part::Up),
            Component::Normal(name) => new.push(Part::Name(name.to_os_string())),
        }
    }
    into.extend(new.into_iter().rev());
}

/// The path `at` + the parts left, worked out without looking.
fn on_paper(mut at: PathBuf, mut pending: Vec<Part>) -> PathBuf {
    while let Some(part) = pending.pop() {
        match part {
            Part::Root => at = PathBuf::from("/"),
            Part::Up => {
                at.pop();
            }
            Part::Name(name) => at.push(name),
        }
    }
    at
}

/// What `name` in the real folder `at` is. Names beside the link are
/// looked at through a descriptor of its folder (see [`at`]).
fn look(at: &Path, name: &OsStr, home: &Path) -> io::Result<Entry> {
    if same(at, home) {
        return at::look(at, name);
    }
    let meta = std::fs::symlink_metadata(at.join(name))?;
    let kind = meta.file_type();
    Ok(if kind.is_symlink() {
        Entry::Link
    } else if kind.is_dir() {
        Entry::Folder
    } else if kind.is_file() {
        Entry::File(Some(Stat::of(&meta)))
    } else {
        Entry::Other
    })
}

fn read_link(at: &Path, name: &OsStr, home: &Path) -> io::Result<PathBuf> {
    match same(at, home) {
        true => at::read_link(at, name),
        false => std::fs::read_link(at.join(name)),
    }
}

/// `a == b` for the paths compared here (real, normalised), as bytes:
/// `Path`'s `==` goes component by component, and this runs for every link.
fn same(a: &Path, b: &Path) -> bool {
    a.as_os_str().as_bytes() == b.as_os_str().as_bytes()
}

/// Follows the link at `link` (its real path: the folder holding it is a
/// real folder) for a link of rule `rule`.
pub fn resolve(roots: &Roots, rule: usize, link: &Path) -> Resolved {
    let (Some(parent), Some(name)) = (link.parent(), link.file_name()) else {
        return Resolved::Failed(io::Error::new(io::ErrorKind::InvalidInput, "no folder"));
    };
    let text = match read_link(parent, name, parent) {
        Ok(text) => text,
        Err(e) => return Resolved::Failed(e),
    };
    if let Some(resolved) = beside(roots, rule, parent, &text) {
        return resolved;
    }
    let mut at = parent.to_path_buf();
    let mut pending = Vec::new();
    parts(&text, &mut pending);
    let mut hops = 1;
    // What the last looked-at component was (`at` is a folder otherwise).
    let mut file: Option<Entry> = None;
    while let Some(part) = pending.pop() {
        if file.is_some() {
            // A path going on below a file: nothing is there.
            pending.push(part);
            let real = on_paper(at, pending);
            let allowed = roots.place(&real, rule) == Place::Allowed;
            return Resolved::Missing { real, allowed };
        }
        let name = match part {
            Part::Root => {
                at = PathBuf::from("/");
                continue;
            }
            Part::Up => {
                at.pop();
                continue;
            }
            Part::Name(name) => name,
        };
        let next = at.join(&name);
        let place = roots.place(&next, rule);
        match place {
            Place::Outside => {
                return Resolved::Outside {
                    real: on_paper(next, pending),
                }
            }
            Place::Above => {
                at = next;
                continue;
            }
            Place::Inside | Place::Allowed => {}
        }
        let entry = match look(&at, &name, parent) {
            Ok(entry) => entry,
            Err(e) if missing(&e) => {
                return Resolved::Missing {
                    real: on_paper(next, pending),
                    allowed: place == Place::Allowed,
                }
            }
            Err(e) => return Resolved::Failed(e),
        };
        match entry {
            Entry::Link => {
                hops += 1;
                if hops > MAX_HOPS {
                    return Resolved::Loop;
                }
                match read_link(&at, &name, parent) {
                    Ok(text) => parts(&text, &mut pending),
                    Err(e) => return Resolved::Failed(e),
                }
                continue;
            }
            Entry::Folder => {}
            other => file = Some(other),
        }
        at = next;
    }
    let place = roots.place(&at, rule);
    if !matches!(place, Place::Inside | Place::Allowed) {
        // A folder above the rule folders (`up -> ../..`) holds more than
        // them: outside.
        return Resolved::Outside { real: at };
    }
    let what = match file {
        None => What::Folder,
        Some(Entry::File(stat)) => What::File(stat),
        Some(_) => What::Other,
    };
    Resolved::At {
        real: at,
        what,
        allowed: place == Place::Allowed,
    }
}

/// [`resolve`] for the link text `text` found in the real folder `parent`
/// when it is a name beside the link that is no link itself: most links
/// of an icon theme. `None`: follow it the long way.
fn beside(roots: &Roots, rule: usize, parent: &Path, text: &Path) -> Option<Resolved> {
    let bytes = text.as_os_str().as_bytes();
    if bytes.is_empty() || bytes == b"." || bytes == b".." || bytes.contains(&b'/') {
        return None;
    }
    let real = parent.join(text);
    let allowed = match roots.place(&real, rule) {
        Place::Inside => false,
        Place::Allowed => true,
        Place::Above | Place::Outside => return None,
    };
    let what = match look(parent, text.as_os_str(), parent) {
        Ok(Entry::File(stat)) => What::File(stat),
        Ok(Entry::Folder) => What::Folder,
        Ok(Entry::Other) => What::Other,
        Ok(Entry::Link) => return None,
        Err(e) if missing(&e) => return Some(Resolved::Missing { real, allowed }),
        Err(e) => return Some(Resolved::Failed(e)),
    };
    Some(Resolved::At {
        real,
        what,
        allowed,
    })
}

fn missing(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RuleConfig;
    use crate::rules::RuleSet;
    use std::os::unix::fs::symlink;

    fn rules(dir: &Path, allowed: Vec<PathBuf>) -> RuleSet {
        RuleSet::new(&[RuleConfig {
            dir: dir.to_path_buf(),
            url: "https://a.com".into(),
            also: vec![],
            include: None,
            exclude: vec![],
            allow_outside: allowed,
            key: None,
            account: None,
            token: None,
        }])
        .unwrap()
    }

    #[test]
    fn follows_chains_and_stops_at_the_edge() {
        let tmp = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(tmp.path()).unwrap();
        let m = root.join("m");
        std::fs::create_dir_all(m.join("a/b")).unwrap();
        std::fs::create_dir_all(root.join("out")).unwrap();
        std::fs::write(m.join("a/b/x.svg"), b"x").unwrap();
        symlink("b/x.svg", m.join("a/one.svg")).unwrap();
        symlink("../one.svg", m.join("a/b/two.svg")).unwrap();
        symlink("../out/secret", m.join("leak")).unwrap();
        symlink("loop2", m.join("loop1")).unwrap();
        symlink("loop1", m.join("loop2")).unwrap();
        symlink("a/b/../nothing.svg", m.join("dangling")).unwrap();
        symlink("..", m.join("up")).unwrap();
        let set = rules(&m, vec![]);
        let roots = Roots::new(&set);
        match resolve(&roots, 0, &m.join("a/b/two.svg")) {
            Resolved::At {
                real,
                what: What::File(_),
                allowed: false,
            } => assert_eq!(real, m.join("a/b/x.svg")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            resolve(&roots, 0, &m.join("leak")),
            Resolved::Outside { real } if real == root.join("out/secret")
        ));
        assert!(matches!(
            resolve(&roots, 0, &m.join("loop1")),
            Resolved::Loop
        ));
        assert!(matches!(
            resolve(&roots, 0, &m.join("dangling")),
            Resolved::Missing { real, .. } if real == m.join("a/nothing.svg")
        ));
        assert!(matches!(
            resolve(&roots, 0, &m.join("up")),
            Resolved::Outside { .. }
        ));
        let allowed = rules(&m, vec![root.join("out")]);
        assert!(matches!(
            resolve(&Roots::new(&allowed), 0, &m.join("leak")),
            Resolved::Missing { allowed: true, .. }
        ));
    }
}
