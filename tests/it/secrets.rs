//! Secrets and bounded input: the API key out of every child's reach, key
//! files and tokens that could hang or mislead, credentials in rule URLs,
//! the store lock and a damaged store, and owed assets following their
//! rule's current account.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::fake_api::{Fault, Recorded, GOOD_KEY};
use crate::support::skip::{lacks, Need};
use crate::support::{shop_url, url, wait_until, Outcome, Site, Table, SITE_URL, WAIT};

const SHOP_KEY: &str = "opt_shop_key_0987654321";

/// A token command that copies what it can read about its parent
/// (optiwatch) into `spy.out`, one block per run.
fn spy(site: &Site) -> PathBuf {
    let out = site.at("spy.out");
    let body = format!(
        "out={out:?}\n\
         {{ echo '== environ'; tr '\\0' '\\n' < /proc/$PPID/environ\n\
           echo '== cmdline'; tr '\\0' ' ' < /proc/$PPID/cmdline; echo\n\
           for t in /proc/$PPID/task/*/environ; do echo \"== $t\"; tr '\\0' '\\n' < \"$t\"; done\n\
           echo '== own'; env; echo '== end'; }} >> \"$out\"",
        out = out.display().to_string()
    );
    site.script("spy.sh", &body);
    out
}

/// Two accounts: `media` on the `[api]` key, `shop` on SHOP_KEY; both
/// publish through the spy.
fn spied_site() -> (Site, PathBuf) {
    let site = Site::with_keys(&[GOOD_KEY, SHOP_KEY])
        .shop(SHOP_KEY)
        .fast_watch("100ms");
    let out = spy(&site);
    let command = format!(
        "command = [{:?}, \"{{token}}\"]",
        site.at("spy.sh").display().to_string()
    );
    let site = site.setting(Table::Token, &command).files(&["a.jpg"]);
    std::fs::write(site.at("shop/s.jpg"), b"1").unwrap();
    (site.baselined(), out)
}

/// The spy ran `runs` times, read its parent's environment each time, and
/// found neither key anywhere.
fn assert_no_key(out: &Path, runs: usize) {
    let seen = std::fs::read_to_string(out).unwrap_or_default();
    assert_eq!(seen.matches("== end").count(), runs, "spy runs:\n{seen}");
    assert!(
        seen.contains("PATH="),
        "the spy could not read /proc:\n{seen}"
    );
    for key in [GOOD_KEY, SHOP_KEY] {
        assert!(
            !seen.contains(key),
            "key {key} readable by the token command:\n{seen}"
        );
    }
}

#[test]
fn the_token_command_finds_no_key_in_scan() {
    let (site, out) = spied_site();
    site.write("a.jpg", b"2");
    std::fs::write(site.at("shop/s.jpg"), b"2").unwrap();
    site.run(&["scan"]).expect(0);
    // One run per account, each reading /proc/<optiwatch>/environ,
    // cmdline and every thread's environ.
    assert_no_key(&out, 2);
}

#[test]
fn the_token_command_finds_no_key_in_watch_even_after_a_reload() {
    let (site, out) = spied_site();
    let daemon = site.watch();
    site.write("a.jpg", b"2");
    wait_until("the first token command", WAIT, || {
        std::fs::read_to_string(&out).is_ok_and(|s| s.contains("== end"))
    });
    assert_no_key(&out, 1);
    // The keys left the environment at start-up; a reload still has them.
    daemon.signal(libc::SIGHUP);
    daemon.wait_log("config reloaded", WAIT);
    std::fs::write(site.at("shop/s.jpg"), b"2").unwrap();
    wait_until("the token command after the reload", WAIT, || {
        std::fs::read_to_string(&out).is_ok_and(|s| s.matches("== end").count() == 2)
    });
    assert_no_key(&out, 2);
    let shop = site
        .api
        .invalidate_requests()
        .into_iter()
        .find(|r| r.assets.contains(&shop_url("s.jpg")))
        .expect("the shop's asset went out after the reload");
    assert_eq!(shop.authorization, Some(format!("Bearer {SHOP_KEY}")));
}

#[test]
fn another_process_of_the_same_user_cannot_open_optiwatchs_memory() {
    if lacks(&[Need::Root, Need::Program("setpriv")]) {
        return;
    }
    let site = Site::new();
    let out = site.at("probe.out");
    let probe = site.script(
        "probe.sh",
        &format!(
            "if (exec 3</proc/$PPID/mem) 2>/dev/null; then echo mem-open; else echo mem-closed; fi >> {out:?}\n\
             if cat /proc/$PPID/environ >/dev/null 2>&1; then echo environ-open; else echo environ-closed; fi >> {out:?}",
            out = out.display().to_string()
        ),
    );
    let command = format!("command = [{:?}]", probe.display().to_string());
    let site = site.setting(Table::Token, &command);
    site.write("a.jpg", b"1");
    // Everything belongs to `nobody`, who runs optiwatch and so the probe.
    let status = std::process::Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(site.root.path())
        .status()
        .unwrap();
    assert!(status.success());
    let as_nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
    ];
    site.optiwatch_via(&as_nobody).arg("scan").run().expect(0);
    site.write("a.jpg", b"2");
    std::os::unix::fs::chown(site.path("a.jpg"), Some(65534), Some(65534)).unwrap();
    site.optiwatch_via(&as_nobody).arg("scan").run().expect(0);
    let seen = std::fs::read_to_string(&out).unwrap();
    assert_eq!(seen, "mem-closed\nenviron-closed\n");
}

/// Runs `scan` in the background: a run that hangs fails the test instead
/// of hanging it. Returns its exit code once its log has `needle`.
fn scan_within(site: &Site, launcher: &[&str], needle: &str) -> Option<i32> {
    let mut daemon = site.optiwatch_via(launcher).arg("scan").spawn();
    let started = Instant::now();
    while daemon.is_running() {
        assert!(
            started.elapsed() < WAIT,
            "still running after {WAIT:?}:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    daemon.wait_log(needle, WAIT);
    daemon.wait(WAIT)
}

#[test]
fn a_key_file_must_be_a_small_regular_file() {
    let mut site = Site::new();
    site.write("a.jpg", b"1");
    let fifo = site.at("key.fifo");
    let name = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo on a NUL-terminated path we own.
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
    std::fs::write(site.at("big.key"), vec![b'a'; 1 << 20]).unwrap();

    let cases = [
        ("key.fifo", "it is a FIFO"),
        ("/dev/zero", "it is a device"),
        ("big.key", "larger than 4096 bytes"),
    ];
    for (file, why) in cases {
        site.config.set(Table::Api, &format!("key_file = {file:?}"));
        // Bounded address space: the old code read /dev/zero without end.
        let launcher = ["prlimit", "--as=2147483648", "--"];
        let code = scan_within(&site, &launcher, why);
        assert_eq!(code, Some(2), "{file}");
    }
}

#[test]
fn a_token_starting_with_a_dash_is_never_published() {
    let site = Site::new();
    let args = site.at("args.out");
    let record = site.script(
        "record.sh",
        &format!("echo \"$@\" >> {:?}", args.display().to_string()),
    );
    let command = format!(
        "command = [{:?}, \"{{token}}\"]",
        record.display().to_string()
    );
    let site = site
        .setting(Table::Token, "file = \"token.txt\"")
        .setting(Table::Token, &command)
        .files(&["a.jpg"])
        .baselined();
    site.write("a.jpg", b"2");
    site.api.set_token_text(Some("-rf"));
    let run = site.scan(&[]).expect(1);
    assert!(!args.exists(), "the command got the token:\n{run}");
    assert!(!site.at("token.txt").exists(), "{run}");
    assert_eq!(site.status()["token"], "owed", "{run}");
    // A good token later is published as usual.
    site.api.set_token_text(Some("9good-token"));
    site.scan(&[]).expect(0);
    assert_eq!(std::fs::read_to_string(&args).unwrap(), "9good-token\n");
}

#[test]
fn a_token_command_is_judged_by_its_exit_not_its_pipes() {
    let site = Site::new();
    let bg = site.at("bg.pid");
    let exit_code = site.at("exit.code");
    std::fs::write(&exit_code, "0").unwrap();
    // The background sleep inherits stdout and stderr and outlives the
    // command by far.
    let command = site.script(
        "leaves-a-child.sh",
        &format!(
            "sleep 60 & echo $! >> {bg:?}\necho 'oops on stderr' >&2\nexit $(cat {code:?})",
            bg = bg.display().to_string(),
            code = exit_code.display().to_string()
        ),
    );
    let command = format!(
        "command = [{:?}, \"{{token}}\"]",
        command.display().to_string()
    );
    let site = site
        .setting(Table::Token, &command)
        .setting(Table::Token, "command_timeout = \"15s\"")
        .files(&["a.jpg"])
        .baselined();

    site.write("a.jpg", b"2");
    let started = Instant::now();
    let run = site.scan(&[]).expect(0);
    let took = started.elapsed();
    assert_eq!(site.status()["token"], "settled", "{run}");

    std::fs::write(&exit_code, "3").unwrap();
    site.write("a.jpg", b"3");
    let failed = site.scan(&[]).expect(1);
    assert!(
        failed.stderr.contains("exit status: 3") && failed.stderr.contains("oops on stderr"),
        "{failed}"
    );
    for pid in std::fs::read_to_string(&bg).unwrap().lines() {
        // SAFETY: kill(2) of the sleeps the scripts started.
        unsafe { libc::kill(pid.trim().parse().unwrap(), libc::SIGKILL) };
    }
    assert!(
        took < Duration::from_secs(10),
        "the run took {took:?}:\n{run}"
    );
}

#[test]
fn a_rule_url_with_a_password_is_refused_at_load() {
    for (key, value) in [
        ("url", "https://editor:s3cret@example.com/uploads"),
        (
            "also",
            "[\"https://editor:s3cret@www.example.com/uploads\"]",
        ),
    ] {
        let mut site = Site::new();
        let value = if key == "url" {
            format!("{value:?}")
        } else {
            value.to_string()
        };
        site.config.rules = match key {
            "url" => format!("[[rules]]\ndir = \"media\"\nurl = {value}\n"),
            _ => format!("[[rules]]\ndir = \"media\"\nurl = \"{SITE_URL}\"\nalso = {value}\n"),
        };
        site.write("a.jpg", b"1");
        let run = site.scan(&[]).expect(2);
        assert!(run.stderr.contains("user name or password"), "{run}");
        assert!(
            run.stderr.contains("line ") && run.stderr.contains("column "),
            "{run}"
        );
        // Not even the parser's quote of the line shows the password.
        assert!(!run.stderr.contains("s3cret"), "{run}");
    }
}

#[test]
fn deleting_the_lock_file_lets_no_second_process_in() {
    // Without the control socket (with it, the daemon does the scan:
    // tests/it/control.rs).
    let site = Site::watched("100ms", &["a.jpg"]).setting(Table::Watch, "control = false");
    let daemon = site.watch();
    std::fs::remove_file(site.at("optiwatch.db.lock")).unwrap();
    let refused = site.run(&["scan"]).expect(1);
    let holder = format!("another optiwatch (pid {}", daemon.pid());
    assert!(refused.stderr.contains(&holder), "{refused}");
    let running = site.status()["running"].to_string();
    assert!(
        running.contains(&format!("pid {}", daemon.pid())),
        "{running}"
    );
}

#[test]
fn a_truncated_store_is_called_damaged_with_a_way_out() {
    let site = Site::new();
    for n in 0..300 {
        site.write(format!("{n}.jpg"), b"1");
    }
    site.scan(&[]).expect(0);
    let db = site.at("optiwatch.db");
    let len = std::fs::metadata(&db).unwrap().len();
    assert!(len > 8192, "store of {len} bytes");
    std::fs::File::options()
        .write(true)
        .open(&db)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let before = std::fs::read(&db).unwrap();
    for command in [&["scan"][..], &["status"][..]] {
        let run = site.optiwatch().args(command).run().expect(1);
        for needed in ["is damaged", "backup", "mv ", "baseline"] {
            assert!(
                run.stderr.contains(needed),
                "{command:?} lacks {needed:?}:\n{run}"
            );
        }
        assert!(!run.stderr.contains("not SQLite"), "{run}");
    }
    assert_eq!(std::fs::read(&db).unwrap(), before, "the store was changed");
}

/// The requests of the asset invalidations and token requests, in order,
/// as `(path, key)`.
fn calls(rs: &[Recorded]) -> Vec<(String, String)> {
    rs.iter()
        .filter(|r| r.status == 200)
        .map(|r| {
            let key = r.authorization.clone().unwrap_or_default();
            (
                r.path.clone(),
                key.trim_start_matches("Bearer ").to_string(),
            )
        })
        .collect()
}

#[test]
fn owed_assets_follow_their_rule_to_its_new_account() {
    const OTHER_KEY: &str = "opt_other_key_5555555555";
    let mut site = Site::with_keys(&[GOOD_KEY, SHOP_KEY, OTHER_KEY])
        .env("SHOP_KEY", SHOP_KEY)
        .env("OTHER_KEY", OTHER_KEY)
        .files(&["a.jpg"])
        .baselined();
    let plain_rule = site.config.rules.clone();
    // An edit owed to the rule's account while Optimole is down.
    let owed_through_an_outage = |site: &Site, content: &[u8]| {
        site.write("a.jpg", content);
        site.api.push_faults(Fault::Status(503), 1000);
        site.scan(&[]).expect(1);
        site.api.clear_faults();
        site.api.clear();
    };

    // Owed to the [api] account, then the rule gets its own key: the
    // asset goes with it.
    owed_through_an_outage(&site, b"2");
    site.config.rules = format!("{plain_rule}key_env = \"SHOP_KEY\"\n");
    let run = site.scan(&[]).expect(0);
    assert_follows(&site, SHOP_KEY, &run);

    // Owed to that account, then its key changes: the new one takes it.
    owed_through_an_outage(&site, b"3");
    site.config.rules = format!("{plain_rule}key_env = \"OTHER_KEY\"\n");
    let run = site.scan(&[]).expect(0);
    assert_follows(&site, OTHER_KEY, &run);
}

/// The owed asset went out once, with `key`, and that key's account got a
/// token after it. (The old account's token stays owed too: it may cover
/// earlier invalidations, and a spare token costs one call.)
fn assert_follows(site: &Site, key: &str, run: &Outcome) {
    let calls = calls(&site.api.requests());
    let sent: Vec<&(String, String)> = calls
        .iter()
        .filter(|(path, _)| path == "/invalidate/asset")
        .collect();
    assert_eq!(
        sent,
        vec![&("/invalidate/asset".to_string(), key.to_string())],
        "{run}"
    );
    assert_eq!(site.api.invalidated_assets(), vec![url("a.jpg")], "{run}");
    let asset = calls
        .iter()
        .position(|(path, _)| path == "/invalidate/asset");
    let token = calls.iter().rposition(|c| c.0 == "/token" && c.1 == key);
    assert!(
        token > asset,
        "no token for the new account after the asset: {calls:?}\n{run}"
    );
}

#[test]
fn a_systemd_credential_holds_the_key() {
    let site = Site::new().setting(Table::Api, "key_credential = \"optimole-key\"");
    let credentials = site.at("credentials");
    std::fs::create_dir(&credentials).unwrap();
    std::fs::write(credentials.join("optimole-key"), format!("{GOOD_KEY}\n")).unwrap();
    site.write("a.jpg", b"1");
    let outside = site
        .optiwatch()
        .arg("scan")
        .env_remove("OPTIMOLE_API_KEY")
        .env_remove("CREDENTIALS_DIRECTORY")
        .run()
        .expect(2);
    assert!(
        outside.stderr.contains("LoadCredential=optimole-key"),
        "{outside}"
    );
    let by_credential = |site: &Site| {
        site.optiwatch()
            .args(&["scan", "--json"])
            .env_remove("OPTIMOLE_API_KEY")
            .env("CREDENTIALS_DIRECTORY", &credentials)
            .run()
    };
    by_credential(&site).expect(0);
    site.write("a.jpg", b"2");
    by_credential(&site).expect(0);
    let sent = site.api.invalidate_requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].authorization, Some(format!("Bearer {GOOD_KEY}")));
}
