//! The leader's part of the bridge: its [`Sender`] working from the send
//! mirror (`<state>.send.db`), which is filled from the shared outbox; what
//! the sender settled or published there is settled or published in
//! PostgreSQL under the leader's fence. Fenced: the sender stops and the
//! mirror is dropped, and what it had not settled is still owed in
//! PostgreSQL for the new leader.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;

use super::Node;
use crate::accounts::AccountId;
use crate::session::{Access, Session, SessionLock};
use crate::shared::{Fenced, PendingAsset};
use crate::state::{Changes, Owed, Store, TokenState};
use crate::watch::{Pulse, Sender};

/// How long the sender gets to stop when leadership ends.
const SENDER_GRACE: Duration = Duration::from_secs(3);

/// The leader's sender and its mirror.
pub(super) struct Leading {
    pub(super) fence: i64,
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
    /// The sender's error, if it ended: it ends only when asked to.
    pub(super) async fn sender_ended(&mut self) -> Option<anyhow::Error> {
        let leading = self.leading.as_mut()?;
        if !leading.sender.is_finished() {
            return None;
        }
        let ended = (&mut leading.sender).await;
        self.leading = None;
        Some(match ended {
            Ok(Ok(())) => anyhow::anyhow!("the sender stopped without being asked to (a bug)"),
            Ok(Err(e)) => e.context("the sender failed"),
            Err(e) => anyhow::anyhow!("the sender crashed: {e}"),
        })
    }

    fn mirror_path(&self) -> PathBuf {
        let mut name = self.config.state.as_os_str().to_owned();
        name.push(".send.db");
        PathBuf::from(name)
    }

    pub(super) async fn start_leading(&mut self, fence: i64) -> anyhow::Result<Leading> {
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
        // Control requests go to the node's own daemon, not to this mirror
        // sender: its request queue has no one sending to it.
        let unused = crate::control::jobs::Channels::new();
        let sender = Sender::new(session, config, unused.sender_rx, unused.live)?;
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
    pub(super) async fn step_down(&mut self) {
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
    pub(super) async fn lead(&mut self) -> anyhow::Result<()> {
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
                    // The shared outbox keeps no reason or path yet.
                    reason: crate::state::Reason::Unknown,
                    path: None,
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
}
