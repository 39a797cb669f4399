//! The shared store's schema, versioned like the SQLite store's: the
//! version lives in `optiwatch_schema`, each migration runs once, in order,
//! in one transaction with the version bump. Nodes starting at the same
//! time take a transaction-scoped advisory lock first, so exactly one of
//! them migrates and the others find the work done.

use anyhow::{bail, Context};
use tokio_postgres::Client;

/// Keys the advisory lock of migrations (any constant; "optiwatch" in hex).
const MIGRATION_LOCK: i64 = 0x6f70_7469_7761_7463;

/// Migration `n` (1-based) brings the schema from version `n - 1` to `n`.
const MIGRATIONS: &[&str] = &[
    // 1: nodes, the leader's lease, the outbox, what was sent, tokens.
    "CREATE TABLE nodes (
        name text PRIMARY KEY,
        instance text NOT NULL,
        watches text NOT NULL DEFAULT '',
        started_at timestamptz NOT NULL DEFAULT now(),
        last_seen timestamptz NOT NULL DEFAULT now()
     );
     CREATE TABLE lease (
        id integer PRIMARY KEY CHECK (id = 1),
        holder text,
        node text,
        fence bigint NOT NULL,
        expires_at timestamptz NOT NULL
     );
     INSERT INTO lease (id, holder, node, fence, expires_at) VALUES (1, NULL, NULL, 0, '-infinity');
     CREATE TABLE owed (
        asset text PRIMARY KEY,
        account text NOT NULL,
        hash bytea NOT NULL,
        gen bigint NOT NULL DEFAULT 0,
        seq bigserial,
        added_at timestamptz NOT NULL DEFAULT now(),
        by_node text NOT NULL
     );
     CREATE INDEX owed_by_account ON owed (account, seq);
     CREATE TABLE sent (
        asset text PRIMARY KEY,
        hash bytea NOT NULL,
        at timestamptz NOT NULL DEFAULT now(),
        fence bigint NOT NULL,
        node text NOT NULL
     );
     CREATE TABLE tokens (
        account text PRIMARY KEY,
        state text NOT NULL DEFAULT 'settled',
        fetched text,
        covers bigint,
        requested_ms bigint,
        accepted bigint NOT NULL DEFAULT 0,
        uncovered_since_ms bigint,
        published text,
        published_seq bigint NOT NULL DEFAULT 0,
        published_at timestamptz
     );",
];

/// The version this optiwatch writes (a compile-time count of a short
/// constant list).
pub const VERSION: i32 = MIGRATIONS.len() as i32;

/// Brings the schema to [`VERSION`]; returns the version found before.
pub async fn migrate(client: &mut Client) -> anyhow::Result<i32> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS optiwatch_schema (version integer NOT NULL)")
        .await?;
    let found: i32 = match tx
        .query_opt("SELECT version FROM optiwatch_schema", &[])
        .await?
    {
        Some(row) => row.try_get(0)?,
        None => {
            tx.execute("INSERT INTO optiwatch_schema (version) VALUES (0)", &[])
                .await?;
            0
        }
    };
    if found > VERSION {
        bail!(
            "the shared store has schema version {found}, newer than this optiwatch knows \
             ({VERSION}): upgrade optiwatch on this node to the version the other nodes run"
        );
    }
    let first = usize::try_from(found).unwrap_or(0);
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(first) {
        tx.batch_execute(sql)
            .await
            .with_context(|| format!("shared store migration to version {}", i + 1))?;
    }
    if found < VERSION {
        tx.execute("UPDATE optiwatch_schema SET version = $1", &[&VERSION])
            .await?;
        tracing::info!(from = found, to = VERSION, "shared store schema upgraded");
    }
    tx.commit().await?;
    Ok(found)
}
