//! `optiwatch watch` end to end: the real binary as a daemon against the fake
//! API and a temp folder. Every wait is on a condition with a deadline.

use std::time::{Duration, Instant};

use crate::support::fake_api::{Fault, Recorded};
use crate::support::skip::{lacks, Need};
use crate::support::{
    accepted, has_all, sorted, url, wait_until, Site, Table, THREE_INOTIFY_WATCHES, WAIT,
};

#[test]
fn an_edit_is_invalidated_then_one_token_is_published() {
    let site =
        Site::watched("200ms", &["a.jpg", "b.jpg"]).setting(Table::Token, "file = \"token.txt\"");
    let daemon = site.watch();
    site.write("a.jpg", b"v2");
    let rs = site.api.wait_for("the edit and a token", WAIT, |rs| {
        has_all(&[url("a.jpg")])(rs) && rs.iter().any(|r| r.path == "/token")
    });
    assert_eq!(accepted(&rs), vec![url("a.jpg")]);
    let token = site.api.tokens_issued()[0].clone();
    daemon.wait_log("flushed", WAIT);
    let file = site.at("token.txt");
    assert_eq!(std::fs::read_to_string(file).unwrap(), token);
}

#[test]
fn a_touch_sends_nothing_while_an_edit_next_to_it_does() {
    let site = Site::watched("200ms", &["a.jpg", "b.jpg"]);
    let _daemon = site.watch();
    site.touch("a.jpg");
    site.write("b.jpg", b"v2");
    let rs = site
        .api
        .wait_for("the edit", WAIT, has_all(&[url("b.jpg")]));
    assert_eq!(accepted(&rs), vec![url("b.jpg")], "the touch sent nothing");
}

#[test]
fn deletes_and_renames_invalidate_the_old_url() {
    let site = Site::watched("200ms", &["a.jpg", "b.jpg", "c.jpg"]);
    let _daemon = site.watch();
    site.remove("a.jpg");
    std::fs::rename(site.path("b.jpg"), site.path("renamed.jpg")).unwrap();
    let rs = site.api.wait_for(
        "delete and rename",
        WAIT,
        has_all(&[url("a.jpg"), url("b.jpg")]),
    );
    assert_eq!(sorted(accepted(&rs)), vec![url("a.jpg"), url("b.jpg")]);
    // The renamed file was recorded: editing it invalidates its new URL.
    site.write("renamed.jpg", b"v2");
    site.api
        .wait_for("edit after rename", WAIT, has_all(&[url("renamed.jpg")]));
}

#[test]
fn an_atomic_save_is_one_change_and_temp_files_are_never_sent() {
    let site = Site::watched("200ms", &["a.jpg"]).setting(Table::Top, "invalidate_new = true");
    let _daemon = site.watch();
    for temp in [".a.jpg.tmp", ".a.jpg.Xy12ab", "a.jpg~"] {
        site.write(temp, b"v2");
    }
    std::fs::rename(site.path(".a.jpg.tmp"), site.path("a.jpg")).unwrap();
    site.write("marker.jpg", b"new");
    let rs = site.api.wait_for(
        "the save",
        WAIT,
        has_all(&[url("a.jpg"), url("marker.jpg")]),
    );
    assert_eq!(sorted(accepted(&rs)), vec![url("a.jpg"), url("marker.jpg")]);
}

/// The slow writer's pause between two chunks, and the debounce it is
/// watched with: twenty pauses fit in one debounce, so the file looks quiet
/// mid-write only if the writer stalls for most of 2 s.
const WRITER_PAUSE: Duration = Duration::from_millis(100);
const SLOW_DEBOUNCE: &str = "2s";
/// How long the writer writes: twice the debounce, so a debounce timed
/// from the first event instead of the last would fire mid-write.
const WRITING: Duration = Duration::from_secs(4);

#[test]
fn a_slow_writer_gives_one_invalidation_after_it_finishes() {
    use std::io::Write;
    let site = Site::watched(SLOW_DEBOUNCE, &["slow.jpg"]);
    let daemon = site.watch();
    let mut file = std::fs::File::create(site.path("slow.jpg")).unwrap();
    let chunk = vec![7u8; 64 * 1024];
    let started = Instant::now();
    let mut last_write = started;
    let mut longest_pause = Duration::ZERO;
    while started.elapsed() < WRITING {
        file.write_all(&chunk).unwrap();
        file.flush().unwrap();
        longest_pause = longest_pause.max(last_write.elapsed());
        last_write = Instant::now();
        std::thread::sleep(WRITER_PAUSE);
    }
    drop(file);
    let finished = Instant::now();
    assert!(
        longest_pause < Duration::from_millis(1500),
        "the writer stalled {longest_pause:?} between two chunks (machine overloaded?): \
         the daemon may rightly have seen the file quiet mid-write"
    );
    let rs = site
        .api
        .wait_for("the slow file", WAIT, has_all(&[url("slow.jpg")]));
    let sends: Vec<&Recorded> = rs
        .iter()
        .filter(|r| r.path == "/invalidate/asset")
        .collect();
    assert_eq!(sends.len(), 1, "exactly one invalidation");
    assert!(
        sends[0].at >= finished,
        "sent only after the writer finished"
    );
    // The recorded hash is the final content's: a scan finds nothing new.
    drop(daemon);
    let scan = site.scan(&["--all-paths"]).expect(0);
    assert_eq!(scan.list("unchanged").len(), 1, "{scan}");
}

#[test]
fn a_burst_of_1000_edits_uses_at_most_10_requests() {
    let names: Vec<String> = (0..1000).map(|n| format!("b/{n}.jpg")).collect();
    // The default token_interval (60 s). A debounce longer than any stall
    // of the writer on a loaded machine: a writer that pauses longer than
    // the debounce rightly gets a partial batch sent (seen at 300 ms).
    let site = Site::new()
        .files(&names)
        .baselined()
        .setting(Table::Watch, "debounce = \"2s\"");
    let _daemon = site.watch();
    for name in &names {
        site.write(name, b"v2");
    }
    let want: Vec<String> = names.iter().map(|n| url(n)).collect();
    let rs = site
        .api
        .wait_for("1000 invalidations", WAIT, has_all(&want));
    let sends = rs.iter().filter(|r| r.path == "/invalidate/asset").count();
    assert!(sends <= 10, "{sends} invalidate requests");
    assert_eq!(accepted(&rs).len(), 1000, "each asset once");
    site.api.wait_for("the token", WAIT, |rs| {
        rs.iter().any(|r| r.path == "/token")
    });
    assert_eq!(
        site.api.token_requests().len(),
        1,
        "one token within token_interval"
    );
}

#[test]
fn a_new_subfolder_with_files_is_watched() {
    let site = Site::watched("200ms", &["a.jpg"]).setting(Table::Top, "invalidate_new = true");
    let _daemon = site.watch();
    let want: Vec<String> = (0..20).map(|n| url(&format!("2026/12/{n}.jpg"))).collect();
    for n in 0..20 {
        site.write(format!("2026/12/{n}.jpg"), b"new");
    }
    site.api
        .wait_for("files in the new folder", WAIT, has_all(&want));
    // Files written later into the new folder are seen through its watch.
    site.write("2026/12/later.jpg", b"new");
    site.api
        .wait_for("a later file", WAIT, has_all(&[url("2026/12/later.jpg")]));
}

#[test]
fn polling_mode_finds_changes_without_events() {
    let site = Site::new()
        .files(&["a.jpg"])
        .baselined()
        .setting(Table::Watch, "poll = true")
        .setting(Table::Watch, "poll_interval = \"300ms\"")
        .setting(Table::Watch, "token_interval = \"1s\"");
    let daemon = site.watch();
    site.write("a.jpg", b"v2");
    site.api
        .wait_for("the polled edit", WAIT, has_all(&[url("a.jpg")]));
    assert!(daemon.log().contains("polled=1"), "{}", daemon.log());
}

/// How long a stopping daemon gives its workers before it aborts them
/// (`STOP_GRACE` in `src/watch/mod.rs`); what they recorded is durable.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// How long a request hangs while the daemon is told to stop: a daemon
/// that waited for it (or for its 30 s client timeout) would take far
/// longer than the grace plus a loaded machine's slack.
const HANG: Duration = Duration::from_secs(60);
const STOP_SLACK: Duration = Duration::from_secs(7);

#[test]
fn sigterm_during_a_burst_loses_nothing() {
    let names: Vec<String> = (0..400).map(|n| format!("{n}.jpg")).collect();
    let site = Site::watched("200ms", &names);
    let daemon = site.watch();
    for name in &names[..200] {
        site.write(name, b"v2");
    }
    site.api
        .wait_for("the burst to start arriving", WAIT, |rs| {
            !accepted(rs).is_empty()
        });
    // The next request hangs: the daemon must stop without its answer.
    site.api.push_fault(Fault::Delay(HANG));
    for name in &names[200..] {
        site.write(name, b"v2");
    }
    wait_until("a request to hang", WAIT, || site.api.queued_faults() == 0);
    let started = Instant::now();
    let code = daemon.stop_with(libc::SIGTERM, STOP_GRACE + STOP_SLACK);
    assert_eq!(code, Some(0));
    eprintln!("stopped {:?} after SIGTERM", started.elapsed());
    // The next start sends the rest.
    let _again = site.watch();
    let want: Vec<String> = names.iter().map(|n| url(n)).collect();
    site.api
        .wait_for("every edit, across the restart", WAIT, has_all(&want));
}

#[test]
fn sighup_reloads_the_config_and_keeps_the_old_one_when_bad() {
    let mut site = Site::watched("200ms", &["a.jpg", "b.jpg"]);
    let daemon = site.watch();
    site.config
        .rules
        .push_str("also = [\"https://www.example.com/uploads\"]\n");
    site.write_config();
    daemon.signal(libc::SIGHUP);
    daemon.wait_log_count("watching", 2, WAIT);
    site.write("a.jpg", b"v2");
    site.api.wait_for(
        "both prefixes",
        WAIT,
        has_all(&[url("a.jpg"), "https://www.example.com/uploads/a.jpg".into()]),
    );

    std::fs::write(site.config_path(), "this is = not [valid toml").unwrap();
    daemon.signal(libc::SIGHUP);
    daemon.wait_log("keeping the old config", WAIT);
    site.write("b.jpg", b"v2");
    site.api
        .wait_for("edit under the old config", WAIT, has_all(&[url("b.jpg")]));
}

/// Every line of the daemon's JSON log is one object; lists (the flush's
/// `domains`) are arrays, counts are numbers.
#[test]
fn json_logs_are_one_object_per_line() {
    let site = Site::watched("200ms", &["a.jpg"]);
    let daemon = site
        .optiwatch()
        .args(&["--log-format", "json"])
        .start_watch();
    site.write("a.jpg", b"v2");
    daemon.wait_log("flushed", WAIT);
    for line in daemon.log().lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string());
    }
    let log = daemon.log();
    let flushed = log.lines().find(|l| l.contains("\"flushed\"")).unwrap();
    let v: serde_json::Value = serde_json::from_str(flushed).unwrap();
    assert_eq!(v["assets"], 1);
    assert!(v["requests"].as_u64().unwrap() >= 1);
    assert_eq!(v["domains"], serde_json::json!([]), "{flushed}");
}

#[test]
fn an_overflowing_event_queue_turns_into_a_rescan() {
    let names: Vec<String> = (0..300).map(|n| format!("{n}.jpg")).collect();
    let site = Site::watched("200ms", &names).setting(Table::Watch, "event_queue = 1");
    let daemon = site.watch();
    for name in &names {
        site.write(name, b"v2");
    }
    let want: Vec<String> = names.iter().map(|n| url(n)).collect();
    let rs = site
        .api
        .wait_for("every edit despite the overflow", WAIT, has_all(&want));
    assert!(daemon.log().contains("rescanning"), "{}", daemon.log());
    assert_eq!(accepted(&rs).len(), 300, "each asset once");
}

#[test]
fn running_out_of_inotify_watches_names_the_limit_and_falls_back_to_polling() {
    if lacks(&[Need::Namespaces]) {
        return;
    }
    let files = ["a/1.jpg", "b/1.jpg", "c/1.jpg", "d/1.jpg", "e/1.jpg"];
    let site = Site::watched("200ms", &files).setting(Table::Watch, "poll_interval = \"300ms\"");
    // An inotify watch limit (3) lower than the folders to watch (6).
    let daemon = site.optiwatch_via(THREE_INOTIFY_WATCHES).start_watch();
    let log = daemon.log();
    assert!(
        log.contains("fs.inotify.max_user_watches") && log.contains("sysctl"),
        "{log}"
    );
    assert!(log.contains("polled=1"), "{log}");
    site.write("e/1.jpg", b"v2");
    site.api
        .wait_for("the polled edit", WAIT, has_all(&[url("e/1.jpg")]));
}
