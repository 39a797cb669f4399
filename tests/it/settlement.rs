//! Settlement: only an answer that says success removes an asset from the
//! outbox. Wrong URLs, error pages, redirects, refusals, absurd
//! `Retry-After` values and endless answers keep everything owed (or, for
//! an asset Optimole refuses by name, visible in the refused list), and the
//! next healthy run sends it all.

use std::time::{Duration, Instant};

use crate::support::fake_api::{Fault, REDIRECT_PATH};
use crate::support::http::{free_addr, metrics};
use crate::support::{accepted, sorted, times_accepted, url, wait_until, Site, Table, WAIT};

const FILES: [&str; 3] = ["a.jpg", "b.jpg", "c.jpg"];

/// A site with `FILES` baselined, then all of them edited.
fn site_with_changes() -> Site {
    let site = Site::new().files(&FILES).baselined();
    for name in FILES {
        site.write(name, b"v2");
    }
    site
}

fn all_urls() -> Vec<String> {
    FILES.iter().map(|f| url(f)).collect()
}

fn owed(site: &Site) -> u64 {
    site.status()["assets_owed"].as_u64().unwrap()
}

fn tokens_asked(site: &Site) -> usize {
    site.api
        .requests()
        .iter()
        .filter(|r| r.path == "/token")
        .count()
}

#[test]
fn unexpected_answers_keep_every_asset_owed_and_ask_no_token() {
    let site = site_with_changes();
    let answers = [
        (Fault::Status(404), 2),
        (Fault::Status(405), 2),
        (Fault::Status(400), 1),
        (Fault::Status(413), 1),
        (Fault::Html(500), 1),
        (Fault::Body(200, r#"{"success": false}"#.into()), 1),
        (Fault::Body(200, "OK".into()), 1),
        (
            Fault::Body(200, r#"{"code": "rest_error", "data": {}}"#.into()),
            1,
        ),
        (Fault::Redirect(301), 1),
        (Fault::Redirect(302), 1),
    ];
    for (fault, code) in answers {
        site.api.clear();
        site.api.push_faults(fault.clone(), 10_000);
        let run = site.scan(&[]);
        assert_eq!(run.code, code, "{fault:?}:\n{run}");
        assert_eq!(owed(&site), 3, "{fault:?}: every asset still owed");
        assert_eq!(tokens_asked(&site), 0, "{fault:?}: no token");
        let requests = site.api.requests();
        assert!(
            requests.iter().all(|r| r.method == "POST"),
            "{fault:?}: a redirect is not followed: {requests:?}"
        );
        if code == 2 {
            assert_eq!(requests.len(), 1, "{fault:?}: nothing else is sent");
            assert!(run.stderr.contains("base_url"), "{run}");
            assert!(run.stderr.contains(&site.api.base_url()), "{run}");
        } else {
            assert!(requests.len() > 1, "{fault:?}: retried with backoff");
        }
        if matches!(fault, Fault::Redirect(_)) {
            assert!(run.stderr.contains("base_url"), "{run}");
            assert!(run.stderr.contains(REDIRECT_PATH), "{run}");
        }
        site.api.clear_faults();
    }
    site.api.clear();
    let healthy = site.scan(&[]).expect(0);
    assert_eq!(sorted(site.api.invalidated_assets()), all_urls());
    assert_eq!(site.api.token_requests().len(), 1);
    assert!(healthy.list("pending").is_empty());
    assert_eq!(owed(&site), 0);
}

#[test]
fn an_asset_refused_by_name_is_kept_visible_and_can_be_sent_again() {
    let site = site_with_changes();
    site.api.refuse(&url("b.jpg"));
    let run = site.scan(&[]).expect(1);
    assert_eq!(run.list("refused"), vec![url("b.jpg")]);
    assert!(run.stdout.contains("invalidate --refused"), "{run}");
    let sent = sorted(site.api.invalidated_assets());
    assert_eq!(sent, vec![url("a.jpg"), url("c.jpg")]);
    assert_eq!(
        site.api.token_requests().len(),
        1,
        "the rest gets its token"
    );

    let status = site.status();
    assert_eq!(status["assets_owed"], 0);
    assert_eq!(status["assets_refused"], 1);
    assert_eq!(status["refused"][0]["asset"], url("b.jpg"));
    assert!(status["refused"][0]["message"]
        .as_str()
        .unwrap()
        .contains("Invalid asset"));
    let text = site.run(&["status"]).expect(0);
    assert!(text.stdout.contains(&url("b.jpg")), "{text}");

    // Still listed by later runs, and not sent again on its own.
    site.api.clear();
    let later = site.scan(&[]).expect(0);
    assert_eq!(later.list("refused"), vec![url("b.jpg")]);
    assert!(site.api.requests().is_empty());

    // Refused again: still kept. Accepted: gone from the list.
    site.run(&["invalidate", "--refused"]).expect(1);
    assert_eq!(site.status()["assets_refused"], 1);
    site.api.accept(&url("b.jpg"));
    site.api.clear();
    let again = site.run(&["invalidate", "--refused", "--json"]).expect(0);
    assert_eq!(again.list("invalidated"), vec![url("b.jpg")]);
    assert_eq!(site.api.token_requests().len(), 1);
    assert_eq!(site.status()["assets_refused"], 0);
}

#[test]
fn watch_counts_refused_assets_in_metrics() {
    let addr = free_addr();
    let site = Site::watched("100ms", &["a.jpg", "b.jpg"])
        .setting(Table::Metrics, &format!("listen = \"{addr}\""));
    let daemon = site.watch();
    site.api.refuse(&url("a.jpg"));
    site.write("a.jpg", b"v2");
    site.write("b.jpg", b"v2");
    wait_until("the refused gauge", WAIT, || {
        metrics(&addr).contains("optiwatch_assets_refused 1")
    });
    assert!(metrics(&addr).contains("optiwatch_api_requests_total{outcome=\"refused\"} 1"));
    site.api.wait_for("the other edit", WAIT, |rs| {
        accepted(rs).contains(&url("b.jpg"))
    });
    assert!(daemon.log().contains("refused list"), "{}", daemon.log());
}

#[test]
fn an_oversized_answer_is_not_accepted_and_not_read_whole() {
    let site = site_with_changes();
    for declared in [false, true] {
        site.api.clear();
        let giant = Fault::Giant {
            bytes: 64 << 20,
            declared,
        };
        site.api.push_faults(giant, 10_000);
        let time = std::path::Path::new("/usr/bin/time");
        let run = if time.exists() {
            site.optiwatch_via(&["/usr/bin/time", "-f", "maxrss_kib=%M"])
                .args(&["scan", "--json"])
                .run()
        } else {
            println!("skipping the memory check: /usr/bin/time is not installed");
            site.scan(&[])
        };
        assert_eq!(run.code, 1, "declared {declared}:\n{run}");
        assert!(run.stderr.contains("larger than 256 KiB"), "{run}");
        assert_eq!(owed(&site), 3);
        if let Some(rss) = run.stderr.split("maxrss_kib=").nth(1) {
            let kib: u64 = rss.trim().parse().unwrap();
            println!("declared {declared}: peak memory {kib} KiB");
            assert!(kib < 48 * 1024, "peak memory {kib} KiB:\n{run}");
        }
        site.api.clear_faults();
    }
    // (The fake records each giant answer as a 200.)
    site.api.clear();
    site.scan(&[]).expect(0);
    assert_eq!(sorted(site.api.invalidated_assets()), all_urls());
}

#[test]
fn an_endless_answer_ends_with_the_request_timeout() {
    let site = site_with_changes().setting(Table::Api, "timeout = \"1s\"");
    site.api.push_fault(Fault::Trickle {
        every: Duration::from_millis(100),
    });
    let started = Instant::now();
    let run = site.optiwatch().args(&["scan"]).spawn();
    assert_eq!(run.wait(WAIT), Some(0));
    assert!(started.elapsed() < WAIT);
    let invalidations: Vec<_> = site
        .api
        .requests()
        .into_iter()
        .filter(|r| r.path == "/invalidate/asset")
        .collect();
    assert_eq!(invalidations.len(), 2, "the endless one, then a retry");
    let gap = invalidations[1].at.duration_since(invalidations[0].at);
    assert!(gap >= Duration::from_millis(900), "timed out after {gap:?}");
    assert_eq!(owed(&site), 0);
}

#[test]
fn scan_clamps_an_absurd_retry_after_to_its_budget() {
    for value in [
        "18446744073709551615",
        "1000000000000",
        "Fri, 31 Dec 9999 23:59:59 GMT",
    ] {
        let site = site_with_changes();
        site.api.push_fault(Fault::RetryAfter(429, value.into()));
        let started = Instant::now();
        site.scan(&[]).expect(0);
        assert!(started.elapsed() < Duration::from_secs(15), "{value}");
        assert_eq!(sorted(site.api.invalidated_assets()), all_urls(), "{value}");
    }
}

#[test]
fn watch_survives_an_absurd_retry_after_and_sends_later() {
    let site = Site::watched("100ms", &["a.jpg"]).setting(Table::Watch, "max_backoff = \"400ms\"");
    let mut daemon = site.watch();
    for (n, value) in [
        "18446744073709551615",
        "1000000000000",
        "Fri, 31 Dec 9999 23:59:59 GMT",
    ]
    .into_iter()
    .enumerate()
    {
        site.api.push_fault(Fault::RetryAfter(429, value.into()));
        site.write("a.jpg", format!("v{}", n + 2).as_bytes());
        site.api
            .wait_for(value, WAIT, |rs| times_accepted(rs, &url("a.jpg")) > n);
        assert!(daemon.is_running(), "{value}:\n{}", daemon.log());
    }
}

#[test]
fn watch_keeps_changes_owed_through_a_wrong_base_url_until_sighup() {
    let site = Site::watched("100ms", &["a.jpg"]);
    let mut daemon = site.watch();
    site.api.push_faults(Fault::Status(404), 10_000);
    site.write("a.jpg", b"v2");
    daemon.wait_log("base_url", WAIT);
    assert_eq!(site.api.requests().len(), 1, "not retried in a loop");
    assert_eq!(owed(&site), 1);
    assert!(daemon.is_running());
    site.api.clear_faults();
    daemon.signal(libc::SIGHUP);
    site.api.wait_for("the edit after the fix", WAIT, |rs| {
        accepted(rs).contains(&url("a.jpg"))
    });
}

#[test]
fn watch_retries_an_answer_that_is_not_a_success() {
    let site = Site::watched("100ms", &["a.jpg"]).setting(Table::Watch, "max_backoff = \"300ms\"");
    let _daemon = site.watch();
    site.api.push_fault(Fault::Body(200, "OK".into()));
    site.api
        .push_fault(Fault::Body(200, r#"{"success": false}"#.into()));
    site.api.push_fault(Fault::Status(400));
    site.write("a.jpg", b"v2");
    let requests = site.api.wait_for("a fourth try", WAIT, |rs| {
        rs.iter().filter(|r| r.path == "/invalidate/asset").count() >= 4
    });
    assert!(
        requests
            .iter()
            .all(|r| r.path != "/token" || r.at > requests[3].at),
        "no token before the assets were accepted"
    );
    wait_until("nothing owed", WAIT, || owed(&site) == 0);
}

#[test]
fn config_values_that_would_overflow_are_errors_with_line_and_column() {
    for (table, key, value) in [
        (Table::Watch, "token_interval", "\"18446744073709551615s\""),
        (Table::Watch, "max_backoff", "\"18446744073709551615s\""),
        (Table::Metrics, "max_owed_age", "\"18446744073709551615s\""),
        (Table::Watch, "event_queue", "9000000000000000000"),
    ] {
        let site = Site::new().setting(table, &format!("{key} = {value}"));
        let run = site.run(&["status"]).expect(2);
        assert!(run.stderr.contains("line "), "{run}");
        assert!(run.stderr.contains("column "), "{run}");
        assert!(run.stderr.contains(key), "{run}");
    }
    let site = Site::new().setting(Table::Api, "timeout = \"584542046091y\"");
    let run = site.run(&["status"]).expect(2);
    assert!(run.stderr.contains("timeout"), "{run}");
}
