//! The end of a pass, with the store at hand: each changed link's URLs
//! become owed (for a folder link, the URL of every recorded file and link
//! below the folder it led to and now leads to), with the URLs of their
//! own aliases, in the same change set as the link's new row. Loops found
//! are reported here, once: their rows say so from then on.

use std::path::PathBuf;

use super::alias::{self, View};
use super::collect::owe;
use crate::rules::RuleSet;
use crate::scan::{Detected, ScanPlan};
use crate::state::links::{Kind, LinkRow};
use crate::state::{FileIndex, Store};

pub fn settle(
    store: Option<&Store>,
    rules: &RuleSet,
    plan: &ScanPlan,
    index: &FileIndex,
    detected: &mut Detected,
) -> anyhow::Result<()> {
    super::collect::expand(detected, rules, plan, index);
    for (path, target) in std::mem::take(&mut detected.links.loops) {
        match target.as_os_str().is_empty() {
            true => {
                tracing::warn!(link = %path.display(), "link leads through more than {} links in a row (a loop?); skipped", super::MAX_HOPS)
            }
            false => {
                tracing::warn!(link = %path.display(), target = %target.display(), "link is part of a cycle of folder links (or leads into a place walked already); skipped")
            }
        }
    }
    let changes = std::mem::take(&mut detected.links.changed);
    let added: Vec<LinkRow> = changes
        .iter()
        .filter_map(|c| {
            c.now.as_ref().map(|(kind, target)| LinkRow {
                path: c.path.clone(),
                kind: *kind,
                target: target.clone(),
            })
        })
        .collect();
    let view = View {
        index: &index.links,
        extra: &added,
    };
    for change in changes {
        let mut seeds = vec![change.path.clone()];
        for (kind, target) in change.was.iter().chain(change.now.iter()) {
            if *kind != Kind::Folder {
                continue;
            }
            let Some(store) = store else { continue };
            for below in store.paths_below(target)? {
                if let Ok(rel) = below.strip_prefix(target) {
                    seeds.push(change.path.join(rel));
                }
            }
        }
        seeds.sort();
        seeds.dedup();
        let mut paths: Vec<PathBuf> = Vec::new();
        for seed in seeds {
            let (found, stopped) = alias::aliases(&seed, &view);
            if stopped {
                tracing::warn!(path = %seed.display(), limit = alias::MAX_ALIASES, "too many links lead here; only the first aliases are invalidated");
            }
            paths.push(seed);
            paths.extend(found);
        }
        paths.sort();
        paths.dedup();
        tracing::debug!(link = %change.path.display(), was = ?change.was, now = ?change.now, urls_of = paths.len(), "link changed");
        owe(detected, rules, plan, &paths);
        match change.now {
            Some((kind, target)) => detected.changes.links.upserts.push(LinkRow {
                path: change.path,
                kind,
                target,
            }),
            None => detected.changes.links.removals.push(change.path),
        }
    }
    Ok(())
}
