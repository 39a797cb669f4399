//! Running optiwatch for many sites and watching it in production: per-key
//! isolation, domain escalation, the metrics and health endpoints, systemd
//! readiness.

use crate::support::fake_api::{Fault, Recorded};
use crate::support::http::{free_addr, get, metrics};
use crate::support::{accepted, shop_url, url, wait_until, Site, Table, KEY_A, KEY_B, WAIT};

/// Two sites on two Optimole accounts, each with its own key and token file.
fn two_sites() -> Site {
    let site = Site::with_keys(&[KEY_A, KEY_B])
        .rule_setting("[rules.token]\nfile = \"token-a\"")
        .shop(KEY_B)
        .rule_setting("[rules.token]\nfile = \"token-b\"")
        .files(&["a.jpg"]);
    std::fs::write(site.at("shop/s.jpg"), b"1").unwrap();
    site.baselined()
}

#[test]
fn each_site_uses_its_own_key_and_a_revoked_one_holds_up_no_other() {
    let site = two_sites();
    site.write("a.jpg", b"2");
    std::fs::write(site.at("shop/s.jpg"), b"2").unwrap();
    site.api.revoke_key(KEY_A);
    let run = site.scan(&[]).expect(1);
    assert!(run.stderr.contains("User not found"), "{run}");
    // The shop's asset went out with the shop's key, and got its token.
    let ok: Vec<Recorded> = site
        .api
        .requests()
        .into_iter()
        .filter(|r| r.status == 200)
        .collect();
    assert_eq!(accepted(&ok), vec![shop_url("s.jpg")]);
    assert!(ok
        .iter()
        .all(|r| r.authorization.as_deref() == Some(&format!("Bearer {KEY_B}"))));
    let token_b = std::fs::read_to_string(site.at("token-b")).unwrap();
    assert_eq!(&token_b, site.api.tokens_issued().last().unwrap());
    assert!(!site.at("token-a").exists());
    // The blog's asset stays owed until its key works again.
    assert_eq!(run.json()["pending"][0], url("a.jpg").as_str());
}

#[test]
fn the_daemon_isolates_accounts_too() {
    let site = two_sites().fast_watch("100ms");
    site.api.revoke_key(KEY_A);
    let daemon = site.watch();
    site.write("a.jpg", b"2");
    daemon.wait_log("optimole refuses requests", WAIT);
    std::fs::write(site.at("shop/s.jpg"), b"2").unwrap();
    site.api.wait_for("the shop's edit", WAIT, |rs| {
        accepted(rs).contains(&shop_url("s.jpg"))
    });
}

#[test]
fn many_assets_of_one_domain_escalate_to_a_domain_invalidation() {
    let names: Vec<String> = (0..30).map(|n| format!("{n}.jpg")).collect();
    let site = Site::new()
        .setting(Table::Api, "domain_threshold = 20")
        .files(&names)
        .baselined();
    for n in 0..30 {
        site.write(format!("{n}.jpg"), b"2");
    }
    let run = site.run(&["-v", "scan"]).expect(0);
    let rs = site.api.requests();
    assert_eq!(rs.len(), 2, "{rs:?}");
    assert_eq!(rs[0].path, "/invalidate/domain");
    assert_eq!(rs[0].body.as_ref().unwrap()["domain"], "example.com");
    assert_eq!(rs[1].path, "/token");
    assert!(
        run.stderr.contains("escalated to one domain invalidation"),
        "{run}"
    );

    // At or below the threshold, assets go one by one.
    for n in 0..20 {
        site.write(format!("{n}.jpg"), b"3");
    }
    site.api.clear();
    site.scan(&[]).expect(0);
    assert_eq!(site.api.invalidate_requests().len(), 1);
    assert_eq!(site.api.invalidated_assets().len(), 20);
}

#[test]
fn metrics_and_health_are_served_over_http() {
    let addr = free_addr();
    let site = Site::new()
        .fast_watch("100ms")
        .setting(Table::Watch, "max_backoff = \"200ms\"")
        .setting(Table::Metrics, &format!("listen = \"{addr}\""))
        .setting(Table::Metrics, "max_owed_age = \"1s\"")
        .files(&["a.jpg"])
        .baselined();
    let _daemon = site.watch();
    site.write("a.jpg", b"2");
    site.api
        .wait_for("the edit", WAIT, |rs| rs.iter().any(|r| r.path == "/token"));
    // The fake records a request before its answer reaches the daemon, and
    // the owed gauge is updated after the token is published.
    wait_until("the flush to be counted", WAIT, || {
        let body = metrics(&addr);
        body.contains("optiwatch_tokens_requested_total 1")
            && body.contains("optiwatch_assets_owed 0")
    });
    let (status, body) = get(&addr, "/metrics");
    assert_eq!(status, 200);
    for line in [
        "optiwatch_assets_invalidated_total 1",
        "optiwatch_tokens_requested_total 1",
        "optiwatch_api_requests_total{outcome=\"ok\"} 2",
        "optiwatch_api_request_duration_seconds_count 2",
        "optiwatch_assets_owed 0",
    ] {
        assert!(body.contains(line), "{line} missing in:\n{body}");
    }
    assert!(body.contains("optiwatch_events_total"), "{body}");
    assert!(body.contains("optiwatch_files_hashed_total"), "{body}");
    assert_eq!(get(&addr, "/healthz").0, 200);

    // An outage longer than max_owed_age turns health red.
    site.api.push_faults(Fault::Status(503), 10_000);
    site.write("a.jpg", b"3");
    wait_until("health to turn unhealthy", WAIT, || {
        get(&addr, "/healthz").0 == 503
    });
    let (_, body) = get(&addr, "/healthz");
    assert!(body.contains("1 asset(s) owed"), "{body}");
    site.api.clear_faults();
    wait_until("health to recover", WAIT, || {
        get(&addr, "/healthz").0 == 200
    });
}

#[test]
fn systemd_is_told_when_the_daemon_is_ready() {
    let site = Site::new().files(&["a.jpg"]).baselined();
    let socket_path = site.at("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(WAIT)).unwrap();
    let daemon = site
        .optiwatch()
        .arg("watch")
        .env("NOTIFY_SOCKET", &socket_path)
        .spawn();
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).expect("a readiness datagram");
    let message = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(message.starts_with("READY=1"), "{message}");
    assert!(
        message.contains("watching 1 folder and 1 file"),
        "{message}"
    );
    assert!(daemon.log().contains("watching") || message.contains("watching"));
    daemon.signal(libc::SIGTERM);
    let n = socket.recv(&mut buf).expect("a stopping datagram");
    assert_eq!(&buf[..n], b"STOPPING=1");
}
