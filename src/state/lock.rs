//! One process per state store. Two optiwatch processes on one store would
//! both send what it owes and race on its token; the second one to start
//! refuses, naming the first. The lock is an `flock` on `<state>.lock`, so
//! the kernel releases it when its holder dies, even by `kill -9`: a crash
//! never leaves a stale lock behind.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// Held for as long as the process works on the store.
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
    pub path: PathBuf,
}

impl StoreLock {
    pub fn acquire(state: &Path) -> anyhow::Result<StoreLock> {
        let path = lock_path(state);
        super::ensure_folder(state)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&path)
            .with_context(|| format!("cannot open lock file {}", path.display()))?;
        let mut file = match try_lock(file).with_context(|| format!("cannot lock {}", path.display()))? {
            Ok(file) => file,
            Err(holder) => bail!(
                "another optiwatch ({holder}) is using the state store {}: stop it first, or give this one its own `state`",
                state.display()
            ),
        };
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", std::process::id())?;
        file.flush()?;
        Ok(StoreLock { _file: file, path })
    }
}

/// Who holds the store's lock, if anyone (for `status`). Only looks: it
/// neither creates the lock file nor writes to it.
pub fn holder(state: &Path) -> Option<String> {
    let file = File::open(lock_path(state)).ok()?;
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
    // SAFETY: flock on a descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(Ok(file));
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
        return Err(err);
    }
    let mut pid = String::new();
    let _ = file.read_to_string(&mut pid);
    Ok(Err(describe(pid.trim())))
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
        drop(first);
        StoreLock::acquire(&state).unwrap();
    }
}
