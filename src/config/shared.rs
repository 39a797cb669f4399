//! `[shared]`: the PostgreSQL store that several web nodes share (see
//! [`crate::shared`]). Its URL names the server, user and database but never
//! a password: that comes from `password_file` or `PGPASSFILE`, so the
//! config text (often world-readable, often in a repository) holds no
//! secret. `state` stays this node's own SQLite file: the index of files is
//! node-local by nature (inodes and ctimes differ per node).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{Deserializer, Error};
use serde::Deserialize;

use super::values::limits::HOUR;
use super::values::HumanDuration;
use crate::display::normalize;

/// The shortest lease: shorter than a few renewals' round trips would let
/// a healthy leader lose leadership to a slow query.
pub const MIN_LEASE: Duration = Duration::from_secs(2);
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);

/// `[shared]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawShared {
    database: DatabaseUrl,
    node: Option<String>,
    password_file: Option<String>,
    ca_file: Option<String>,
    lease: Option<toml::Spanned<HumanDuration<HOUR>>>,
}

/// `[shared]` resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedConfig {
    /// `postgres://user@host:port/db?sslmode=...`, without a password.
    pub database: String,
    /// This node's name in the store (`status`, the lease).
    pub node: String,
    pub password_file: Option<PathBuf>,
    /// Extra CA certificates (PEM) for a server whose certificate no
    /// public authority signed.
    pub ca_file: Option<PathBuf>,
    /// How long a silent leader keeps leadership: the fail-over time.
    pub lease: Duration,
}

/// A `postgres://` URL without a password in it.
struct DatabaseUrl(String);

impl<'de> Deserialize<'de> for DatabaseUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let text = text.trim();
        let url = url::Url::parse(text).map_err(|e| {
            D::Error::custom(format!(
                "shared.database is not a URL ({e}): write it like \"postgres://optiwatch@db.example.com:5432/optiwatch\""
            ))
        })?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(D::Error::custom(
                "shared.database must start with postgres://",
            ));
        }
        if url.password().is_some() {
            return Err(D::Error::custom(
                "shared.database must not carry a password: put it in shared.password_file \
                 (or a pgpass file named by PGPASSFILE)",
            ));
        }
        if url.query_pairs().any(|(k, _)| k == "password") {
            return Err(D::Error::custom(
                "shared.database must not carry a password (?password=): put it in shared.password_file",
            ));
        }
        text.parse::<tokio_postgres::Config>().map_err(|e| {
            D::Error::custom(format!("shared.database is not a PostgreSQL URL: {e}"))
        })?;
        Ok(DatabaseUrl(text.to_string()))
    }
}

pub(super) fn resolve(
    base: &Path,
    raw: RawShared,
    at: impl Fn(std::ops::Range<usize>) -> String,
) -> Result<SharedConfig, String> {
    let lease = match raw.lease {
        Some(l) if l.get_ref().0 < MIN_LEASE => {
            return Err(format!(
                "{}: shared.lease must be at least {}s",
                at(l.span()),
                MIN_LEASE.as_secs()
            ))
        }
        Some(l) => l.into_inner().0,
        None => DEFAULT_LEASE,
    };
    let node = match raw.node {
        Some(n) if n.trim().is_empty() || n.len() > 200 => {
            return Err("shared.node must be a name of 1 to 200 characters".into())
        }
        Some(n) => n.trim().to_string(),
        None => hostname().ok_or(
            "cannot read this machine's host name for shared.node: set `node = \"web-1\"` in [shared]",
        )?,
    };
    Ok(SharedConfig {
        database: raw.database.0,
        node,
        password_file: raw.password_file.map(|p| normalize(base, &p)),
        ca_file: raw.ca_file.map(|p| normalize(base, &p)),
        lease,
    })
}

fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is writable for its whole length, which is passed.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).trim().to_string();
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    fn parse(shared: &str) -> Result<Config, String> {
        let text = format!("[[rules]]\ndir = \"m\"\nurl = \"https://a.com\"\n[shared]\n{shared}\n");
        Config::parse(&text, Path::new("/c/w.toml"))
    }

    #[test]
    fn the_shared_table_resolves_and_refuses_passwords_in_the_url() {
        let cfg = parse("database = \"postgres://ow@db:5433/ow\"\nnode = \"web-1\"\npassword_file = \"pw\"\nlease = \"5s\"")
            .unwrap();
        let shared = cfg.shared.unwrap();
        assert_eq!(shared.node, "web-1");
        assert_eq!(shared.password_file.unwrap(), Path::new("/c/pw"));
        assert_eq!(shared.lease.as_secs(), 5);
        let defaults = parse("database = \"postgres://ow@db/ow\"")
            .unwrap()
            .shared
            .unwrap();
        assert!(!defaults.node.is_empty());
        assert_eq!(defaults.lease, super::DEFAULT_LEASE);
        for bad in [
            "database = \"postgres://ow:s3cret@db/ow\"",
            "database = \"postgres://ow@db/ow?password=s3cret\"",
            "database = \"mysql://ow@db/ow\"",
            "database = \"postgres://ow@db/ow\"\nlease = \"1s\"",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains("shared."), "{bad}: {err}");
            // Loading quotes the line; the password must not come along.
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("w.toml");
            let text =
                format!("[[rules]]\ndir = \"m\"\nurl = \"https://a.com\"\n[shared]\n{bad}\n");
            std::fs::write(&file, text).unwrap();
            let err = format!("{:#}", Config::load(&file).unwrap_err());
            assert!(!err.contains("s3cret"), "{bad}: {err}");
        }
        assert!(parse("").is_err(), "database is required");
        assert!(Config::parse(
            "[[rules]]\ndir = \"m\"\nurl = \"https://a.com\"\n",
            Path::new("/c/w.toml")
        )
        .unwrap()
        .shared
        .is_none());
    }
}
