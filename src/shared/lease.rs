//! Leadership: one row, `lease`, names the process that may send (its
//! `holder`: node name plus a per-process instance, so a restarted node is
//! a new holder) and when its lease ends, by the database's clock (the
//! nodes' clocks may disagree; the server's is the one every node reads).
//!
//! Each change of holder raises `fence` by one. A leader keeps the fence it
//! got, and every transaction that settles outbox work or publishes a token
//! first reads the row `FOR SHARE` and gives up unless the fence is still
//! its own ([`check`]). A take-over's UPDATE waits for such a transaction
//! and every later one sees the new fence, so an old leader that was
//! paused (SIGSTOP, GC, partition) past its lease can still talk to
//! Optimole (at-least-once allows a repeat) but never settle or publish.

use std::time::Duration;

use tokio_postgres::GenericClient;

/// What this process is after a [`super::SharedStore::try_lead`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// This process leads, with this fence, until its lease ends.
    Leader { fence: i64 },
    /// Another process leads (its node name), or nobody does yet.
    Follower { leader: Option<String> },
}

/// A settlement or publication refused: another process took over.
#[derive(Debug, thiserror::Error)]
#[error(
    "this node is no longer the leader (its fence {mine}, the store's {current}): \
     another node took over and sends from now on"
)]
pub struct Fenced {
    pub mine: i64,
    pub current: i64,
}

/// Takes or renews the lease for `holder`: renewing keeps the fence,
/// taking an expired lease (or the first one) raises it.
pub(super) async fn take_or_renew(
    client: &impl GenericClient,
    holder: &str,
    node: &str,
    lease: Duration,
) -> Result<Role, tokio_postgres::Error> {
    let ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    let row = client
        .query_opt(
            "UPDATE lease SET
                fence = CASE WHEN holder = $1 THEN fence ELSE fence + 1 END,
                holder = $1, node = $2,
                expires_at = clock_timestamp() + $3::bigint * interval '1 millisecond'
             WHERE id = 1 AND (holder = $1 OR holder IS NULL OR expires_at < clock_timestamp())
             RETURNING fence",
            &[&holder, &node, &ms],
        )
        .await?;
    if let Some(row) = row {
        return Ok(Role::Leader {
            fence: row.try_get(0)?,
        });
    }
    let leader = client
        .query_one("SELECT node FROM lease WHERE id = 1", &[])
        .await?
        .try_get(0)?;
    Ok(Role::Follower { leader })
}

/// Gives the lease up (a clean shutdown): another node takes over at once
/// instead of after the lease.
pub(super) async fn resign(
    client: &impl GenericClient,
    holder: &str,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE lease SET holder = NULL, expires_at = '-infinity' WHERE id = 1 AND holder = $1",
            &[&holder],
        )
        .await?;
    Ok(())
}

/// Inside the caller's transaction: fails with [`Fenced`] unless `fence` is
/// still the lease's. Locks the row until the transaction ends, so no
/// take-over lands in between.
pub async fn check(client: &impl GenericClient, fence: i64) -> anyhow::Result<()> {
    let current: i64 = client
        .query_one("SELECT fence FROM lease WHERE id = 1 FOR SHARE", &[])
        .await?
        .try_get(0)?;
    if current != fence {
        return Err(Fenced {
            mine: fence,
            current,
        }
        .into());
    }
    Ok(())
}
