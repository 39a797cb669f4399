//! Hostile and odd input: names a stranger can upload, symlinks, files that
//! cannot be read or vanish, sizes and depths.

use crate::support::skip::{lacks, Need};
use crate::support::{sorted, url, wait_until, Outcome, Site, Table, WAIT};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;

/// Names that would do harm if anything passed them to a shell or pasted
/// them into a URL unescaped, with the URL path each must map to.
const HOSTILE: &[(&[u8], &str)] = &[
    (b"$(touch pwned).jpg", "$(touch%20pwned).jpg"),
    (b"`touch pwned`.jpg", "%60touch%20pwned%60.jpg"),
    (b"a;touch pwned;.jpg", "a;touch%20pwned;.jpg"),
    (b"quote\"s'.jpg", "quote%22s'.jpg"),
    (b"new\nline.jpg", "new%0Aline.jpg"),
    (b"tab\there.jpg", "tab%09here.jpg"),
    (b"<script>.jpg", "%3Cscript%3E.jpg"),
    (b"..%2f..%2fetc.jpg", "..%252f..%252fetc.jpg"),
    (b"back\\slash.jpg", "back%5Cslash.jpg"),
    (b"{brace}|pipe.jpg", "%7Bbrace%7D|pipe.jpg"),
    (b"\xff\xfe\xfd.jpg", "%FF%FE%FD.jpg"),
    (
        "日本語 ファイル.png".as_bytes(),
        "%E6%97%A5%E6%9C%AC%E8%AA%9E%20%E3%83%95%E3%82%A1%E3%82%A4%E3%83%AB.png",
    ),
    (b"-rf.jpg", "-rf.jpg"),
    (b"--config=x.jpg", "--config=x.jpg"),
];

#[test]
fn hostile_names_are_data_in_scan_watch_and_the_token_command() {
    let site = Site::new().fast_watch("100ms");
    let out = site.at("argv");
    // The token command receives the token as one argv item; file names
    // never reach it.
    let command = format!(
        "command = [\"sh\", \"-c\", \"printf '%s' \\\"$1\\\" > {}\", \"sh\", \"{{token}}\"]",
        out.display()
    );
    let site = site.setting(Table::Token, &command);
    for (name, _) in HOSTILE {
        site.write(OsStr::from_bytes(name), b"v1");
    }
    site.scan(&[]).expect(0);
    for (name, _) in HOSTILE {
        site.write(OsStr::from_bytes(name), b"v2");
    }
    site.scan(&[]).expect(0);
    let want = sorted(HOSTILE.iter().map(|(_, u)| url(u)).collect());
    assert_eq!(sorted(site.api.invalidated_assets()), want);

    site.api.clear();
    let _daemon = site.watch();
    for (name, _) in HOSTILE {
        site.write(OsStr::from_bytes(name), b"v3");
    }
    site.api
        .wait_for("every hostile name in watch mode", WAIT, |_| {
            site.api.invalidated_assets().len() >= HOSTILE.len()
        });
    assert_eq!(sorted(site.api.invalidated_assets()), want);
    assert!(!site.at("pwned").exists());
    assert!(!site.media.join("pwned").exists());
    site.api
        .wait_for("a token", WAIT, |rs| rs.iter().any(|r| r.path == "/token"));
    let token = site.api.tokens_issued().last().unwrap().clone();
    wait_until("the token command ran", WAIT, || {
        std::fs::read_to_string(&out).is_ok_and(|t| t == token)
    });
}

#[test]
fn symlinks_are_not_followed_unless_a_rule_asks() {
    let mut site = Site::new();
    let outside = site.at("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret.jpg"), b"not yours").unwrap();
    std::os::unix::fs::symlink(&outside, site.media.join("linked-dir")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.jpg"), site.media.join("linked.jpg")).unwrap();
    site.write("real.jpg", b"1");
    let run = site.scan(&["--all-paths"]).expect(0);
    assert_eq!(
        run.list("scanned"),
        vec![site.path("real.jpg").display().to_string()]
    );

    site = site.rule_setting("allow_outside = [\"outside\"]");
    let followed = site.scan(&["--all-paths"]).expect(0);
    assert_eq!(followed.list("scanned").len(), 3, "{followed}");
    std::fs::write(outside.join("secret.jpg"), b"changed").unwrap();
    site.scan(&[]).expect(0);
    assert_eq!(
        sorted(site.api.invalidated_assets()),
        vec![url("linked-dir/secret.jpg"), url("linked.jpg")]
    );
}

#[test]
fn unreadable_files_are_reported_and_retried_later() {
    if lacks(&[Need::Root, Need::Program("setpriv")]) {
        return;
    }
    let site = Site::new();
    site.write("a.jpg", b"1");
    site.write("b.jpg", b"1");
    // Run as an unprivileged user, so file permissions really apply.
    let as_nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ];
    let open = std::fs::Permissions::from_mode(0o777);
    std::fs::set_permissions(site.root.path(), open.clone()).unwrap();
    std::fs::set_permissions(&site.media, open).unwrap();
    let scan = || {
        site.optiwatch_via(&as_nobody)
            .args(&["scan", "--json"])
            .run()
    };
    scan().expect(0);
    site.write("a.jpg", b"2");
    site.write("b.jpg", b"2");
    std::fs::set_permissions(site.path("b.jpg"), std::fs::Permissions::from_mode(0o000)).unwrap();
    let failed = scan().expect(1);
    assert!(
        failed.stderr.contains("b.jpg") && failed.stderr.contains("ermission denied"),
        "{failed}"
    );
    assert_eq!(site.api.invalidated_assets(), vec![url("a.jpg")]);

    std::fs::set_permissions(site.path("b.jpg"), std::fs::Permissions::from_mode(0o644)).unwrap();
    scan().expect(0);
    assert_eq!(
        sorted(site.api.invalidated_assets()),
        vec![url("a.jpg"), url("b.jpg")]
    );
}

#[test]
fn files_that_vanish_and_churn_do_not_stop_the_daemon() {
    let site = Site::new()
        .fast_watch("50ms")
        .files(&["keep.jpg"])
        .baselined();
    let daemon = site.watch();
    for round in 0..200 {
        site.write(format!("churn/{}.jpg", round % 7), b"x");
        let _ = std::fs::remove_file(site.path(format!("churn/{}.jpg", (round + 3) % 7)));
        if round % 50 == 0 {
            let _ = std::fs::remove_dir_all(site.path("churn"));
        }
    }
    site.write("keep.jpg", b"2");
    site.api.wait_for("the daemon still works", WAIT, |_| {
        site.api.invalidated_assets().contains(&url("keep.jpg"))
    });
    assert!(!daemon.log().contains("panicked"), "{}", daemon.log());
}

#[test]
fn empty_large_and_deeply_nested_files() {
    let site = Site::new();
    let deep: String = (0..60).map(|n| format!("d{n}/")).collect::<String>() + "deep.jpg";
    site.write("empty.jpg", b"");
    site.write(&deep, b"1");
    let big = std::fs::File::create(site.path("big.tif")).unwrap();
    big.set_len(64 << 20).unwrap(); // 64 MiB, sparse: hashed in full
    drop(big);
    site.scan(&[]).expect(0);
    site.write("empty.jpg", b"now with content");
    site.write(&deep, b"2");
    std::fs::OpenOptions::new()
        .write(true)
        .open(site.path("big.tif"))
        .unwrap()
        .set_len(65 << 20)
        .unwrap();
    site.scan(&[]).expect(0);
    assert_eq!(
        sorted(site.api.invalidated_assets()),
        vec![url("big.tif"), url(&deep), url("empty.jpg")]
    );
}

/// Runs `script` (sh) in a user and mount namespace of its own, as root of
/// that namespace, with `"$0" "$@"` the optiwatch binary and its
/// `--config` arguments.
fn in_namespace(site: &Site, script: &str) -> Outcome {
    site.optiwatch_via(&["unshare", "-Urm", "sh", "-c", script])
        .run()
}

/// Runs `script` in a namespace from the site's folder, asserts it went
/// through, and returns a reader of the files it left there.
fn in_namespace_at_site<'a>(site: &'a Site, script: &str) -> impl Fn(&str) -> String + 'a {
    let run = in_namespace(
        site,
        &format!("cd {} && {script}", site.root.path().display()),
    );
    assert_eq!(run.code, 0, "{run}");
    move |name| std::fs::read_to_string(site.at(name)).unwrap()
}

#[test]
fn a_full_disk_fails_clearly_and_leaves_the_store_consistent() {
    if lacks(&[Need::Namespaces]) {
        return;
    }
    let site = Site::new().store_in("store");
    let store_dir = site.at("store");
    for n in 0..5 {
        site.write(format!("{n}.jpg"), b"1");
    }
    // A 320 KiB disk holds the first store, not the 4,000 new rows.
    let script = format!(
        "mount -t tmpfs -o size=320k tmpfs {store} || exit 99
         \"$0\" \"$@\" scan >/dev/null 2>&1 || exit 98
         mkdir {media}/many && (cd {media}/many && seq -f '%0120g.jpg' 1 4000 | xargs touch) || exit 97
         \"$0\" \"$@\" scan --json > full.json 2> full.err; echo $? > full.rc
         rm -rf {media}/many
         \"$0\" \"$@\" scan --json > after.json 2> after.err; echo $? > after.rc",
        store = store_dir.display(),
        media = site.media.display(),
    );
    let read = in_namespace_at_site(&site, &script);
    assert_eq!(read("full.rc").trim(), "1", "{}", read("full.err"));
    assert!(
        read("full.err").contains("disk is full"),
        "{}",
        read("full.err")
    );
    assert!(
        read("full.err").contains("optiwatch.db"),
        "{}",
        read("full.err")
    );
    // The same store, after space came back, still knows the 5 files.
    assert_eq!(read("after.rc").trim(), "0", "{}", read("after.err"));
    let after: serde_json::Value = serde_json::from_str(&read("after.json")).unwrap();
    assert_eq!(after["counts"]["unchanged"], 5, "{after}");
}

#[test]
fn a_read_only_store_folder_fails_clearly() {
    if lacks(&[Need::Namespaces]) {
        return;
    }
    let site = Site::new().store_in("store");
    let store_dir = site.at("store");
    site.write("a.jpg", b"1");
    let script = format!(
        "mount --bind {d} {d} && mount -o remount,bind,ro {d} || exit 99
         exec \"$0\" \"$@\" scan",
        d = store_dir.display()
    );
    let run = in_namespace(&site, &script);
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stderr.contains("Read-only file system"), "{run}");
    assert!(run.stderr.contains("optiwatch.db"), "{run}");
}

#[test]
fn the_token_command_never_sees_the_api_key() {
    let site = Site::new();
    let out = site.at("env.txt");
    let command = format!("command = [\"sh\", \"-c\", \"env > {}\"]", out.display());
    let site = site
        .setting(Table::Token, &command)
        .files(&["a.jpg"])
        .baselined();
    site.write("a.jpg", b"2");
    site.scan(&[]).expect(0);
    let env = std::fs::read_to_string(out).unwrap();
    assert!(env.contains("OPTIWATCH_TOKEN="), "the command ran");
    assert!(!env.contains(&site.key), "{env}");
}

#[test]
fn watch_does_not_follow_a_symlinked_subfolder() {
    let site = Site::new().fast_watch("100ms");
    let outside = site.at("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("x.jpg"), b"1").unwrap();
    std::os::unix::fs::symlink("../outside", site.media.join("ext")).unwrap();
    site.write("a.jpg", b"1");
    site.scan(&[]).expect(0);
    let _daemon = site.watch();
    std::fs::write(outside.join("x.jpg"), b"2").unwrap();
    site.write("a.jpg", b"2");
    site.api.wait_for("the real edit", WAIT, |_| {
        site.api.invalidated_assets().contains(&url("a.jpg"))
    });
    assert_eq!(site.api.invalidated_assets(), vec![url("a.jpg")]);
}

#[test]
fn an_unmounted_rule_folder_is_not_a_deleted_library() {
    if lacks(&[Need::Namespaces]) {
        return;
    }
    let site = Site::new().setting(Table::Top, "state = \"optiwatch.db\"");
    // Inside a private namespace: a tmpfs holds the media, is recorded,
    // then unmounted, leaving the empty mount point.
    let script = format!(
        "mount -t tmpfs tmpfs {m} || exit 99
         for n in 1 2 3; do echo $n > {m}/$n.jpg; done
         \"$0\" \"$@\" scan >/dev/null 2>&1 || exit 98
         umount {m} || exit 97
         \"$0\" \"$@\" scan --json > after.json 2> after.err; echo $? > after.rc",
        m = site.media.display()
    );
    let read = in_namespace_at_site(&site, &script);
    assert_eq!(read("after.rc").trim(), "1", "{}", read("after.err"));
    assert!(
        read("after.err").contains("another file system"),
        "{}",
        read("after.err")
    );
    assert!(
        !read("after.err").contains("--baseline"),
        "no advice that loses changes"
    );
    let after: serde_json::Value = serde_json::from_str(&read("after.json")).unwrap();
    assert_eq!(after["counts"]["deleted"], 0, "{after}");
    assert!(site.api.requests().is_empty());
}
