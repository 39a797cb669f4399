//! Reliability of the daemon and the store: one process per store, outages
//! and refused keys in watch mode, rule folders that come and go.

mod support;

use std::time::Duration;

use support::fake_api::{FakeApi, Fault, Recorded};
use support::{Site, SITE_URL};

const WAIT: Duration = Duration::from_secs(20);

fn url(rel: &str) -> String {
    format!("{SITE_URL}/{rel}")
}

fn watched_site(api: FakeApi, files: &[&str]) -> Site {
    let mut site = Site::with_api(api);
    site.config.tail = "[watch]\ndebounce = \"100ms\"\ntoken_interval = \"1s\"\n".into();
    for rel in files {
        site.write(rel, b"v1");
    }
    site.scan(&[]).expect(0);
    site
}

fn sent(rs: &[Recorded]) -> Vec<String> {
    rs.iter()
        .filter(|r| r.status == 200)
        .flat_map(|r| r.assets.clone())
        .collect()
}

#[test]
fn a_second_process_on_the_same_store_is_refused() {
    let site = watched_site(FakeApi::start(), &["a.jpg"]);
    let daemon = site.watch();
    let refused = site.optiwatch().arg("scan").run().expect(1);
    let pid = format!("pid {}", daemon.pid());
    assert!(
        refused.stderr.contains(&pid) && refused.stderr.contains("watch"),
        "{refused}"
    );
    assert!(refused.stderr.contains("another optiwatch"), "{refused}");
    // A dry run only reads: it may run beside the daemon.
    site.optiwatch()
        .args(&["scan", "--dry-run"])
        .run()
        .expect(0);
    assert_eq!(daemon.stop_with(libc::SIGTERM, WAIT), Some(0));
    site.optiwatch().arg("scan").run().expect(0);
}

#[test]
fn watch_rides_out_an_outage_and_logs_it_once_each_way() {
    let mut site = watched_site(FakeApi::start(), &["a.jpg", "b.jpg"]);
    site.config.tail.push_str("max_backoff = \"400ms\"\n");
    let daemon = site.watch();
    site.api.push_faults(Fault::Status(503), 6);
    site.api.push_fault(Fault::Drop);
    site.write("a.jpg", b"v2");
    site.api.wait_for("the edit after the outage", WAIT, |rs| {
        sent(rs).contains(&url("a.jpg"))
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

#[test]
fn watch_honours_retry_after() {
    let site = watched_site(FakeApi::start(), &["a.jpg"]);
    let _daemon = site.watch();
    site.api.push_fault(Fault::RetryAfter(429, "2".into()));
    site.write("a.jpg", b"v2");
    let rs = site.api.wait_for("the retried edit", WAIT, |rs| {
        sent(rs).contains(&url("a.jpg"))
    });
    let gap = rs[1].at.duration_since(rs[0].at);
    assert!(gap >= Duration::from_millis(1900), "retried after {gap:?}");
}

#[test]
fn a_refused_key_pauses_sending_until_sighup_while_changes_are_kept() {
    const OLD: &str = "opt_old_key_aaaaaaaaaaaa";
    const NEW: &str = "opt_new_key_bbbbbbbbbbbb";
    let mut site = watched_site(FakeApi::start_with_keys(&[OLD, NEW]), &["a.jpg", "b.jpg"]);
    let key_file = site.root.path().join("key");
    std::fs::write(&key_file, OLD).unwrap();
    let private = std::os::unix::fs::PermissionsExt::from_mode(0o600);
    std::fs::set_permissions(&key_file, private).unwrap();
    site.config.api.push_str("key_file = \"key\"\n");
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
            let s = sent(rs);
            s.contains(&url("a.jpg")) && s.contains(&url("b.jpg"))
        });
}

#[test]
fn a_rule_folder_that_disappears_and_comes_back_is_watched_again() {
    let mut site = watched_site(FakeApi::start(), &["a.jpg", "b.jpg"]);
    site.config.tail.push_str("poll_interval = \"200ms\"\n");
    let daemon = site.watch();
    let aside = site.root.path().join("aside");
    std::fs::rename(&site.media, &aside).unwrap();
    daemon.wait_log("cannot open rule folder", WAIT);
    std::fs::rename(&aside, &site.media).unwrap();
    daemon.wait_log("watched again", WAIT);
    assert!(
        site.api.requests().is_empty(),
        "a vanished folder is not a deleted library"
    );
    site.write("a.jpg", b"v2");
    site.api
        .wait_for("an edit after the folder came back", WAIT, |rs| {
            sent(rs).contains(&url("a.jpg"))
        });
    assert!(!sent(&site.api.requests()).contains(&url("b.jpg")));
}
