//! Paths as users type them (`urls`, `invalidate`): relative to any
//! working directory, with `.`, `..` and links on the way. Each is
//! resolved the way the kernel would and then put under the rule folder's
//! configured path, which is how files are recorded and mapped to URLs
//! (a rule folder may itself be reached through links: `current ->
//! releases/42`, `dir = "../../site/uploads"`). The last component is not
//! followed: a link's own URL is asked for, not its target's. A path that
//! exists nowhere is worked out on paper.

use std::ffi::OsStr;
use std::path::{Component, Path, PathBuf};

use crate::links::Roots;
use crate::rules::RuleSet;

/// The recorded form of the path `arg` given in `cwd`.
pub fn resolve(cwd: &Path, arg: &OsStr, rules: &RuleSet) -> PathBuf {
    let joined = cwd.join(arg);
    let real = match joined.components().next_back() {
        Some(Component::Normal(name)) => {
            let parent = joined.parent().unwrap_or(Path::new("/"));
            real_path(parent).join(name)
        }
        _ => real_path(&joined),
    };
    // As typed (`.` and `..` taken on paper), when that names the same
    // place: a path through a link inside a rule folder (`48x48@2x/...`)
    // keeps the URL it was asked for.
    let lexical = on_paper(&joined);
    let same = lexical.file_name() == real.file_name()
        && lexical.parent().map(real_path).as_deref() == real.parent();
    if let (true, Some(recorded)) = (same, on_paper_in_rule(&lexical, rules)) {
        return recorded;
    }
    if let Some(recorded) = Roots::new(rules).recorded(&real) {
        return recorded;
    }
    // Not (or no longer) on disk: compare on paper.
    on_paper_in_rule(&lexical, rules).unwrap_or(lexical)
}

/// `lexical` under the rule folder that holds it on paper (each folder
/// worked out the same way), in the folder's configured form.
fn on_paper_in_rule(lexical: &Path, rules: &RuleSet) -> Option<PathBuf> {
    let (r, rel) = rules
        .rules()
        .iter()
        .filter_map(|r| {
            let rel = lexical.strip_prefix(on_paper(&r.dir)).ok()?;
            Some((r, rel.to_path_buf()))
        })
        .max_by_key(|(r, _)| r.dir.components().count())?;
    Some(match rel.as_os_str().is_empty() {
        true => r.dir.clone(),
        false => r.dir.join(rel),
    })
}

/// The real path of the longest part of `path` that exists, with the rest
/// added on paper.
fn real_path(path: &Path) -> PathBuf {
    let parts: Vec<Component<'_>> = path.components().collect();
    for keep in (1..=parts.len()).rev() {
        let prefix: PathBuf = parts[..keep].iter().collect();
        if let Ok(real) = std::fs::canonicalize(&prefix) {
            let mut out = real;
            for part in &parts[keep..] {
                step(&mut out, part);
            }
            return out;
        }
    }
    on_paper(path)
}

/// `.` dropped and `..` taken back, without looking at the disk.
pub fn on_paper(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        step(&mut out, &part);
    }
    out
}

fn step(out: &mut PathBuf, part: &Component<'_>) {
    match part {
        Component::CurDir => {}
        Component::ParentDir => {
            out.pop();
        }
        other => out.push(other.as_os_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RuleConfig;
    use std::os::unix::fs::symlink;

    #[test]
    fn dot_dot_links_and_missing_paths_map_to_the_configured_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(tmp.path()).unwrap();
        std::fs::create_dir_all(root.join("releases/2/up/sub")).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        symlink("releases/2", root.join("current")).unwrap();
        std::fs::write(root.join("releases/2/up/a.jpg"), b"a").unwrap();
        symlink("a.jpg", root.join("releases/2/up/alias.jpg")).unwrap();
        let dir = root.join("etc/../current/up");
        let rules = RuleSet::new(&[RuleConfig {
            dir: dir.clone(),
            url: "https://a.com".into(),
            also: vec![],
            include: None,
            exclude: vec![],
            allow_outside: vec![],
            key: None,
            account: None,
            token: None,
        }])
        .unwrap();
        symlink("sub", root.join("releases/2/up/sub2")).unwrap();
        let cwd = root.join("releases/2/up/sub");
        let at = |arg: &str| resolve(&cwd, OsStr::new(arg), &rules);
        assert_eq!(at("../a.jpg"), dir.join("a.jpg"));
        assert_eq!(
            at("./../alias.jpg"),
            dir.join("alias.jpg"),
            "the link itself"
        );
        assert_eq!(
            at(root.join("current/up/gone/x.jpg").to_str().unwrap()),
            dir.join("gone/x.jpg")
        );
        assert_eq!(at("../nowhere/../b.jpg"), dir.join("b.jpg"));
        // Through a folder link inside the rule folder: its own URL.
        let typed = root.join("current/up/sub2/c.jpg");
        assert_eq!(at(typed.to_str().unwrap()), dir.join("sub2/c.jpg"));
        // `..` after a link goes where the kernel goes.
        assert_eq!(at("../sub2/../a.jpg"), dir.join("a.jpg"));
    }
}
