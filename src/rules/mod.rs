//! Rules: which files optiwatch cares about and the public URLs they are
//! served under.
//!
//! A rule owns a folder (`dir`). When rule folders nest, the deepest one owns
//! a file, so a file always belongs to exactly one rule and is never counted
//! twice. A file's URLs are the rule's `url` and every `also` prefix, each
//! joined with the percent-encoded path relative to `dir`.

pub mod encode;
pub mod explain;

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::accounts::AccountId;
use crate::config::RuleConfig;
use crate::state::{Owed, Reason};

/// Image types a web site serves, used when a rule has no `include`.
pub const DEFAULT_INCLUDE: &[&str] = &[
    "*.jpg", "*.jpeg", "*.png", "*.gif", "*.webp", "*.avif", "*.svg", "*.ico", "*.bmp", "*.tif",
    "*.tiff",
];

#[derive(Debug)]
pub struct Rule {
    pub dir: PathBuf,
    /// Places outside the rule folders links may be read from.
    pub allow_outside: Vec<PathBuf>,
    /// No `include` in the config: the default image extensions apply.
    pub default_include: bool,
    /// The Optimole account its assets are owed to.
    pub account: AccountId,
    /// `url` first, then every `also` prefix; none ends with `/`.
    pub prefixes: Vec<String>,
    include: Filter,
    exclude: Filter,
}

/// A compiled include or exclude list. Lists made only of `*.ext` patterns
/// (the default, and most configs) are matched by a lowercase extension
/// lookup: case-insensitive globs compile to regexes, which cost more per
/// file than a whole stat call.
#[derive(Debug)]
enum Filter {
    Extensions(Vec<Box<[u8]>>),
    Globs(GlobSet),
}

impl Filter {
    fn new(patterns: &[&str]) -> anyhow::Result<Filter> {
        let extensions: Option<Vec<Box<[u8]>>> = patterns
            .iter()
            .map(|p| {
                let ext = p.strip_prefix("*.")?;
                ext.bytes()
                    .all(|b| b.is_ascii_alphanumeric())
                    .then(|| ext.to_ascii_lowercase().into_bytes().into_boxed_slice())
            })
            .collect();
        match extensions {
            Some(exts) => Ok(Filter::Extensions(exts)),
            None => Ok(Filter::Globs(globs(patterns)?)),
        }
    }

    fn is_match(&self, rel: &Path) -> bool {
        match self {
            Filter::Globs(set) => set.is_match(rel),
            Filter::Extensions(exts) => {
                let name = rel.file_name().map_or(&[][..], |n| n.as_bytes());
                exts.iter().any(|ext| {
                    name.len() > ext.len()
                        && name[name.len() - ext.len() - 1] == b'.'
                        && name[name.len() - ext.len()..].eq_ignore_ascii_case(ext)
                })
            }
        }
    }
}

/// Why a path does or does not map to URLs; what `urls` explains to a user.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Inside no rule's folder.
    Outside,
    /// Inside rule `rule`'s folder but filtered out.
    NotIncluded {
        rule: usize,
    },
    Excluded {
        rule: usize,
    },
    /// An editor's or uploader's temporary file: never invalidated.
    Temporary {
        rule: usize,
    },
    Mapped {
        rule: usize,
    },
}

/// Names of files that exist only while something is being written: `.*.tmp`
/// (atomic saves), rsync's `.name.XXXXXX`, `name~` backups and `.#name`
/// editor locks. The final file arrives under its own name by a rename.
pub fn is_temporary(rel: &Path) -> bool {
    let Some(name) = rel.file_name().map(|n| n.as_bytes()) else {
        return false;
    };
    if name.ends_with(b"~") || name.starts_with(b".#") {
        return true;
    }
    if !name.starts_with(b".") {
        return false;
    }
    let suffix = match name.iter().rposition(|&b| b == b'.') {
        Some(dot) if dot > 0 => &name[dot + 1..],
        _ => return false,
    };
    suffix.eq_ignore_ascii_case(b"tmp")
        || (suffix.len() == 6 && suffix.iter().all(u8::is_ascii_alphanumeric))
}

#[derive(Debug)]
pub struct RuleSet {
    rules: Vec<Rule>,
    /// Rule numbers by folder (compared by components, as paths are), so
    /// finding a file's rule costs a lookup per folder above it, not one
    /// comparison per rule (hundreds of sites in one config).
    by_dir: std::collections::HashMap<PathBuf, usize>,
    /// The same folders by their bytes (foldhash): the walk asks for every
    /// file, and hashing a `Path` parses it into components at each level.
    by_bytes: hashbrown::HashMap<Vec<u8>, usize>,
}

impl RuleSet {
    pub fn new(configs: &[RuleConfig]) -> anyhow::Result<RuleSet> {
        let mut rules = Vec::with_capacity(configs.len());
        for cfg in configs {
            let include: Vec<&str> = match &cfg.include {
                Some(patterns) => patterns.iter().map(String::as_str).collect(),
                None => DEFAULT_INCLUDE.to_vec(),
            };
            let exclude: Vec<&str> = cfg.exclude.iter().map(String::as_str).collect();
            rules.push(Rule {
                dir: cfg.dir.clone(),
                allow_outside: cfg.allow_outside.clone(),
                default_include: cfg.include.is_none(),
                account: AccountId::of_rule(cfg),
                prefixes: std::iter::once(cfg.url.clone())
                    .chain(cfg.also.iter().cloned())
                    .collect(),
                include: Filter::new(&include)
                    .with_context(|| format!("rule for {}: include", cfg.dir.display()))?,
                exclude: Filter::new(&exclude)
                    .with_context(|| format!("rule for {}: exclude", cfg.dir.display()))?,
            });
        }
        // The last of equal folders wins, as it did when rules were searched
        // in order.
        let by_dir = rules
            .iter()
            .enumerate()
            .map(|(i, r)| (r.dir.clone(), i))
            .collect();
        let by_bytes = rules
            .iter()
            .enumerate()
            .map(|(i, r)| (r.dir.as_os_str().as_bytes().to_vec(), i))
            .collect();
        Ok(RuleSet {
            rules,
            by_dir,
            by_bytes,
        })
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn get(&self, index: usize) -> &Rule {
        &self.rules[index]
    }

    /// The rule whose folder holds `path` most closely, with `path` relative
    /// to that folder.
    pub fn owner<'p>(&self, path: &'p Path) -> Option<(usize, &'p Path)> {
        self.owner_by_bytes(path)
            .or_else(|| self.owner_by_components(path))
    }

    /// [`RuleSet::owner`] for a path spelled as the walk spells it (no `//`,
    /// `.` or trailing `/`): each folder above it is a prefix ending before
    /// a `/`, looked up by its bytes.
    fn owner_by_bytes<'p>(&self, path: &'p Path) -> Option<(usize, &'p Path)> {
        let bytes = path.as_os_str().as_bytes();
        if !is_plain(bytes) {
            return None;
        }
        let mut end = bytes.len();
        loop {
            if let Some(&i) = self.by_bytes.get(&bytes[..end]) {
                let rel = match bytes.get(end..) {
                    Some([b'/', rest @ ..]) => rest,
                    _ => &[],
                };
                return Some((i, Path::new(std::ffi::OsStr::from_bytes(rel))));
            }
            end = bytes[..end].iter().rposition(|&b| b == b'/')?;
            if end == 0 {
                // A rule on "/" itself: left to the component search.
                return None;
            }
        }
    }

    /// Any other spelling (and what the bytes did not find): by
    /// components, as `Path` compares.
    fn owner_by_components<'p>(&self, path: &'p Path) -> Option<(usize, &'p Path)> {
        // The deepest rule folder above `path` is the first one met going up.
        path.ancestors().find_map(|dir| {
            let i = *self.by_dir.get(dir)?;
            Some((i, path.strip_prefix(&self.rules[i].dir).ok()?))
        })
    }

    /// Decides what happens to the file at `path` (absolute).
    pub fn verdict(&self, path: &Path) -> Verdict {
        match self.owner(path) {
            None => Verdict::Outside,
            Some((rule, rel)) => self.rules[rule].verdict(rule, rel),
        }
    }

    /// Folders of other rules strictly inside rule `index`'s folder: a walk of
    /// `index` skips them because their own rule owns them.
    pub fn nested_dirs(&self, index: usize) -> Vec<PathBuf> {
        let dir = &self.rules[index].dir;
        self.rules
            .iter()
            .filter(|r| r.dir != *dir && r.dir.starts_with(dir))
            .map(|r| r.dir.clone())
            .collect()
    }
}

impl Rule {
    /// Include/exclude check on a path relative to this rule's folder.
    pub fn wants(&self, rel: &Path) -> bool {
        matches!(self.verdict(0, rel), Verdict::Mapped { .. })
    }

    fn verdict(&self, index: usize, rel: &Path) -> Verdict {
        if is_temporary(rel) {
            Verdict::Temporary { rule: index }
        } else if !self.include.is_match(rel) {
            Verdict::NotIncluded { rule: index }
        } else if self.exclude.is_match(rel) {
            Verdict::Excluded { rule: index }
        } else {
            Verdict::Mapped { rule: index }
        }
    }

    /// Every URL of the file at `path` (in this rule's folder), owed to
    /// this rule's account for `reason`.
    pub fn owed(&self, path: &Path, reason: Reason) -> Vec<Owed> {
        let shown = crate::display::show_path(path);
        self.urls(path.strip_prefix(&self.dir).unwrap_or(path))
            .into_iter()
            .map(|asset| Owed {
                asset,
                account: self.account.clone(),
                reason,
                path: Some(shown.clone()),
            })
            .collect()
    }

    /// Every URL the file at `rel` is served under.
    pub fn urls(&self, rel: &Path) -> Vec<String> {
        let encoded = encode::relative(rel);
        self.prefixes
            .iter()
            .map(|prefix| format!("{prefix}/{encoded}"))
            .collect()
    }
}

/// Compiles patterns case-insensitively (`.JPG` is as common as `.jpg`).
/// A pattern without `/` matches the file name at any depth, like
/// `.gitignore`; one with `/` matches the path relative to the rule folder.
fn globs(patterns: &[&str]) -> anyhow::Result<GlobSet> {
    let mut set = GlobSetBuilder::new();
    for pattern in patterns {
        let anchored = if pattern.contains('/') {
            pattern.trim_start_matches('/').to_string()
        } else {
            format!("**/{pattern}")
        };
        let glob = GlobBuilder::new(&anchored)
            .case_insensitive(true)
            .literal_separator(true)
            .build()
            .with_context(|| format!("bad pattern {pattern:?}"))?;
        set.add(glob);
    }
    Ok(set.build()?)
}

/// Whether `bytes` is an absolute path whose bytes are its components:
/// no `//`, no `.` or `..` component, no trailing `/`.
fn is_plain(bytes: &[u8]) -> bool {
    if bytes.len() < 2 || bytes[0] != b'/' || bytes.ends_with(b"/") {
        return false;
    }
    bytes[1..]
        .split(|&b| b == b'/')
        .all(|part| !matches!(part, b"" | b"." | b".."))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(dir: &str, url: &str) -> RuleConfig {
        RuleConfig {
            dir: dir.into(),
            url: url.into(),
            also: vec![],
            include: None,
            exclude: vec!["**/cache/**".into()],
            allow_outside: vec![],
            key: None,
            account: None,
            token: None,
        }
    }

    #[test]
    fn deepest_folder_owns_the_file() {
        let set = RuleSet::new(&[
            rule("/w/up", "https://a.com/up"),
            rule("/w/up/x", "https://cdn.a.com"),
        ])
        .unwrap();
        let (i, rel) = set.owner(Path::new("/w/up/x/1.jpg")).unwrap();
        assert_eq!((i, rel), (1, Path::new("1.jpg")));
        assert_eq!(set.get(i).urls(rel), vec!["https://cdn.a.com/1.jpg"]);
        assert_eq!(set.owner(Path::new("/w/upx/1.jpg")), None);
        assert_eq!(set.nested_dirs(0), vec![PathBuf::from("/w/up/x")]);
    }

    /// Many rules, and folders written with a trailing `/`: the deepest
    /// folder above a file still owns it.
    /// Paths spelled with `//`, `.`, `..` or a trailing `/` get the same
    /// answer as plain ones (by components, as `Path` compares).
    #[test]
    fn every_spelling_of_a_path_has_the_same_owner() {
        let set = RuleSet::new(&[
            rule("/srv/m", "https://a"),
            rule("/srv/m/shop", "https://b"),
        ])
        .unwrap();
        let owner = |p: &str| {
            set.owner(Path::new(p))
                .map(|(i, rel)| (i, rel.to_path_buf()))
        };
        let plain = Some((1, PathBuf::from("x/a.jpg")));
        assert_eq!(owner("/srv/m/shop/x/a.jpg"), plain);
        for odd in [
            "/srv/m//shop/x/a.jpg",
            "/srv/m/./shop/x/a.jpg",
            "/srv/m/shop/x/a.jpg/",
        ] {
            assert_eq!(owner(odd), plain, "{odd}");
        }
        assert_eq!(owner("/srv/m/shop"), Some((1, PathBuf::new())));
        assert_eq!(owner("/srv/m/b.jpg"), Some((0, PathBuf::from("b.jpg"))));
        assert_eq!(owner("/srv/mx/b.jpg"), None);
        assert_eq!(owner("/srv"), None);
        assert!(!is_plain(b"/a/../b") && !is_plain(b"a/b") && is_plain(b"/a/b"));
    }

    #[test]
    fn the_owner_among_hundreds_of_rules() {
        let mut rules = vec![
            rule("/w/up/", "https://a.com/up"),
            rule("/w/up/x", "https://b.com"),
        ];
        for n in 0..300 {
            rules.push(rule(&format!("/s/site-{n}"), "https://c.com"));
        }
        let set = RuleSet::new(&rules).unwrap();
        let owner = |p: &str| {
            set.owner(Path::new(p))
                .map(|(i, rel)| (i, rel.to_path_buf()))
        };
        assert_eq!(owner("/w/up/x/1.jpg"), Some((1, PathBuf::from("1.jpg"))));
        assert_eq!(owner("/w/up/a/b.jpg"), Some((0, PathBuf::from("a/b.jpg"))));
        assert_eq!(
            owner("/s/site-7/2020/a.jpg"),
            Some((9, PathBuf::from("2020/a.jpg")))
        );
        assert_eq!(
            owner("/s/site-70/a.jpg"),
            Some((72, PathBuf::from("a.jpg")))
        );
        assert_eq!(owner("/s/site-x/a.jpg"), None);
    }

    #[test]
    fn temporary_files_are_recognised() {
        for name in [
            ".a.jpg.tmp",
            ".a.jpg.Xa3b9z",
            "a.jpg~",
            ".#a.jpg",
            "d/.b.png.TMP",
        ] {
            assert!(is_temporary(Path::new(name)), "{name}");
        }
        for name in [
            "a.jpg",
            ".hidden.jpg",
            ".a.webp",
            "tmp.jpg",
            "a.tmp.jpg",
            ".a.jpeg",
        ] {
            assert!(!is_temporary(Path::new(name)), "{name}");
        }
        let set = RuleSet::new(&[RuleConfig {
            include: Some(vec!["*".into()]),
            ..rule("/w", "https://a.com")
        }])
        .unwrap();
        assert_eq!(
            set.verdict(Path::new("/w/.x.jpg.tmp")),
            Verdict::Temporary { rule: 0 }
        );
    }

    #[test]
    fn extension_lists_match_like_their_globs() {
        let fast = Filter::new(&["*.jpg", "*.png"]).unwrap();
        let slow = Filter::Globs(globs(&["*.jpg", "*.png"]).unwrap());
        for name in [
            "a.jpg",
            "b/c.JPG",
            ".jpg",
            "x.jpeg",
            "jpg",
            "a.png.txt",
            "d/.e.Png",
            "f.jpgx",
        ] {
            let rel = Path::new(name);
            assert_eq!(fast.is_match(rel), slow.is_match(rel), "{name}");
        }
    }

    #[test]
    fn filters_are_case_insensitive_and_anchored() {
        let set = RuleSet::new(&[rule("/w", "https://a.com")]).unwrap();
        assert_eq!(
            set.verdict(Path::new("/w/a/B.JPG")),
            Verdict::Mapped { rule: 0 }
        );
        assert_eq!(
            set.verdict(Path::new("/w/cache/b.jpg")),
            Verdict::Excluded { rule: 0 }
        );
        assert_eq!(
            set.verdict(Path::new("/w/readme.txt")),
            Verdict::NotIncluded { rule: 0 }
        );
    }
}
