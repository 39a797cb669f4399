//! What a scan tells its caller: the `--json` object (one per run, on
//! stdout) and the human summary. Paths are shown losslessly
//! ([`crate::display::show_path`]). Both list what changed, not every
//! file: the output grows with the change, not with the tree
//! (`--json --all-paths` adds the scanned and unchanged lists).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::commands::Output;

/// Paths of each kind the summary shows before "… and N more" (all with `-v`).
const SHOWN: usize = 20;

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ScanReport {
    /// Only with `--all-paths`: every file looked at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scanned: Option<Vec<String>>,
    /// Only with `--all-paths`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unchanged: Option<Vec<String>>,
    pub touched: Vec<String>,
    pub changed: Vec<String>,
    pub new: Vec<String>,
    pub deleted: Vec<String>,
    /// Assets Optimole accepted during this run.
    pub invalidated: Vec<String>,
    /// HTTP requests sent to Optimole, retries included.
    pub requests: u32,
    pub token: Option<String>,
    /// Assets still owed after this run.
    pub pending: Vec<String>,
    /// Assets Optimole refused by name (this run or earlier), kept until
    /// `invalidate --refused` sends them again.
    pub refused: Vec<String>,
    pub dry_run: bool,
    /// Whether any rule folder was recorded without invalidating (its first
    /// scan, or `--baseline`).
    pub baseline: bool,
    /// With `--dry-run`: what a real run would send.
    pub would_invalidate: Vec<String>,
    pub counts: Counts,
    /// What went wrong; non-empty means exit code 1.
    pub errors: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Counts {
    pub scanned: usize,
    pub unchanged: usize,
    pub touched: usize,
    pub changed: usize,
    pub new: usize,
    pub deleted: usize,
    pub invalidated: usize,
    pub pending: usize,
    pub refused: usize,
}

impl ScanReport {
    /// The human summary, several short lines.
    pub fn human(&self, output: Output) -> String {
        let c = &self.counts;
        let mut out = format!(
            "scanned {} file(s): {} changed, {} new, {} deleted, {} touched, {} unchanged\n",
            c.scanned, c.changed, c.new, c.deleted, c.touched, c.unchanged
        );
        let shown = match output {
            Output::Verbose => usize::MAX,
            _ => SHOWN,
        };
        for (kind, paths) in [
            ("changed", &self.changed),
            ("new", &self.new),
            ("deleted", &self.deleted),
        ] {
            for path in paths.iter().take(shown) {
                let _ = writeln!(out, "  {kind:<8} {}", crate::display::one_line(path));
            }
            if paths.len() > shown {
                let _ = writeln!(
                    out,
                    "  … and {} more {kind} (`-v` lists them all)",
                    paths.len() - shown
                );
            }
        }
        if self.dry_run {
            let _ = writeln!(
                out,
                "dry run: would invalidate {} asset(s); nothing was sent or recorded",
                self.would_invalidate.len()
            );
            for asset in &self.would_invalidate {
                let _ = writeln!(out, "  {asset}");
            }
            return out;
        }
        if self.baseline {
            out.push_str("baseline: file hashes recorded, nothing invalidated for them\n");
        }
        let _ = writeln!(
            out,
            "invalidated {} asset(s); {} API request(s); {} asset(s) still owed",
            c.invalidated, self.requests, c.pending
        );
        if !self.refused.is_empty() {
            let _ = writeln!(
                out,
                "{} asset(s) refused by optimole (see `optiwatch status`; re-send with `optiwatch invalidate --refused`)",
                self.refused.len()
            );
        }
        if let Some(token) = &self.token {
            let _ = writeln!(out, "cache token: {token}");
        }
        for error in &self.errors {
            let _ = writeln!(out, "error: {error}");
        }
        out
    }
}
