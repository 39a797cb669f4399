//! `optiwatch scan` end to end: the real binary against the fake API in a
//! temp folder.

use std::collections::BTreeSet;

use crate::support::fake_api::GOOD_KEY;
use crate::support::{sorted, url, Site, Table};

fn image(n: usize, version: u8) -> Vec<u8> {
    format!("image {n} version {version} ")
        .repeat(40)
        .into_bytes()
}

#[test]
fn first_scan_is_a_baseline_and_sends_nothing() {
    let site = Site::new();
    site.write("a.jpg", b"a");
    site.write("2024/05/b.png", b"b");
    let run = site.scan(&[]).expect(0);
    let json = run.json();
    assert_eq!(json["baseline"], true);
    assert_eq!(json["counts"]["new"], 2, "counted, not listed: {run}");
    assert_eq!(json["requests"], 0);
    assert!(site.api.requests().is_empty());
}

#[test]
fn edits_touches_deletions_and_additions_of_250_images() {
    let site = Site::new();
    for n in 0..250 {
        site.write(format!("2024/{:02}/img{n}.jpg", n % 12 + 1), &image(n, 0));
    }
    site.scan(&[]).expect(0);
    assert!(site.api.requests().is_empty());

    let rel = |n: usize| format!("2024/{:02}/img{n}.jpg", n % 12 + 1);
    let mut expected = BTreeSet::new();
    for n in 0..150 {
        site.write(rel(n), &image(n, 1));
        expected.insert(url(&rel(n)));
    }
    for n in 150..200 {
        site.touch(rel(n));
    }
    for n in 200..210 {
        site.remove(rel(n));
        expected.insert(url(&rel(n)));
    }
    for n in 250..255 {
        site.write(rel(n), &image(n, 0));
    }

    let run = site.scan(&[]).expect(0);
    let json = run.json();
    let invalidations = site.api.invalidate_requests();
    assert_eq!(invalidations.len(), 2, "{run}");
    let sent: Vec<String> = invalidations
        .iter()
        .flat_map(|r| r.assets.clone())
        .collect();
    assert_eq!(sent.len(), 160, "no asset sent twice");
    assert_eq!(sent.iter().cloned().collect::<BTreeSet<_>>(), expected);
    assert!(invalidations.iter().all(|r| r.assets.len() <= 100));

    let all = site.api.requests();
    assert_eq!(all.len(), 3, "two invalidations then one token request");
    assert_eq!(all[2].path, "/token");
    assert_eq!(json["token"], site.api.tokens_issued()[0].as_str());
    for request in &all {
        assert_eq!(
            request.authorization.as_deref(),
            Some(format!("Bearer {GOOD_KEY}").as_str())
        );
        assert_eq!(request.content_type.as_deref(), Some("application/json"));
        assert!(request
            .user_agent
            .as_deref()
            .unwrap()
            .starts_with("optiwatch/"));
    }
    assert_eq!(json["requests"], 3);
    assert_eq!(run.list("changed").len(), 150);
    assert_eq!(run.list("touched").len(), 50);
    assert_eq!(run.list("deleted").len(), 10);
    assert_eq!(run.list("new").len(), 5);
    assert_eq!(run.list("invalidated").len(), 160);
    assert!(run.list("pending").is_empty());
    assert_eq!(json["baseline"], false);

    site.api.clear();
    let again = site.scan(&["--all-paths"]).expect(0);
    assert!(
        site.api.requests().is_empty(),
        "a second scan sends nothing"
    );
    assert_eq!(
        again.list("unchanged").len(),
        245,
        "touched mtimes were recorded"
    );
}

#[test]
fn dry_run_sends_nothing_and_changes_nothing() {
    let site = Site::new().files(&["a.jpg", "b.jpg"]).baselined();
    site.write("a.jpg", b"two");
    site.remove("b.jpg");

    for _ in 0..2 {
        let dry = site.scan(&["--dry-run"]).expect(0);
        assert_eq!(dry.json()["dry_run"], true);
        assert_eq!(
            sorted(dry.list("would_invalidate")),
            vec![url("a.jpg"), url("b.jpg")]
        );
        assert!(site.api.requests().is_empty());
    }
    let real = site.scan(&[]).expect(0);
    assert_eq!(
        real.list("changed").len(),
        1,
        "the dry run recorded nothing"
    );
    assert_eq!(
        sorted(site.api.invalidated_assets()),
        vec![url("a.jpg"), url("b.jpg")]
    );
}

#[test]
fn dry_run_on_a_new_site_creates_no_store() {
    let site = Site::new();
    site.write("a.jpg", b"one");
    site.scan(&["--dry-run"]).expect(0);
    assert!(!site.at("optiwatch.db").exists());
}

#[test]
fn touch_without_a_content_change_invalidates_nothing() {
    let site = Site::new().files(&["a.jpg"]).baselined();
    site.touch("a.jpg");
    let run = site.scan(&[]).expect(0);
    assert_eq!(run.list("touched").len(), 1);
    assert!(site.api.requests().is_empty(), "{run}");
    let after = site.scan(&["--all-paths"]).expect(0);
    assert_eq!(
        after.list("unchanged").len(),
        1,
        "the new mtime was recorded"
    );
}

#[test]
fn odd_file_names_are_encoded_as_a_browser_requests_them() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    let site = Site::new();
    let names: Vec<&[u8]> = vec![
        "café ü.jpg".as_bytes(),
        b"a b#c?.png",
        b"100%.png",
        b"(1)+x,y=z&w@v~.jpg",
        b"$(touch pwned).jpg",
        b"bad\xff\xfe.jpg",
    ];
    for name in &names {
        site.write(OsStr::from_bytes(name), b"v1");
    }
    site.scan(&[]).expect(0);
    for name in &names {
        site.write(OsStr::from_bytes(name), b"v2");
    }
    site.scan(&[]).expect(0);
    let expected = sorted(
        [
            "caf%C3%A9%20%C3%BC.jpg",
            "a%20b%23c%3F.png",
            "100%25.png",
            "(1)+x,y=z&w@v~.jpg",
            "$(touch%20pwned).jpg",
            "bad%FF%FE.jpg",
        ]
        .iter()
        .map(|s| url(s))
        .collect(),
    );
    assert_eq!(sorted(site.api.invalidated_assets()), expected);
    assert!(!site.at("pwned").exists());
}

#[test]
fn also_prefixes_and_nested_rules() {
    let site = Site::new()
        .rule_setting("also = [\"https://www.example.com/uploads/\"]")
        .rule("media/cdn", "https://cdn.example.com");
    site.write("a.jpg", b"1");
    site.write("cdn/b.jpg", b"1");
    let first = site.scan(&["--all-paths"]).expect(0);
    assert_eq!(
        first.list("scanned").len(),
        2,
        "nested folder not counted twice"
    );
    site.write("a.jpg", b"2");
    site.write("cdn/b.jpg", b"2");
    site.scan(&[]).expect(0);
    assert_eq!(
        sorted(site.api.invalidated_assets()),
        vec![
            "https://cdn.example.com/b.jpg".to_string(),
            url("a.jpg"),
            "https://www.example.com/uploads/a.jpg".to_string(),
        ]
    );
}

#[test]
fn include_and_exclude_patterns() {
    let site = Site::new().rule_setting("exclude = [\"**/cache/**\"]");
    site.write("a.JPG", b"1");
    site.write("cache/b.jpg", b"1");
    site.write("notes.txt", b"1");
    let run = site.scan(&["--all-paths"]).expect(0);
    assert_eq!(
        run.list("scanned"),
        vec![site.path("a.JPG").display().to_string()]
    );
}

#[test]
fn new_files_are_invalidated_only_when_asked() {
    let mut site = Site::new().files(&["a.jpg"]).baselined();
    site.write("b.jpg", b"1");
    site.scan(&[]).expect(0);
    assert!(site.api.requests().is_empty());

    site.config.set(Table::Top, "invalidate_new = true");
    site.write("c.jpg", b"1");
    site.scan(&[]).expect(0);
    assert_eq!(site.api.invalidated_assets(), vec![url("c.jpg")]);
    assert_eq!(site.api.token_requests().len(), 1);
}

#[test]
fn a_new_rule_gets_its_own_baseline() {
    let site = Site::new()
        .setting(Table::Top, "invalidate_new = true")
        .files(&["a.jpg"])
        .baselined();
    std::fs::create_dir(site.at("other")).unwrap();
    std::fs::write(site.at("other/x.jpg"), b"1").unwrap();
    let site = site.rule("other", "https://other.example.com");
    site.scan(&[]).expect(0);
    assert!(
        site.api.requests().is_empty(),
        "adding a site must not invalidate its library"
    );
}

#[test]
fn explicit_baseline_records_without_sending() {
    let site = Site::new().files(&["a.jpg"]).baselined();
    site.write("a.jpg", b"2");
    let run = site.scan(&["--baseline"]).expect(0);
    assert_eq!(run.list("changed").len(), 1);
    assert!(site.api.requests().is_empty());
    site.scan(&[]).expect(0);
    assert!(
        site.api.requests().is_empty(),
        "the baseline took the change in"
    );
}

#[test]
fn token_file_and_command_receive_the_token() {
    let site = Site::new();
    let out = site.at("cmd-out");
    let command = format!(
        "command = [\"sh\", \"-c\", \"printf '%s %s' \\\"$1\\\" \\\"$OPTIWATCH_TOKEN\\\" > {}\", \"sh\", \"{{token}}\"]",
        out.display()
    );
    let site = site
        .setting(Table::Token, "file = \"public/token\"")
        .setting(Table::Token, &command);
    std::fs::create_dir(site.at("public")).unwrap();
    site.write("a.jpg", b"1");
    site.scan(&[]).expect(0);
    site.write("a.jpg", b"2");
    let run = site.scan(&[]).expect(0);
    let token = site.api.tokens_issued()[0].clone();
    assert_eq!(run.json()["token"], token.as_str());
    assert_eq!(
        std::fs::read_to_string(site.at("public/token")).unwrap(),
        token
    );
    assert_eq!(
        std::fs::read_to_string(out).unwrap(),
        format!("{token} {token}")
    );
}

#[test]
fn a_failing_token_command_keeps_the_token_owed() {
    let site = Site::new();
    let flag = site.at("allow");
    let command = format!(
        "command = [\"sh\", \"-c\", \"test -e {} || {{ echo refused >&2; exit 3; }}\"]",
        flag.display()
    );
    let site = site.setting(Table::Token, &command);
    site.write("a.jpg", b"1");
    site.scan(&[]).expect(0);
    site.write("a.jpg", b"2");
    let failed = site.scan(&[]).expect(1);
    assert!(failed.stderr.contains("refused"), "{failed}");
    assert_eq!(site.api.token_requests().len(), 1);

    std::fs::write(&flag, b"").unwrap();
    let retried = site.scan(&[]).expect(0);
    assert_eq!(
        site.api.token_requests().len(),
        1,
        "the token already fetched is published, not a new one requested"
    );
    assert_eq!(
        retried.json()["token"],
        site.api.tokens_issued()[0].as_str()
    );
    site.scan(&[]).expect(0);
    assert_eq!(site.api.requests().len(), 2, "nothing owed any more");
}

#[test]
fn both_token_answer_shapes_are_accepted() {
    let site = Site::new();
    site.api.set_token_shape_code(true);
    site.write("a.jpg", b"1");
    site.scan(&[]).expect(0);
    site.write("a.jpg", b"2");
    let run = site.scan(&[]).expect(0);
    assert_eq!(run.json()["token"], site.api.tokens_issued()[0].as_str());
}

#[test]
fn missing_rule_folder_fails_without_deleting_anything() {
    let site = Site::new().files(&["a.jpg"]).baselined();
    std::fs::rename(&site.media, site.at("moved")).unwrap();
    let run = site.scan(&[]).expect(1);
    assert!(run.stderr.contains("media"), "{run}");
    assert!(run.list("deleted").is_empty());
    assert!(site.api.requests().is_empty());
    std::fs::rename(site.at("moved"), &site.media).unwrap();
    let back = site.scan(&["--all-paths"]).expect(0);
    assert_eq!(back.list("unchanged").len(), 1);
}

#[test]
fn a_change_set_bigger_than_one_chunk_is_recorded_and_sent_whole() {
    let site = Site::new();
    let n: usize = 10_500; // more than one recording chunk (10,000 files)
    for i in 0..n {
        site.write(format!("{}/{i}.jpg", i % 50), b"1");
    }
    site.scan(&[]).expect(0);
    for i in 0..n {
        site.write(format!("{}/{i}.jpg", i % 50), b"2");
    }
    site.run(&["scan"]).expect(0);
    assert_eq!(site.api.invalidate_requests().len(), n.div_ceil(100));
    assert_eq!(site.api.invalidated_assets().len(), n);
    assert_eq!(site.api.token_requests().len(), 1);
    site.api.clear();
    let again = site.scan(&[]).expect(0);
    assert_eq!(again.json()["counts"]["unchanged"], n);
    assert!(site.api.requests().is_empty());
}
