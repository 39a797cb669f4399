//! One node's side of the shared store, run by `watch` in place of its
//! sender when `[shared]` is set: the bridge between the node's SQLite
//! store and PostgreSQL.
//!
//! Every node: the detector records into the node's own store as always;
//! the bridge moves what it owes into the shared outbox (each asset with
//! the hash its file was recorded with, so replicas of one change are owed
//! once), then settles it locally. It renews or seeks the lease, and as a
//! follower publishes every newer token the leader published to the
//! node's own `[token]` destinations.
//!
//! The leader: its unchanged [`Sender`] runs on a second SQLite file, the
//! send mirror (`<state>.send.db`), which the bridge fills from the shared
//! outbox. What the sender settled there is settled in PostgreSQL under the
//! leader's fence ([`super::lease::check`]), and so is every token it
//! published. A fenced settlement, or a lost lease, stops the sender and
//! drops the mirror: what it had not settled in PostgreSQL is still owed
//! there, for the new leader.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Fenced, OwedChange, PendingAsset, Role, SharedStore};
use crate::accounts::{AccountId, Accounts};
use crate::config::Config;
use crate::rules::RuleSet;
use crate::session::{Access, Session, SessionLock};
use crate::state::{Changes, Owed, Store, TokenState};
use crate::watch::{Pulse, Sender};

/// How often the bridge looks for work when nothing wakes it.
const TICK: Duration = Duration::from_millis(200);
/// How long the sender gets to stop when leadership ends.
const SENDER_GRACE: Duration = Duration::from_secs(3);

/// Runs until `shutdown`; an error stops the daemon (a supervisor restarts
/// it; everything recorded is in one of the stores).
pub async fn run(
    session: Session,
    config: Config,
    mut pulse: watch::Receiver<Pulse>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let shared_config = config.shared.clone().context("no [shared] table (a bug)")?;
    let shared = SharedStore::open(&shared_config).await?;
    let (local, accounts) = session.into_parts()?;
    let mut node = Node {
        rules: RuleSet::new(&config.rules)?,
        watches: config
            .rules
            .iter()
            .map(|r| r.dir.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        lease: shared_config.lease,
        config,
        local,
        accounts,
        shared,
        leading: None,
        seen: HashMap::new(),
        renewed: None,
        busy: false,
    };
    let result = node.serve(&mut pulse, &mut shutdown).await;
    node.step_down().await;
    if let Err(e) = node.shared.resign().await {
        tracing::debug!(
            error = format!("{e:#}"),
            "cannot give up the lease; it runs out by itself"
        );
    }
    result
}

struct Node {
    config: Config,
    rules: RuleSet,
    watches: String,
    /// `[shared] lease`: the leader renews every third of it, a follower
    /// asks every tenth, so a dead leader is replaced within it.
    lease: Duration,
    local: Store,
    accounts: Accounts,
    shared: SharedStore,
    leading: Option<Leading>,
    /// Per account, the sequence number of the newest token this node
    /// published (or saw its own sender publish).
    seen: HashMap<AccountId, i64>,
    renewed: Option<Instant>,
    busy: bool,
}

/// The leader's sender and its mirror.
struct Leading {
    fence: i64,
    mirror: Store,
    /// Mirrored assets: their account, generation and hash in PostgreSQL.
    mirrored: HashMap<String, (AccountId, i64, Vec<u8>)>,
    /// Per account, the token the mirror last published, as last seen.
    published: HashMap<AccountId, Option<String>>,
    pulse: watch::Sender<Pulse>,
    stop: watch::Sender<bool>,
    sender: tokio::task::JoinHandle<anyhow::Result<()>>,
    _lock: SessionLock,
}

impl Node {
    async fn serve(
        &mut self,
        pulse: &mut watch::Receiver<Pulse>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        loop {
            self.busy = pulse.borrow_and_update().busy;
            if self
                .renewed
                .is_none_or(|at| at.elapsed() >= self.renew_every())
            {
                self.lead_or_follow().await?;
            }
            let round = match self.push().await {
                Ok(()) if self.leading.is_some() => self.lead().await,
                Ok(()) => self.follow_tokens().await,
                Err(e) => Err(e),
            };
            match round {
                // Two nodes writing the same rows at once: the next round
                // does it again (nothing was committed).
                Err(e) if is_conflict(&e) => {
                    tracing::debug!(
                        error = format!("{e:#}"),
                        "shared store conflict; trying again"
                    )
                }
                other => other?,
            }
            if let Some(leading) = &mut self.leading {
                if leading.sender.is_finished() {
                    let ended = (&mut leading.sender).await;
                    self.leading = None;
                    return match ended {
                        Ok(Ok(())) => Err(anyhow::anyhow!(
                            "the sender stopped without being asked to (a bug)"
                        )),
                        Ok(Err(e)) => Err(e.context("the sender failed")),
                        Err(e) => Err(anyhow::anyhow!("the sender crashed: {e}")),
                    };
                }
            }
            tokio::select! {
                _ = shutdown.changed() => return Ok(()),
                changed = pulse.changed() => if changed.is_err() { return Ok(()) },
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    }

    fn renew_every(&self) -> Duration {
        match self.leading {
            Some(_) => self.lease / 3,
            None => self.lease / 10,
        }
    }

    async fn lead_or_follow(&mut self) -> anyhow::Result<()> {
        self.shared.heartbeat(&self.watches).await?;
        let role = self.shared.try_lead().await?;
        self.renewed = Some(Instant::now());
        match (role, self.leading.as_ref().map(|l| l.fence)) {
            (Role::Leader { fence }, Some(mine)) if fence == mine => {}
            (Role::Leader { fence }, _) => {
                self.step_down().await;
                self.leading = Some(self.start_leading(fence).await?);
            }
            (Role::Follower { .. }, Some(_)) => self.step_down().await,
            (Role::Follower { .. }, None) => {}
        }
        Ok(())
    }

    /// The local outbox goes to the shared one, then leaves the local one
    /// (a crash in between only records the same hashes again).
    async fn push(&mut self) -> anyhow::Result<()> {
        for account in self.local.accounts_with_work()? {
            let pending = self.local.owed_by(&account)?;
            if pending.is_empty() {
                continue;
            }
            let mut changes = Vec::with_capacity(pending.len());
            for p in &pending {
                changes.push(OwedChange {
                    hash: self.hash_for(&p.asset)?,
                    asset: p.asset.clone(),
                    account: account.clone(),
                });
            }
            let owed = self.shared.owe(&changes).await?;
            self.local.settle(&pending)?;
            self.local.token_handed_on(&account)?;
            tracing::info!(account = %account, assets = changes.len(), owed, "recorded in the shared store");
        }
        Ok(())
    }

    /// The hash the file behind `asset` was recorded with; all zeros when
    /// it is not recorded (removed).
    fn hash_for(&self, asset: &str) -> anyhow::Result<[u8; 32]> {
        for rule in self.rules.rules() {
            for prefix in &rule.prefixes {
                let Some(rest) = asset
                    .strip_prefix(prefix.as_str())
                    .and_then(|r| r.strip_prefix('/'))
                else {
                    continue;
                };
                let bytes: Vec<u8> = percent_encoding::percent_decode_str(rest).collect();
                let path = rule.dir.join(OsStr::from_bytes(&bytes));
                if let Some(hash) = self.local.hash_of(&path)? {
                    return Ok(hash);
                }
            }
        }
        Ok([0; 32])
    }

    fn mirror_path(&self) -> PathBuf {
        let mut name = self.config.state.as_os_str().to_owned();
        name.push(".send.db");
        PathBuf::from(name)
    }

    async fn start_leading(&mut self, fence: i64) -> anyhow::Result<Leading> {
        let path = self.mirror_path();
        // A mirror of an earlier leadership is stale: the shared store
        // says what is owed now.
        for suffix in ["", "-wal", "-shm"] {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            match std::fs::remove_file(&name) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| {
                        format!(
                            "cannot remove the old send mirror {}",
                            PathBuf::from(&name).display()
                        )
                    })
                }
                _ => {}
            }
        }
        let mut config = self.config.clone();
        config.state = path;
        let session = Session::open(&config, Access::ReadWrite)?;
        let lock = session.lock()?;
        let mut mirror = session.connect()?;
        for account in self.accounts.ids() {
            if self.shared.token_owed(account).await? {
                mirror.owe_token(account)?;
            }
        }
        let published = self
            .accounts
            .ids()
            .into_iter()
            .map(|a| Ok((a.clone(), mirror.published_by(a)?)))
            .collect::<anyhow::Result<_>>()?;
        let sender = Sender::new(session, config)?;
        let (pulse_tx, pulse_rx) = watch::channel(Pulse::default());
        let (stop_tx, stop_rx) = watch::channel(false);
        let sender = tokio::spawn(sender.run(pulse_rx, stop_rx));
        Ok(Leading {
            fence,
            mirror,
            mirrored: HashMap::new(),
            published,
            pulse: pulse_tx,
            stop: stop_tx,
            sender,
            _lock: lock,
        })
    }

    /// Stops the sender and drops the mirror, if this node led.
    async fn step_down(&mut self) {
        let Some(leading) = self.leading.take() else {
            return;
        };
        let _ = leading.stop.send(true);
        let mut sender = leading.sender;
        if tokio::time::timeout(SENDER_GRACE, &mut sender)
            .await
            .is_err()
        {
            sender.abort();
        }
        tracing::info!(node = %self.shared.node(), "this node no longer sends");
    }

    /// One round of leading: settle what the sender settled, mirror what
    /// is owed, record published tokens. Fenced: step down.
    async fn lead(&mut self) -> anyhow::Result<()> {
        match self.leader_round().await {
            Err(e) if e.downcast_ref::<Fenced>().is_some() => {
                tracing::warn!(error = format!("{e:#}"), "fenced: stopping the sender");
                self.step_down().await;
                self.renewed = None;
                Ok(())
            }
            other => other,
        }
    }

    async fn leader_round(&mut self) -> anyhow::Result<()> {
        let Some(leading) = self.leading.as_mut() else {
            return Ok(());
        };
        let fence = leading.fence;
        // Settled in the mirror: settle in the shared store, per account.
        let still: HashSet<String> = leading.mirror.owed()?.into_iter().collect();
        let mut gone: BTreeMap<AccountId, Vec<PendingAsset>> = BTreeMap::new();
        for (asset, (account, gen, hash)) in &leading.mirrored {
            if !still.contains(asset) {
                gone.entry(account.clone()).or_default().push(PendingAsset {
                    asset: asset.clone(),
                    gen: *gen,
                    hash: hash.clone(),
                });
            }
        }
        if !gone.is_empty() {
            crate::failpoint::pause_at("shared-settle");
        }
        for (account, assets) in gone {
            self.shared.settle(fence, &account, &assets).await?;
            for p in &assets {
                leading.mirrored.remove(&p.asset);
            }
        }
        // Owed in the shared store and not (or in an older generation)
        // in the mirror.
        let mut fresh = Vec::new();
        for row in self.shared.owed_all().await? {
            let current = leading
                .mirrored
                .get(&row.1.asset)
                .is_some_and(|(_, gen, _)| *gen == row.1.gen);
            if !current {
                fresh.push(Owed {
                    asset: row.1.asset.clone(),
                    account: row.0.clone(),
                });
                leading
                    .mirrored
                    .insert(row.1.asset, (row.0, row.1.gen, row.1.hash));
            }
        }
        if !fresh.is_empty() {
            leading.mirror.record(&Changes {
                assets: fresh,
                ..Changes::default()
            })?;
        }
        let busy = self.busy;
        leading.pulse.send_modify(|p| {
            p.recorded = p.recorded.wrapping_add(1);
            p.busy = busy;
        });
        // Tokens the sender published: the newest token for every node.
        for account in self.accounts.ids() {
            let now = leading.mirror.published_by(account)?;
            if now.is_none() || leading.published.get(account) == Some(&now) {
                continue;
            }
            let token = now.clone().unwrap_or_default();
            let covered = leading.mirror.token_state(account)? == TokenState::Settled;
            let mark = if covered { i64::MAX } else { -1 };
            self.shared
                .token_published(fence, account, &token, mark)
                .await?;
            leading.published.insert(account.clone(), now);
            if let Some(t) = self.shared.published_token(account).await? {
                self.seen.insert(account.clone(), t.seq);
            }
        }
        Ok(())
    }

    /// A follower publishes each newer token to its own destinations.
    async fn follow_tokens(&mut self) -> anyhow::Result<()> {
        for account in self.accounts.iter() {
            let Some(token) = self.shared.published_token(&account.id).await? else {
                continue;
            };
            if self.seen.get(&account.id) == Some(&token.seq) {
                continue;
            }
            match account.publisher.publish(&token.token).await {
                Ok(()) => {
                    tracing::info!(account = %account.id, token = %token.token, "published the leader's cache token");
                    self.seen.insert(account.id.clone(), token.seq);
                }
                Err(e) => {
                    tracing::warn!(account = %account.id, error = format!("{e:#}"), "publishing the leader's cache token failed; trying again")
                }
            }
        }
        Ok(())
    }
}

/// A deadlock or serialization failure: PostgreSQL rolled the transaction
/// back and it can simply run again.
fn is_conflict(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<tokio_postgres::Error>())
        .filter_map(|e| e.code())
        .any(|code| {
            *code == tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED
                || *code == tokio_postgres::error::SqlState::T_R_SERIALIZATION_FAILURE
        })
}
