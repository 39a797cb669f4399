//! Telling a damaged store from a foreign file. A store cut short (a full
//! disk during a copy, a restore that stopped half-way, `truncate`) still
//! starts like SQLite; calling it "not SQLite" would send the user looking
//! for the wrong file. A damaged store gets its own message: what is wrong,
//! how to recover, and what a fresh store costs.

use std::path::Path;

// Nothing here opens the store file: POSIX record locks belong to the
// process, and closing any descriptor of the file drops every lock SQLite
// holds on it through other connections of this process (the daemon has
// two). Another process could then take itself for the last user of the
// store, checkpoint and delete the write-ahead log under the daemon, and
// the daemon's later commits would be lost. So the checks use `stat` and
// the SQLite connection only.

/// Whether SQLite's error says the file is an SQLite database that is
/// damaged (as opposed to a foreign file).
pub(super) fn is_corrupt(err: &rusqlite::Error) -> bool {
    matches!(
        err.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt)
    )
}

/// Why an SQLite file is shorter than its own header says, if it is. Only
/// without a write-ahead log: pages a crashed checkpoint did not copy yet
/// are still in the log, and SQLite puts them back on open.
pub(super) fn cut_short(conn: &rusqlite::Connection, path: &Path) -> Option<String> {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
        return None;
    }
    let len = std::fs::metadata(path).ok()?.len();
    if len == 0 {
        return None;
    }
    // SQLite takes the page count from the header when the header says it
    // is valid, else from the file's size: like the header check itself.
    let pages: u64 = conn
        .query_row("PRAGMA page_count", [], |r| r.get::<_, i64>(0))
        .ok()
        .and_then(|n| u64::try_from(n).ok())?;
    let page_size: u64 = conn
        .query_row("PRAGMA page_size", [], |r| r.get::<_, i64>(0))
        .ok()
        .and_then(|n| u64::try_from(n).ok())?;
    let expected = pages.saturating_mul(page_size);
    (len < expected)
        .then(|| format!("it is {len} bytes long but its header says {expected}: it was cut short"))
}

/// The error for a damaged store, with the way out.
pub(super) fn damaged(path: &Path, why: &str) -> anyhow::Error {
    let shown = path.display();
    anyhow::anyhow!(
        "the optiwatch state store is damaged ({why}): restore it from a backup, or move it aside \
         (`mv {shown} {shown}.damaged`, with its -wal and -shm files if any) and run optiwatch \
         again; a fresh store starts with a baseline (the first scan hashes and records every file \
         without invalidating anything), so changes made since the last good run and assets that \
         were still owed are not sent: invalidate those yourself (`optiwatch invalidate FILE...`, \
         or `optiwatch invalidate --all`)"
    )
}
