//! The daemon's life beyond a steady folder: it never stops quietly (a
//! failure ends it with a non-zero status and says why last), rule folders
//! that appear late or are swapped for others are watched and reconciled,
//! running out of inotify watches is never lost, and a reload loses no
//! owed work. The real binary against the fake API; every wait is on a
//! condition with a deadline.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::skip::{lacks, Need};
use crate::support::{
    accepted, is_stopped, shop_url, times_accepted, url, wait_until, Daemon, Site, Table, KEY_A,
    KEY_B, SHOP_URL, SITE_URL, THREE_INOTIFY_WATCHES, WAIT,
};

const DEBOUNCE: Duration = Duration::from_millis(200);
const POLL: Duration = Duration::from_millis(1000);

/// Fast watch settings (`DEBOUNCE`, `POLL`), nothing baselined yet.
fn polled_unscanned() -> Site {
    Site::new()
        .fast_watch("200ms")
        .setting(Table::Watch, "poll_interval = \"1s\"")
}

/// A site with `files` baselined and fast watch settings.
fn polled_site(files: &[&str]) -> Site {
    polled_unscanned().files(files).baselined()
}

/// The daemon's exit code and the last line of its log, once it exited
/// on its own.
fn exit_and_last_line(daemon: Daemon) -> (Option<i32>, String) {
    let (code, lines) = daemon.wait_with_log(WAIT);
    (code, lines.last().cloned().unwrap_or_default())
}

/// Waits until `rel` was accepted `times` times; returns when the last of
/// them arrived.
fn wait_sent(site: &Site, rel: &str, times: usize) -> Instant {
    let want = url(rel);
    let rs = site
        .api
        .wait_for(&format!("{rel} sent {times}x"), WAIT, |rs| {
            times_accepted(rs, &want) >= times
        });
    rs.iter()
        .filter(|r| r.status == 200 && r.assets.contains(&want))
        .nth(times - 1)
        .unwrap()
        .at
}

/// The bound: an edit made after a rule folder appeared or was
/// swapped is invalidated within debounce + poll interval + 1 s.
fn assert_in_time(what: &str, edited: Instant, arrived: Instant) {
    let took = arrived.saturating_duration_since(edited);
    let bound = DEBOUNCE + POLL + Duration::from_secs(1);
    eprintln!("{what}: invalidated {took:?} after the edit (bound {bound:?})");
    assert!(took <= bound, "{what}: took {took:?}, more than {bound:?}");
}

// --- 6: the daemon never stops quietly -------------------------------------

#[test]
fn a_watch_whose_store_disk_fills_up_exits_non_zero_and_says_why_last() {
    if lacks(&[Need::Namespaces]) {
        return;
    }
    let site = polled_site(&[]).store_in("store");
    let store = site.at("store");
    for n in 0..5 {
        site.write(format!("{n}.jpg"), b"1");
    }
    // The daemon in a mount namespace of its own whose store folder is a
    // 320 KiB tmpfs: enough for the first store, not for 4,000 new rows.
    let script = format!(
        "mount -t tmpfs -o size=320k tmpfs {} && exec \"$0\" \"$@\"",
        store.display()
    );
    let daemon = site
        .optiwatch_via(&["unshare", "-Urm", "sh", "-c", &script])
        .arg("watch")
        .spawn();
    daemon.wait_log("watching", WAIT);
    let many = site.path("many");
    std::fs::create_dir(&many).unwrap();
    for n in 0..4000 {
        std::fs::write(many.join(format!("{n:0120}.jpg")), b"x").unwrap();
    }
    let (code, last) = exit_and_last_line(daemon);
    assert_eq!(code, Some(1), "last log line: {last}");
    assert!(last.contains("ERROR"), "{last}");
    assert!(last.contains("disk is full"), "{last}");
    assert!(last.contains("optiwatch.db"), "{last}");
}

#[test]
fn a_watch_whose_store_is_deleted_exits_non_zero_and_says_why_last() {
    let site = polled_site(&["a.jpg"]);
    let daemon = site.watch();
    std::fs::remove_file(site.at("optiwatch.db")).unwrap();
    let (code, last) = exit_and_last_line(daemon);
    assert_eq!(code, Some(1), "last log line: {last}");
    assert!(last.contains("ERROR"), "{last}");
    assert!(last.contains("deleted or replaced"), "{last}");
}

// --- 11: a rule folder that was not there at first gets its baseline -------

#[test]
fn a_rule_folder_missing_at_start_is_baselined_when_it_appears_then_edits_are_sent() {
    // No scan before: the rule has never been baselined.
    let site = polled_unscanned();
    std::fs::remove_dir(&site.media).unwrap();
    let daemon = site.watch();
    daemon.wait_log("rule folder is unavailable", WAIT);
    // The mount comes up with the library on it.
    site.write("a.jpg", b"v1");
    site.write("old/b.jpg", b"v1");
    daemon.wait_log("watched again", WAIT);
    let edited = Instant::now();
    site.write("a.jpg", b"v2");
    let arrived = wait_sent(&site, "a.jpg", 1);
    assert_in_time("edit in a folder that appeared late", edited, arrived);
    assert_eq!(
        accepted(&site.api.requests()),
        vec![url("a.jpg")],
        "the baseline sent nothing"
    );
}

#[test]
fn a_rule_added_by_sighup_before_its_folder_exists_is_baselined_when_it_appears() {
    let mut site = polled_site(&["a.jpg"]);
    let daemon = site.watch();
    site = site.rule("shop", SHOP_URL);
    site.write_config();
    daemon.signal(libc::SIGHUP);
    daemon.wait_log("rule folder is unavailable", WAIT);
    let shop = site.at("shop");
    std::fs::create_dir(&shop).unwrap();
    std::fs::write(shop.join("s.jpg"), b"v1").unwrap();
    daemon.wait_log("watched again", WAIT);
    std::fs::write(shop.join("s.jpg"), b"v2").unwrap();
    site.api
        .wait_for("the edit in the new rule's folder", WAIT, |rs| {
            accepted(rs).contains(&shop_url("s.jpg"))
        });
    // And after a restart, edits still count (the baseline is recorded).
    assert_eq!(daemon.stop_with(libc::SIGTERM, WAIT), Some(0));
    let _again = site.watch();
    std::fs::write(shop.join("s.jpg"), b"v3").unwrap();
    site.api.wait_for("the edit after a restart", WAIT, |rs| {
        times_accepted(rs, &shop_url("s.jpg")) == 2
    });
}

// --- 12: a swapped rule folder is watched anew -----------------------------

#[test]
fn a_rule_folder_swapped_by_renames_is_watched_again() {
    let site = polled_site(&["a.jpg", "b.jpg"]);
    let _daemon = site.watch();
    let new = site.at("media.new");
    std::fs::create_dir(&new).unwrap();
    std::fs::write(new.join("a.jpg"), b"swapped").unwrap();
    std::fs::write(new.join("b.jpg"), b"v1").unwrap();
    std::fs::rename(&site.media, site.at("media.old")).unwrap();
    std::fs::rename(&new, &site.media).unwrap();
    // The swap itself is a change of a.jpg.
    wait_sent(&site, "a.jpg", 1);
    let edited = Instant::now();
    site.write("b.jpg", b"v2");
    let arrived = wait_sent(&site, "b.jpg", 1);
    assert_in_time("edit in a swapped-in folder", edited, arrived);
}

#[test]
fn a_rule_folder_deleted_and_made_again_is_watched_again() {
    let site = polled_site(&["a.jpg", "b.jpg"]).setting(Table::Top, "invalidate_new = true");
    let _daemon = site.watch();
    std::fs::remove_dir_all(&site.media).unwrap();
    std::fs::create_dir(&site.media).unwrap();
    wait_sent(&site, "a.jpg", 1);
    wait_sent(&site, "b.jpg", 1);
    let edited = Instant::now();
    site.write("a.jpg", b"again");
    let arrived = wait_sent(&site, "a.jpg", 2);
    assert_in_time("new file in a folder made again", edited, arrived);
}

#[test]
fn a_rule_folder_that_is_a_symlink_is_watched_and_followed_when_switched() {
    // `media -> releases/1`, switched to `releases/2` by a deploy: no event
    // at all, only the poll tick's identity check can see the switch.
    let site = polled_site(&[]);
    let releases = site.at("releases");
    for (r, a) in [("1", "v1"), ("2", "r2")] {
        std::fs::create_dir_all(releases.join(r)).unwrap();
        std::fs::write(releases.join(r).join("a.jpg"), a).unwrap();
        std::fs::write(releases.join(r).join("b.jpg"), b"same").unwrap();
    }
    std::fs::remove_dir(&site.media).unwrap();
    std::os::unix::fs::symlink("releases/1", &site.media).unwrap();
    site.scan(&[]).expect(0);
    let daemon = site.watch();
    std::fs::write(releases.join("1/a.jpg"), b"v2").unwrap();
    wait_sent(&site, "a.jpg", 1);
    let next = site.at("media.next");
    std::os::unix::fs::symlink("releases/2", &next).unwrap();
    std::fs::rename(&next, &site.media).unwrap();
    daemon.wait_log("another folder now", WAIT);
    // The switch changed a.jpg; b.jpg has the same content in both.
    wait_sent(&site, "a.jpg", 2);
    let edited = Instant::now();
    std::fs::write(releases.join("2/a.jpg"), b"v3").unwrap();
    let arrived = wait_sent(&site, "a.jpg", 3);
    assert_in_time("edit behind a switched symlink", edited, arrived);
    assert!(!accepted(&site.api.requests()).contains(&url("b.jpg")));
}

// --- 16: nothing is lost in a full queue or across a reload ----------------

/// Resumes the process whenever a pause point stopped it, until dropped.
struct Resumer {
    done: Arc<AtomicBool>,
}

impl Resumer {
    fn start(pid: u32) -> Resumer {
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                if is_stopped(pid) {
                    // SAFETY: kill(2) on our own child's pid.
                    unsafe { libc::kill(pid as i32, libc::SIGCONT) };
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Resumer { done }
    }
}

impl Drop for Resumer {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

fn wait_stopped(pid: u32) {
    wait_until("the daemon to pause", WAIT, || is_stopped(pid));
}

#[test]
fn running_out_of_watches_while_the_event_queue_is_full_still_polls() {
    if lacks(&[Need::Namespaces]) {
        return;
    }
    let site = Site::watched("200ms", &["a.jpg"])
        .setting(Table::Top, "invalidate_new = true")
        .setting(Table::Watch, "poll_interval = \"300ms\"")
        .setting(Table::Watch, "event_queue = 1");
    // Three inotify watches in this namespace: the media folder and two
    // more. Every pass stops before recording (a pause point), so the
    // detector is busy, not reading its one-slot queue, while the folders
    // below are created and fail to be watched.
    let daemon = site
        .optiwatch_via(THREE_INOTIFY_WATCHES)
        .arg("watch")
        .pause_at("walked")
        .spawn();
    let pid = daemon.pid();
    wait_stopped(pid);
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(pid as i32, libc::SIGCONT) };
    daemon.wait_log("watching", WAIT);
    site.write("a.jpg", b"v2");
    wait_stopped(pid);
    for d in 1..=5 {
        site.write(format!("d{d}/x.jpg"), b"v1");
    }
    let _resumer = Resumer::start(pid);
    // New files are invalidated (invalidate_new): all five were recorded.
    for d in 1..=5 {
        wait_sent(&site, &format!("d{d}/x.jpg"), 1);
    }
    assert!(
        daemon.log().contains("fs.inotify.max_user_watches"),
        "{}",
        daemon.log()
    );
    // A folder inotify never watched is polled.
    site.write("d5/x.jpg", b"v2");
    wait_sent(&site, "d5/x.jpg", 2);
}

#[test]
fn work_recorded_for_an_account_a_reload_removes_is_adopted() {
    let mut site = Site::with_keys(&[KEY_A, KEY_B])
        .fast_watch("100ms")
        .shop(KEY_B);
    let shop = site.at("shop");
    std::fs::write(shop.join("s.jpg"), b"v1").unwrap();
    site.scan(&[]).expect(0);
    let daemon = site.optiwatch().arg("-v").start_watch();
    let walks = daemon.log().matches("walk finished").count();
    // Hold the store's write lock: the detector's next record waits for it
    // (it waits up to 10 s), so it lands after the reload below was built.
    let db = rusqlite::Connection::open(site.at("optiwatch.db")).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    std::fs::write(shop.join("s.jpg"), b"v2").unwrap();
    daemon.wait_log_count("walk finished", walks + 1, WAIT);
    // The shop now uses the [api] key: its own account is gone.
    site.config.rules = format!(
        "[[rules]]\ndir = \"media\"\nurl = \"{SITE_URL}\"\n[[rules]]\ndir = \"shop\"\nurl = \"{SHOP_URL}\"\n"
    );
    site.write_config();
    daemon.signal(libc::SIGHUP);
    daemon.wait_log("config reloaded", WAIT);
    db.execute_batch("COMMIT").unwrap();
    site.api
        .wait_for("the shop's edit, with the [api] key", WAIT, |rs| {
            accepted(rs).contains(&shop_url("s.jpg"))
        });
}

/// `status` (another process) beside the daemon, and the daemon opening
/// its second store connection, must never make SQLite think the daemon
/// is gone: closing any descriptor of the store file drops the process's
/// SQLite locks, after which `status` checkpoints and deletes the
/// write-ahead log under the daemon and its later commits are lost.
#[test]
fn status_beside_the_daemon_loses_none_of_its_commits() {
    let site = polled_site(&["a.jpg", "b.jpg", "c.jpg"]);
    let daemon = site.watch();
    for (n, rel) in ["a.jpg", "b.jpg", "c.jpg"].into_iter().enumerate() {
        site.write(rel, format!("v{}", n + 2).as_bytes());
        wait_sent(&site, rel, 1);
        site.api.wait_for("a token after the edit", WAIT, |rs| {
            rs.iter()
                .filter(|r| r.path.ends_with("/token") && r.status == 200)
                .count()
                > n
        });
        for _ in 0..3 {
            site.status();
        }
    }
    let token = site.api.tokens_issued().last().cloned().unwrap();
    wait_until("the daemon to record the last token", WAIT, || {
        site.status()["last_token"] == token.as_str()
    });
    assert_eq!(daemon.stop_with(libc::SIGTERM, WAIT), Some(0));
    let after = site.status();
    assert_eq!(after["last_token"], token.as_str(), "{after}");
    assert_eq!(after["token"], "settled", "{after}");
}
