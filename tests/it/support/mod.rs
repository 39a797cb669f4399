//! The test harness, one copy for every module: a site (a temp folder with
//! a media tree and a config, built with [`Site`]'s builder) wired to its
//! own fake Optimole API ([`fake_api`]), runs of the real binary ([`Run`],
//! [`Outcome`]), a daemon in the background ([`Daemon`]), and the small
//! helpers the modules share: URLs, waiting on conditions, reading the
//! fake's record, HTTP GETs ([`http`]) and skipping where the machine
//! lacks what a test needs ([`skip`]).

pub mod fake_api;
pub mod http;
pub mod pg;
pub mod skip;

mod config;
mod daemon;
mod run;
mod site;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

pub use config::Table;
pub use daemon::Daemon;
pub use run::{Outcome, Run};
pub use site::Site;

use fake_api::Recorded;

/// The URL the default rule maps the media folder to.
pub const SITE_URL: &str = "https://example.com/uploads";
/// The URL of the second account's rule ([`Site::shop`]).
pub const SHOP_URL: &str = "https://shop.example.com";
/// How long any wait on a condition may take before the test fails: long,
/// because a loaded 2-core machine is slow, and a passing test never
/// waits it out.
pub const WAIT: Duration = Duration::from_secs(30);
/// Keys of two accounts on one fake API ([`Site::with_keys`]).
pub const KEY_A: &str = "opt_site_a_key_aaaaaaaaaa";
pub const KEY_B: &str = "opt_site_b_key_bbbbbbbbbb";

/// A launcher ([`Site::optiwatch_via`]) that runs the binary in a user
/// namespace of its own whose inotify watch limit is 3; the rest of the
/// machine is unaffected. Needs [`skip::Need::Namespaces`].
pub const THREE_INOTIFY_WATCHES: &[&str] = &[
    "unshare",
    "-Ur",
    "sh",
    "-c",
    "echo 3 > /proc/sys/user/max_inotify_watches && exec \"$0\" \"$@\"",
];

/// The URL of a file of the media folder.
pub fn url(rel: &str) -> String {
    format!("{SITE_URL}/{rel}")
}

/// The URL of a file of the shop folder.
pub fn shop_url(rel: &str) -> String {
    format!("{SHOP_URL}/{rel}")
}

/// Sorted copy, for comparing sets of URLs.
pub fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Assets of the requests Optimole accepted, in order.
pub fn accepted(rs: &[Recorded]) -> Vec<String> {
    rs.iter()
        .filter(|r| r.status == 200)
        .flat_map(|r| r.assets.clone())
        .collect()
}

/// How many times Optimole accepted `asset`.
pub fn times_accepted(rs: &[Recorded], asset: &str) -> usize {
    accepted(rs).iter().filter(|a| *a == asset).count()
}

/// A condition for [`fake_api::FakeApi::wait_for`]: every asset of `want`
/// was accepted.
pub fn has_all(want: &[String]) -> impl Fn(&[Recorded]) -> bool + '_ {
    move |rs| {
        let got = accepted(rs);
        want.iter().all(|w| got.contains(w))
    }
}

/// Whether an accepted token request came after the last accepted asset
/// invalidation.
pub fn token_after_last_invalidation(rs: &[Recorded]) -> bool {
    let ok = |r: &Recorded, path: &str| r.path == path && r.status == 200;
    let last_invalidation = rs.iter().rposition(|r| ok(r, "/invalidate/asset"));
    let last_token = rs.iter().rposition(|r| ok(r, "/token"));
    last_token > last_invalidation
}

/// Polls `done` every 10 ms; panics with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, done: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether process `pid` is stopped (state `T`, e.g. at a pause point).
pub fn is_stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .and_then(|s| s.split_whitespace().next())
            == Some("T")
    })
}

/// Runs `script` with sh in `dir`; panics with its output if it fails.
pub fn sh(dir: &Path, script: &str) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
