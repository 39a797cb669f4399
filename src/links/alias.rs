//! Aliases: every path a web server serves a given path's bytes under.
//!
//! A link's recorded target is a real path, so the aliases of `p` are the
//! links whose target is `p`, and for each link whose target is a folder
//! above `p`, the same place seen through that link; then the aliases of
//! each of those, and so on. Links whose targets form a cycle would make
//! that endless; they are found by [`cycles`] and recorded as loops, and
//! [`MAX_DEPTH`] and [`MAX_ALIASES`] bound what is left.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::state::links::{Kind, LinkIndex, LinkRow};
use crate::state::Store;

/// Links followed one after another to reach an alias, at most (Linux
/// itself follows no more in one path).
pub const MAX_DEPTH: usize = super::MAX_HOPS;

/// Aliases of one path, at most: beyond this a tree of links is more a
/// trap than a site, and a warning says so.
pub const MAX_ALIASES: usize = 100_000;

/// Where aliases are looked up: the pass's index, plus rows this pass
/// added.
pub struct View<'a> {
    pub index: &'a LinkIndex,
    pub extra: &'a [LinkRow],
}

impl View<'_> {
    fn links_to(&self, target: &Path, out: &mut Vec<PathBuf>) {
        out.extend(
            self.index
                .links_to(target)
                .filter(|row| row.kind.aliases())
                .map(|row| row.path),
        );
        out.extend(
            self.extra
                .iter()
                .filter(|row| row.kind.aliases() && row.target == target)
                .map(|row| row.path.clone()),
        );
    }
}

/// Every alias of `seed` (not `seed` itself). The bool says the search
/// stopped at [`MAX_ALIASES`].
pub fn aliases(seed: &Path, view: &View<'_>) -> (Vec<PathBuf>, bool) {
    let mut out = Vec::new();
    let mut seen: HashSet<PathBuf> = HashSet::new();
    let mut queue = vec![(seed.to_path_buf(), 0usize)];
    let mut found = Vec::new();
    while let Some((path, depth)) = queue.pop() {
        if depth >= MAX_DEPTH {
            continue;
        }
        let mut above = Some(path.as_path());
        while let Some(target) = above {
            found.clear();
            view.links_to(target, &mut found);
            for link in found.drain(..) {
                let alias = match path.strip_prefix(target) {
                    Ok(rel) if !rel.as_os_str().is_empty() => link.join(rel),
                    _ => link,
                };
                if alias != seed && seen.insert(alias.clone()) {
                    if out.len() >= MAX_ALIASES {
                        return (out, true);
                    }
                    out.push(alias.clone());
                    queue.push((alias, depth + 1));
                }
            }
            above = target.parent();
        }
    }
    (out, false)
}

/// The store as the last scan left it, to find aliases in, read-only.
/// `None` when there is none or it cannot be read now (an older schema a
/// writing command upgrades, a lock): the paths' own URLs are still
/// right, so that is a warning, not an error.
pub fn recorded(config: &crate::config::Config) -> Option<crate::session::Session> {
    use crate::session::{Access, Session};
    match Session::open(config, Access::ReadOnly) {
        Ok(session) => Some(session),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "cannot read the recorded links; the URLs of links leading to these paths are left out");
            None
        }
    }
}

/// The other recorded paths a web server serves `path`'s bytes under, for
/// `urls` and `invalidate`: its aliases, and when `path` is itself a
/// recorded link to a file, that file and the file's aliases. Sorted, without
/// `path`; empty when nothing is recorded.
pub fn served_with(store: &Store, path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let index = store.load_links(None)?;
    let seed = match index.get(path) {
        Some(link) if link.kind == Kind::File => link.target.to_path_buf(),
        _ => path.to_path_buf(),
    };
    let view = View {
        index: &index,
        extra: &[],
    };
    let (mut found, _) = aliases(&seed, &view);
    found.push(seed);
    found.retain(|p| p != path);
    found.sort();
    found.dedup();
    Ok(found)
}

/// The folder links (path, target) that are part of a cycle: walking
/// into one of them leads, through the others, back into itself.
pub fn cycles(folders: &[(PathBuf, PathBuf)]) -> HashSet<PathBuf> {
    let mut order: Vec<usize> = (0..folders.len()).collect();
    order.sort_by(|a, b| folders[*a].0.cmp(&folders[*b].0));
    // Links met walking into link `n`: those whose path is below its
    // target.
    let edges = |n: usize| -> Vec<usize> {
        let target = &folders[n].1;
        let start = order.partition_point(|m| folders[*m].0 < *target);
        order[start..]
            .iter()
            .take_while(|m| folders[**m].0.starts_with(target))
            .copied()
            .collect()
    };
    strongly_connected(folders.len(), edges)
        .into_iter()
        .filter(|group| group.len() > 1 || edges(group[0]).contains(&group[0]))
        .flatten()
        .map(|n| folders[n].0.clone())
        .collect()
}

/// Tarjan's strongly connected components, without recursion (a deep
/// chain of links must not overflow the stack).
fn strongly_connected(n: usize, edges: impl Fn(usize) -> Vec<usize>) -> Vec<Vec<usize>> {
    let mut index = vec![usize::MAX; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut groups = Vec::new();
    let mut next = 0;
    for root in 0..n {
        if index[root] != usize::MAX {
            continue;
        }
        // (node, its edges, how many of them were followed)
        let mut work: Vec<(usize, Vec<usize>, usize)> = vec![(root, edges(root), 0)];
        index[root] = next;
        low[root] = next;
        next += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some((v, out, i)) = work.last_mut() {
            let v = *v;
            if let Some(&w) = out.get(*i) {
                *i += 1;
                if index[w] == usize::MAX {
                    index[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    work.push((w, edges(w), 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some((parent, _, _)) = work.last() {
                low[*parent] = low[*parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut group = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    group.push(w);
                    if w == v {
                        break;
                    }
                }
                groups.push(group);
            }
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(a: &str, b: &str) -> (PathBuf, PathBuf) {
        (a.into(), b.into())
    }

    #[test]
    fn finds_cycles_of_folder_links_only() {
        let folders = [
            pair("/m/a/x", "/m/b"),
            pair("/m/b/y", "/m/a"),
            pair("/m/c/self", "/m/c"),
            pair("/m/d/fine", "/m/e"),
            pair("/m/e2", "/m/d"),
        ];
        let mut found: Vec<PathBuf> = cycles(&folders).into_iter().collect();
        found.sort();
        assert_eq!(
            found,
            vec![
                PathBuf::from("/m/a/x"),
                PathBuf::from("/m/b/y"),
                PathBuf::from("/m/c/self")
            ]
        );
    }

    #[test]
    fn aliases_go_through_folder_links_and_chains() {
        use crate::state::links::Kind;
        let rows = [
            ("/m/16/apps/a.svg", Kind::File, "/m/16/apps/b.svg"),
            ("/m/16@2", Kind::Folder, "/m/16"),
            ("/m/16/cat", Kind::Folder, "/m/16/apps"),
            ("/e/16", Kind::Folder, "/m/16"),
            ("/m/out", Kind::Outside, "/m/16/apps/b.svg"),
        ];
        let extra: Vec<LinkRow> = rows
            .iter()
            .map(|(p, k, t)| LinkRow {
                path: p.into(),
                kind: *k,
                target: t.into(),
            })
            .collect();
        let index = LinkIndex::default();
        let view = View {
            index: &index,
            extra: &extra,
        };
        let (mut found, stopped) = aliases(Path::new("/m/16/apps/b.svg"), &view);
        found.sort();
        assert!(!stopped);
        // b.svg and a.svg, each under apps and cat, each under 16, 16@2
        // and /e/16: 12 paths, b.svg itself left out.
        assert_eq!(found.len(), 11, "{found:#?}");
        assert!(found.contains(&PathBuf::from("/e/16/cat/a.svg")));
        assert!(found.contains(&PathBuf::from("/m/16@2/apps/b.svg")));
    }
}
