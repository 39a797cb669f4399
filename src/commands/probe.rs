//! What `check` proves about the files a run will write, as the user it
//! runs as: a probe file is created and removed in the state store's
//! folder and in every token file's folder, and the store's existing files
//! (the database, its `-wal`/`-shm` and `.lock`) are opened for writing
//! (never truncated, never locked: a daemon starting meanwhile must not
//! find the lock taken). A failure names the config key and the fix.

use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::check::Finding;
use crate::config::Config;
use crate::display::show_path;
use crate::state::lock_holder;

/// The user this process runs as, by name when /etc/passwd has it.
pub fn user() -> String {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            (fields.nth(1)? == uid.to_string()).then(|| name.to_string())
        })
        .unwrap_or_else(|| format!("uid {uid}"))
}

/// Creates and removes a file in `folder`.
fn try_create(folder: &Path) -> std::io::Result<()> {
    let probe = folder.join(format!(".optiwatch-check-{}", std::process::id()));
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&probe)?;
    std::fs::remove_file(&probe)
}

/// `Ok(false)`: `path` does not exist. Non-blocking: a FIFO put where a
/// store file belongs is an error, not a `check` that waits forever.
fn writable(path: &Path) -> std::io::Result<bool> {
    match OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
    {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

fn finding(ok: bool, what: &str, detail: String) -> Finding {
    Finding {
        ok,
        what: what.into(),
        detail,
    }
}

/// The state store's folder and files; `None` when the folder is missing
/// (the store check says so already).
pub fn state(config: &Config) -> Vec<Finding> {
    let user = user();
    let Some(folder) = config.state.parent().filter(|f| f.is_dir()) else {
        return Vec::new();
    };
    let fix = |what: String, e: std::io::Error| {
        format!(
            "`state`: {what} as {user} ({e}): chown or chmod it so {user} can write it, \
             or set `state` to a path in a folder {user} can write"
        )
    };
    let mut out = Vec::new();
    match try_create(folder) {
        Ok(()) => out.push(finding(
            true,
            "state folder",
            format!(
                "{} is writable by {user} (probe file created and removed)",
                show_path(folder)
            ),
        )),
        Err(e) => out.push(finding(
            false,
            "state folder",
            fix(format!("cannot create files in {}", show_path(folder)), e),
        )),
    }
    let mut lock = config.state.as_os_str().to_owned();
    lock.push(".lock");
    let lock = PathBuf::from(lock);
    let mut files = vec![config.state.clone()];
    for suffix in ["-wal", "-shm"] {
        let mut name = config.state.as_os_str().to_owned();
        name.push(suffix);
        files.push(name.into());
    }
    files.push(lock.clone());
    for file in &files {
        if let Err(e) = writable(file) {
            out.push(finding(
                false,
                "state store",
                fix(format!("cannot write {}", show_path(file)), e),
            ));
        }
    }
    // A held lock is the daemon at work, not a permission problem.
    if let Some(holder) = lock_holder(&config.state) {
        out.push(finding(
            true,
            "lock",
            format!(
                "{} is held by {holder}: `scan` and another `watch` refuse while it runs",
                show_path(&lock)
            ),
        ));
    }
    out
}

/// Every token file's folder: `[token] file` and each rule's
/// `[rules.token] file`, each folder probed once.
pub fn token_files(config: &Config) -> Vec<Finding> {
    let mut files: Vec<(String, &Path)> = Vec::new();
    if let Some(file) = &config.token.file {
        files.push(("[token] file".into(), file));
    }
    for (i, rule) in config.rules.iter().enumerate() {
        if let Some(file) = rule.token.as_ref().and_then(|t| t.file.as_deref()) {
            files.push((format!("[[rules]] #{} [rules.token] file", i + 1), file));
        }
    }
    let user = user();
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for (key, file) in files {
        let folder = file.parent().unwrap_or(Path::new("/"));
        if seen.contains(&folder) {
            continue;
        }
        seen.push(folder);
        let (ok, detail) = if file.is_dir() {
            (
                false,
                format!(
                    "{key}: {} is a folder: the token file cannot replace it; \
                     remove it or set {key} to a file's path",
                    show_path(file)
                ),
            )
        } else if !folder.is_dir() {
            (
                false,
                format!(
                    "{key}: the folder of {} does not exist: create it or change {key}",
                    show_path(file)
                ),
            )
        } else {
            match try_create(folder) {
                Ok(()) => (
                    true,
                    format!(
                        "{} can be written by {user} (probe file created and removed in its folder)",
                        show_path(file)
                    ),
                ),
                Err(e) => (
                    false,
                    format!(
                        "{key}: cannot create files in {} as {user} ({e}): chown or chmod the \
                         folder so {user} can write it, or set {key} to a path in a folder \
                         {user} can write",
                        show_path(folder)
                    ),
                ),
            }
        };
        out.push(finding(ok, "token file", detail));
    }
    out
}
