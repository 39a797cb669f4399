//! How `scan` behaves when Optimole or the network misbehaves: transient
//! failures are retried, fatal ones stop the run, and nothing owed is lost.

use std::time::Duration;

use crate::support::fake_api::{Fault, GOOD_KEY};
use crate::support::{sorted, url, Site};

/// A site with `a.jpg` and `b.jpg` baselined and then both edited.
fn site_with_two_changes() -> Site {
    let site = Site::new().files(&["a.jpg", "b.jpg"]).baselined();
    site.write("a.jpg", b"2");
    site.write("b.jpg", b"2");
    site
}

fn both() -> Vec<String> {
    vec![url("a.jpg"), url("b.jpg")]
}

#[test]
fn transient_failures_are_retried() {
    let site = site_with_two_changes();
    site.api.push_fault(Fault::Status(503));
    site.api.push_fault(Fault::Drop);
    let run = site.scan(&[]).expect(0);
    assert_eq!(sorted(site.api.invalidated_assets()), both());
    assert_eq!(
        run.json()["requests"],
        4,
        "two failures, one invalidation, one token"
    );
    assert_eq!(site.api.token_requests().len(), 1);
}

#[test]
fn retry_after_is_honoured() {
    let site = site_with_two_changes();
    site.api.push_fault(Fault::RetryAfter(429, "2".into()));
    site.scan(&[]).expect(0);
    let all = site.api.requests();
    assert_eq!(all[0].status, 429);
    let gap = all[1].at.duration_since(all[0].at);
    assert!(gap >= Duration::from_millis(1900), "retried after {gap:?}");
}

#[test]
fn an_outage_longer_than_the_budget_keeps_everything_owed() {
    let site = site_with_two_changes();
    site.api.push_faults(Fault::Status(502), 1000);
    let failed = site.scan(&[]).expect(1);
    assert_eq!(sorted(failed.list("pending")), both());
    assert!(failed.stderr.contains("502"), "{failed}");
    assert!(site.api.token_requests().is_empty());

    // The outage ends: the next run sends what was owed first, then what it
    // finds itself, then one token.
    site.api.clear_faults();
    site.api.clear();
    site.write("c.jpg", b"1");
    site.scan(&["--baseline"]).expect(0);
    site.write("c.jpg", b"2");
    let next = site.scan(&[]).expect(0);
    let sent = site.api.invalidate_requests();
    assert_eq!(
        sorted(sent[0].assets.clone()),
        both(),
        "owed assets go first"
    );
    assert_eq!(sent[1].assets, vec![url("c.jpg")]);
    assert_eq!(site.api.token_requests().len(), 1);
    assert!(next.list("pending").is_empty());
}

#[test]
fn a_refused_key_is_fatal_and_never_shown() {
    let mut site = site_with_two_changes();
    site.key = "opt_wrong_secret_key".into();
    let failed = site.scan(&[]).expect(1);
    assert!(failed.stderr.contains("User not found"), "{failed}");
    assert_eq!(site.api.requests().len(), 1, "no retries of a fatal answer");
    assert!(!failed.stderr.contains("opt_wrong_secret_key"));
    assert!(!failed.stdout.contains("opt_wrong_secret_key"));
    assert_eq!(sorted(failed.list("pending")), both());

    site.key = GOOD_KEY.into();
    site.scan(&[]).expect(0);
    assert_eq!(sorted(site.api.invalidated_assets()), both());
}

#[test]
fn a_lower_server_limit_splits_batches() {
    let site = Site::new();
    for n in 0..30 {
        site.write(format!("{n}.jpg"), b"1");
    }
    site.scan(&[]).expect(0);
    for n in 0..30 {
        site.write(format!("{n}.jpg"), b"2");
    }
    site.api.set_asset_limit(8);
    site.scan(&[]).expect(0);
    let sent = site.api.invalidate_requests();
    assert!(sent.iter().all(|r| r.assets.len() <= 8));
    assert_eq!(site.api.invalidated_assets().len(), 30, "every asset once");
}

#[test]
fn the_key_never_appears_in_logs_at_any_verbosity() {
    let site = site_with_two_changes();
    site.api.push_fault(Fault::Status(500));
    let run = site
        .optiwatch()
        .args(&["-vv", "scan"])
        .env("RUST_LOG", "trace")
        .run()
        .expect(0);
    assert!(
        run.stderr.contains("invalidate"),
        "trace logs were written:\n{run}"
    );
    assert!(!run.stderr.contains(GOOD_KEY), "{run}");
    assert!(!run.stdout.contains(GOOD_KEY));
}

#[test]
fn a_token_that_could_not_be_fetched_stays_owed() {
    let site = site_with_two_changes();
    // The invalidation goes through, every token request fails.
    site.api.push_fault(Fault::Delay(Duration::ZERO));
    site.api.push_faults(Fault::Status(503), 1000);
    let failed = site.scan(&[]).expect(1);
    assert_eq!(sorted(site.api.invalidated_assets()), both());
    assert!(failed.json()["token"].is_null());
    assert!(failed.list("pending").is_empty());

    site.api.clear_faults();
    site.api.clear();
    let next = site.scan(&[]).expect(0);
    assert!(site.api.invalidate_requests().is_empty());
    assert_eq!(
        site.api.token_requests().len(),
        1,
        "the owed token is requested"
    );
    assert_eq!(next.json()["token"], site.api.tokens_issued()[0].as_str());
    site.api.clear();
    site.scan(&[]).expect(0);
    assert!(site.api.requests().is_empty());
}
