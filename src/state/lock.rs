//! One process per state store. Two optiwatch processes on one store would
//! both send what it owes and race on its token; the second one to start
//! refuses, naming the first.
//!
//! The lock is an `flock` on the store file itself, which cannot be deleted
//! or swapped under its holder without destroying the store, plus one on
//! `<state>.lock`, which holds the holder's pid for messages (and keeps
//! older optiwatch versions out). The kernel releases both when the holder
//! dies, even by `kill -9`: a crash never leaves a stale lock behind.
//! SQLite's own locks are `fcntl` locks, which do not interact with `flock`
//! on local file systems.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;

/// Held for as long as the process works on the store. The store's
/// descriptor stays open until then: closing it early would also drop
/// SQLite's `fcntl` locks in this process.
#[derive(Debug)]
pub struct StoreLock {
    _pid_file: File,
    _store: File,
}

impl StoreLock {
    pub fn acquire(state: &Path) -> anyhow::Result<StoreLock> {
        let path = lock_path(state);
        super::ensure_folder(state)?;
        let pid_file = open_regular(&mut created(), &path)
            .with_context(|| format!("cannot open lock file {}", path.display()))?;
        let mut pid_file = try_lock(pid_file)
            .with_context(|| format!("cannot lock {}", path.display()))?
            .map_err(|holder| busy(state, &holder))?;
        let store = open_locked(state)
            .with_context(|| format!("cannot lock the state store {}", state.display()))?
            .map_err(|_| {
                busy(
                    state,
                    &flock_holder(state).unwrap_or_else(|| "pid unknown".into()),
                )
            })?;
        pid_file.set_len(0)?;
        pid_file.rewind()?;
        write!(pid_file, "{}", std::process::id())?;
        pid_file.flush()?;
        Ok(StoreLock {
            _pid_file: pid_file,
            _store: store,
        })
    }
}

fn busy(state: &Path, holder: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "another optiwatch ({holder}) is using the state store {}: stop it first, or give this one its own `state`",
        state.display()
    )
}

/// Opens and locks `path` without waiting: `Ok(Err(holder))` when another
/// process has it. An existing file is only read (`flock` needs no write
/// access); a missing one is created empty, which is what SQLite makes of a
/// new database anyway.
fn open_locked(path: &Path) -> std::io::Result<Result<File, String>> {
    let file = match open_regular(OpenOptions::new().read(true), path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => open_regular(&mut created(), path)?,
        opened => opened?,
    };
    try_lock(file)
}

/// Read-write, made (0644) when missing, never truncated.
fn created() -> OpenOptions {
    let mut options = OpenOptions::new();
    options
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644);
    options
}

/// Opens `path` without ever waiting on it (a FIFO put in its place would
/// block `open` forever) and insists on a regular file.
fn open_regular(options: &mut OpenOptions, path: &Path) -> std::io::Result<File> {
    let file = options.custom_flags(libc::O_NONBLOCK).open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other(format!(
            "{} is not a regular file: remove it (optiwatch makes it again)",
            path.display()
        )));
    }
    Ok(file)
}

/// Who holds the store's lock, if anyone (for `status`). Only looks: it
/// neither creates nor writes a file, and never opens the store (closing a
/// descriptor of it would drop this process's SQLite locks).
pub fn holder(state: &Path) -> Option<String> {
    if let Some(holder) = flock_holder(state) {
        return Some(holder);
    }
    // A holder that only locks `<state>.lock` (an older optiwatch).
    let file = open_regular(OpenOptions::new().read(true), &lock_path(state)).ok()?;
    try_lock(file).ok()?.err()
}

fn lock_path(state: &Path) -> PathBuf {
    let mut name = state.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Takes the lock without waiting: `Ok(Err(holder))` when another process
/// has it, described from the pid it wrote into the file.
fn try_lock(mut file: File) -> std::io::Result<Result<File, String>> {
    match file.try_lock() {
        Ok(()) => Ok(Ok(file)),
        Err(TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            Ok(Err(describe(pid.trim())))
        }
        Err(TryLockError::Error(e)) => Err(e),
    }
}

/// The process holding an `flock` on the store file, found in
/// `/proc/locks` by the file's device and inode, without opening it.
fn flock_holder(state: &Path) -> Option<String> {
    let meta = std::fs::metadata(state).ok()?;
    let id = format!(
        "{:02x}:{:02x}:{}",
        libc::major(meta.dev()),
        libc::minor(meta.dev()),
        meta.ino()
    );
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    // "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"; "->" marks waiters.
    let pid = locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields[..] {
            [_, "FLOCK", _, _, pid, file, ..] if file == id => Some(pid),
            _ => None,
        }
    })?;
    Some(describe(pid))
}

/// "pid 123: optiwatch --config x watch", from the pid the holder wrote.
fn describe(pid: &str) -> String {
    let Ok(pid) = pid.parse::<u32>() else {
        return "pid unknown".into();
    };
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmd) if !cmd.is_empty() => {
            let words: Vec<String> = cmd
                .split(|b| *b == 0)
                .filter(|w| !w.is_empty())
                .map(|w| String::from_utf8_lossy(w).into_owned())
                .collect();
            format!("pid {pid}: {}", words.join(" "))
        }
        _ => format!("pid {pid}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("s.db");
        let first = StoreLock::acquire(&state).unwrap();
        // flock locks belong to open file descriptions, so a second open in
        // the same process conflicts just like another process would.
        let err = StoreLock::acquire(&state).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        assert!(holder(&state).is_some());
        drop(first);
        assert_eq!(holder(&state), None);
        StoreLock::acquire(&state).unwrap();
    }

    #[test]
    fn deleting_the_lock_file_lets_no_second_holder_in() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("s.db");
        let _first = StoreLock::acquire(&state).unwrap();
        std::fs::remove_file(lock_path(&state)).unwrap();
        let err = StoreLock::acquire(&state).unwrap_err().to_string();
        assert!(
            err.contains(&format!("another optiwatch (pid {}", std::process::id())),
            "{err}"
        );
        assert!(holder(&state).is_some_and(|h| h.contains(&std::process::id().to_string())));
    }
}
