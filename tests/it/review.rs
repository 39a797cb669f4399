//! Adversarial review of issues 13 and 14: what broke when the real binary
//! met odd input (a WP-CLI that prints warnings or a URL with credentials,
//! `history --since` with an RFC 3339 offset, ...), each test written
//! against the old code first and seen failing.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::support::{url, Outcome, Site};

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

mod socket {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    use crate::support::{url, Daemon, Site, WAIT};

    fn daemon(site: &Site) -> Daemon {
        let daemon = site.watch();
        daemon.wait_log("control socket ready", WAIT);
        daemon
    }

    fn connect(site: &Site) -> UnixStream {
        let s = UnixStream::connect(site.at("optiwatch.db.sock")).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s
    }

    /// Sends `bytes` and reads one answer line (empty: closed unanswered).
    fn exchange(site: &Site, bytes: &[u8]) -> String {
        let mut s = connect(site);
        s.write_all(bytes).unwrap();
        let mut line = String::new();
        let _ = BufReader::new(s).read_line(&mut line);
        line
    }

    fn status_answers(site: &Site) {
        let line = exchange(site, b"{\"version\":1,\"op\":\"status\"}\n");
        assert!(line.contains("\"reply\":\"status\""), "{line}");
    }

    /// Garbage, another version, bytes that are not UTF-8, a 100 MB line,
    /// a client that never reads and one that leaves mid-request: each
    /// gets an error answer (or is dropped) and the daemon serves on.
    #[test]
    fn the_control_socket_survives_hostile_clients() {
        let site = Site::new().files(&["a.jpg"]).baselined();
        let daemon = daemon(&site);
        let line = exchange(&site, b"{not json\n");
        assert!(line.contains("not a control request"), "{line}");
        let line = exchange(&site, b"{\"version\":2,\"op\":\"status\"}\n");
        assert!(line.contains("version 2"), "{line}");
        let line = exchange(&site, b"\xff\xfe{\"version\":1}\n");
        assert!(line.contains("\"reply\":\"error\""), "not UTF-8: {line:?}");
        status_answers(&site);

        // 100 MB without a newline, then gone.
        {
            let mut s = connect(&site);
            let chunk = vec![b'x'; 1 << 20];
            for _ in 0..100 {
                if s.write_all(&chunk).is_err() {
                    break;
                }
            }
        }
        status_answers(&site);

        // Never reads: asks for status again and again.
        let mut deaf = connect(&site);
        deaf.set_write_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        for _ in 0..100_000 {
            if deaf
                .write_all(b"{\"version\":1,\"op\":\"status\"}\n")
                .is_err()
            {
                break;
            }
        }
        status_answers(&site);

        // Leaves right after asking: the work is still done.
        drop(connect(&site).write_all(
            format!(
                "{{\"version\":1,\"op\":\"invalidate\",\"assets\":[{{\"asset\":\"{}\",\"account\":null}}]}}\n",
                url("a.jpg")
            )
            .as_bytes(),
        ));
        site.api
            .wait_for("the abandoned request's asset", WAIT, |rs| {
                rs.iter().any(|r| r.assets.contains(&url("a.jpg")))
            });

        // Many at once.
        let threads: Vec<_> = (0..40)
            .map(|_| {
                let path = site.at("optiwatch.db.sock");
                std::thread::spawn(move || {
                    let mut s = UnixStream::connect(path).unwrap();
                    s.set_read_timeout(Some(WAIT)).unwrap();
                    s.write_all(b"{\"version\":1,\"op\":\"status\"}\n").unwrap();
                    let mut line = String::new();
                    BufReader::new(s).read_line(&mut line).unwrap();
                    line
                })
            })
            .collect();
        for t in threads {
            let line = t.join().unwrap();
            assert!(line.contains("\"reply\":\"status\""), "{line}");
        }
        drop(deaf);
        status_answers(&site);
        assert!(!daemon.log().contains("panicked"), "{}", daemon.log());
    }
}

/// `--timeout` beside a daemon: any duration the flag accepts is a wait,
/// none a panic.
#[test]
fn a_timeout_beyond_the_clock_is_no_panic() {
    let site = Site::new().files(&["a.jpg"]).baselined();
    let daemon = site.watch();
    daemon.wait_log("control socket ready", crate::support::WAIT);
    let out = site
        .optiwatch()
        .args(&["token", "--timeout", "400000000000y"])
        .run();
    assert!(!out.stderr.contains("panicked"), "{out}");
    out.expect(0);
}

/// A store of schema v5 (before history) with an asset still owed: the
/// upgrade keeps it owed, and once sent it is history (reason unknown).
#[test]
fn an_asset_owed_in_a_v5_store_stays_owed_and_reaches_history() {
    use crate::support::fake_api::Fault;
    use crate::support::Table;
    let site = Site::new()
        .setting(Table::Api, "retry_for = \"1s\"")
        .files(&["a.jpg"])
        .baselined();
    site.api.push_faults(Fault::Status(503), 1000);
    site.write("a.jpg", b"v2");
    let out = site.scan(&[]);
    assert_ne!(out.code, 0, "{out}");
    site.api.clear_faults();
    let db = rusqlite::Connection::open(site.at("optiwatch.db")).unwrap();
    db.execute_batch(
        "DROP TABLE history; DROP TABLE token_history;
         ALTER TABLE outbox DROP COLUMN reason; ALTER TABLE outbox DROP COLUMN path;
         PRAGMA user_version = 5;",
    )
    .unwrap();
    drop(db);
    // Nothing changed since: only the upgraded outbox has a.jpg to send.
    site.scan(&[]).expect(0);
    assert_eq!(site.api.invalidated_assets(), vec![url("a.jpg")]);
    let json = site
        .optiwatch()
        .args(&["history", "--json"])
        .run()
        .expect(0)
        .json();
    assert_eq!(json["entries"][0]["url"], url("a.jpg"), "{json}");
    assert_eq!(json["entries"][0]["reason"], "unknown", "{json}");
}

/// A file name that is not UTF-8: its change is history and every JSON
/// log line about it is JSON.
#[test]
fn a_name_that_is_not_utf8_in_history_and_json_logs() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let odd = OsStr::from_bytes(b"caf\xe9 \"q\"\n.jpg");
    let site = Site::new().files(&["a.jpg"]).files(&[odd]).baselined();
    site.write(odd, b"v2");
    let out = site
        .optiwatch()
        .args(&["--log-format", "json", "-vv", "scan"])
        .run()
        .expect(0);
    let mut lines = 0;
    // The error that ends a command is a JSON line too.
    let failed = site
        .optiwatch()
        .args(&["--log-format", "json", "invalidate", "/nowhere/x.jpg"])
        .run();
    assert_ne!(failed.code, 0, "{failed}");
    for line in out.stderr.lines().chain(failed.stderr.lines()) {
        let parsed: Result<serde_json::Value, _> = serde_json::from_str(line);
        assert!(parsed.is_ok(), "not JSON: {line:?}\n{out}");
        lines += 1;
    }
    assert!(lines > 3, "{out}");
    let json = site
        .optiwatch()
        .args(&["history", "--json"])
        .run()
        .expect(0)
        .json();
    let entries = json["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{json}");
    let text = site.run(&["history"]).expect(0);
    assert_eq!(
        text.stdout.lines().count(),
        2,
        "one entry and one token: {text}"
    );
}

/// `scan`'s text lists one changed path per line, even a name holding a
/// newline.
#[test]
fn scan_text_keeps_a_name_with_a_newline_on_one_line() {
    let site = Site::new().files(&["a\nb.jpg"]).baselined();
    site.write("a\nb.jpg", b"v2");
    let out = site.run(&["scan"]).expect(0);
    let line = out
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("changed"))
        .unwrap_or_default();
    assert!(line.ends_with("a\\x0Ab.jpg"), "{out}");
}

/// `check` says what the run will meet: a token file path that is a
/// folder cannot be published to, and a FIFO where the store's `-wal`
/// belongs is refused at once rather than waited on forever.
#[test]
fn check_refuses_a_token_folder_and_never_blocks_on_a_fifo() {
    use crate::support::Table;
    let site = Site::new()
        .files(&["a.jpg"])
        .setting(Table::Token, "file = \"token\"");
    std::fs::create_dir_all(site.at("token")).unwrap();
    let failed = site.run(&["check"]).expect(1);
    assert!(
        failed.stdout.contains("[token] file") && failed.stdout.contains("is a folder"),
        "{failed}"
    );
    std::fs::remove_dir(site.at("token")).unwrap();

    mkfifo(&site.at("optiwatch.db-wal"));
    assert_eq!(exit_within_wait(&site, &["check"]), Some(1));
}

fn mkfifo(path: &std::path::Path) {
    let fifo = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
}

/// Runs optiwatch with `args`; its exit code, or a failure when it is
/// still blocked after WAIT.
fn exit_within_wait(site: &Site, args: &[&str]) -> Option<i32> {
    let mut child = site
        .optiwatch()
        .args(args)
        .command()
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if started.elapsed() > crate::support::WAIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?} blocked on a FIFO for {:?}", crate::support::WAIT);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A FIFO where the store's lock file belongs never blocks `status`,
/// `check` or `scan`; a scan names it and says what to do.
#[test]
fn a_fifo_at_the_lock_file_blocks_nothing() {
    let site = Site::new().files(&["a.jpg"]).baselined();
    std::fs::remove_file(site.at("optiwatch.db.lock")).unwrap();
    mkfifo(&site.at("optiwatch.db.lock"));
    assert_eq!(exit_within_wait(&site, &["status"]), Some(0));
    exit_within_wait(&site, &["check"]);
    let out = site.scan(&[]);
    assert_ne!(out.code, 0, "{out}");
    assert!(out.stderr.contains("not a regular file"), "{out}");
}

/// Ten deploy hooks at once beside the daemon: each gets its answer, and
/// the change is sent once.
#[test]
fn concurrent_scans_beside_the_daemon_all_return_and_send_once() {
    use crate::support::Table;
    let site = Site::new()
        .files(&["a.jpg"])
        .baselined()
        .setting(Table::Watch, "debounce = \"5s\"")
        .setting(Table::Watch, "token_interval = \"1s\"");
    let daemon = site.watch();
    daemon.wait_log("control socket ready", crate::support::WAIT);
    site.api.clear();
    site.write("a.jpg", b"v2");
    // Every Run writes the config: build them all before any starts.
    let commands: Vec<Command> = (0..10)
        .map(|_| {
            site.optiwatch()
                .args(&["scan", "--json", "--timeout", "60s"])
                .command()
        })
        .collect();
    let children: Vec<_> = commands
        .into_iter()
        .map(|mut c| {
            c.stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        site.api.invalidated_assets(),
        vec![url("a.jpg")],
        "{}",
        daemon.log()
    );
}

/// `--limit N` keeps the newest N of what matches (`0`: none).
#[test]
fn history_limit_keeps_the_newest_matching_entries() {
    let site = Site::new().files(&["a.jpg", "b.jpg"]).baselined();
    for (rel, content) in [("a.jpg", b"v2"), ("b.jpg", b"v2"), ("a.jpg", b"v3")] {
        site.write(rel, content);
        site.scan(&[]).expect(0);
    }
    let urls = |extra: &[&str]| -> Vec<String> {
        let json = site
            .optiwatch()
            .args(&["history", "--json"])
            .args(extra)
            .run()
            .expect(0)
            .json();
        json["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["url"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(urls(&["--limit", "2"]), vec![url("b.jpg"), url("a.jpg")]);
    assert_eq!(
        urls(&["--limit", "1", "--path", "**/b.jpg"]),
        vec![url("b.jpg")]
    );
    assert!(urls(&["--limit", "0"]).is_empty());
}

/// A WP-CLI that prints more notices than a pipe holds before the URL is
/// read while it runs: init answers at once with the URL.
#[test]
fn init_reads_a_wp_cli_that_prints_a_lot() {
    let site = Site::new();
    wordpress_answering(&site, "");
    let wp = site.at("bin/wp");
    std::fs::write(
        &wp,
        "#!/bin/sh\ni=0\nwhile [ $i -lt 3000 ]; do echo \"PHP Notice: line $i of many notices, printed by an old theme\"; i=$((i+1)); done\necho https://blog.example.com\n",
    )
    .unwrap();
    let started = std::time::Instant::now();
    init(&site, &["wp"]).expect(0);
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    let text = std::fs::read_to_string(site.at("watcher.toml")).unwrap();
    assert!(
        text.contains("https://blog.example.com/wp-content/uploads"),
        "{text}"
    );
}

/// An API that echoes the key in its error: neither the command beside the
/// daemon (over the socket), nor `status` (`last_error`, from the store),
/// nor the daemon's log shows it.
#[test]
fn an_api_echoing_the_key_leaks_it_nowhere() {
    use crate::support::fake_api::Fault;
    use crate::support::Table;
    let site = Site::new()
        .files(&["a.jpg"])
        .baselined()
        .setting(Table::Api, "retry_for = \"1s\"");
    let daemon = site.watch();
    daemon.wait_log("control socket ready", crate::support::WAIT);
    site.api
        .push_faults(Fault::Message(400, format!("bad key {}", site.key)), 1000);
    let out = site
        .optiwatch()
        .args(&["invalidate", "--timeout", "20s", "media/a.jpg"])
        .run();
    assert_ne!(out.code, 0, "{out}");
    assert!(!out.stderr.contains(&site.key), "{out}");
    assert!(!out.stdout.contains(&site.key), "{out}");
    let status = site.run(&["status", "--json"]);
    assert!(!status.stdout.contains(&site.key), "{status}");
    assert!(!daemon.log().contains(&site.key), "{}", daemon.log());
}

/// `--domain HTTPS://example.com/`: an upper-case scheme is a scheme too.
#[test]
fn an_upper_case_scheme_is_dropped_from_domain() {
    let site = Site::new().files(&["a.jpg"]).baselined();
    let out = site
        .optiwatch()
        .args(&["invalidate", "--domain", "HTTPS://example.com/"])
        .run()
        .expect(0);
    let rs = site.api.requests();
    let purge = rs.iter().find(|r| r.path == "/invalidate/domain");
    assert_eq!(
        purge
            .and_then(|r| r.body.as_ref())
            .map(|b| b["domain"].clone()),
        Some(serde_json::json!("example.com")),
        "{out}"
    );
}

/// A `./watcher.toml` that is a broken link is the config that is meant:
/// the error names it, rather than "no config file" (or, worse, a silent
/// fall back to /etc/optiwatch/watcher.toml).
#[test]
fn a_broken_local_config_link_is_named_not_skipped() {
    let site = Site::new();
    let dir = site.at("elsewhere");
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink("/nowhere/watcher.toml", dir.join("watcher.toml")).unwrap();
    let out: Outcome = Command::new(env!("CARGO_BIN_EXE_optiwatch"))
        .arg("status")
        .current_dir(&dir)
        .env_remove("OPTIWATCH_CONFIG")
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, 2, "{out}");
    assert!(!out.stderr.contains("no config file"), "{out}");
    assert!(out.stderr.contains("watcher.toml"), "{out}");
}
