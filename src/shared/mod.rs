//! The shared store: a PostgreSQL database that several web nodes use
//! together (`[shared]` in the config). Every node records what it detects
//! into the shared outbox; exactly one process at a time, the holder of
//! the lease ([`lease`]), sends it to Optimole and requests tokens; every
//! node publishes the newest token to its own token file or command.
//!
//! What stays node-local: the index of files (stat data and hashes) in the
//! node's SQLite `state`, because inodes, ctimes and even paths differ from
//! node to node. What is shared: the outbox keyed by asset URL with the
//! content hash that made it owed (the same change seen by three nodes is
//! owed once), what was last sent per URL (a node that records a change
//! after the leader already sent it owes nothing), token bookkeeping, the
//! nodes and the lease.

mod connect;
pub mod lease;
pub(crate) mod node;
mod outbox;
mod schema;
pub(crate) mod status;

use std::time::Duration;

use anyhow::Context;
use tokio_postgres::Client;

pub use crate::accounts::AccountId;
use crate::config::SharedConfig;
pub use lease::{Fenced, Role};
pub use outbox::{OwedChange, PendingAsset, PublishedToken};
pub use schema::VERSION as SCHEMA_VERSION;

/// One process's connection to the shared store.
pub struct SharedStore {
    client: Client,
    node: String,
    /// This process: the node name and a random part, so a node that
    /// restarts while its old lease runs is a new holder (new fence).
    holder: String,
    lease: Duration,
    /// The fence of the last successful [`SharedStore::try_lead`].
    fence: Option<i64>,
}

impl std::fmt::Debug for SharedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedStore")
            .field("holder", &self.holder)
            .field("fence", &self.fence)
            .finish()
    }
}

/// A node as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeInfo {
    pub name: String,
    /// Seconds since the node last checked in.
    pub seen_secs_ago: i64,
    pub leader: bool,
    /// The folders it watches, as it reported them.
    pub watches: String,
}

impl SharedStore {
    /// Connects, brings the schema up to date and checks the node in.
    pub async fn open(shared: &SharedConfig) -> anyhow::Result<SharedStore> {
        let mut client = connect::connect(shared).await?;
        schema::migrate(&mut client)
            .await
            .with_context(|| format!("shared store {}", shared.database))?;
        let store = SharedStore {
            client,
            node: shared.node.clone(),
            holder: format!("{}#{:016x}", shared.node, fastrand::u64(..)),
            // `[shared] lease` is the fail-over time: a follower asks every
            // tenth of it (see `node`), so the row lasts nine tenths.
            lease: shared.lease.mul_f64(0.9),
            fence: None,
        };
        store.heartbeat("").await?;
        Ok(store)
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// The fence this process leads with, if it believes it leads.
    pub fn fence(&self) -> Option<i64> {
        self.fence
    }

    /// Takes or renews the lease. Call it more often than the lease lasts
    /// (a third of it is usual).
    pub async fn try_lead(&mut self) -> anyhow::Result<Role> {
        let role = lease::take_or_renew(&self.client, &self.holder, &self.node, self.lease)
            .await
            .map_err(|e| anyhow::anyhow!("cannot renew the lease: {}", connect::cause(&e)))?;
        let was = self.fence;
        self.fence = match role {
            Role::Leader { fence } => Some(fence),
            Role::Follower { .. } => None,
        };
        if was != self.fence {
            match &role {
                Role::Leader { fence } => {
                    tracing::info!(node = %self.node, fence, "this node leads: it sends")
                }
                Role::Follower { leader } => tracing::info!(
                    node = %self.node,
                    leader = leader.as_deref().unwrap_or("none"),
                    "this node follows: another node sends"
                ),
            }
        }
        Ok(role)
    }

    /// Gives up leadership at once (clean shutdown).
    pub async fn resign(&mut self) -> anyhow::Result<()> {
        self.fence = None;
        lease::resign(&self.client, &self.holder).await?;
        Ok(())
    }

    /// Checks this node in: it is alive and watches `watches`.
    pub async fn heartbeat(&self, watches: &str) -> anyhow::Result<()> {
        self.client
            .execute(
                "INSERT INTO nodes (name, instance, watches) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO UPDATE SET instance = excluded.instance,
                   last_seen = now(),
                   watches = CASE WHEN excluded.watches = '' THEN nodes.watches ELSE excluded.watches END,
                   started_at = CASE WHEN nodes.instance = excluded.instance THEN nodes.started_at ELSE now() END",
                &[&self.node, &self.holder, &watches],
            )
            .await
            .context("cannot check this node in with the shared store")?;
        Ok(())
    }

    /// Every node that ever checked in, by name.
    pub async fn nodes(&self) -> anyhow::Result<Vec<NodeInfo>> {
        Ok(read_nodes(&self.client).await?)
    }

    /// The connection, for the store's own modules.
    fn client(&mut self) -> &mut Client {
        &mut self.client
    }
}

/// Every node that ever checked in, by name, and which one leads.
async fn read_nodes(client: &Client) -> Result<Vec<NodeInfo>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT n.name, extract(epoch FROM now() - n.last_seen)::bigint, n.watches,
                    l.holder = n.instance AND l.expires_at > clock_timestamp()
             FROM nodes n LEFT JOIN lease l ON l.id = 1 ORDER BY n.name",
            &[],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(NodeInfo {
                name: r.try_get(0)?,
                seen_secs_ago: r.try_get(1)?,
                watches: r.try_get(2)?,
                leader: r.try_get::<_, Option<bool>>(3)?.unwrap_or(false),
            })
        })
        .collect()
}
