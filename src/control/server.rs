//! The daemon's end of the control socket. The socket is bound inside a
//! fresh owner-only folder, made 0600 there and only then moved to
//! `<state>.sock`, so nobody can connect before its mode is set; a stale
//! one (a daemon killed by SIGKILL) is replaced only by the holder of the
//! store lock. Every connection is checked with `SO_PEERCRED`: only the
//! daemon's own user and root get an answer, others are closed with a
//! warning. Requests go to the detector (`scan`) or the sender (the rest)
//! as [`Job`]s carrying the channel to answer on.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use super::jobs::{live, Channels, Job, Shared};
use super::protocol::{Op, Reply, Request, Response, MAX_LINE, VERSION};

/// The socket being served; dropping it stops serving and removes the
/// socket file (if it is still this one).
pub struct Server {
    path: PathBuf,
    ino: u64,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.ino) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Binds `path` and serves it. The caller holds the store lock: any file
/// at `path` is a dead daemon's.
pub fn start(path: &Path, channels: &Channels) -> anyhow::Result<Server> {
    let listener = bind(path).with_context(|| {
        format!(
            "cannot create the control socket {} (give `state` a shorter or writable path, or set `[watch] control = false`)",
            path.display()
        )
    })?;
    let ino = std::fs::symlink_metadata(path)?.ino();
    let uid = super::euid();
    let (detector, sender, live) = (
        channels.detector_tx.clone(),
        channels.sender_tx.clone(),
        channels.live.clone(),
    );
    let task = tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "control socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            match stream.peer_cred() {
                Ok(cred) if cred.uid() == uid || cred.uid() == 0 => {}
                Ok(cred) => {
                    tracing::warn!(
                        peer_uid = cred.uid(),
                        peer_pid = cred.pid(),
                        "control socket: refused a connection from another user"
                    );
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "control socket: cannot tell who connected; refused");
                    continue;
                }
            }
            let to = Workers {
                detector: detector.clone(),
                sender: sender.clone(),
                live: live.clone(),
            };
            tokio::spawn(serve(stream, to));
        }
    });
    tracing::info!(socket = %path.display(), "control socket ready");
    Ok(Server {
        path: path.to_path_buf(),
        ino,
        task,
    })
}

/// Binds in a private folder (mode 0700, a short name: socket paths are
/// limited to 107 bytes) beside `path`, sets 0600, then
/// renames into place: there is no moment at which another user could
/// connect.
fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let private = tempfile::Builder::new()
        .prefix(".ow")
        .tempdir_in(dir)
        .with_context(|| format!("cannot create a folder in {}", dir.display()))?;
    let temp = private.path().join("s");
    let listener = std::os::unix::net::UnixListener::bind(&temp)?;
    std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o600))?;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => anyhow::bail!("{} is a folder", path.display()),
        Ok(_) => {
            tracing::info!(socket = %path.display(), "replacing a stale control socket");
        }
        Err(_) => {}
    }
    std::fs::rename(&temp, path)?;
    listener.set_nonblocking(true)?;
    Ok(UnixListener::from_std(listener)?)
}

struct Workers {
    detector: mpsc::Sender<Job>,
    sender: mpsc::Sender<Job>,
    live: Shared,
}

/// Answers the requests of one connection, one line each, in order.
async fn serve(stream: UnixStream, to: Workers) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read.take(MAX_LINE));
    loop {
        // Bytes, not a String: a line that is not UTF-8 gets an error
        // answer like any other that is not a request.
        let mut line = Vec::new();
        match lines.read_until(b'\n', &mut line).await {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "control socket: read failed");
                return;
            }
        }
        let reply = answer(&line, &to).await;
        let mut text = match serde_json::to_string(&Response {
            version: VERSION,
            reply,
        }) {
            Ok(text) => text,
            Err(e) => {
                tracing::error!(error = %e, "control socket: cannot encode an answer");
                return;
            }
        };
        text.push('\n');
        if write.write_all(text.as_bytes()).await.is_err() {
            // The client gave up (its --timeout); the work stays queued.
            return;
        }
    }
}

async fn answer(line: &[u8], to: &Workers) -> Reply {
    let request: Request = match serde_json::from_slice(line) {
        Ok(r) => r,
        Err(e) => {
            return Reply::Error {
                message: format!("not a control request: {e}"),
                usage: true,
            }
        }
    };
    if request.version != VERSION {
        return Reply::Error {
            message: format!(
                "control protocol version {} is not spoken by this daemon (it speaks {VERSION}); use the optiwatch that runs the daemon",
                request.version
            ),
            usage: true,
        };
    }
    let (reply, answered) = oneshot::channel();
    let (queue, job) = match request.op {
        Op::Status => {
            return Reply::Status {
                live: Box::new(live(&to.live)),
            }
        }
        Op::Scan { all_paths } => (&to.detector, Job::Scan { all_paths, reply }),
        Op::Token => (&to.sender, Job::Token { reply }),
        Op::Invalidate(asked) => (&to.sender, Job::Invalidate { asked, reply }),
    };
    if queue.send(job).await.is_err() {
        return Reply::error("the daemon is stopping; run the command again once it is back");
    }
    answered.await.unwrap_or_else(|_| {
        Reply::error(
            "the daemon stopped or reloaded its config before the request was done; \
             what it recorded stays owed and is sent when it runs again",
        )
    })
}
