//! The operator's commands: invalidate, token, urls, status, check,
//! completions and man.

use crate::support::fake_api::Fault;
use crate::support::{sorted, url, Site, Table};

/// `a.jpg` and `b b.png` baselined; tokens go to `token.txt`.
fn baselined_site() -> Site {
    Site::new()
        .setting(Table::Token, "file = \"token.txt\"")
        .files(&["a.jpg", "b b.png"])
        .baselined()
}

#[test]
fn invalidate_takes_paths_urls_and_hashes_in_one_batch_then_a_token() {
    let site = baselined_site();
    let hash = "0123456789abcdef0123456789ABCDEF";
    let run = site
        .run(&[
            "invalidate",
            "media/a.jpg",
            "media/b b.png",
            "https://cdn.example.com/x.jpg",
            hash,
        ])
        .expect(0);
    let sent = site.api.invalidate_requests();
    assert_eq!(sent.len(), 1, "{run}");
    assert_eq!(
        sorted(sent[0].assets.clone()),
        sorted(vec![
            url("a.jpg"),
            url("b%20b.png"),
            "https://cdn.example.com/x.jpg".into(),
            hash.into()
        ])
    );
    assert_eq!(site.api.token_requests().len(), 1);
    let token = std::fs::read_to_string(site.at("token.txt")).unwrap();
    assert!(run.stdout.contains(&token), "{run}");
}

#[test]
fn invalidate_dry_run_and_unmapped_paths_send_nothing() {
    let site = baselined_site();
    let dry = site
        .run(&["invalidate", "--dry-run", "media/a.jpg"])
        .expect(0);
    assert!(dry.stdout.contains(&url("a.jpg")), "{dry}");
    let unmapped = site.run(&["invalidate", "elsewhere/a.jpg"]).expect(2);
    assert!(unmapped.stderr.contains("no rule covers it"), "{unmapped}");
    let excluded = site.run(&["invalidate", "media/notes.txt"]).expect(2);
    assert!(
        excluded.stderr.contains("does not include it"),
        "{excluded}"
    );
    site.run(&["invalidate"]).expect(2);
    assert!(site.api.requests().is_empty());
}

#[test]
fn invalidate_domain_and_all() {
    let site = baselined_site();
    site.run(&["invalidate", "--domain", "example.com"])
        .expect(0);
    let rs = site.api.requests();
    assert_eq!(rs[0].path, "/invalidate/domain");
    assert_eq!(rs[0].body.as_ref().unwrap()["domain"], "example.com");
    assert_eq!(rs[1].path, "/token");

    // --all on no terminal needs --yes.
    let refused = site.run(&["invalidate", "--all"]).expect(2);
    assert!(refused.stderr.contains("--yes"), "{refused}");
    site.api.clear();
    site.run(&["invalidate", "--all", "--yes"]).expect(0);
    let rs = site.api.requests();
    assert_eq!(
        (rs[0].path.as_str(), rs[1].path.as_str()),
        ("/invalidate/all", "/token")
    );
}

#[test]
fn invalidate_keeps_what_failed_owed() {
    let site = baselined_site();
    site.api.push_faults(Fault::Status(503), 1000);
    let failed = site.run(&["invalidate", "--json", "media/a.jpg"]).expect(1);
    let json = failed.json();
    assert_eq!(json["pending"][0], url("a.jpg").as_str(), "{failed}");
    site.api.clear_faults();
    site.scan(&[]).expect(0);
    assert_eq!(site.api.invalidated_assets(), vec![url("a.jpg")]);
}

#[test]
fn token_prints_and_publishes_a_fresh_token() {
    let site = baselined_site();
    let run = site.run(&["token"]).expect(0);
    let token = site.api.tokens_issued()[0].clone();
    assert_eq!(run.stdout.trim(), token);
    assert_eq!(
        std::fs::read_to_string(site.at("token.txt")).unwrap(),
        token
    );
    assert!(site.api.invalidate_requests().is_empty());
}

#[test]
fn urls_explains_each_path() {
    let site = baselined_site().rule_setting("exclude = [\"**/cache/**\"]");
    let run = site
        .run(&[
            "urls",
            "media/2024/a b.jpg",
            "media/cache/x.jpg",
            "media/.x.jpg.tmp",
            "media/readme.txt",
            "/etc/passwd",
        ])
        .expect(1);
    let out = &run.stdout;
    assert!(out.contains(&url("2024/a%20b.jpg")), "{run}");
    assert!(out.contains("rule 1"), "{run}");
    assert!(out.contains("excludes it"), "{run}");
    assert!(out.contains("temporary file"), "{run}");
    assert!(
        out.contains("does not include it") && out.contains("*.webp"),
        "{run}"
    );
    assert!(out.contains("no rule covers it"), "{run}");
    let json = site
        .run(&["urls", "--json", "media/a.jpg"])
        .expect(0)
        .json();
    assert_eq!(json["paths"][0]["urls"][0], url("a.jpg").as_str());
    assert_eq!(json["paths"][0]["rule"], 1);
}

#[test]
fn status_reports_the_store() {
    let site = baselined_site();
    site.write("a.jpg", b"2");
    site.api.push_faults(Fault::Status(500), 1000);
    site.scan(&[]).expect(1);
    site.api.clear_faults();
    let status = site.status();
    assert_eq!(status["rules"][0]["files"], 2);
    assert_eq!(status["assets_owed"], 1);
    assert_eq!(status["token"], "owed");
    assert!(
        status["last_error"].as_str().unwrap().contains("500"),
        "{status}"
    );
    assert!(status["state_bytes"].as_u64().unwrap() > 0);
    assert!(status["running"].is_null());

    site.scan(&[]).expect(0);
    let daemon = site.watch();
    let status = site.status();
    assert_eq!(status["assets_owed"], 0);
    assert_eq!(status["token"], "settled");
    assert_eq!(status["last_token"], site.api.tokens_issued()[0].as_str());
    assert!(
        status["running"]
            .as_str()
            .unwrap()
            .contains(&daemon.pid().to_string()),
        "{status}"
    );
    let human = site.run(&["status"]).expect(0);
    assert!(human.stdout.contains("2 files tracked"), "{human}");
}

#[test]
fn check_finds_problems_and_can_go_online() {
    let mut site = baselined_site();
    let ok = site.run(&["check", "--online"]).expect(0);
    assert!(!ok.stdout.contains("FAIL"), "{ok}");
    let probe = site.api.invalidate_requests();
    assert_eq!(probe.len(), 1);
    assert!(probe[0].assets[0].contains(".optiwatch-check"), "{probe:?}");

    site.config
        .rules
        .push_str("[[rules]]\ndir = \"missing\"\nurl = \"https://x.example.com\"\n");
    site.key = "opt_revoked_key".into();
    let bad = site.run(&["check", "--online"]).expect(1);
    assert!(bad.stdout.contains("FAIL  rule 2"), "{bad}");
    assert!(bad.stdout.contains("User not found"), "{bad}");
    assert!(!bad.stdout.contains("opt_revoked_key"));
}

#[test]
fn completions_and_man_page_come_from_the_cli_definition() {
    let site = Site::new();
    for shell in ["bash", "zsh", "fish"] {
        let run = site.run(&["completions", shell]).expect(0);
        assert!(
            run.stdout.contains("invalidate") && run.stdout.contains("dry-run"),
            "{shell}"
        );
    }
    let man = site.run(&["man"]).expect(0);
    assert!(
        man.stdout.starts_with(".ie") || man.stdout.contains(".TH"),
        "{}",
        &man.stdout[..200]
    );
    assert!(man.stdout.contains("optiwatch"));
}

#[test]
fn the_progress_bar_shows_on_a_terminal_only() {
    let site = baselined_site();
    for n in 0..50 {
        site.write(format!("p{n}.jpg"), b"1");
    }
    let piped = site.run(&["scan"]).expect(0);
    assert!(!piped.stderr.contains("files walked"), "{piped}");
    site.write("more.jpg", b"1");
    // `script` gives the command a pseudo-terminal (temp paths hold no
    // spaces, so "$0 $*" is the binary and its --config arguments).
    let tty = site
        .optiwatch_via(&["sh", "-c", "exec script -qec \"$0 $* scan\" /dev/null"])
        .env("TERM", "xterm")
        .run();
    assert!(tty.stdout.contains("files walked"), "{tty}");
}

#[test]
fn the_deploy_hook_example_runs_a_scan_and_summarises_it() {
    let site = baselined_site();
    site.write("a.jpg", b"2");
    let out = site.deploy_hook(&site.config_path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("1 changed") && stdout.contains("1 invalidated"),
        "{stdout}"
    );
    assert_eq!(site.api.invalidated_assets(), vec![url("a.jpg")]);
}
