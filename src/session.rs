//! A session on the state store: what every command and the daemon set up
//! before they detect or send anything, written once.
//!
//! [`Access::ReadWrite`] takes the store lock (one process per store), opens
//! the store (creating or upgrading it), loads every account's key (so a
//! missing one is reported before anything is sent) and hands owed work to
//! the accounts that now serve it. [`Access::ReadOnly`] (`status`, `check`,
//! the dry runs) takes no lock, needs no key and opens the store read-only:
//! it runs beside a daemon and never creates, upgrades or writes the store.
//!
//! The daemon keeps its [`SessionLock`] across config reloads and opens a
//! session per config on it: taking the lock again would open and close a
//! second descriptor of the store file, and closing any descriptor of it
//! drops the SQLite locks this process holds (see `state::lock`).

use std::sync::Arc;

use anyhow::Context;

use crate::accounts::{AccountId, Accounts};
use crate::config::Config;
use crate::state::{Store, StoreLock};

/// What a session may do to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Look only: no lock, no key, no write; a missing store stays missing.
    ReadOnly,
    /// Lock, open (create, upgrade) and write; every account's key loaded.
    ReadWrite,
}

/// The store (if there is one to read), the accounts and the lock.
#[derive(Debug)]
pub struct Session {
    // Fields drop in order: the connection closes before the lock's
    // descriptor of the store file does.
    store: Option<Store>,
    accounts: Accounts,
    lock: Option<SessionLock>,
}

/// The store lock of read-write sessions; cloning it shares it.
#[derive(Debug, Clone)]
pub struct SessionLock {
    _held: Arc<StoreLock>,
}

impl SessionLock {
    /// Takes the lock of `config`'s store: refused while another process
    /// holds it.
    pub fn acquire(config: &Config) -> anyhow::Result<SessionLock> {
        Ok(SessionLock {
            _held: Arc::new(StoreLock::acquire(&config.state)?),
        })
    }

    /// A read-write session on the locked store with the accounts of
    /// `config` (whose `state` must be the locked one). Owed work stays
    /// with the accounts it is owed to until [`Session::adopt_orphans`]:
    /// during a reload, the old daemon workers may still record for theirs.
    pub fn session(&self, config: &Config) -> anyhow::Result<Session> {
        let store = Store::open(&config.state)?;
        Ok(Session {
            store: Some(store),
            accounts: Accounts::load(config)?,
            lock: Some(self.clone()),
        })
    }
}

impl Session {
    pub fn open(config: &Config, access: Access) -> anyhow::Result<Session> {
        match access {
            Access::ReadOnly => Ok(Session {
                store: Store::open_read_only(&config.state)?,
                accounts: Accounts::default(),
                lock: None,
            }),
            Access::ReadWrite => {
                let mut session = SessionLock::acquire(config)?.session(config)?;
                session.adopt_orphans()?;
                Ok(session)
            }
        }
    }

    /// Owed assets follow their rule's current account (a rule that got
    /// its own key, or a new one, takes its owed assets along: the old key
    /// may not be allowed to invalidate them); work owed to accounts the
    /// config no longer has and no rule serves goes to the `[api]` account:
    /// it must not stay owed forever, unless the account was renamed: then
    /// the account now using its key takes it (the store remembers each
    /// name's key source).
    pub fn adopt_orphans(&mut self) -> anyhow::Result<()> {
        let (store, accounts) = self.parts()?;
        adopt_orphans(store, accounts)
    }

    /// The store, when there is one (read-only sessions: it may not exist
    /// yet).
    pub fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }

    /// The store to pass to code that may write (a read-only session's
    /// connection refuses writes: SQLite opened it read-only).
    pub fn store_mut(&mut self) -> Option<&mut Store> {
        self.store.as_mut()
    }

    /// The store of a read-write session.
    pub fn writable(&mut self) -> anyhow::Result<&mut Store> {
        Ok(self.parts()?.0)
    }

    /// Another connection to the store, for a second worker.
    pub fn connect(&self) -> anyhow::Result<Store> {
        let store = self.store.as_ref().context("no state store is open")?;
        Store::open(store.path())
    }

    /// The lock of a read-write session, to open sessions on later (the
    /// daemon's reloads).
    pub fn lock(&self) -> anyhow::Result<SessionLock> {
        self.lock
            .clone()
            .context("a read-only session holds no lock")
    }

    /// The store and the accounts of a read-write session, for a worker
    /// that owns them; whoever holds the [`SessionLock`] keeps it while the
    /// worker runs.
    pub fn into_parts(mut self) -> anyhow::Result<(Store, Accounts)> {
        self.writable()?;
        let accounts = std::mem::take(&mut self.accounts);
        let store = self
            .store
            .take()
            .context("a read-write session has a store")?;
        Ok((store, accounts))
    }

    /// The store and the accounts of a read-write session at once
    /// (flushing needs both).
    pub fn parts(&mut self) -> anyhow::Result<(&mut Store, &Accounts)> {
        match (&mut self.store, &self.lock) {
            (Some(store), Some(_)) => Ok((store, &self.accounts)),
            _ => anyhow::bail!(
                "this optiwatch command opened the store read-only; it cannot write it (a bug)"
            ),
        }
    }
}

/// Hands work owed to accounts no longer in the config to their heirs
/// (the account now using their key, else the `[api]` key's), and
/// remembers each account's key source for the next rename.
pub fn adopt_orphans(store: &mut Store, accounts: &Accounts) -> anyhow::Result<()> {
    let sources: Vec<(AccountId, String)> = accounts
        .iter()
        .filter(|a| a.id != AccountId::Default)
        .map(|a| (a.id.clone(), a.source.clone()))
        .collect();
    store
        .follow_rules(|asset| accounts.serving(asset))
        .and_then(|()| {
            let known = store.account_sources()?;
            store.adopt_orphans(&accounts.ids(), |old| {
                let source = known
                    .iter()
                    .find(|(name, _)| name == old)
                    .map(|(_, source)| source.clone());
                accounts.heir(old, source.as_deref())
            })
        })
        .and_then(|()| store.remember_sources(&sources))
        .context("cannot hand work owed to accounts no longer in the config to the [api] key")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &std::path::Path) -> Config {
        let text = "[[rules]]\ndir = \"media\"\nurl = \"https://example.com/m\"\n\
                    [api]\nkey_env = \"OPTIWATCH_SESSION_TEST_KEY\"\n";
        Config::parse(text, &dir.join("watcher.toml")).unwrap()
    }

    #[test]
    fn read_only_sessions_take_no_lock_and_create_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let session = Session::open(&config, Access::ReadOnly).unwrap();
        assert!(session.store().is_none());
        assert!(!config.state.exists(), "the store is not created");
        assert!(
            !dir.path().join("optiwatch.db.lock").exists(),
            "no lock taken"
        );
    }

    #[test]
    fn a_read_write_session_needs_every_key_and_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let err = Session::open(&config, Access::ReadWrite).unwrap_err();
        assert!(
            format!("{err:#}").contains("OPTIWATCH_SESSION_TEST_KEY"),
            "{err:#}"
        );
        // SAFETY: no other test reads or writes this variable.
        unsafe { std::env::set_var("OPTIWATCH_SESSION_TEST_KEY", "k") };
        let mut session = Session::open(&config, Access::ReadWrite).unwrap();
        assert!(session.writable().is_ok());
        let err = Session::open(&config, Access::ReadWrite).unwrap_err();
        assert!(format!("{err:#}").contains("another optiwatch"), "{err:#}");
        // A reader beside the writer.
        let reader = Session::open(&config, Access::ReadOnly).unwrap();
        assert!(reader.store().is_some());
        // The daemon's reload opens a session on the lock it holds.
        let lock = session.lock().unwrap();
        let mut renewed = lock.session(&config).unwrap();
        assert!(renewed.writable().is_ok());
    }
}
