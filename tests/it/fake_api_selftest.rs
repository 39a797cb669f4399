//! Tests of the fake Optimole API itself, so a failing client test can trust
//! that the fake behaves as documented.

use std::time::{Duration, Instant};

use crate::support::fake_api::{FakeApi, Fault, GOOD_KEY};
use crate::support::{wait_until, WAIT};
use serde_json::{json, Value};

struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: Value,
}

/// POSTs `body` (as JSON, if any) to `base + path` and returns the answer.
fn post(
    api: &FakeApi,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> reqwest::Result<Answer> {
    post_with_timeout(api, path, key, body, Duration::from_secs(10))
}

fn post_with_timeout(
    api: &FakeApi,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
    timeout: Duration,
) -> reqwest::Result<Answer> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .user_agent("selftest/1")
            .timeout(timeout)
            .build()?;
        let mut rb = client.post(format!("{}{}", api.base_url(), path));
        if let Some(k) = key {
            rb = rb.bearer_auth(k);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        let body = resp.json::<Value>().await?;
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    })
}

fn assets(n: usize) -> Value {
    let list: Vec<String> = (0..n)
        .map(|i| format!("https://example.com/{i}.jpg"))
        .collect();
    json!({ "assets": list })
}

#[test]
fn good_invalidate_is_answered_and_recorded() {
    let api = FakeApi::start();
    assert!(api.base_url().starts_with("http://127.0.0.1:"));
    assert!(api.base_url().ends_with("/api/optml/v2/cache"));
    let a = post(&api, "/invalidate/asset", Some(GOOD_KEY), Some(assets(2))).unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.body, json!({"success": true, "data": {"invalidated": 2}}));

    let reqs = api.invalidate_requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/invalidate/asset");
    assert_eq!(
        r.authorization.as_deref(),
        Some("Bearer opt_test_key_1234567890")
    );
    assert_eq!(r.content_type.as_deref(), Some("application/json"));
    assert_eq!(r.user_agent.as_deref(), Some("selftest/1"));
    assert_eq!(r.status, 200);
    assert_eq!(
        api.invalidated_assets(),
        vec!["https://example.com/0.jpg", "https://example.com/1.jpg"]
    );

    let d = post(
        &api,
        "/invalidate/domain",
        Some(GOOD_KEY),
        Some(json!({"domain": "example.com"})),
    )
    .unwrap();
    assert_eq!(d.status, 200);
    let all = post(&api, "/invalidate/all", Some(GOOD_KEY), None).unwrap();
    assert_eq!(all.status, 200);
    assert_eq!(api.requests().len(), 3);
    assert_eq!(
        api.invalidate_requests().len(),
        1,
        "only asset invalidations count"
    );

    api.clear();
    assert!(api.requests().is_empty());
}

#[test]
fn bad_keys_get_user_not_found() {
    let api = FakeApi::start_with_keys(&[GOOD_KEY, "opt_other"]);
    for key in [Some("opt_wrong"), None] {
        let a = post(&api, "/invalidate/asset", key, Some(assets(1))).unwrap();
        assert_eq!(a.status, 401);
        assert_eq!(a.body["error"], "User not found");
        assert_eq!(a.body["code"], "user_not_found");
    }
    assert_eq!(
        post(&api, "/token", Some("opt_other"), None)
            .unwrap()
            .status,
        200
    );
    api.revoke_key("opt_other");
    assert_eq!(
        post(&api, "/token", Some("opt_other"), None)
            .unwrap()
            .status,
        401
    );
    assert_eq!(
        post(&api, "/token", Some(GOOD_KEY), None).unwrap().status,
        200
    );

    let statuses: Vec<u16> = api.requests().iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        vec![401, 401, 200, 401, 200],
        "rejected requests are recorded too"
    );
    assert!(api.invalidated_assets().is_empty());
}

#[test]
fn over_limit_and_malformed_bodies_get_400() {
    let api = FakeApi::start();
    let a = post(&api, "/invalidate/asset", Some(GOOD_KEY), Some(assets(101))).unwrap();
    assert_eq!(a.status, 400);
    assert_eq!(
        a.body,
        json!({"success": false, "error": "Too many assets to invalidate"})
    );
    assert_eq!(
        api.requests()[0].assets.len(),
        101,
        "assets are recorded even when rejected"
    );
    assert_eq!(
        post(&api, "/invalidate/asset", Some(GOOD_KEY), Some(assets(100)))
            .unwrap()
            .status,
        200
    );

    api.set_asset_limit(3);
    let a = post(&api, "/invalidate/asset", Some(GOOD_KEY), Some(assets(4))).unwrap();
    assert_eq!(a.body["error"], "Too many assets to invalidate");
    assert_eq!(
        post(&api, "/invalidate/asset", Some(GOOD_KEY), Some(assets(3)))
            .unwrap()
            .status,
        200
    );

    for bad in [
        json!({"assets": []}),
        json!({"assets": [1, 2]}),
        json!({"domain": "x"}),
    ] {
        let a = post(&api, "/invalidate/asset", Some(GOOD_KEY), Some(bad)).unwrap();
        assert_eq!(a.status, 400);
        assert_eq!(a.body["success"], false);
    }
    // JSON text without the JSON content type.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = rt.block_on(async {
        let resp = reqwest::Client::new()
            .post(format!("{}/invalidate/asset", api.base_url()))
            .bearer_auth(GOOD_KEY)
            .body(assets(1).to_string())
            .send()
            .await
            .unwrap();
        resp.status().as_u16()
    });
    assert_eq!(status, 400);

    let nf = post(&api, "/invalidate/everything", Some(GOOD_KEY), None).unwrap();
    assert_eq!(nf.status, 404);
    assert_eq!(
        api.requests().last().unwrap().path,
        "/invalidate/everything"
    );
    assert_eq!(api.invalidated_assets().len(), 103);
}

#[test]
fn tokens_are_distinct_and_both_shapes_work() {
    let api = FakeApi::start();
    let a = post(&api, "/token", Some(GOOD_KEY), None).unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.body["success"], true);
    let t1 = a.body["data"]["token"].as_str().unwrap().to_string();
    assert!(t1.starts_with("tk") && t1.len() == 12, "{t1}");
    assert!(
        t1.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
        "{t1}"
    );

    api.set_token_shape_code(true);
    let b = post(&api, "/token", Some(GOOD_KEY), None).unwrap();
    assert_eq!(b.body["code"], 200);
    assert!(b.body.get("success").is_none());
    let t2 = b.body["data"]["token"].as_str().unwrap().to_string();
    assert_ne!(t1, t2);
    assert_eq!(api.tokens_issued(), vec![t1, t2]);
    assert_eq!(api.token_requests().len(), 2);
}

#[test]
fn faults_are_consumed_in_order() {
    let api = FakeApi::start();
    api.push_fault(Fault::Status(503));
    api.push_fault(Fault::RetryAfter(429, "1".into()));
    api.push_fault(Fault::Drop);
    api.push_fault(Fault::Message(403, "User not active".into()));
    api.push_fault(Fault::Delay(Duration::from_millis(300)));

    let a = post(&api, "/invalidate/asset", Some(GOOD_KEY), Some(assets(1))).unwrap();
    assert_eq!(
        (a.status, a.body.clone()),
        (503, json!({"success": false, "error": "injected"}))
    );
    let a = post(&api, "/token", Some(GOOD_KEY), None).unwrap();
    assert_eq!((a.status, a.retry_after.as_deref()), (429, Some("1")));
    let err = post(&api, "/invalidate/asset", Some(GOOD_KEY), Some(assets(1)));
    assert!(err.is_err(), "Drop must give a connection error");
    let a = post(&api, "/token", Some("opt_wrong"), None).unwrap();
    assert_eq!(
        (a.status, a.body["error"].as_str()),
        (403, Some("User not active")),
        "faults come before auth"
    );
    let t0 = Instant::now();
    let a = post(&api, "/invalidate/asset", Some(GOOD_KEY), Some(assets(1))).unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(300));
    assert_eq!(a.status, 200, "Delay answers normally afterwards");
    assert_eq!(
        post(&api, "/token", Some(GOOD_KEY), None).unwrap().status,
        200,
        "queue is empty now"
    );

    let statuses: Vec<u16> = api.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![503, 429, 0, 403, 200, 200]);
    assert_eq!(api.invalidated_assets().len(), 1);

    api.push_faults(Fault::Status(500), 2);
    assert_eq!(
        post(&api, "/token", Some(GOOD_KEY), None).unwrap().status,
        500
    );
    assert_eq!(
        post(&api, "/token", Some(GOOD_KEY), None).unwrap().status,
        500
    );
    assert_eq!(
        post(&api, "/token", Some(GOOD_KEY), None).unwrap().status,
        200
    );
}

#[test]
fn client_timeout_during_delay_is_not_processed() {
    let api = FakeApi::start();
    api.push_fault(Fault::Delay(Duration::from_millis(800)));
    let err = post_with_timeout(
        &api,
        "/invalidate/asset",
        Some(GOOD_KEY),
        Some(assets(1)),
        Duration::from_millis(100),
    );
    assert!(err.is_err_and(|e| e.is_timeout()));
    // Once the fake is done with the connection, its record of the request
    // is final: done at the hang-up, it was not processed; a fake that
    // missed the hang-up would be done only after answering it.
    wait_until("the fake to be done with the connection", WAIT, || {
        api.finished() == 1
    });
    assert_eq!(api.requests().len(), 1);
    assert_eq!(api.requests()[0].status, 0);
    assert!(api.invalidated_assets().is_empty());
}

#[test]
fn wait_for_sees_requests_made_by_another_thread() {
    let api = FakeApi::start();
    let (looked, looked_rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let api = &api;
        s.spawn(move || {
            // Only once `wait_for` has looked and found nothing.
            looked_rx.recv().unwrap();
            post(api, "/invalidate/asset", Some(GOOD_KEY), Some(assets(2))).unwrap();
        });
        let first_look = std::sync::atomic::AtomicBool::new(true);
        let reqs = api.wait_for("one invalidation", WAIT, |r| {
            if first_look.swap(false, std::sync::atomic::Ordering::Relaxed) {
                assert!(r.is_empty(), "nothing was sent before the first look");
            }
            let _ = looked.send(());
            r.iter().any(|r| r.status == 200)
        });
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].assets.len(), 2);
    });
}

#[test]
#[should_panic(expected = "waiting for a token request")]
fn wait_for_panics_at_the_deadline() {
    let api = FakeApi::start();
    post(&api, "/invalidate/all", Some(GOOD_KEY), None).unwrap();
    api.wait_for("a token request", Duration::from_millis(100), |r| {
        r.iter().any(|r| r.path == "/token")
    });
}

#[test]
fn drop_stops_the_server() {
    let api = FakeApi::start();
    let addr = api.addr();
    assert!(std::net::TcpStream::connect(addr).is_ok());
    drop(api);
    assert!(std::net::TcpStream::connect(addr).is_err());
}

#[test]
fn recorded_serializes_without_instant() {
    let api = FakeApi::start();
    post(&api, "/token", Some(GOOD_KEY), None).unwrap();
    let v = serde_json::to_value(&api.requests()[0]).unwrap();
    assert_eq!(v["path"], "/token");
    assert!(v.get("at").is_none());
}
