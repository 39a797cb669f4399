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

mod leading;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{OwedChange, Role, SharedStore};
use crate::accounts::{AccountId, Accounts};
use crate::config::Config;
use crate::rules::RuleSet;
use crate::session::Session;
use crate::state::Store;
use crate::watch::Pulse;
use leading::Leading;

/// How often the bridge looks for work when nothing wakes it.
const TICK: Duration = Duration::from_millis(200);

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
            if let Some(ended) = self.sender_ended().await {
                return Err(ended);
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
