//! Reliability of the daemon and the store: one process per store, outages
//! and refused keys in watch mode, rule folders that come and go.

use std::time::Duration;

use crate::support::fake_api::{FakeApi, Fault};
use crate::support::{
    accepted, times_accepted, token_after_last_invalidation, url, wait_until, Site, Table, WAIT,
};

#[test]
fn a_second_process_on_the_same_store_is_refused() {
    // Without the control socket (with it, the daemon does the scan:
    // tests/it/control.rs).
    let site = Site::watched("100ms", &["a.jpg"]).setting(Table::Watch, "control = false");
    let daemon = site.watch();
    let refused = site.run(&["scan"]).expect(1);
    let pid = format!("pid {}", daemon.pid());
    assert!(
        refused.stderr.contains(&pid) && refused.stderr.contains("watch"),
        "{refused}"
    );
    assert!(refused.stderr.contains("another optiwatch"), "{refused}");
    // A dry run only reads: it may run beside the daemon.
    site.run(&["scan", "--dry-run"]).expect(0);
    assert_eq!(daemon.stop_with(libc::SIGTERM, WAIT), Some(0));
    site.run(&["scan"]).expect(0);
}

#[test]
fn watch_rides_out_an_outage_and_logs_it_once_each_way() {
    let site = Site::watched("100ms", &["a.jpg", "b.jpg"])
        .setting(Table::Watch, "max_backoff = \"400ms\"");
    let daemon = site.watch();
    site.api.push_faults(Fault::Status(503), 6);
    site.api.push_fault(Fault::Drop);
    site.write("a.jpg", b"v2");
    site.api.wait_for("the edit after the outage", WAIT, |rs| {
        accepted(rs).contains(&url("a.jpg"))
    });
    daemon.wait_log("accepts requests again", WAIT);
    let log = daemon.log();
    assert_eq!(log.matches("sending failed").count(), 1, "{log}");
    let failures = site
        .api
        .requests()
        .iter()
        .filter(|r| r.status != 200)
        .count();
    assert_eq!(failures, 7, "every failure retried");
}

/// A round that sends nothing (a partial batch held back while paths
/// settle) is no proof Optimole is back: "accepts requests again" comes
/// only after a request got an answer, so an outage is one warning and one
/// recovery however long edits go on during it.
#[test]
fn watch_says_optimole_is_back_only_after_a_request_got_through() {
    let site = Site::watched("300ms", &["a.jpg", "b.jpg"])
        .setting(Table::Watch, "max_backoff = \"300ms\"")
        .setting(Table::Api, "batch_size = 2");
    let daemon = site.watch();
    site.api.push_faults(Fault::Status(503), 100_000);
    site.write("a.jpg", b"v2");
    let failures =
        |rs: &[crate::support::fake_api::Recorded]| rs.iter().filter(|r| r.status == 503).count();
    site.api
        .wait_for("the first failed try", WAIT, |rs| failures(rs) >= 1);
    // b.jpg keeps changing, so paths are always settling: the sender holds
    // a.jpg back as a partial batch (no request) until the hold runs out
    // and it tries again.
    let started = std::time::Instant::now();
    let mut n = 0u32;
    while failures(&site.api.requests()) < 2 {
        assert!(started.elapsed() < WAIT, "no second try:\n{}", daemon.log());
        n += 1;
        site.write("b.jpg", format!("edit {n}").as_bytes());
        std::thread::sleep(Duration::from_millis(100));
    }
    site.api.clear_faults();
    site.api.wait_for("the edits after the outage", WAIT, |rs| {
        accepted(rs).contains(&url("a.jpg"))
    });
    daemon.wait_log("accepts requests again", WAIT);
    let log = daemon.log();
    assert_eq!(log.matches("sending failed").count(), 1, "{log}");
    assert_eq!(log.matches("accepts requests again").count(), 1, "{log}");
    let flushed = log.find("flushed").expect("a flush");
    assert!(log.find("accepts requests again") > Some(flushed), "{log}");
}

#[test]
fn watch_honours_retry_after() {
    let site = Site::watched("100ms", &["a.jpg"]);
    let _daemon = site.watch();
    site.api.push_fault(Fault::RetryAfter(429, "2".into()));
    site.write("a.jpg", b"v2");
    let rs = site.api.wait_for("the retried edit", WAIT, |rs| {
        accepted(rs).contains(&url("a.jpg"))
    });
    let gap = rs[1].at.duration_since(rs[0].at);
    assert!(gap >= Duration::from_millis(1900), "retried after {gap:?}");
}

#[test]
fn a_refused_key_pauses_sending_until_sighup_while_changes_are_kept() {
    const OLD: &str = "opt_old_key_aaaaaaaaaaaa";
    const NEW: &str = "opt_new_key_bbbbbbbbbbbb";
    let mut site = Site::with_api(FakeApi::start_with_keys(&[OLD, NEW]))
        .files(&["a.jpg", "b.jpg"])
        .baselined()
        .fast_watch("100ms");
    let key_file = site.at("key");
    std::fs::write(&key_file, OLD).unwrap();
    let private = std::os::unix::fs::PermissionsExt::from_mode(0o600);
    std::fs::set_permissions(&key_file, private).unwrap();
    site.config.set(Table::Api, "key_file = \"key\"");
    let daemon = site.optiwatch().args(&["-v", "watch"]).spawn();
    daemon.wait_log("watching", WAIT);
    site.api.revoke_key(OLD);
    site.write("a.jpg", b"v2");
    daemon.wait_log("optimole refuses requests", WAIT);
    let refused = site.api.requests().len();
    assert_eq!(refused, 1, "a fatal answer is not retried");

    // Changes keep being collected meanwhile, without any API call.
    site.write("b.jpg", b"v2");
    daemon.wait_log("b.jpg", WAIT);
    assert_eq!(site.api.requests().len(), refused);
    assert!(!daemon.log().contains(OLD), "the key never appears in logs");

    std::fs::write(&key_file, NEW).unwrap();
    daemon.signal(libc::SIGHUP);
    site.api
        .wait_for("both edits with the new key", WAIT, |rs| {
            let s = accepted(rs);
            s.contains(&url("a.jpg")) && s.contains(&url("b.jpg"))
        });
}

#[test]
fn a_rule_folder_that_disappears_and_comes_back_is_watched_again() {
    let site = Site::watched("100ms", &["a.jpg", "b.jpg"])
        .setting(Table::Watch, "poll_interval = \"200ms\"");
    let daemon = site.watch();
    let aside = site.at("aside");
    std::fs::rename(&site.media, &aside).unwrap();
    daemon.wait_log("cannot use rule folder", WAIT);
    std::fs::rename(&aside, &site.media).unwrap();
    daemon.wait_log("watched again", WAIT);
    assert!(
        site.api.requests().is_empty(),
        "a vanished folder is not a deleted library"
    );
    site.write("a.jpg", b"v2");
    site.api
        .wait_for("an edit after the folder came back", WAIT, |rs| {
            accepted(rs).contains(&url("a.jpg"))
        });
    assert!(!accepted(&site.api.requests()).contains(&url("b.jpg")));
}

#[test]
fn nested_rules_survive_path_scoped_passes() {
    let mut site = Site::new()
        .rule("media/sub", "https://cdn.example.com")
        .fast_watch("100ms")
        .setting(Table::Watch, "poll_interval = \"200ms\"")
        .files(&["a.jpg", "sub/x.jpg"])
        .baselined();
    let daemon = site.watch();
    // An event on the parent folder itself (chmod) walks it; the nested
    // rule's files must not look deleted.
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(&site.media, mode).unwrap();
    site.write("a.jpg", b"v2");
    site.api
        .wait_for("the edit", WAIT, |rs| accepted(rs).contains(&url("a.jpg")));
    site.write("sub/x.jpg", b"v2");
    site.api.wait_for("the nested edit", WAIT, |rs| {
        accepted(rs).contains(&"https://cdn.example.com/x.jpg".to_string())
    });
    assert_eq!(
        accepted(&site.api.requests()).len(),
        2,
        "nothing else was invalidated"
    );
    // Stop only once nothing is owed: a kill between an accepted request
    // and its removal from the outbox would (rightly) send it again.
    wait_until("nothing owed", WAIT, || site.status()["assets_owed"] == 0);
    assert_eq!(daemon.stop_with(libc::SIGTERM, WAIT), Some(0));

    // Polling a parent folder does the same walk.
    site.config.set(Table::Watch, "poll = true");
    site.api.clear();
    let _daemon = site.watch();
    site.write("a.jpg", b"v3");
    site.api.wait_for("the polled edit", WAIT, |rs| {
        accepted(rs).contains(&url("a.jpg"))
    });
    site.write("marker.jpg", b"new");
    site.write("a.jpg", b"v4");
    site.api.wait_for("a second poll", WAIT, |rs| {
        times_accepted(rs, &url("a.jpg")) == 2
    });
    assert!(!accepted(&site.api.requests())
        .iter()
        .any(|a| a.contains("cdn.example.com")));
}

#[test]
fn a_change_recorded_while_its_asset_is_in_flight_is_sent_again() {
    let site = Site::watched("100ms", &["a.jpg"]).setting(Table::Watch, "max_backoff = \"200ms\"");
    let _daemon = site.watch();
    site.api.push_fault(Fault::Delay(Duration::from_secs(2)));
    site.write("a.jpg", b"v2");
    site.api
        .wait_for("the slow request to start", WAIT, |rs| !rs.is_empty());
    site.write("a.jpg", b"v3");
    site.api.wait_for("a second invalidation", WAIT, |rs| {
        times_accepted(rs, &url("a.jpg")) >= 2
    });
    site.api
        .wait_for("a token after it", WAIT, token_after_last_invalidation);
}

#[test]
fn a_reload_that_cannot_start_keeps_the_old_workers() {
    let mut site = Site::watched("100ms", &["a.jpg"]);
    let key_file = site.at("key");
    std::fs::write(&key_file, &site.key).unwrap();
    std::fs::set_permissions(
        &key_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    site.config.set(Table::Api, "key_file = \"key\"");
    let daemon = site.watch();
    std::fs::remove_file(&key_file).unwrap();
    daemon.signal(libc::SIGHUP);
    daemon.wait_log("keeping the old config", WAIT);
    site.write("a.jpg", b"v2");
    site.api
        .wait_for("an edit after the failed reload", WAIT, |rs| {
            accepted(rs).contains(&url("a.jpg"))
        });
}

#[test]
fn a_low_server_limit_is_learned_once() {
    let names: Vec<String> = (0..300).map(|n| format!("{n}.jpg")).collect();
    let site = Site::watched("100ms", &names);
    for name in &names {
        site.write(name, b"v2");
    }
    site.api.set_asset_limit(50);
    site.scan(&[]).expect(0);
    let refused = site
        .api
        .requests()
        .iter()
        .filter(|r| r.status == 400)
        .count();
    assert_eq!(refused, 1, "one refusal, then batches of the learned size");
    assert_eq!(site.api.invalidated_assets().len(), 300);
}

#[test]
fn a_refused_asset_is_set_aside_visibly_and_does_not_block_the_rest() {
    let site = Site::watched("100ms", &["a.jpg", "b.jpg", "c.jpg"]);
    for name in ["a.jpg", "b.jpg", "c.jpg"] {
        site.write(name, b"v2");
    }
    // A refusal that names no asset is not a verdict on any of them: the
    // whole batch is sent again, and gets through.
    site.api
        .push_fault(Fault::Message(422, "Invalid asset".into()));
    site.scan(&[]).expect(0);
    assert_eq!(site.api.invalidated_assets().len(), 3);
    assert_eq!(
        site.api
            .requests()
            .iter()
            .filter(|r| r.path == "/invalidate/asset")
            .count(),
        2
    );

    // An asset refused by name leaves the outbox for the refused list (the
    // run fails); the next change of another file goes out.
    site.write("a.jpg", b"v3");
    site.api.refuse(&url("a.jpg"));
    site.scan(&[]).expect(1);
    let status = site.status();
    assert!(
        status["refused"][0]["message"]
            .as_str()
            .unwrap()
            .contains("Invalid asset"),
        "{status}"
    );
    assert_eq!(status["assets_owed"], 0);
    assert_eq!(status["assets_refused"], 1);
    site.write("b.jpg", b"v3");
    site.scan(&[]).expect(0);
    assert!(
        site.api
            .invalidated_assets()
            .iter()
            .filter(|a| **a == url("b.jpg"))
            .count()
            == 2
    );
}
