//! The crash suite: the real binary is killed with SIGKILL at many points of
//! a run (named pause points, and random moments), then run again; the fake
//! API's record must show every changed URL invalidated at least once and a
//! token published after the last change. Duplicates are allowed, losses
//! are not.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::fake_api::Fault;
use crate::support::{accepted, token_after_last_invalidation, url, Daemon, Site, Table, WAIT};

const POINTS: &[&str] = &[
    "walking",
    "walked",
    "recorded",
    "invalidated",
    "settled",
    "token-fetched",
    "token-written",
    "published",
];

/// `files` files baselined; batches of 10; tokens to a file and a command.
fn crash_site(files: usize) -> Site {
    let names: Vec<String> = (0..files).map(|n| format!("{n}.jpg")).collect();
    Site::new()
        .setting(Table::Api, "batch_size = 10")
        .setting(Table::Token, "file = \"token.txt\"")
        .setting(Table::Token, "command = [\"true\"]")
        .files(&names)
        .baselined()
}

/// Waits until the process paused at its point; kills it there.
fn kill_when_paused(mut run: Daemon, point: &str) -> bool {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match run.paused() {
            Some(true) => {
                run.kill9();
                return true;
            }
            // Exited without reaching the point (nothing left to do there).
            None => return false,
            Some(false) if std::time::Instant::now() > deadline => {
                panic!("never paused at {point}; log:\n{}", run.log())
            }
            Some(false) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// After the crashes: one clean run, then checks that nothing was lost.
fn check_nothing_lost(site: &Site, changed: &BTreeSet<String>) {
    site.scan(&[]).expect(0);
    let sent: BTreeSet<String> = site.api.invalidated_assets().into_iter().collect();
    let missing: Vec<&String> = changed.difference(&sent).collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    // The last token request came after the last invalidation, and the site
    // has the last token.
    assert!(
        token_after_last_invalidation(&site.api.requests()),
        "a token after the last invalidation"
    );
    let published = std::fs::read_to_string(site.at("token.txt")).unwrap();
    assert_eq!(Some(&published), site.api.tokens_issued().last());
    // And nothing is owed any more.
    site.api.clear();
    site.scan(&[]).expect(0);
    assert!(site.api.requests().is_empty(), "{:?}", site.api.requests());
}

#[test]
fn scan_killed_at_every_pause_point_loses_nothing() {
    for point in POINTS {
        let site = crash_site(30);
        let mut changed = BTreeSet::new();
        for n in 0..25 {
            site.write(format!("{n}.jpg"), b"v2");
            changed.insert(url(&format!("{n}.jpg")));
        }
        let run = site.optiwatch().arg("scan").pause_at(point).spawn();
        assert!(kill_when_paused(run, point), "scan must pass {point}");
        check_nothing_lost(&site, &changed);
    }
}

#[test]
fn scan_killed_again_and_again_at_random_moments_loses_nothing() {
    let site = crash_site(200);
    let mut changed = BTreeSet::new();
    let mut kills = 0;
    for round in 0..12u32 {
        // New edits every round, while earlier ones may still be owed.
        for n in (round as usize * 15)..(round as usize * 15 + 30) {
            site.write(format!("{n}.jpg"), format!("round {round}").as_bytes());
            changed.insert(url(&format!("{n}.jpg")));
        }
        // Slow answers keep the run busy long enough to be killed mid-way.
        site.api
            .push_faults(Fault::Delay(Duration::from_millis(80)), 40);
        let mut run = site.optiwatch().args(&["scan"]).spawn();
        std::thread::sleep(Duration::from_millis(fastrand_ms(round)));
        if run.is_running() {
            run.kill9();
            kills += 1;
        }
        site.api.clear_faults();
    }
    assert!(kills >= 6, "only {kills} runs were killed mid-way");
    check_nothing_lost(&site, &changed);
}

#[test]
fn watch_killed_at_pause_points_loses_nothing() {
    for point in ["recorded", "invalidated", "token-fetched", "published"] {
        let site = crash_site(10).fast_watch("100ms");
        let daemon = site.optiwatch().pause_at(point).start_watch();
        let mut changed = BTreeSet::new();
        for n in 0..5 {
            site.write(format!("{n}.jpg"), b"v2");
            changed.insert(url(&format!("{n}.jpg")));
        }
        assert!(kill_when_paused(daemon, point), "watch must pass {point}");
        // The next start sends the rest.
        let again = site.watch();
        site.api
            .wait_for("everything after the restart", WAIT, |rs| {
                let sent: BTreeSet<String> = accepted(rs).into_iter().collect();
                changed.is_subset(&sent) && rs.iter().any(|r| r.path == "/token" && r.status == 200)
            });
        drop(again);
        check_nothing_lost(&site, &changed);
    }
}

/// Kill delays spread over 0-350 ms (a run takes about 350 ms), different
/// every round.
fn fastrand_ms(round: u32) -> u64 {
    u64::from(round.wrapping_mul(2_654_435_761) % 350)
}
