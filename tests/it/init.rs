//! The operator's path (issue 13): `optiwatch init` on a WordPress-style
//! tree (a fake `wp` on PATH answers `option get home`) and on a plain
//! folder, the config lookup down to /etc/optiwatch/watcher.toml, what
//! `check` proves about the run (probe files as an unprivileged user,
//! per-account keys online) and the first `watch` on a new store.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::skip::{lacks, Need};
use crate::support::{wait_until, Outcome, Site, WAIT};
use std::os::unix::fs::MetadataExt;

/// The site URL the fake WP-CLI answers.
const BLOG: &str = "https://blog.example.com";

/// A WordPress-style tree in the site's folder: `wp/wp-config.php` and
/// `wp/wp-content/uploads/2026/11/a.jpg`; and `bin/wp`, a fake WP-CLI that
/// logs its arguments to `wp-args` and prints `answer` (exit 0) or fails.
fn wordpress(site: &Site, answer: Option<&str>) -> PathBuf {
    let root = site.at("wp");
    std::fs::create_dir_all(root.join("wp-content/uploads/2026/11")).unwrap();
    std::fs::write(root.join("wp-config.php"), "<?php\n").unwrap();
    std::fs::write(root.join("wp-content/uploads/2026/11/a.jpg"), "v1").unwrap();
    let body = match answer {
        Some(url) => format!(
            "echo \"$*\" >> {}\necho {url}\n",
            site.at("wp-args").display()
        ),
        None => {
            "echo 'Error: This does not seem to be a WordPress installation.' >&2\nexit 1\n".into()
        }
    };
    std::fs::create_dir_all(site.at("bin")).unwrap();
    let wp = site.at("bin/wp");
    std::fs::write(&wp, format!("#!/bin/sh\n{body}")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wp, std::fs::Permissions::from_mode(0o755)).unwrap();
    root
}

/// `optiwatch <args>` in the site's folder with `bin/` (and the system's
/// folders, but no WP-CLI of the machine) on PATH, stdin closed.
fn optiwatch(site: &Site, args: &[&str]) -> Outcome {
    let path = format!("{}:/usr/bin:/bin", site.at("bin").display());
    Command::new(env!("CARGO_BIN_EXE_optiwatch"))
        .args(args)
        .current_dir(site.root.path())
        .env_clear()
        .env("PATH", path)
        .env("OPTIMOLE_API_KEY", &site.key)
        .stdin(Stdio::null())
        .output()
        .expect("the optiwatch binary runs")
        .into()
}

fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// Points the config init wrote at the site's fake API.
fn use_fake_api(site: &Site, config: &Path) {
    let text = read(config).replacen(
        "[api]\n",
        &format!("[api]\nbase_url = \"{}\"\n", site.api.base_url()),
        1,
    );
    std::fs::write(config, text).unwrap();
}

#[test]
fn init_on_a_wordpress_site_writes_a_config_check_and_scan_accept() {
    let site = Site::new();
    let root = wordpress(&site, Some(BLOG));
    let init = optiwatch(&site, &["init", "wp"]).expect(0);
    let config = site.at("watcher.toml");
    let text = read(&config);
    let uploads = root.join("wp-content/uploads");
    assert!(
        text.contains(&format!("dir = \"{}\"", uploads.display())),
        "{text}"
    );
    assert!(
        text.contains(&format!("url = \"{BLOG}/wp-content/uploads\"")),
        "{text}"
    );
    let token_file = root.join("wp-content/optiwatch-token");
    assert!(
        text.contains(&format!("file = \"{}\"", token_file.display())),
        "{text}"
    );
    assert!(text.contains("# The state store"), "commented:\n{text}");
    let args = read(site.at("wp-args"));
    assert!(args.contains("option get home"), "{args}");
    assert!(
        args.contains(&format!("--path={}", root.display())),
        "{args}"
    );
    for next in ["check --online", "scan", "systemctl enable --now optiwatch"] {
        assert!(init.stdout.contains(next), "{next} in:\n{init}");
    }
    assert!(init.stdout.contains("mu-plugins"), "{init}");

    // Found as ./watcher.toml, accepted as written.
    optiwatch(&site, &["check"]).expect(0);
    use_fake_api(&site, &config);
    optiwatch(&site, &["scan"]).expect(0);
    assert!(
        site.api.requests().is_empty(),
        "the first scan is a baseline"
    );
    std::fs::write(uploads.join("2026/11/a.jpg"), "v2").unwrap();
    optiwatch(&site, &["scan"]).expect(0);
    assert_eq!(
        site.api.invalidated_assets(),
        [format!("{BLOG}/wp-content/uploads/2026/11/a.jpg")]
    );
    assert_eq!(read(&token_file), site.api.tokens_issued()[0]);
}

#[test]
fn init_installs_the_must_use_plugin_on_request() {
    let site = Site::new();
    let root = wordpress(&site, Some(BLOG));
    // Pointed at the uploads folder, it finds the WordPress root above.
    optiwatch(
        &site,
        &["init", "--install-mu-plugin", "wp/wp-content/uploads"],
    )
    .expect(0);
    let installed = read(root.join("wp-content/mu-plugins/optiwatch-token.php"));
    let shipped =
        read(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/wordpress/optiwatch-token.php"));
    assert_eq!(installed, shipped);
}

#[test]
fn init_for_the_unit_keeps_store_and_token_where_it_may_write() {
    let site = Site::new();
    wordpress(&site, Some(BLOG));
    let args = ["init", "--system", "--output", "sys.toml", "wp"];
    let init = optiwatch(&site, &args).expect(0);
    let text = read(site.at("sys.toml"));
    for line in [
        "state = \"/var/lib/optiwatch/optiwatch.db\"",
        "key_credential = \"optimole-key\"",
        "file = \"/var/lib/optiwatch/optimole-token\"",
    ] {
        assert!(text.contains(line), "{line} in:\n{text}");
    }
    assert!(
        init.stdout.contains("define('OPTIWATCH_TOKEN_FILE'"),
        "{init}"
    );
    assert!(init.stdout.contains("User=optiwatch"), "{init}");
    let args = ["init", "--key-file", "k", "--output", "k.toml", "wp"];
    optiwatch(&site, &args).expect(0);
    let text = read(site.at("k.toml"));
    assert!(
        text.contains(&format!("key_file = \"{}\"", site.at("k").display())),
        "{text}"
    );
}

#[test]
fn init_never_overwrites_a_config() {
    let site = Site::new();
    wordpress(&site, Some(BLOG));
    std::fs::write(site.at("watcher.toml"), "# mine\n").unwrap();
    let refused = optiwatch(&site, &["init", "wp"]).expect(2);
    assert!(
        refused.stderr.contains("remove it or pass --output"),
        "{refused}"
    );
    assert_eq!(read(site.at("watcher.toml")), "# mine\n");
    optiwatch(&site, &["init", "wp", "--output", "other.toml"]).expect(0);
    assert!(read(site.at("other.toml")).contains("[[rules]]"));
}

#[test]
fn init_without_wp_cli_needs_url() {
    let site = Site::new();
    let root = wordpress(&site, Some(BLOG));
    std::fs::remove_file(site.at("bin/wp")).unwrap();
    let refused = optiwatch(&site, &["init", "wp"]).expect(2);
    assert!(refused.stderr.contains("--url"), "{refused}");
    assert!(refused.stderr.contains("not on PATH"), "{refused}");
    assert!(!site.at("watcher.toml").exists());

    optiwatch(&site, &["init", "wp", "--url", "https://shop.example.com/"]).expect(0);
    let text = read(site.at("watcher.toml"));
    assert!(
        text.contains("url = \"https://shop.example.com/wp-content/uploads\""),
        "{text}"
    );
    assert!(root.join("wp-content/uploads").is_dir());
    optiwatch(&site, &["check"]).expect(0);
}

#[test]
fn init_names_url_when_wp_cli_fails_or_the_folder_is_not_wordpress() {
    let site = Site::new();
    wordpress(&site, None);
    let refused = optiwatch(&site, &["init", "wp"]).expect(2);
    assert!(
        refused.stderr.contains("does not seem to be a WordPress"),
        "{refused}"
    );
    assert!(refused.stderr.contains("--url"), "{refused}");
    let refused = optiwatch(&site, &["init", "media"]).expect(2);
    assert!(refused.stderr.contains("--url"), "{refused}");
    let refused = optiwatch(
        &site,
        &["init", "media", "--url", "https://u:p@example.com"],
    )
    .expect(2);
    assert!(!refused.stderr.contains("u:p"), "{refused}");
    optiwatch(
        &site,
        &[
            "init",
            "media",
            "--url",
            "https://example.com/media",
            "--state",
            "db/x.db",
        ],
    )
    .expect(0);
    let text = read(site.at("watcher.toml"));
    assert!(
        text.contains(&format!("state = \"{}\"", site.at("db/x.db").display())),
        "{text}"
    );
    assert!(
        text.contains("# [token]"),
        "no token file outside WordPress:\n{text}"
    );
}

#[test]
fn config_lookup_ends_at_etc_and_names_every_place() {
    let site = Site::new().files(&["a.jpg"]);
    let etc = Path::new("/etc/optiwatch");
    if etc.exists() {
        eprintln!("skipped: /etc/optiwatch exists on this machine; not touching it");
        return;
    }
    let missing = optiwatch(&site, &["scan", "--dry-run"]).expect(2);
    for place in [
        "--config",
        "OPTIWATCH_CONFIG",
        "./watcher.toml",
        "/etc/optiwatch/watcher.toml",
        "optiwatch init",
    ] {
        assert!(missing.stderr.contains(place), "{place} in:\n{missing}");
    }
    if lacks(&[Need::Root]) {
        return;
    }
    // Removed again however the test ends.
    struct Cleanup;
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all("/etc/optiwatch");
        }
    }
    let _cleanup = Cleanup;
    std::fs::create_dir(etc).unwrap();
    site.write_config();
    std::fs::rename(site.config_path(), etc.join("watcher.toml")).unwrap();
    // Relative paths in it are relative to /etc/optiwatch: make them absolute.
    let text = read(etc.join("watcher.toml")).replace(
        "dir = \"media\"",
        &format!("dir = \"{}\"", site.media.display()),
    );
    let text = format!("state = \"{}\"\n{text}", site.at("optiwatch.db").display());
    std::fs::write(etc.join("watcher.toml"), text).unwrap();
    let found = optiwatch(&site, &["scan", "--dry-run"]).expect(0);
    assert!(!found.stderr.contains("no config file"), "{found}");
    // ./watcher.toml comes first.
    std::fs::write(site.at("watcher.toml"), "bogus = 1\n").unwrap();
    let local = optiwatch(&site, &["scan", "--dry-run"]).expect(2);
    assert!(
        local
            .stderr
            .contains(&site.at("watcher.toml").display().to_string()),
        "{local}"
    );
}

#[test]
fn the_first_watch_on_a_new_store_says_it_recorded_a_baseline() {
    let site = Site::new().files(&["a.jpg", "b/c.jpg"]).fast_watch("100ms");
    // Files changed within the debounce are left to settle; these are old.
    wait_until("the files are older than the debounce", WAIT, || {
        ["a.jpg", "b/c.jpg"].iter().all(|f| {
            let changed = std::fs::metadata(site.path(f)).unwrap().ctime();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64;
            now > changed + 1
        })
    });
    let daemon = site.watch();
    let log = daemon.log();
    assert!(
        log.contains(
            "recorded a baseline of 2 files in 2 folders; changes from now on are invalidated"
        ),
        "{log}"
    );
    assert!(log.contains("watching 2 folders and 2 files"), "{log}");
    assert_eq!(daemon.stop_with(libc::SIGTERM, WAIT), Some(0));
    assert!(
        site.api.requests().is_empty(),
        "a baseline invalidates nothing"
    );

    site.remove("b/c.jpg");
    let daemon = site.watch();
    let log = daemon.log();
    assert!(!log.contains("baseline"), "only the first time:\n{log}");
    assert!(log.contains("watching 2 folders and 1 file"), "{log}");
}
