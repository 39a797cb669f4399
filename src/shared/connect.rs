//! Connecting to the shared PostgreSQL store: the password from
//! `password_file` or a pgpass file (`PGPASSFILE`), never from the config
//! text; TLS through rustls (public roots plus `ca_file`) whenever the URL's
//! `sslmode` asks for it or the server offers it (`prefer`, the default).
//!
//! Errors name the URL (which holds no password) and the file to fix, and
//! never the password.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio_postgres::config::Host;
use tokio_postgres::Client;

use crate::config::SharedConfig;

/// A password file holds a password, not a document.
const MAX_PASSWORD_FILE: u64 = 64 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens one connection; its I/O runs on a task of the current runtime
/// until the [`Client`] is dropped.
pub async fn connect(shared: &SharedConfig) -> anyhow::Result<Client> {
    let mut config: tokio_postgres::Config = shared.database.parse().with_context(|| {
        format!(
            "shared.database {} is not a PostgreSQL URL",
            shared.database
        )
    })?;
    config
        .application_name(format!("optiwatch {}", shared.node))
        .connect_timeout(CONNECT_TIMEOUT)
        // A leader whose connection silently dies must notice before its
        // lease does: the lease renewal fails, and so does the keepalive.
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(5));
    if let Some(password) = password(shared, &config)? {
        config.password(password);
    }
    let tls = tls(shared)?;
    let (client, connection) = config.connect(tls).await.map_err(|e| {
        let hint = if e.as_db_error().is_some_and(|d| d.code().code() == "28P01") {
            "check the password in shared.password_file (or PGPASSFILE)"
        } else {
            "check shared.database and that the server is up"
        };
        anyhow::anyhow!(
            "cannot connect to the shared store {}: {}: {hint}",
            shared.database,
            cause(&e)
        )
    })?;
    let node = shared.node.clone();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(node = %node, error = %cause(&e), "connection to the shared store ended");
        }
    });
    Ok(client)
}

/// The error with its sources: tokio-postgres puts the useful part (the
/// server's message, the refused socket) in the source.
pub(super) fn cause(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return db.message().to_string();
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// `password_file` when set; else the pgpass file `PGPASSFILE` names, its
/// first line matching host, port, database and user; else none (trust,
/// peer or certificate authentication).
fn password(
    shared: &SharedConfig,
    config: &tokio_postgres::Config,
) -> anyhow::Result<Option<Vec<u8>>> {
    if let Some(path) = &shared.password_file {
        let text = read_secret(path).with_context(|| {
            format!("cannot read shared.password_file {}: create it (one line, the password) or fix the path", path.display())
        })?;
        let password = text.trim_end_matches(['\n', '\r']);
        if password.is_empty() {
            bail!(
                "shared.password_file {} is empty: put the database password in it",
                path.display()
            );
        }
        return Ok(Some(password.as_bytes().to_vec()));
    }
    let Some(pgpass) = std::env::var_os("PGPASSFILE") else {
        return Ok(None);
    };
    let path = Path::new(&pgpass);
    let text = read_secret(path).with_context(|| {
        format!(
            "cannot read the pgpass file {} (PGPASSFILE): fix the path or unset it",
            path.display()
        )
    })?;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let db = config.get_dbname().or(config.get_user()).unwrap_or("");
    let user = config.get_user().unwrap_or("");
    Ok(pgpass_lookup(&text, [&host, &port, db, user]).map(String::into_bytes))
}

/// A regular file, read bounded.
fn read_secret(path: &Path) -> anyhow::Result<String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        bail!("not a regular file");
    }
    let mut text = String::new();
    file.take(MAX_PASSWORD_FILE).read_to_string(&mut text)?;
    Ok(text)
}

/// The password of the first pgpass line (`host:port:db:user:password`,
/// `*` matches anything, `\:` and `\\` escape) that matches `want`.
fn pgpass_lookup(text: &str, want: [&str; 4]) -> Option<String> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .find_map(|line| {
            let fields = split_pgpass(line);
            let [h, p, d, u, pw] = <[String; 5]>::try_from(fields).ok()?;
            let matches = [h, p, d, u]
                .iter()
                .zip(want)
                .all(|(field, want)| field == "*" || field == want);
            matches.then_some(pw)
        })
}

fn split_pgpass(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let (Some(n), Some(last)) = (chars.next(), fields.last_mut()) {
                    last.push(n);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => {
                if let Some(last) = fields.last_mut() {
                    last.push(c);
                }
            }
        }
    }
    fields
}

fn tls(shared: &SharedConfig) -> anyhow::Result<tokio_postgres_rustls::MakeRustlsConnect> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = &shared.ca_file {
        let bad = || {
            format!(
                "cannot read shared.ca_file {}: it must hold PEM certificates",
                path.display()
            )
        };
        for cert in CertificateDer::pem_file_iter(path).with_context(bad)? {
            roots.add(cert.with_context(bad)?).with_context(bad)?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("the TLS library offers no protocol version (a bug)")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgpass_lines_match_with_wildcards_and_escapes() {
        let text = "# comment\nother:5432:*:*:no\ndb:*:ow:ow:pa\\:ss\n*:*:*:*:any\n";
        assert_eq!(
            pgpass_lookup(text, ["db", "5433", "ow", "ow"]).as_deref(),
            Some("pa:ss")
        );
        assert_eq!(
            pgpass_lookup(text, ["x", "1", "y", "z"]).as_deref(),
            Some("any")
        );
        assert_eq!(pgpass_lookup("a:b:c\n", ["a", "b", "c", "d"]), None);
    }
}
