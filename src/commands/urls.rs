//! `optiwatch urls`: the URLs each path maps to and the rule that matched,
//! or why none did. The first thing to run when a rule seems wrong; the
//! path does not need to exist. The URLs of a file's recorded aliases
//! (links leading to it, as the last scan saw them) are listed too: the web
//! server serves the same bytes there.

use std::ffi::OsString;

use anyhow::Context;
use clap::Args;
use serde::Serialize;

use super::JsonArg;
use crate::config::Config;
use crate::display::show_path;
use crate::exit_codes::ExitCode;
use crate::rules::explain::why_not;
use crate::rules::{RuleSet, Verdict};
use crate::state::Store;

#[derive(Debug, Args)]
pub struct UrlsArgs {
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<OsString>,
    #[command(flatten)]
    pub json: JsonArg,
}

pub fn run(config: &Config, args: UrlsArgs) -> anyhow::Result<ExitCode> {
    let rules = RuleSet::new(&config.rules)?;
    let session = crate::links::alias::recorded(config);
    let found = explain(
        &rules,
        session.as_ref().and_then(|s| s.store()),
        &args.paths,
    )?;
    let unmapped: Vec<String> = found
        .iter()
        .filter(|e| e.urls.is_empty())
        .map(|e| e.path.clone())
        .collect();
    let body = UrlsReport { paths: &found };
    super::emit(args.json.json, &body, || human(&found), &unmapped)
}

/// The `--json` object: one explanation per path asked, in order.
#[derive(Serialize)]
struct UrlsReport<'a> {
    paths: &'a [Explanation],
}

#[derive(Debug, Serialize)]
pub struct Explanation {
    pub path: String,
    /// 1-based position of the rule among the config's `[[rules]]`.
    pub rule: Option<usize>,
    pub dir: Option<String>,
    /// Its own URLs first, then those of its aliases.
    pub urls: Vec<String>,
    /// Recorded links serving the same bytes (see `links::alias::served_with`).
    pub aliases: Vec<String>,
    /// Why the path maps to nothing.
    pub reason: Option<String>,
}

fn explain(
    rules: &RuleSet,
    store: Option<&Store>,
    paths: &[OsString],
) -> anyhow::Result<Vec<Explanation>> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let mut out = Vec::with_capacity(paths.len());
    for arg in paths {
        // `..`, `.` and links resolved, from any working directory.
        let path = crate::paths::resolve(&cwd, arg, rules);
        let verdict = rules.verdict(&path);
        let rule = match verdict {
            Verdict::Outside => None,
            Verdict::NotIncluded { rule }
            | Verdict::Excluded { rule }
            | Verdict::Temporary { rule }
            | Verdict::Mapped { rule } => Some(rule),
        };
        let mut aliases = Vec::new();
        let urls = match verdict {
            Verdict::Mapped { rule } => {
                let r = rules.get(rule);
                let mut urls = r.urls(path.strip_prefix(&r.dir).unwrap_or(&path));
                let served = match store {
                    Some(store) => crate::links::alias::served_with(store, &path)?,
                    None => Vec::new(),
                };
                for alias in served {
                    if let Verdict::Mapped { rule } = rules.verdict(&alias) {
                        let r = rules.get(rule);
                        urls.extend(r.urls(alias.strip_prefix(&r.dir).unwrap_or(&alias)));
                        aliases.push(show_path(&alias));
                    }
                }
                urls
            }
            _ => Vec::new(),
        };
        out.push(Explanation {
            path: show_path(&path),
            rule: rule.map(|r| r + 1),
            dir: rule.map(|r| show_path(&rules.get(r).dir)),
            reason: (urls.is_empty()).then(|| why_not(rules, &verdict)),
            urls,
            aliases,
        });
    }
    Ok(out)
}

fn human(explanations: &[Explanation]) -> String {
    let mut out = String::new();
    for e in explanations {
        match (&e.rule, e.urls.is_empty()) {
            (Some(rule), false) => {
                out.push_str(&format!(
                    "{}\n  rule {rule} ({})\n",
                    e.path,
                    e.dir.as_deref().unwrap_or("")
                ));
                for url in &e.urls {
                    out.push_str(&format!("  -> {url}\n"));
                }
                for alias in &e.aliases {
                    out.push_str(&format!("  alias {alias}\n"));
                }
            }
            _ => out.push_str(&format!(
                "{}\n  no URL: {}\n",
                e.path,
                e.reason.as_deref().unwrap_or("")
            )),
        }
    }
    out
}
