//! What the shared store's bridge ([`crate::shared::node`]) reads from a
//! node's SQLite store: the recorded hash of a file (the content that made
//! its assets owed, so every node keys the same change alike) and the
//! token an account last published.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rusqlite::OptionalExtension;

use super::coverage::key;
use super::Store;
use crate::accounts::AccountId;

impl Store {
    /// The recorded BLAKE3 hash of the file at `path`, if it is recorded.
    pub fn hash_of(&self, path: &Path) -> anyhow::Result<Option<[u8; 32]>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT hash FROM files WHERE path = ?1")?;
        let hash: Option<Vec<u8>> = stmt
            .query_row([path.as_os_str().as_bytes()], |r| r.get(0))
            .optional()?;
        Ok(hash.and_then(|h| <[u8; 32]>::try_from(h).ok()))
    }

    /// With `[shared]`: the account's owed assets went to the shared
    /// store, whose leader owes the token after them; this store owes none
    /// once it owes no asset of the account (so `status` says so).
    pub fn token_handed_on(&mut self, account: &AccountId) -> anyhow::Result<()> {
        let tx = self.write()?;
        let owed: i64 = tx.query_row(
            "SELECT count(*) FROM outbox WHERE account = ?1",
            [account],
            |r| r.get(0),
        )?;
        if owed == 0 {
            super::set_meta(&tx, &key("token_state", account), "settled")?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The token `account` last published.
    pub fn published_by(&self, account: &AccountId) -> anyhow::Result<Option<String>> {
        self.meta(&key("published", account))
    }
}

#[cfg(test)]
mod tests {
    use crate::accounts::AccountId;
    use crate::state::testing::store;
    use crate::state::{Changes, Owed};

    /// The SQLite side of the shared store's recording figure (README,
    /// "Many web nodes"): 100,000 owed assets in chunks of 10,000, as a
    /// walk records them. Run with
    /// `cargo test --release --lib bench_sqlite_records -- --ignored --nocapture`;
    /// the PostgreSQL side is `shared::bench_postgres_records` in tests/it.
    #[test]
    #[ignore]
    fn bench_sqlite_records_100k_changes() {
        let (_dir, mut store) = store();
        let started = std::time::Instant::now();
        for chunk in 0..10 {
            let assets = (0..10_000)
                .map(|i| Owed {
                    asset: format!("https://example.com/uploads/img/{chunk}/{i}.jpg"),
                    account: AccountId::Default,
                    reason: crate::state::Reason::Changed,
                    path: None,
                })
                .collect();
            store
                .record(&Changes {
                    assets,
                    ..Changes::default()
                })
                .unwrap();
        }
        eprintln!("sqlite: 100000 changes recorded in {:?}", started.elapsed());
        assert_eq!(store.owed_count().unwrap(), 100_000);
    }
}
