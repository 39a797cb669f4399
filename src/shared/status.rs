//! What `status` shows of the shared store: every node (name, last seen,
//! leader or not, what it watches) and how much the shared outbox owes.
//! Read-only: it neither migrates nor checks a node in.

use serde::Serialize;

use super::{connect, NodeInfo};
use crate::config::SharedConfig;

#[derive(Debug, Serialize)]
pub struct SharedStatus {
    pub database: String,
    /// Assets owed in the shared outbox (every node's).
    pub assets_owed: i64,
    pub nodes: Vec<NodeInfo>,
}

/// Reads the shared store's status. Called from synchronous command code
/// on the multi-threaded runtime.
pub fn read(shared: &SharedConfig) -> anyhow::Result<SharedStatus> {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(read_async(shared)))
}

async fn read_async(shared: &SharedConfig) -> anyhow::Result<SharedStatus> {
    let client = connect::connect(shared).await?;
    let bad = |e: tokio_postgres::Error| {
        anyhow::anyhow!(
            "cannot read the shared store {}: {} (has a node with [shared] run `optiwatch watch` yet?)",
            shared.database,
            connect::cause(&e)
        )
    };
    let assets_owed: i64 = client
        .query_one("SELECT count(*) FROM owed", &[])
        .await
        .map_err(bad)?
        .try_get(0)
        .map_err(bad)?;
    let nodes = super::read_nodes(&client).await.map_err(bad)?;
    Ok(SharedStatus {
        database: shared.database.clone(),
        assets_owed,
        nodes,
    })
}

impl SharedStatus {
    /// The lines `status` prints.
    pub fn human(&self) -> String {
        let mut out = format!(
            "shared       {} ({} asset(s) owed)\n",
            self.database, self.assets_owed
        );
        for n in &self.nodes {
            out.push_str(&format!(
                "  node {}{}: last seen {}s ago, watches {}\n",
                n.name,
                if n.leader { " (leader: sends)" } else { "" },
                n.seen_secs_ago,
                if n.watches.is_empty() {
                    "-"
                } else {
                    &n.watches
                }
            ));
        }
        out
    }
}
