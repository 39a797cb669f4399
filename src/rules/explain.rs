//! Why a path maps to no URL, in words: what `urls` explains and what
//! `invalidate` says about a file it cannot map.

use super::{RuleSet, Verdict, DEFAULT_INCLUDE};
use crate::display::show_path;

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
