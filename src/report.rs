//! What a scan tells its caller: the `--json` object (one per run, on
//! stdout) and the human summary. Paths are shown losslessly: valid UTF-8
//! as is, any other byte as `\xNN`.

use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::scan::Tally;

#[derive(Debug, Default, Serialize)]
pub struct ScanReport {
    pub scanned: Vec<String>,
    pub unchanged: Vec<String>,
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

#[derive(Debug, Default, Serialize)]
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

/// Shows a path losslessly in text: valid UTF-8 as is, other bytes `\xNN`.
pub fn show_path(path: &Path) -> String {
    let mut out = String::new();
    for chunk in path.as_os_str().as_bytes().utf8_chunks() {
        out.push_str(chunk.valid());
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02X}");
        }
    }
    out
}

pub fn show_paths(tally: &Tally) -> Vec<String> {
    tally.paths.iter().map(|p: &PathBuf| show_path(p)).collect()
}

impl ScanReport {
    /// The human summary, several short lines.
    pub fn human(&self) -> String {
        let c = &self.counts;
        let mut out = format!(
            "scanned {} file(s): {} changed, {} new, {} deleted, {} touched, {} unchanged\n",
            c.scanned, c.changed, c.new, c.deleted, c.touched, c.unchanged
        );
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn non_utf8_is_escaped_losslessly() {
        let path = Path::new(OsStr::from_bytes(b"/m/a\xffb.jpg"));
        assert_eq!(show_path(path), "/m/a\\xFFb.jpg");
    }
}
