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

use std::path::{Path, PathBuf};

/// `<state>.sock`: beside the store and its lock, so one store has one.
pub fn socket_path(state: &Path) -> PathBuf {
    let mut name = state.as_os_str().to_owned();
    name.push(".sock");
    PathBuf::from(name)
}
