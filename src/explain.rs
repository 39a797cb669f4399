//! `optiwatch urls`: the URLs each path maps to and the rule that matched,
//! or why none did. The first thing to run when a rule seems wrong; the
//! path does not need to exist.

use std::ffi::OsString;
use std::path::PathBuf;

use serde::Serialize;

use crate::report::show_path;
use crate::rules::{RuleSet, Verdict, DEFAULT_INCLUDE};

#[derive(Debug, Serialize)]
pub struct Explanation {
    pub path: String,
    /// 1-based position of the rule among the config's `[[rules]]`.
    pub rule: Option<usize>,
    pub dir: Option<String>,
    pub urls: Vec<String>,
    /// Why the path maps to nothing.
    pub reason: Option<String>,
}

pub fn explain(rules: &RuleSet, paths: &[OsString]) -> anyhow::Result<Vec<Explanation>> {
    let cwd = std::env::current_dir()?;
    let mut out = Vec::with_capacity(paths.len());
    for arg in paths {
        // `..`, `.` and links resolved, from any working directory.
        let path: PathBuf = crate::paths::resolve(&cwd, arg, rules);
        let verdict = rules.verdict(&path);
        let rule = match verdict {
            Verdict::Outside => None,
            Verdict::NotIncluded { rule }
            | Verdict::Excluded { rule }
            | Verdict::Temporary { rule }
            | Verdict::Mapped { rule } => Some(rule),
        };
        let urls = match verdict {
            Verdict::Mapped { rule } => {
                let r = rules.get(rule);
                r.urls(path.strip_prefix(&r.dir).unwrap_or(&path))
            }
            _ => Vec::new(),
        };
        out.push(Explanation {
            path: show_path(&path),
            rule: rule.map(|r| r + 1),
            dir: rule.map(|r| show_path(&rules.get(r).dir)),
            reason: (urls.is_empty()).then(|| why_not(rules, &verdict)),
            urls,
        });
    }
    Ok(out)
}

/// A sentence saying why a path maps to no URL.
pub fn why_not(rules: &RuleSet, verdict: &Verdict) -> String {
    match verdict {
        Verdict::Outside => format!(
            "no rule covers it; rule folders are: {}",
            rules
                .rules()
                .iter()
                .map(|r| show_path(&r.dir))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Verdict::NotIncluded { rule } => format!(
            "rule {} ({}) does not include it: it matches no `include` pattern{}",
            rule + 1,
            show_path(&rules.get(*rule).dir),
            if rules.get(*rule).default_include {
                format!(" (default: {})", DEFAULT_INCLUDE.join(" "))
            } else {
                String::new()
            }
        ),
        Verdict::Excluded { rule } => format!(
            "rule {} ({}) excludes it: it matches an `exclude` pattern",
            rule + 1,
            show_path(&rules.get(*rule).dir)
        ),
        Verdict::Temporary { rule } => format!(
            "rule {} ({}) skips it: its name is a temporary file's (.*.tmp, rsync's .name.XXXXXX, name~, .#name)",
            rule + 1,
            show_path(&rules.get(*rule).dir)
        ),
        Verdict::Mapped { .. } => "it maps to URLs".into(),
    }
}

pub fn human(explanations: &[Explanation]) -> String {
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
