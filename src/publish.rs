//! Token publishing: handing a fresh cache token to whatever renders the
//! image URLs, by writing `[token] file` atomically and/or running
//! `[token] command`.
//!
//! The command runs without a shell: `{token}` is replaced inside argv
//! items and OPTIWATCH_TOKEN is set, so no file name or token text is ever
//! interpreted by a shell, and a token must start with a letter or digit, so
//! it is never read as an option. The command's exit status decides whether
//! it succeeded: a background process it started may keep its output pipes
//! open long after it exited.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::config::TokenConfig;

/// Where one account's tokens go: the `[token]` tables of its rules.
#[derive(Debug, Clone)]
pub struct Publisher {
    destinations: Vec<TokenConfig>,
    /// Variables holding API keys, removed from the command's environment.
    secret_env: Vec<String>,
}

impl Publisher {
    pub fn new(destinations: Vec<TokenConfig>, secret_env: Vec<String>) -> Publisher {
        Publisher {
            destinations,
            secret_env,
        }
    }

    /// Publishes to every destination; the first failure is returned after
    /// all were tried.
    pub async fn publish(&self, token: &str) -> anyhow::Result<()> {
        if !is_valid(token) {
            bail!("the cache token is not 1 to 256 URL-safe characters starting with a letter or digit; it is not published");
        }
        let mut first_error = None;
        for cfg in &self.destinations {
            if let Err(e) = publish_to(cfg, token, &self.secret_env).await {
                tracing::warn!(error = format!("{e:#}"), "token publishing failed");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

async fn publish_to(cfg: &TokenConfig, token: &str, secret_env: &[String]) -> anyhow::Result<()> {
    if let Some(file) = &cfg.file {
        write_atomically(file, token).with_context(|| {
            format!("cannot write token file {} ([token] file)", file.display())
        })?;
        tracing::info!(file = %file.display(), "token written");
        crate::failpoint::pause_at("token-written");
    }
    if let Some(argv) = &cfg.command {
        run(cfg, argv, token, secret_env).await?;
    }
    Ok(())
}

/// Whether `token` may be published: 1 to 256 URL-safe characters (it ends
/// up in files, argv and image URLs), starting with a letter or a digit, so
/// that a token is never taken for an option (`-rf`) by the command.
pub fn is_valid(token: &str) -> bool {
    token.len() <= 256
        && token
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
}

/// Output kept per stream: enough for the error's last lines.
const OUTPUT_CAP: usize = 64 * 1024;
/// How long output is still collected once the command has exited: a
/// background child it left may hold the pipes open for ever.
const OUTPUT_GRACE: Duration = Duration::from_millis(200);

async fn run(
    cfg: &TokenConfig,
    argv: &[String],
    token: &str,
    secret_env: &[String],
) -> anyhow::Result<()> {
    let args: Vec<String> = argv.iter().map(|a| a.replace("{token}", token)).collect();
    let mut command = tokio::process::Command::new(&args[0]);
    command
        .args(&args[1..])
        .env("OPTIWATCH_TOKEN", token)
        .stdin(Stdio::null())
        // Captured, not inherited: the command's output must not mix
        // into `scan --json` on stdout.
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // The key stays with optiwatch: the command may run plugin code.
    for var in secret_env {
        command.env_remove(var);
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start token command {:?} ([token] command)", args[0]))?;
    let stdout = Captured::start(child.stdout.take());
    let stderr = Captured::start(child.stderr.take());
    // The command's exit decides, not its pipes.
    let status = match tokio::time::timeout(cfg.command_timeout, child.wait()).await {
        Ok(status) => status.with_context(|| format!("waiting for token command {:?}", args[0]))?,
        Err(_) => {
            let _ = child.kill().await;
            stdout.reader.abort();
            stderr.reader.abort();
            bail!(
                "token command {:?} did not finish within {:?} ([token] command_timeout); it was killed",
                args[0],
                cfg.command_timeout
            );
        }
    };
    let stdout = stdout.finish().await;
    let stderr = stderr.finish().await;
    if !stdout.trim().is_empty() {
        tracing::debug!(output = %stdout.trim(), "token command stdout");
    }
    if !stderr.trim().is_empty() {
        tracing::debug!(output = %stderr.trim(), "token command stderr");
    }
    if !status.success() {
        bail!(
            "token command {:?} failed ({}): {}",
            args[0],
            status,
            last_lines(&stderr)
        );
    }
    tracing::info!(command = %args[0], "token command succeeded");
    Ok(())
}

/// One captured stream: a reader task and what it has read so far.
struct Captured {
    kept: Arc<Mutex<Vec<u8>>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Captured {
    /// Reads `pipe` to its end in the background, keeping its last
    /// [`OUTPUT_CAP`] bytes.
    fn start(pipe: Option<impl AsyncRead + Unpin + Send + 'static>) -> Captured {
        let kept = Arc::new(Mutex::new(Vec::new()));
        let sink = kept.clone();
        let reader = tokio::spawn(async move {
            let Some(mut pipe) = pipe else { return };
            let mut chunk = [0u8; 8192];
            while let Ok(n @ 1..) = pipe.read(&mut chunk).await {
                let mut kept = sink.lock().unwrap_or_else(|e| e.into_inner());
                kept.extend_from_slice(&chunk[..n]);
                if kept.len() > 2 * OUTPUT_CAP {
                    let extra = kept.len() - OUTPUT_CAP;
                    kept.drain(..extra);
                }
            }
        });
        Captured { kept, reader }
    }

    /// What was read, waiting at most [`OUTPUT_GRACE`] for the pipe's end.
    async fn finish(mut self) -> String {
        if tokio::time::timeout(OUTPUT_GRACE, &mut self.reader)
            .await
            .is_err()
        {
            self.reader.abort();
        }
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&kept).into_owned()
    }
}

/// Writes `token` to `path` through a temp file in the same folder and a
/// rename, so readers see the old token or the new one, never a mix.
fn write_atomically(path: &Path, token: &str) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut temp = tempfile::Builder::new()
        .prefix(".optiwatch-token.")
        .tempfile_in(dir)?;
    temp.write_all(token.as_bytes())?;
    temp.as_file().sync_all()?;
    // The web server reads this file; a token is public (it is in every
    // image URL), so world-readable is right.
    temp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    temp.persist(path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

fn last_lines(text: &str) -> String {
    let lines: Vec<&str> = text.trim().lines().collect();
    if lines.is_empty() {
        return "no output on stderr".into();
    }
    lines[lines.len().saturating_sub(5)..].join(" | ")
}
