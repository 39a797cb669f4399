//! The control channel: how `scan`, `invalidate`, `token` and `status`
//! reach a running `watch` instead of fighting it for the store lock.
//!
//! The daemon serves a Unix socket next to the store ([`socket_path`]),
//! owner-only and open to its own user and root only ([`server`]); a
//! command asks it first and runs standalone when nobody answers
//! ([`client`]). One JSON request per line, one JSON answer per line
//! ([`protocol`]). The work itself stays the daemon's: the detector
//! reconciles, the sender flushes and publishes, the request waits for both.

pub mod client;
pub mod jobs;
pub mod protocol;
pub mod server;

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// `<state>.sock`: beside the store and its lock, so one store has one.
pub fn socket_path(state: &Path) -> PathBuf {
    let mut name = state.as_os_str().to_owned();
    name.push(".sock");
    PathBuf::from(name)
}

/// The user id of the process at the other end of a Unix socket.
pub fn peer_uid(socket: &impl AsRawFd) -> std::io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given, and
    // the descriptor stays open for the call.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            std::ptr::addr_of_mut!(cred).cast(),
            &mut len,
        )
    };
    match rc {
        0 => Ok(cred.uid),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// This process's effective user id.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}
