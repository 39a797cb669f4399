//! Loading the whole index on two threads: this one steps SQLite and
//! decodes rows (a statement cannot leave its connection's thread), a
//! helper builds the [`FileIndex`] (hashing, table inserts) from batches
//! of decoded rows. The two halves cost about alike, so loading a million
//! files takes about half the time it takes on one thread.

use std::sync::mpsc;

use super::files::decode;
use super::{FileIndex, Stat};

/// Rows per batch: big enough that the channel costs nothing per row,
/// small enough (about 400 KiB) that memory stays flat.
const BATCH: usize = 4096;

/// Batches decoded ahead of the builder, at most.
const AHEAD: usize = 4;

#[derive(Default)]
struct Batch {
    /// The rows' paths, one after another.
    paths: Vec<u8>,
    rows: Vec<(usize, Stat, [u8; 32], bool)>,
}

/// Builds the index of `rows`, a query over the whole files table (every
/// path once), with room for `files` entries.
pub(super) fn pipelined(mut rows: rusqlite::Rows<'_>, files: usize) -> anyhow::Result<FileIndex> {
    let (tx, rx) = mpsc::sync_channel::<Batch>(AHEAD);
    std::thread::scope(|scope| {
        let builder = scope.spawn(move || {
            let mut index = FileIndex::with_capacity(files);
            for batch in rx {
                let mut at = 0;
                for (len, stat, hash, racy) in batch.rows {
                    let path = &batch.paths[at..at + len];
                    index.insert_new(path, stat, hash, racy);
                    at += len;
                }
            }
            index
        });
        let mut batch = Batch::default();
        let decoded = (|| -> anyhow::Result<()> {
            while let Some(row) = rows.next()? {
                let (path, stat, hash, racy) = decode(row)?;
                batch.paths.extend_from_slice(path);
                batch.rows.push((path.len(), stat, hash, racy));
                if batch.rows.len() >= BATCH && tx.send(std::mem::take(&mut batch)).is_err() {
                    break;
                }
            }
            Ok(())
        })();
        if decoded.is_ok() {
            let _ = tx.send(batch);
        }
        drop(tx);
        let index = builder.join().map_err(|_| {
            anyhow::anyhow!(
                "building the file index failed; this is a bug in optiwatch, please report it"
            )
        })?;
        decoded.map(|()| index)
    })
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use crate::state::{Changes, Hashed, Stat, Store};

    /// More rows than a batch, in several folders: every one is loaded
    /// with its own stat data, hash and racy flag.
    #[test]
    fn loads_every_row_across_batches() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        let file = |n: u64| Hashed {
            stat: Stat {
                size: n,
                mtime_ns: n as i64 * 3,
                ctime_ns: n as i64 * 5,
                inode: n + 1,
                dev: 7,
            },
            hash: [(n % 251) as u8; 32],
            racy: n.is_multiple_of(9),
            links: 1,
        };
        let path = |n: u64| PathBuf::from(format!("/m/{}/{n}.jpg", n % 13));
        let upserts = (0..10_000).map(|n| (path(n), file(n))).collect();
        store
            .record(&Changes {
                upserts,
                ..Changes::default()
            })
            .unwrap();
        let index = store.load_index().unwrap();
        assert_eq!(index.len(), 10_000);
        for n in (0..10_000).step_by(7) {
            let known = index.get(&path(n)).unwrap();
            let want = file(n);
            assert_eq!((known.stat, known.racy), (want.stat, want.racy), "{n}");
            assert!(known.same_content(&want.hash));
        }
        assert!(index.get(Path::new("/m/0/1.jpg")).is_none());
    }
}
