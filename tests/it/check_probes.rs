//! `check` proves what the run will write, as the user it runs as: the
//! state store's folder and every token file's folder get a probe file, and
//! an unwritable one fails naming the config key and the fix; with
//! `--online` every account's key is tried, not only `[api]`'s.

use std::os::unix::fs::{chown, PermissionsExt};

use crate::support::skip::{lacks, Need};
use crate::support::{Outcome, Site, Table, KEY_A, KEY_B};

/// `nobody`: root can write anywhere, so the test drops to it.
const NOBODY: u32 = 65534;
const AS_NOBODY: &[&str] = &[
    "setpriv",
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
];

/// A site `nobody` can read (its temp folder is 0700), with the store in
/// `store/` and the token file in `tok/`, both root-owned 0755.
fn site() -> Site {
    let site = Site::new()
        .files(&["a.jpg"])
        .store_in("store")
        .setting(Table::Token, "file = \"tok/token\"");
    std::fs::create_dir(site.at("tok")).unwrap();
    let open = std::fs::Permissions::from_mode(0o755);
    std::fs::set_permissions(site.root.path(), open).unwrap();
    site
}

fn check_as_nobody(site: &Site) -> Outcome {
    site.optiwatch_via(AS_NOBODY).arg("check").run()
}

fn give_to_nobody(site: &Site, rel: &str) {
    chown(site.at(rel), Some(NOBODY), Some(NOBODY)).unwrap();
}

#[test]
fn check_fails_naming_state_when_its_folder_is_not_writable() {
    if lacks(&[Need::Root, Need::Program("setpriv")]) {
        return;
    }
    let site = site();
    give_to_nobody(&site, "tok");
    let failed = check_as_nobody(&site).expect(1);
    let line = failed
        .stdout
        .lines()
        .find(|l| l.starts_with("FAIL"))
        .unwrap_or_else(|| panic!("a failed line in:\n{failed}"));
    assert!(line.contains("`state`"), "{line}");
    assert!(line.contains("nobody") && line.contains("chown"), "{line}");
    assert_eq!(failed.stdout.matches("FAIL").count(), 1, "{failed}");

    give_to_nobody(&site, "store");
    check_as_nobody(&site).expect(0);
    // And the run itself agrees.
    site.optiwatch_via(AS_NOBODY).arg("scan").run().expect(0);
    assert!(
        std::fs::read_dir(site.at("store")).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("check")),
        "the probe file is removed"
    );
}

#[test]
fn check_fails_naming_the_token_file_keys_when_their_folders_are_not_writable() {
    if lacks(&[Need::Root, Need::Program("setpriv")]) {
        return;
    }
    let site = site()
        .rule("shop", "https://shop.example.com")
        .rule_setting("[rules.token]")
        .rule_setting("file = \"shoptok/token\"");
    std::fs::create_dir(site.at("shop")).unwrap();
    std::fs::create_dir(site.at("shoptok")).unwrap();
    give_to_nobody(&site, "store");
    let failed = check_as_nobody(&site).expect(1);
    let fails: Vec<&str> = failed
        .stdout
        .lines()
        .filter(|l| l.starts_with("FAIL"))
        .collect();
    assert_eq!(fails.len(), 2, "{failed}");
    assert!(
        fails[0].contains("[token] file") && fails[0].contains("chown"),
        "{failed}"
    );
    assert!(
        fails[1].contains("[[rules]] #2 [rules.token] file"),
        "{failed}"
    );

    give_to_nobody(&site, "tok");
    give_to_nobody(&site, "shoptok");
    check_as_nobody(&site).expect(0);
}

#[test]
fn check_online_tries_every_accounts_key() {
    let site = Site::with_keys(&[KEY_A, KEY_B])
        .files(&["a.jpg"])
        .shop("opt_not_a_known_key");
    let failed = site.run(&["check", "--online"]).expect(1);
    let fails: Vec<&str> = failed
        .stdout
        .lines()
        .filter(|l| l.starts_with("FAIL"))
        .collect();
    assert_eq!(fails.len(), 1, "only the shop's key fails:\n{failed}");
    assert!(fails[0].contains("online rule 2"), "{failed}");
    assert!(fails[0].contains("[[rules]] #2"), "{failed}");
    assert!(
        !failed.stdout.contains("opt_not_a_known_key"),
        "no key in output"
    );
    let shop_probe = site.api.requests().iter().any(|r| {
        r.assets
            .iter()
            .any(|a| a.contains("shop.example.com/.optiwatch-check-"))
    });
    assert!(shop_probe, "the shop's probe names a shop URL");

    let site = Site::with_keys(&[KEY_A, KEY_B])
        .files(&["a.jpg"])
        .shop(KEY_B);
    let passed = site.run(&["check", "--online"]).expect(0);
    assert!(passed.stdout.contains("online rule 2"), "{passed}");
}

#[test]
fn check_beside_the_daemon_names_the_lock_holder_and_passes() {
    let site = Site::watched("100ms", &["a.jpg"]);
    let daemon = site.watch();
    let passed = site.run(&["check"]).expect(0);
    let lock = passed
        .stdout
        .lines()
        .find(|l| l.contains("lock"))
        .unwrap_or_else(|| panic!("a lock line in:\n{passed}"));
    assert!(lock.starts_with("ok"), "{lock}");
    assert!(lock.contains(&format!("pid {}", daemon.pid())), "{lock}");
    // The daemon still owns its store: check took no lock.
    site.write("a.jpg", b"v2");
    site.api.wait_for("the edit", crate::support::WAIT, |rs| {
        crate::support::accepted(rs).contains(&crate::support::url("a.jpg"))
    });
}
