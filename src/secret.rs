//! The Optimole API key: where it is read from, and a type that cannot leak
//! it. The key is held only as a header value marked sensitive (so HTTP
//! debug logs redact it) and its `Debug` prints no part of it. There is no
//! command-line flag for it on purpose: process arguments are world-readable.
//!
//! Nothing the token command (same user, possibly plugin code) can read
//! holds the key: variables holding keys leave the environment at start-up
//! ([`environ`]), and the process is marked non-dumpable, so other
//! processes of the user can read neither its memory nor its environment
//! through `/proc`. Key files and systemd credentials are read bounded: only
//! a regular file of at most [`MAX_KEY_FILE`] bytes is accepted.

pub mod environ;

use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use reqwest::header::HeaderValue;

use crate::config::{Config, KeySource, DEFAULT_KEY_ENV};
use crate::exit_codes::UsageError;
use environ::Threads;

/// The most a key file or credential may hold: a key is a few dozen bytes.
pub const MAX_KEY_FILE: u64 = 4096;

/// A ready `Authorization` header value, `Bearer <key>`.
#[derive(Clone)]
pub struct ApiKey {
    header: HeaderValue,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Start-up, before any thread exists: takes the key variables of the
/// config at `config_path` (and the default one) out of the environment and
/// makes the process non-dumpable. A config that does not load is reported
/// later by the command itself; the default variable is taken regardless.
pub fn protect_at_start(config_path: &Path) {
    // SAFETY: prctl with integer arguments only; no memory is involved.
    // Non-dumpable: /proc/<pid>/environ, /mem and core dumps are closed to
    // other processes of the same user; /proc/<pid>/cmdline stays readable.
    let rc = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    if rc != 0 {
        eprintln!(
            "warning: cannot mark the process non-dumpable: {}",
            std::io::Error::last_os_error()
        );
    }
    let vars = Config::load(config_path)
        .map(|c| c.key_env_vars())
        .unwrap_or_else(|_| vec![DEFAULT_KEY_ENV.to_string()]);
    for var in vars {
        environ::take(&var, Threads::NoneYet);
    }
}

impl ApiKey {
    /// Builds the key from its text. Errors never contain the text.
    pub fn new(key: &str) -> Result<ApiKey, UsageError> {
        let key = key.trim();
        if key.is_empty() {
            return Err(UsageError("the API key is empty".into()));
        }
        let mut header = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
            UsageError("the API key contains characters that cannot go into an HTTP header".into())
        })?;
        header.set_sensitive(true);
        Ok(ApiKey { header })
    }

    /// Reads the key from where the config says.
    pub fn load(source: &KeySource) -> Result<ApiKey, UsageError> {
        match source {
            KeySource::Env(var) => {
                let value = environ::take(var, Threads::Running).ok_or_else(|| {
                    UsageError(format!(
                        "environment variable {var} is not set: export your Optimole Root API key in it, \
                         or set key_file or key_credential in the config"
                    ))
                })?;
                let text = value.into_string().map_err(|_| {
                    UsageError(format!(
                        "environment variable {var} is not valid UTF-8 text"
                    ))
                })?;
                ApiKey::new(&text)
                    .map_err(|e| UsageError(format!("{e} (from environment variable {var})")))
            }
            KeySource::File(path) => {
                let what = format!("the API key file {} (key_file)", path.display());
                let text = read_bounded(path, &what)?;
                ApiKey::new(&text).map_err(|e| UsageError(format!("{e} (from {what})")))
            }
            KeySource::Credential(name) => {
                let path = credential_path(name)?;
                let what = format!("systemd credential {name:?} ({})", path.display());
                let text = read_bounded(&path, &what)?;
                ApiKey::new(&text).map_err(|e| UsageError(format!("{e} (from {what})")))
            }
        }
    }

    pub(crate) fn header(&self) -> HeaderValue {
        self.header.clone()
    }

    /// `body` with the key replaced by `<redacted>` wherever it occurs: an
    /// API that echoes the key in an error must not put it into errors,
    /// logs, the store (`last_error`) or a control-socket answer.
    pub(crate) fn redact(&self, body: Vec<u8>) -> Vec<u8> {
        let key = self
            .header
            .as_bytes()
            .get(b"Bearer ".len()..)
            .unwrap_or_default();
        if key.is_empty() || !body.windows(key.len()).any(|w| w == key) {
            return body;
        }
        let mut out = Vec::with_capacity(body.len());
        let mut rest = body.as_slice();
        while !rest.is_empty() {
            match rest.starts_with(key) {
                true => {
                    out.extend_from_slice(b"<redacted>");
                    rest = &rest[key.len()..];
                }
                false => {
                    out.push(rest[0]);
                    rest = &rest[1..];
                }
            }
        }
        out
    }
}

/// `$CREDENTIALS_DIRECTORY/<name>`: where systemd puts a credential given
/// with `LoadCredential=<name>:<file>`.
pub fn credential_path(name: &str) -> Result<PathBuf, UsageError> {
    match std::env::var_os("CREDENTIALS_DIRECTORY") {
        Some(dir) if !dir.is_empty() => Ok(PathBuf::from(dir).join(name)),
        _ => Err(UsageError(format!(
            "key_credential = {name:?} needs systemd's credentials, but CREDENTIALS_DIRECTORY \
             is not set: add `LoadCredential={name}:/path/to/key` to the service unit, \
             or use key_file outside systemd"
        ))),
    }
}

/// Reads a small secret file. A FIFO, a device or anything but a regular
/// file is refused before it is read (a FIFO would block forever, a device
/// never end), and so is a file larger than [`MAX_KEY_FILE`].
fn read_bounded(path: &Path, what: &str) -> Result<String, UsageError> {
    let refuse = |why: String| UsageError(format!("cannot use {what}: {why}"));
    // Checked before opening too: opening some devices has effects.
    let meta = std::fs::metadata(path).map_err(|e| refuse(e.to_string()))?;
    if !meta.is_file() {
        return Err(refuse(not_regular(&meta)));
    }
    // O_NONBLOCK: should the path turn into a FIFO after the check, the
    // open returns at once instead of waiting for a writer.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| refuse(e.to_string()))?;
    let meta = file.metadata().map_err(|e| refuse(e.to_string()))?;
    if !meta.is_file() {
        return Err(refuse(not_regular(&meta)));
    }
    let too_big = || {
        refuse(format!(
            "it is larger than {MAX_KEY_FILE} bytes; it must hold only the API key"
        ))
    };
    if meta.len() > MAX_KEY_FILE {
        return Err(too_big());
    }
    let mut bytes = Vec::new();
    file.take(MAX_KEY_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| refuse(e.to_string()))?;
    if bytes.len() as u64 > MAX_KEY_FILE {
        return Err(too_big());
    }
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            "API key file is readable by other users: run chmod 600 on it"
        );
    }
    String::from_utf8(bytes).map_err(|_| refuse("it is not UTF-8 text".into()))
}

fn not_regular(meta: &std::fs::Metadata) -> String {
    use std::os::unix::fs::FileTypeExt;
    let kind = meta.file_type();
    let is = if kind.is_dir() {
        "a folder"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else {
        "not a regular file"
    };
    format!("it is {is}; put the key in a regular file (chmod 600)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_key() {
        let key = ApiKey::new("opt_supersecret").unwrap();
        let shown = format!("{key:?} {:?}", key.header());
        assert!(!shown.contains("supersecret"), "{shown}");
    }

    #[test]
    fn an_echoed_key_is_redacted() {
        let key = ApiKey::new("opt_k").unwrap();
        let out = key.redact(b"bad key opt_k (Bearer opt_k)".to_vec());
        assert_eq!(out, b"bad key <redacted> (Bearer <redacted>)");
        assert_eq!(key.redact(b"opt_ ok".to_vec()), b"opt_ ok");
    }

    #[test]
    fn only_small_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("key");
        std::fs::write(&ok, "opt_abc\n").unwrap();
        assert_eq!(read_bounded(&ok, "k").unwrap(), "opt_abc\n");
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; MAX_KEY_FILE as usize + 1]).unwrap();
        let err = read_bounded(&big, "k").unwrap_err().to_string();
        assert!(err.contains("larger than 4096 bytes"), "{err}");
        let err = read_bounded(Path::new("/dev/zero"), "k")
            .unwrap_err()
            .to_string();
        assert!(err.contains("a device"), "{err}");
        let err = read_bounded(dir.path(), "k").unwrap_err().to_string();
        assert!(err.contains("a folder"), "{err}");
    }
}
