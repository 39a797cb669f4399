//! Telling a damaged store from a foreign file. A store cut short (a full
//! disk during a copy, a restore that stopped half-way, `truncate`) still
//! starts like SQLite; calling it "not SQLite" would send the user looking
//! for the wrong file. A damaged store gets its own message: what is wrong,
//! how to recover, and what a fresh store costs.

use std::io::Read;
use std::path::Path;

/// The first 16 bytes of every SQLite database file.
const MAGIC: &[u8; 16] = b"SQLite format 3\0";
/// The database header's size.
const HEADER: usize = 100;

/// Whether the file starts like an SQLite database.
pub(super) fn is_sqlite(path: &Path) -> bool {
    let mut start = [0u8; 16];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut start))
        .is_ok_and(|()| &start == MAGIC)
}

/// Why an SQLite file is shorter than its own header says, if it is. Only
/// without a write-ahead log: pages a crashed checkpoint did not copy yet
/// are still in the log, and SQLite puts them back on open.
pub(super) fn cut_short(path: &Path) -> Option<String> {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
        return None;
    }
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    let mut header = Vec::with_capacity(HEADER);
    file.by_ref()
        .take(HEADER as u64)
        .read_to_end(&mut header)
        .ok()?;
    if len == 0 || !header.starts_with(MAGIC) {
        return None;
    }
    if header.len() < HEADER {
        return Some(format!(
            "it is {len} bytes long, shorter than an SQLite header"
        ));
    }
    let be32 = |at: usize| {
        u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    // The header's page count is valid when its "version valid for" field
    // equals the change counter.
    if be32(92) != be32(24) {
        return None;
    }
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65536,
        n => u64::from(n),
    };
    let expected = u64::from(be32(28)).saturating_mul(page_size);
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
