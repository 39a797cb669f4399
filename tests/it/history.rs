//! History: `optiwatch history` lists what Optimole accepted, with the
//! reason (changed, deleted, new, alias, manual, resent), the time, the
//! path and the request; what Optimole did not accept is not history;
//! `[history] max_rows` keeps the newest rows. Accepted URLs and changed
//! paths are logged at info level.

use std::os::unix::fs::symlink;

use serde_json::Value;

use crate::support::fake_api::Fault;
use crate::support::{url, Site, Table, WAIT};

/// `history --json` with `extra` arguments.
fn history(site: &Site, extra: &[&str]) -> Value {
    let out = site
        .optiwatch()
        .args(&["history", "--json"])
        .args(extra)
        .run()
        .expect(0);
    let json = out.json();
    assert_eq!(json["version"], 1, "{out}");
    json
}

/// (url, reason) of every entry, in order.
fn reasons(json: &Value) -> Vec<(String, String)> {
    json["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["url"].as_str().unwrap().to_string(),
                e["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn has(json: &Value, rel: &str, reason: &str) -> bool {
    reasons(json).contains(&(url(rel), reason.to_string()))
}

#[test]
fn history_lists_each_invalidation_with_its_reason_and_time() {
    let site = Site::new()
        .setting(Table::Top, "invalidate_new = true")
        .files(&["a.jpg", "b.jpg", "c.jpg"]);
    symlink("a.jpg", site.path("link.jpg")).unwrap();
    let site = site.baselined();
    site.write("a.jpg", b"v2");
    site.remove("b.jpg");
    site.write("n.jpg", b"v1");
    site.scan(&[]).expect(0);
    let c = site.path("c.jpg");
    site.run(&["invalidate", c.to_str().unwrap()]).expect(0);

    let json = history(&site, &["--since", "1h"]);
    let all = reasons(&json);
    assert_eq!(all.len(), 5, "{json}");
    for (rel, reason) in [
        ("a.jpg", "changed"),
        ("link.jpg", "alias"),
        ("b.jpg", "deleted"),
        ("n.jpg", "new"),
        ("c.jpg", "manual"),
    ] {
        assert!(has(&json, rel, reason), "{rel} {reason}: {json}");
    }
    let entries = json["entries"].as_array().unwrap();
    let a = entries.iter().find(|e| e["url"] == url("a.jpg")).unwrap();
    assert_eq!(a["path"], site.path("a.jpg").to_str().unwrap());
    assert_eq!(a["account"], "default");
    let at = a["at"].as_str().unwrap();
    assert!(
        humantime::parse_rfc3339(at).is_ok() && at.ends_with('Z'),
        "RFC 3339 in UTC: {at}"
    );
    // The scan's assets went in one request; the manual one in a later.
    let manual = entries.iter().find(|e| e["url"] == url("c.jpg")).unwrap();
    assert!(manual["request"].as_i64() > a["request"].as_i64(), "{json}");
    assert_eq!(entries.last().unwrap()["url"], url("c.jpg"), "newest last");
    // Each token handed out, shortened.
    let tokens = json["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 2, "{json}");
    let issued = site.api.tokens_issued();
    assert!(issued[0].starts_with(tokens[0]["token"].as_str().unwrap()));

    // --path matches the recorded path (or the URL).
    let only_a = history(&site, &["--path", "**/a.jpg"]);
    assert_eq!(reasons(&only_a), [(url("a.jpg"), "changed".to_string())]);
    assert!(only_a["tokens"].as_array().unwrap().is_empty());
    assert!(reasons(&history(&site, &["--path", "*.png"])).is_empty());
    // --since in the future, --limit, --account.
    assert!(reasons(&history(&site, &["--since", "2999-01-01T00:00:00Z"])).is_empty());
    assert_eq!(reasons(&history(&site, &["--limit", "1"])).len(), 1);
    assert!(reasons(&history(&site, &["--account", "shop"])).is_empty());

    // Text: one line per asset with time, reason, account, URL and path.
    let text = site.run(&["history", "--since", "1h"]).expect(0).stdout;
    let line = text
        .lines()
        .find(|l| l.contains(&url("a.jpg")))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains(" changed ") && line.contains(" default "),
        "{line}"
    );
    assert!(
        line.ends_with(site.path("a.jpg").to_str().unwrap()),
        "{line}"
    );
    let bad = site.run(&["history", "--since", "yesterday"]).expect(2);
    assert!(bad.stderr.contains("--since"), "{bad}");
}

#[test]
fn what_optimole_did_not_accept_is_not_history_until_it_is() {
    let site = Site::new().files(&["a.jpg", "r.jpg"]).baselined();
    site.write("a.jpg", b"v2");
    site.write("r.jpg", b"v2");
    site.api.refuse(&url("r.jpg"));
    // a.jpg fails for the whole retry budget; r.jpg is refused by name.
    site.api.push_faults(Fault::Status(503), 1000);
    site.scan(&[]).expect(1);
    assert!(reasons(&history(&site, &[])).is_empty(), "nothing accepted");

    site.api.clear_faults();
    site.scan(&[]).expect(1);
    let json = history(&site, &[]);
    assert_eq!(reasons(&json), [(url("a.jpg"), "changed".to_string())]);

    site.api.accept(&url("r.jpg"));
    site.run(&["invalidate", "--refused"]).expect(0);
    let json = history(&site, &[]);
    assert!(has(&json, "r.jpg", "resent"), "{json}");
    assert_eq!(reasons(&json).len(), 2, "{json}");
}

#[test]
fn pruning_by_max_rows_keeps_the_newest() {
    let site = Site::new()
        .setting(Table::History, "max_rows = 2")
        .files(&["a.jpg", "b.jpg", "c.jpg"])
        .baselined();
    for rel in ["a.jpg", "b.jpg", "c.jpg"] {
        site.write(rel, b"v2");
        site.scan(&[]).expect(0);
    }
    let json = history(&site, &[]);
    assert_eq!(
        reasons(&json),
        [
            (url("b.jpg"), "changed".to_string()),
            (url("c.jpg"), "changed".to_string())
        ]
    );
    assert_eq!(json["tokens"].as_array().unwrap().len(), 2, "{json}");
}

#[test]
fn accepted_urls_and_changed_paths_are_logged_at_info() {
    let rels: Vec<String> = (0..25).map(|i| format!("f{i:02}.jpg")).collect();
    let site = Site::watched("100ms", &rels);
    let daemon = site.watch();
    for rel in &rels {
        site.write(rel, b"v2");
    }
    daemon.wait_log("invalidated", WAIT);
    site.api.wait_for(
        "every asset",
        WAIT,
        crate::support::has_all(&rels.iter().map(|r| url(r)).collect::<Vec<_>>()),
    );
    let log = daemon.log();
    assert!(log.contains(&url("f00.jpg")), "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("changed") && l.contains("f0")),
        "a changed path at info: {log}"
    );
    // At most 20 URLs per flush line.
    for line in log.lines().filter(|l| l.contains("invalidated")) {
        assert!(line.matches("https://").count() <= 20, "{line}");
    }
}

/// A mistyped `--account` is not a quiet day: the config's names are
/// shown (the name may still be an earlier config's, so it is no error).
#[test]
fn an_unknown_account_name_is_warned_about() {
    let site = Site::new().files(&["a.jpg"]).baselined();
    let out = site.run(&["history", "--account", "shpo"]).expect(0);
    assert!(
        out.stderr.contains("no account named shpo") && out.stderr.contains("default"),
        "{out}"
    );
    let out = site.run(&["history", "--account", "default"]).expect(0);
    assert!(!out.stderr.contains("no account named"), "{out}");
}
