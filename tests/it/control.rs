//! Commands beside a running `watch`: `scan`, `invalidate` and `token`
//! hand their work to the daemon over its control socket and wait for the
//! outcome; `status` shows its live state; the socket is the daemon's
//! user's only; a daemon killed by SIGKILL leaves a socket that commands
//! ignore. Requests are counted at the fake API.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::PathBuf;

use crate::support::fake_api::{Fault, GOOD_KEY};
use crate::support::skip::{lacks, Need};
use crate::support::{sorted, url, wait_until, Daemon, Site, Table, KEY_A, KEY_B, WAIT};

/// `<state>.sock` of a site with the store beside the config.
fn socket(site: &Site) -> PathBuf {
    site.at("optiwatch.db.sock")
}

/// The site's daemon, once its control socket answers.
fn daemon(site: &Site) -> Daemon {
    let daemon = site.watch();
    daemon.wait_log("control socket ready", WAIT);
    daemon
}

/// `status --json`'s `live` object (null without a daemon).
fn live(site: &Site) -> serde_json::Value {
    site.status()["live"].clone()
}

#[test]
fn a_deploy_beside_the_daemon_is_one_invalidation_and_one_token() {
    let names: Vec<String> = (0..50).map(|n| format!("img/{n:02}.jpg")).collect();
    // A debounce longer than the deploy: the daemon's own events are still
    // settling when the deploy's scan comes.
    let site = Site::new()
        .files(&names)
        .baselined()
        .setting(Table::Watch, "debounce = \"5s\"")
        .setting(Table::Watch, "token_interval = \"1s\"")
        .setting(Table::Token, "file = \"token.txt\"");
    let daemon = daemon(&site);
    site.api.clear();
    for name in &names {
        site.write(name, b"release 2");
    }
    let out = site.scan(&[]).expect(0);
    let want: Vec<String> = names
        .iter()
        .map(|n| site.path(n).display().to_string())
        .collect();
    assert_eq!(sorted(out.list("changed")), sorted(want), "{out}");
    let urls: Vec<String> = names.iter().map(|n| url(n)).collect();
    assert_eq!(
        sorted(out.list("invalidated")),
        sorted(urls.clone()),
        "{out}"
    );
    // It returned after the token was published.
    let token = out.json()["token"].as_str().unwrap_or_default().to_string();
    assert!(!token.is_empty(), "{out}");
    assert_eq!(
        std::fs::read_to_string(site.at("token.txt")).unwrap(),
        token
    );
    // Once nothing settles any more, the daemon's events and the scan
    // together made one invalidation and one token.
    wait_until("nothing settling", WAIT, || live(&site)["settling"] == 0);
    assert_eq!(sorted(site.api.invalidated_assets()), sorted(urls));
    assert_eq!(site.api.invalidate_requests().len(), 1, "{}", daemon.log());
    assert_eq!(site.api.token_requests().len(), 1, "{}", daemon.log());
}

#[test]
fn the_deploy_hook_works_beside_the_daemon() {
    let site = Site::watched("5s", &["a.jpg", "b.jpg"]);
    let _daemon = daemon(&site);
    site.write("a.jpg", b"v2");
    let out = site.deploy_hook(&site.config_path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("1 changed") && stdout.contains("1 invalidated"),
        "{stdout}"
    );
    assert_eq!(site.api.invalidated_assets(), vec![url("a.jpg")]);
}

#[test]
fn invalidate_and_token_beside_the_daemon() {
    // An hour between paced tokens: only a manual request gets one soon.
    let site = Site::new()
        .files(&["a.jpg", "b.jpg"])
        .baselined()
        .setting(Table::Watch, "token_interval = \"1h\"");
    let daemon = daemon(&site);
    let out = site
        .optiwatch()
        .args(&["invalidate", "--json", "media/a.jpg"])
        .run()
        .expect(0);
    assert_eq!(out.list("invalidated"), vec![url("a.jpg")], "{out}");
    assert_eq!(site.api.invalidated_assets(), vec![url("a.jpg")]);
    assert_eq!(site.api.token_requests().len(), 1, "{}", daemon.log());
    // A second token within the hour: asked for by hand, sent at once.
    let out = site
        .optiwatch()
        .args(&["token", "--timeout", "30s"])
        .run()
        .expect(0);
    let issued = site.api.tokens_issued();
    assert_eq!(issued.len(), 2, "{}", daemon.log());
    assert_eq!(out.stdout.trim(), issued[1]);
    // Both are history, as if run standalone.
    let history = site
        .optiwatch()
        .args(&["history", "--since", "1h", "--json"])
        .run()
        .expect(0)
        .json();
    let entries = history["entries"].as_array().cloned().unwrap_or_default();
    assert_eq!(entries.len(), 1, "{history}");
    assert_eq!(entries[0]["url"], url("a.jpg"));
    assert_eq!(entries[0]["reason"], "manual");
    assert!(
        entries[0]["path"]
            .as_str()
            .is_some_and(|p| p.ends_with("a.jpg")),
        "{history}"
    );
    assert_eq!(
        history["tokens"].as_array().map(Vec::len),
        Some(2),
        "{history}"
    );
}

#[test]
fn purges_beside_the_daemon_reach_the_account_asked_for() {
    let site = Site::with_keys(&[KEY_A, KEY_B])
        .shop(KEY_B)
        .rule_setting("account = \"shop\"")
        .files(&["a.jpg"])
        .baselined();
    let _daemon = daemon(&site);
    site.optiwatch()
        .args(&[
            "invalidate",
            "--all",
            "--yes",
            "--account",
            "shop",
            "--timeout",
            "30s",
        ])
        .run()
        .expect(0);
    let purges: Vec<String> = site
        .api
        .requests()
        .iter()
        .filter(|r| r.path == "/invalidate/all" && r.status == 200)
        .filter_map(|r| r.authorization.clone())
        .collect();
    assert_eq!(purges, vec![format!("Bearer {KEY_B}")]);
    let out = site
        .optiwatch()
        .args(&["invalidate", "--all", "--yes", "--account", "nosuch"])
        .run()
        .expect(2);
    assert!(out.stderr.contains("no account named"), "{out}");
}

#[test]
fn a_request_that_outlasts_its_timeout_stays_queued_in_the_daemon() {
    let site = Site::watched("100ms", &["a.jpg"]).setting(Table::Api, "retry_for = \"1h\"");
    let _daemon = daemon(&site);
    site.api.push_faults(Fault::Status(503), 1000);
    let out = site
        .optiwatch()
        .args(&["invalidate", "--timeout", "1s", "media/a.jpg"])
        .run()
        .expect(1);
    assert!(out.stderr.contains("stays queued in the daemon"), "{out}");
    // Optimole back: the daemon sends it without being asked again.
    site.api.clear_faults();
    site.api.wait_for("the queued asset", WAIT, |rs| {
        rs.iter()
            .any(|r| r.status == 200 && r.assets.contains(&url("a.jpg")))
    });
}

#[test]
fn status_shows_the_daemon_live() {
    let site = Site::watched("1h", &["a.jpg"]);
    assert!(live(&site).is_null(), "no daemon, no live state");
    let daemon = daemon(&site);
    site.write("a.jpg", b"v2");
    wait_until("a.jpg settling", WAIT, || live(&site)["settling"] == 1);
    let live = live(&site);
    assert_eq!(live["pid"], daemon.pid());
    assert_eq!(
        live["settling_paths"][0],
        site.path("a.jpg").display().to_string()
    );
    assert_eq!(live["accounts"][0]["account"], "default");
    assert_eq!(live["accounts"][0]["failing"], false);
    let text = site.run(&["status"]).expect(0).stdout;
    assert!(text.contains("1 path(s) settling"), "{text}");
}

#[test]
fn a_killed_daemon_leaves_a_socket_that_scan_ignores() {
    let site = Site::watched("100ms", &["a.jpg"]);
    daemon(&site).kill9();
    let sock = socket(&site);
    assert!(
        std::fs::symlink_metadata(&sock).is_ok_and(|m| m.file_type().is_socket()),
        "SIGKILL leaves the socket behind"
    );
    site.write("a.jpg", b"v2");
    let out = site.scan(&[]).expect(0);
    assert_eq!(out.list("invalidated"), vec![url("a.jpg")], "{out}");
    // The next daemon replaces the stale socket and answers on it.
    let _daemon = daemon(&site);
    assert!(!live(&site).is_null());
}

#[test]
fn another_user_cannot_use_the_socket() {
    if lacks(&[Need::Root, Need::Program("setpriv")]) {
        return;
    }
    let site = Site::watched("100ms", &["a.jpg"]);
    // Everything but the socket is readable by others: only the socket's
    // mode and the daemon's check keep them out.
    std::fs::set_permissions(site.root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let daemon = daemon(&site);
    let sock = socket(&site);
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the socket is owner-only");
    let nobody = || {
        site.optiwatch_via(&[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ])
        .args(&["status", "--json"])
        .run()
    };
    let out = nobody();
    assert!(
        out.stderr
            .contains("cannot use the daemon's control socket"),
        "{out}"
    );
    assert!(!out.stdout.contains("\"pid\""), "{out}");
    // Even when the mode lets anyone connect, the daemon answers nobody else.
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = nobody();
    assert!(
        out.stderr
            .contains("closed the control connection without answering"),
        "{out}"
    );
    assert!(!out.stdout.contains("\"pid\""), "{out}");
    daemon.wait_log("refused a connection from another user", WAIT);
    // Its own user (root here) still gets an answer.
    assert!(!live(&site).is_null());
}

#[test]
fn a_refused_key_is_reported_at_once_not_waited_out() {
    let site = Site::watched("100ms", &["a.jpg"]).setting(Table::Api, "retry_for = \"1h\"");
    let _daemon = daemon(&site);
    site.api.revoke_key(GOOD_KEY);
    for args in [
        &["invalidate", "--json", "--timeout", "30s", "media/a.jpg"][..],
        // Asked during the hour the daemon leaves the key alone.
        &["token", "--json", "--timeout", "30s"][..],
    ] {
        let out = site.optiwatch().args(args).run().expect(1);
        assert!(!out.stderr.contains("stays queued"), "{out}");
        let errors = out.json()["errors"].to_string();
        assert!(
            errors.contains("401") || errors.to_lowercase().contains("key"),
            "{out}"
        );
    }
}

#[test]
fn a_scan_gets_its_token_without_waiting_for_token_interval() {
    let site = Site::watched("100ms", &["a.jpg", "b.jpg"])
        .setting(Table::Watch, "token_interval = \"1h\"");
    let _daemon = daemon(&site);
    site.write("a.jpg", b"v2");
    site.api.wait_for("the first token", WAIT, |rs| {
        rs.iter().any(|r| r.path == "/token")
    });
    // The next paced token would be an hour away; the deploy's is not.
    site.write("b.jpg", b"v2");
    let out = site.scan(&["--timeout", "30s"]).expect(0);
    assert!(out.json()["token"].is_string(), "{out}");
    assert_eq!(site.api.token_requests().len(), 2);
    assert!(site.api.invalidated_assets().contains(&url("b.jpg")));
}

#[test]
fn a_socket_served_by_another_user_is_not_trusted() {
    if lacks(&[
        Need::Root,
        Need::Program("setpriv"),
        Need::Program("/usr/bin/python3"),
    ]) {
        return;
    }
    let site = Site::new().files(&["a.jpg"]).baselined();
    site.write("a.jpg", b"new bytes");
    // Someone else's process listens where the daemon's socket would be
    // and would answer "all done".
    std::fs::set_permissions(site.root.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let sock = socket(&site);
    let answer = r#"{"version":1,"reply":"scan","report":{"touched":[],"changed":[],"new":[],"deleted":[],"invalidated":[],"requests":0,"token":null,"pending":[],"refused":[],"dry_run":false,"baseline":false,"would_invalidate":[],"counts":{"scanned":0,"unchanged":0,"touched":0,"changed":0,"new":0,"deleted":0,"invalidated":0,"pending":0,"refused":0},"errors":[]}}"#;
    let script = format!(
        "import socket\ns=socket.socket(socket.AF_UNIX)\ns.bind({sock:?})\ns.listen()\nwhile True:\n  c,_=s.accept()\n  c.recv(65536)\n  c.sendall(b'{answer}\\n')\n  c.close()\n"
    );
    let mut impostor = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            &script,
        ])
        .spawn()
        .unwrap();
    wait_until("the other user's socket", WAIT, || sock.exists());
    let out = site.scan(&[]);
    let _ = impostor.kill();
    let _ = impostor.wait();
    assert_ne!(out.code, 0, "{out}");
    assert!(out.stderr.contains("served by user id 65534"), "{out}");
    assert!(site.api.requests().is_empty(), "nothing was sent: {out}");
}
