//! A command's end of the control socket. Before a command opens the
//! store read-write it asks here: when a daemon answers, the command
//! hands its work over and waits for the outcome (up to `--timeout`);
//! when nobody listens (no socket, or a dead daemon's: the connection is
//! refused) the command runs standalone, exactly as without a daemon.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::protocol::{Op, Reply, Request, Response, MAX_LINE, VERSION};
use crate::commands::sent::SendReport;
use crate::config::Config;
use crate::display::show_path;
use crate::exit_codes::UsageError;

/// The `--timeout` of `scan`, `invalidate` and `token` beside a daemon.
pub const DEFAULT_TIMEOUT: &str = "5m";

/// Hands `op` to the daemon of `config`'s store and waits for its answer.
/// `Ok(None)`: no daemon listens; run standalone. An error answer is an
/// error (a usage error when the daemon says so).
pub fn ask(config: &Config, op: &Op, timeout: Duration) -> anyhow::Result<Option<Reply>> {
    let path = super::socket_path(&config.state);
    let mut stream = match UnixStream::connect(&path) {
        Ok(stream) => stream,
        Err(e) => {
            match e.kind() {
                // Nothing there, or a daemon killed without cleaning up.
                ErrorKind::NotFound | ErrorKind::ConnectionRefused => {}
                // Not ours to use: the store lock tells who holds it.
                _ => {
                    tracing::warn!(socket = %show_path(&path), error = %e, "cannot use the daemon's control socket; running standalone")
                }
            }
            return Ok(None);
        }
    };
    // Only a daemon of this user (or root) is told anything or believed:
    // a socket someone else put in the store's folder is not ours.
    let peer = super::peer_uid(&stream).with_context(|| {
        format!(
            "cannot tell who serves the control socket {}",
            show_path(&path)
        )
    })?;
    let me = super::euid();
    if peer != me && peer != 0 {
        anyhow::bail!(
            "the control socket {} is served by user id {peer}, neither this user ({me}) nor root: not used; check who runs optiwatch on this store, or remove the socket",
            show_path(&path)
        );
    }
    // `None`: a --timeout beyond the clock's end, i.e. no deadline.
    let deadline = Instant::now().checked_add(timeout);
    let mut line = serde_json::to_string(&Request {
        version: VERSION,
        op: op.clone(),
    })?;
    line.push('\n');
    stream
        .set_write_timeout(Some(timeout.max(Duration::from_millis(1))))
        .context("cannot set up the control socket")?;
    if let Err(e) = stream.write_all(line.as_bytes()) {
        tracing::debug!(error = %e, "control request not written");
        return Ok(unanswered(&path));
    }
    let mut reader = BufReader::new(stream.try_clone()?.take(MAX_LINE));
    let mut answer = Vec::new();
    loop {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if left.is_some_and(|left| left.is_zero()) {
            return Err(timed_out(timeout));
        }
        stream.set_read_timeout(left)?;
        match reader.read_until(b'\n', &mut answer) {
            // A refused peer's connection is closed unread: reset.
            Err(e) if answer.is_empty() && e.kind() == ErrorKind::ConnectionReset => {
                return Ok(unanswered(&path))
            }
            Ok(0) if answer.is_empty() => return Ok(unanswered(&path)),
            Ok(_) if answer.ends_with(b"\n") => break,
            Ok(0) => anyhow::bail!("the daemon's answer was cut short; see its log"),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(timed_out(timeout))
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("cannot read the daemon's answer"),
        }
    }
    let response: Response = serde_json::from_slice(&answer)
        .context("the daemon's answer is not one this optiwatch understands; use the same version for the daemon and the commands")?;
    if response.version != VERSION {
        anyhow::bail!(
            "the daemon answered in control protocol version {} (this optiwatch speaks {VERSION}); use the same version for both",
            response.version
        );
    }
    match response.reply {
        Reply::Error {
            message,
            usage: true,
        } => Err(UsageError(format!("the daemon refused the request: {message}")).into()),
        Reply::Error { message, .. } => Err(anyhow::anyhow!("the daemon: {message}")),
        reply => Ok(Some(reply)),
    }
}

/// Closed unanswered: the daemon refused this user, or is dying. The
/// command runs standalone, where the store lock names the holder.
fn unanswered(path: &std::path::Path) -> Option<Reply> {
    tracing::warn!(socket = %show_path(path), "the daemon closed the control connection without answering; running standalone");
    None
}

/// [`ask`] from async code: the answer may take minutes.
pub async fn delegate(config: &Config, op: Op, timeout: Duration) -> anyhow::Result<Option<Reply>> {
    tokio::task::block_in_place(|| ask(config, &op, timeout))
}

/// The report of a delegated `invalidate` or `token`.
pub fn sent_report(reply: Reply) -> anyhow::Result<SendReport> {
    match reply {
        Reply::Sent { report } => Ok(*report),
        other => Err(unexpected(&other)),
    }
}

/// An answer that does not fit the request: daemon and command disagree.
pub fn unexpected(reply: &Reply) -> anyhow::Error {
    let kind = match reply {
        Reply::Scan { .. } => "scan",
        Reply::Sent { .. } => "sent",
        Reply::Status { .. } => "status",
        Reply::Error { .. } => "error",
    };
    anyhow::anyhow!(
        "the daemon answered with a {kind} report to another request; use the same optiwatch version for the daemon and the commands"
    )
}

fn timed_out(timeout: Duration) -> anyhow::Error {
    anyhow::anyhow!(
        "the running optiwatch daemon did not finish within {} (--timeout); the work stays queued in the daemon \
         and goes out as Optimole allows (see `optiwatch status`)",
        humantime::format_duration(timeout)
    )
}
