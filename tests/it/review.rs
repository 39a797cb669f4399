//! Adversarial review of issues 13 and 14: what broke when the real binary
//! met odd input (a WP-CLI that prints warnings or a URL with credentials,
//! `history --since` with an RFC 3339 offset, ...), each test written
//! against the old code first and seen failing.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::support::{Outcome, Site};

/// A WordPress root `wp/` in the site's folder and `bin/wp`, a fake WP-CLI
/// printing `stdout` for any question.
fn wordpress_answering(site: &Site, stdout: &str) -> PathBuf {
    let root = site.at("wp");
    std::fs::create_dir_all(root.join("wp-content/uploads")).unwrap();
    std::fs::write(root.join("wp-config.php"), "<?php\n").unwrap();
    std::fs::create_dir_all(site.at("bin")).unwrap();
    let wp = site.at("bin/wp");
    std::fs::write(&wp, format!("#!/bin/sh\ncat <<'EOF'\n{stdout}\nEOF\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wp, std::fs::Permissions::from_mode(0o755)).unwrap();
    root
}

fn init(site: &Site, args: &[&str]) -> Outcome {
    let path = format!("{}:/usr/bin:/bin", site.at("bin").display());
    Command::new(env!("CARGO_BIN_EXE_optiwatch"))
        .arg("init")
        .args(args)
        .current_dir(site.root.path())
        .env_clear()
        .env("PATH", path)
        .stdin(Stdio::null())
        .output()
        .expect("the optiwatch binary runs")
        .into()
}

/// PHP prints notices on stdout under WP-CLI; the URL is the last line.
#[test]
fn init_takes_the_site_url_from_the_last_line_wp_cli_prints() {
    let site = Site::new();
    wordpress_answering(
        &site,
        "PHP Deprecated:  Creation of dynamic property in x.php on line 3\nhttps://blog.example.com",
    );
    let out = init(&site, &["wp"]).expect(0);
    let text = std::fs::read_to_string(site.at("watcher.toml")).unwrap();
    assert!(
        text.contains("url = \"https://blog.example.com/wp-content/uploads\""),
        "{out}\n{text}"
    );
}

/// A site URL from WP-CLI that cannot be used is WP-CLI's, not `--url`'s
/// (which the operator did not pass), and its credentials are not echoed.
#[test]
fn init_blames_wp_cli_not_url_for_a_home_option_it_cannot_use() {
    let site = Site::new();
    wordpress_answering(&site, "https://admin:s3cret@blog.example.com");
    let refused = init(&site, &["wp"]).expect(2);
    assert!(refused.stderr.contains("WP-CLI"), "{refused}");
    assert!(!refused.stderr.contains("--url:"), "{refused}");
    assert!(!refused.stderr.contains("s3cret"), "{refused}");
    assert!(!site.at("watcher.toml").exists());
}

/// README: `--since` takes "an RFC 3339 time"; one with an offset is one.
#[test]
fn history_since_takes_an_rfc3339_time_with_an_offset() {
    let site = Site::new().files(&["a.jpg"]).baselined();
    site.write("a.jpg", b"v2");
    site.scan(&[]).expect(0);
    let count = |since: &str| {
        let out = site
            .optiwatch()
            .args(&["history", "--json", "--since", since])
            .run()
            .expect(0);
        out.json()["entries"].as_array().unwrap().len()
    };
    assert_eq!(count("2000-01-01T00:00:00Z"), 1);
    assert_eq!(count("2000-01-01T02:00:00+02:00"), 1);
    assert_eq!(count("9000-01-01T00:00:00-05:00"), 0);
}

/// The store is input like any file: a history row with a time no
/// calendar can print is clamped, not a panic.
#[test]
fn history_survives_a_row_with_an_impossible_time() {
    let site = Site::new().files(&["a.jpg"]).baselined();
    site.write("a.jpg", b"v2");
    site.scan(&[]).expect(0);
    let db = rusqlite::Connection::open(site.at("optiwatch.db")).unwrap();
    db.execute("UPDATE history SET at = 9223372036854775807", [])
        .unwrap();
    drop(db);
    let out = site
        .optiwatch()
        .args(&["history", "--json", "--since", "1d"])
        .run()
        .expect(0);
    assert_eq!(
        out.json()["entries"][0]["at"],
        "9999-12-31T23:59:59Z",
        "{out}"
    );
}
