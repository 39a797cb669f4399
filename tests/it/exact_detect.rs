//! Exact detection (issue 9, items 1, 2, 3, 7, 13 and 15): rewrites that
//! keep size, mtime and inode; rewrites within one tick of coarse
//! timestamps; remounted rule folders; files truncated while they are
//! hashed; hard links. Real binary, real files, real mounts (skipped with a
//! printed reason where mounting is not allowed).

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::support::skip::{lacks, Need};
use crate::support::{is_stopped, sh, sorted, url, wait_until, Site, Table, WAIT};

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// Waits until every file under `dir` last changed (mtime and ctime) more
/// than 2 s ago, so the scan that records them next trusts their stat data
/// (they are not "racy"): what the test then shows is the quick-check
/// itself, not the racy rule.
fn wait_until_settled_for_the_quick_check(dir: &Path) {
    let last = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let m = e.unwrap().metadata().unwrap();
            (m.mtime() * 1_000_000_000 + m.mtime_nsec())
                .max(m.ctime() * 1_000_000_000 + m.ctime_nsec())
        })
        .max()
        .unwrap_or(0);
    wait_until("files older than the racy window", WAIT, || {
        now_ns() > last + 2_200_000_000
    });
}

/// (size, mtime ns, inode): what the old quick-check compared.
fn old_stat(path: &Path) -> (u64, i64, u64) {
    let m = std::fs::metadata(path).unwrap();
    (m.len(), m.mtime() * 1_000_000_000 + m.mtime_nsec(), m.ino())
}

// ---------------------------------------------------------------- item 1

/// Same-size writers that restore the mtime in place: `cp
/// --preserve=timestamps`, `tar --overwrite -x` of a posix archive, `rsync
/// --inplace -t`. Size, mtime and inode stay equal; only the ctime tells.
/// A `chmod` is a touch, not a change.
#[test]
fn rewrites_keeping_size_mtime_and_inode_are_changes_and_chmod_is_a_touch() {
    let site = Site::new();
    let src = site.at("src");
    std::fs::create_dir_all(src.join("tar")).unwrap();
    for name in ["cp.jpg", "tar.jpg", "rsync.jpg", "chmod.jpg", "same.jpg"] {
        site.write(name, format!("old content of {name:>10}").as_bytes());
    }
    let rsync = Command::new("rsync").arg("--version").output().is_ok();
    wait_until_settled_for_the_quick_check(&site.media);
    site.scan(&[]).expect(0);
    let before: Vec<_> = ["cp.jpg", "tar.jpg", "rsync.jpg"]
        .iter()
        .map(|n| old_stat(&site.path(n)))
        .collect();
    for name in ["cp.jpg", "tar.jpg", "rsync.jpg"] {
        let to = if name == "tar.jpg" {
            src.join("tar").join(name)
        } else {
            src.join(name)
        };
        std::fs::write(&to, format!("NEW content of {name:>10}")).unwrap();
        sh(
            &src,
            &format!("touch -r {} {}", site.path(name).display(), to.display()),
        );
    }
    let media = site.media.display();
    sh(
        &src,
        &format!("cp --preserve=timestamps cp.jpg {media}/cp.jpg"),
    );
    sh(
        &src,
        &format!(
            "tar --format=posix -C tar -cf t.tar tar.jpg && tar -C {media} --overwrite -xf t.tar"
        ),
    );
    if rsync {
        sh(
            &src,
            &format!("rsync --inplace -t -I rsync.jpg {media}/rsync.jpg"),
        );
    } else {
        println!("rsync is not installed: its case is done with cp instead");
        sh(
            &src,
            &format!("cp --preserve=timestamps rsync.jpg {media}/rsync.jpg"),
        );
    }
    sh(&site.media, "chmod 600 chmod.jpg");
    let after: Vec<_> = ["cp.jpg", "tar.jpg", "rsync.jpg"]
        .iter()
        .map(|n| old_stat(&site.path(n)))
        .collect();
    assert_eq!(before, after, "the writers kept size, mtime and inode");

    let run = site.scan(&[]).expect(0);
    assert_eq!(run.list("changed").len(), 3, "{run}");
    assert_eq!(run.json()["counts"]["touched"], 1, "the chmod: {run}");
    assert_eq!(run.json()["counts"]["unchanged"], 1, "{run}");
    assert_eq!(
        sorted(site.api.invalidated_assets()),
        vec![url("cp.jpg"), url("rsync.jpg"), url("tar.jpg")]
    );
    // Recorded: the next run reads nothing again.
    let run = site.scan(&[]).expect(0);
    assert_eq!(run.json()["counts"]["unchanged"], 5, "{run}");
}

#[test]
fn watch_invalidates_a_rewrite_keeping_size_mtime_and_inode() {
    let site = Site::new().fast_watch("100ms");
    site.write("a.jpg", b"version one");
    let new = site.at("new.jpg");
    std::fs::write(&new, b"version two").unwrap();
    wait_until_settled_for_the_quick_check(&site.media);
    site.scan(&[]).expect(0);
    let _daemon = site.watch();
    let before = old_stat(&site.path("a.jpg"));
    sh(
        site.root.path(),
        &format!(
            "touch -r {a} new.jpg && cp --preserve=timestamps new.jpg {a}",
            a = site.path("a.jpg").display()
        ),
    );
    assert_eq!(before, old_stat(&site.path("a.jpg")));
    site.api.wait_for("the rewrite", WAIT, |_| {
        site.api.invalidated_assets().contains(&url("a.jpg"))
    });
}

// ------------------------------------------------------- items 2 and 13

/// A file system with 1-second timestamps (ext4 with 128-byte inodes) on a
/// loop device, mounted over a folder; unmounted when dropped.
struct Mount {
    at: PathBuf,
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
    }
}

fn mount(args: &[&str], at: &Path) -> Option<Mount> {
    if lacks(&[Need::Root, Need::Program("mount")]) {
        return None;
    }
    let out = Command::new("mount").args(args).arg(at).output().ok()?;
    if !out.status.success() {
        println!(
            "skipped: cannot mount ({}): {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    Some(Mount {
        at: at.to_path_buf(),
    })
}

fn mount_coarse_ext4(site: &Site) -> Option<Mount> {
    if lacks(&[Need::Root, Need::Program("mkfs.ext4")]) {
        return None;
    }
    let image = site.at("coarse.img");
    let made = Command::new("truncate")
        .args(["-s", "16M"])
        .arg(&image)
        .status()
        .is_ok_and(|s| s.success())
        && Command::new("mkfs.ext4")
            .args(["-q", "-F", "-I", "128"])
            .arg(&image)
            .output()
            .is_ok_and(|o| o.status.success());
    if !made {
        println!("skipped: cannot make an ext4 image (mkfs.ext4 missing?)");
        return None;
    }
    let mount = mount(&["-o", "loop", image.to_str().unwrap()], &site.media)?;
    let probe = site.path("probe");
    std::fs::write(&probe, b"").unwrap();
    let nsec = std::fs::metadata(&probe).unwrap().mtime_nsec();
    std::fs::remove_file(&probe).unwrap();
    assert_eq!(nsec, 0, "ext4 -I 128 has 1-second timestamps");
    Some(mount)
}

/// Waits for the start of a fresh second, so what follows has most of
/// one second of the same timestamp.
fn wait_for_a_fresh_second() {
    wait_until("a fresh second", Duration::from_secs(3), || {
        now_ns() % 1_000_000_000 < 50_000_000
    });
}

/// (size, mtime s, ctime s, inode): everything a 1-second file system
/// shows of a same-size rewrite within one second.
fn coarse_stat(path: &Path) -> (u64, i64, i64, u64) {
    let m = std::fs::metadata(path).unwrap();
    (m.len(), m.mtime(), m.ctime(), m.ino())
}

#[test]
fn a_same_second_rewrite_on_one_second_timestamps_is_a_change_in_scan() {
    let site = Site::new();
    let Some(_mount) = mount_coarse_ext4(&site) else {
        return;
    };
    site.write("a.jpg", b"v00");
    site.scan(&[]).expect(0);
    // Each scan after a rewrite invalidates a.jpg once; an attempt that
    // crossed a second leaves its second rewrite to the next attempt's scan.
    let mut sends = 0;
    for attempt in 1..=10 {
        wait_for_a_fresh_second();
        site.write("a.jpg", format!("a{attempt:02}").as_bytes());
        let first = coarse_stat(&site.path("a.jpg"));
        site.scan(&[]).expect(0);
        sends += 1;
        site.write("a.jpg", format!("b{attempt:02}").as_bytes());
        if coarse_stat(&site.path("a.jpg")) != first {
            println!("attempt {attempt}: the scan crossed a second; again");
            continue;
        }
        let run = site.scan(&[]).expect(0);
        assert_eq!(run.list("changed").len(), 1, "{run}");
        let sent = site.api.invalidated_assets();
        assert_eq!(
            sent.iter().filter(|a| **a == url("a.jpg")).count(),
            sends + 1
        );
        return;
    }
    panic!("could not rewrite within the second of a scan in 10 attempts (machine too slow?)");
}

#[test]
fn a_second_write_045s_after_the_first_is_a_change_in_watch() {
    let site = Site::new().fast_watch("100ms");
    let Some(_mount) = mount_coarse_ext4(&site) else {
        return;
    };
    site.write("a.jpg", b"v00");
    site.scan(&[]).expect(0);
    let _daemon = site.watch();
    let sent = || {
        site.api
            .invalidated_assets()
            .iter()
            .filter(|a| **a == url("a.jpg"))
            .count()
    };
    for attempt in 1..=10 {
        let already = sent();
        wait_for_a_fresh_second();
        let t0 = Instant::now();
        site.write("a.jpg", format!("a{attempt:02}").as_bytes());
        let first = coarse_stat(&site.path("a.jpg"));
        site.api
            .wait_for("the first write", WAIT, |_| sent() > already);
        let at = t0 + Duration::from_millis(450);
        if Instant::now() > at {
            println!("attempt {attempt}: the first write took longer than 0.45 s; again");
            continue;
        }
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        site.write("a.jpg", format!("b{attempt:02}").as_bytes());
        if coarse_stat(&site.path("a.jpg")) != first {
            println!("attempt {attempt}: crossed a second; again");
            continue;
        }
        site.api
            .wait_for("the second write", WAIT, |_| sent() > already + 1);
        return;
    }
    panic!("could not write twice within one second in 10 attempts (machine too slow?)");
}

// ---------------------------------------------------------------- item 3

/// Each test's first file system: a tmpfs.
fn tmpfs(at: &Path) -> Option<Mount> {
    mount(&["-t", "tmpfs", "tmpfs"], at)
}

/// The second one: a folder of the root file system, bound over the rule
/// folder at once. (A second tmpfs may get the first one's device number
/// back.)
fn bind(folder: &Path, at: &Path) -> Option<Mount> {
    mount(&["--bind", folder.to_str().unwrap()], at)
}

/// Copies the rule folder's files out, keeping their times.
fn save(site: &Site) -> PathBuf {
    let copy = site.at("copy");
    sh(
        site.root.path(),
        &format!("rm -rf copy && cp -a {}/. copy", site.media.display()),
    );
    copy
}

#[test]
fn a_remounted_rule_folder_is_compared_by_content() {
    let site = Site::new();
    let Some(first) = tmpfs(&site.media) else {
        return;
    };
    for name in ["same.jpg", "edited.jpg", "gone.jpg"] {
        site.write(name, format!("{name:>12}").as_bytes());
    }
    site.scan(&[]).expect(0);
    let dev = std::fs::metadata(&site.media).unwrap().dev();
    let copy = save(&site);
    drop(first);
    // Another file system with the same library, edited while away: one
    // file rewritten (same size, same mtime), one deleted, one added.
    std::fs::write(copy.join("edited.jpg"), b"  EDITED.jpg").unwrap();
    sh(
        &copy,
        "touch -r same.jpg edited.jpg && rm gone.jpg && echo new > new.jpg",
    );
    let Some(_second) = bind(&copy, &site.media) else {
        return;
    };
    assert_ne!(dev, std::fs::metadata(&site.media).unwrap().dev());
    let run = site.scan(&[]).expect(0);
    assert!(!run.stderr.contains("baseline"), "{run}");
    assert_eq!(run.list("changed").len(), 1, "{run}");
    assert!(run.list("changed")[0].ends_with("edited.jpg"), "{run}");
    assert!(run.list("deleted")[0].ends_with("gone.jpg"), "{run}");
    assert_eq!(run.json()["counts"]["new"], 1, "{run}");
    assert_eq!(
        sorted(site.api.invalidated_assets()),
        vec![url("edited.jpg"), url("gone.jpg")]
    );
    // The new device is remembered: the quick-check works again.
    let run = site.scan(&[]).expect(0);
    assert_eq!(run.json()["counts"]["unchanged"], 3, "{run}");
    assert_eq!(run.json()["counts"]["touched"], 0, "{run}");
}

#[test]
fn another_disk_without_the_recorded_files_is_not_a_deleted_library() {
    let site = Site::new();
    let Some(first) = tmpfs(&site.media) else {
        return;
    };
    site.write("a.jpg", b"1");
    site.write("b.jpg", b"2");
    site.scan(&[]).expect(0);
    drop(first);
    let other = site.at("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("unrelated.jpg"), b"3").unwrap();
    let Some(_other) = bind(&other, &site.media) else {
        return;
    };
    let run = site.scan(&[]).expect(1);
    assert!(run.stderr.contains("none of them is there"), "{run}");
    assert!(!run.stderr.contains("baseline"), "{run}");
    assert_eq!(run.json()["counts"]["deleted"], 0, "{run}");
    assert!(site.api.requests().is_empty());
}

/// How the rule folder moves to another file system under `watch`.
#[derive(Clone, Copy, PartialEq)]
enum Remount {
    /// Unmounted first: the daemon may see the empty mount point (the
    /// folder is missing) before the other file system appears.
    AfterUnmount,
    /// Mounted over the old one at once: no event, no empty moment; only
    /// the poll tick sees the device change.
    AtOnce,
}

fn watch_remount(how: Remount) {
    let site = Site::new()
        .fast_watch("100ms")
        .setting(Table::Watch, "poll_interval = \"1s\"");
    let Some(first) = tmpfs(&site.media) else {
        return;
    };
    for name in ["same.jpg", "edited.jpg"] {
        site.write(name, format!("{name:>12}").as_bytes());
    }
    site.scan(&[]).expect(0);
    let daemon = site.watch();
    let copy = save(&site);
    std::fs::write(copy.join("edited.jpg"), b"  EDITED.jpg").unwrap();
    sh(&copy, "touch -r same.jpg edited.jpg");
    let first = match how {
        Remount::AfterUnmount => {
            drop(first);
            None
        }
        Remount::AtOnce => Some(first),
    };
    // The same library on another file system (a folder of the root file
    // system, bound over the rule folder).
    let Some(second) = bind(&copy, &site.media) else {
        return;
    };
    site.api.wait_for("the file edited while away", WAIT, |_| {
        site.api.invalidated_assets().contains(&url("edited.jpg"))
    });
    // The whole folder was compared and its new device remembered; an
    // edit now reaches the daemon only through watches on the new file
    // system.
    daemon.wait_log("compared by content", WAIT);
    assert!(!daemon.log().contains("baseline"), "{}", daemon.log());
    site.write("same.jpg", b"edited later");
    site.api.wait_for("an edit after the remount", WAIT, |_| {
        site.api.invalidated_assets().contains(&url("same.jpg"))
    });
    assert_eq!(
        sorted(site.api.invalidated_assets()),
        vec![url("edited.jpg"), url("same.jpg")]
    );
    drop(second);
    drop(first);
}

#[test]
fn watch_compares_a_rule_folder_remounted_after_an_unmount_by_content() {
    watch_remount(Remount::AfterUnmount);
}

#[test]
fn watch_compares_a_rule_folder_remounted_at_once_by_content_and_watches_it_again() {
    watch_remount(Remount::AtOnce);
}

// ---------------------------------------------------------------- item 7

/// A scan stopped right after it took a file's stat data, while the file
/// is rewritten: it reports the file instead of recording what it read.
#[test]
fn a_file_changed_while_it_is_read_is_reported_and_not_recorded() {
    let site = Site::new().files(&["a.jpg"]).baselined();
    site.write("a.jpg", b"two");
    let scan = site
        .optiwatch()
        .args(&["scan", "--json"])
        .pause_at("hashing")
        .command()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the scan to stop while hashing", WAIT, || {
        is_stopped(scan.id())
    });
    site.write("a.jpg", b"three, longer");
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(scan.id() as i32, libc::SIGCONT) }, 0);
    let out = scan.wait_with_output().unwrap();
    let code = out.status.code();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let log = || text.clone();
    assert_eq!(code, Some(1), "{}", log());
    assert!(log().contains("changed while it was read"), "{}", log());
    assert!(site.api.invalidated_assets().is_empty());
    // Not recorded: the next run finds the change.
    let run = site.scan(&[]).expect(0);
    assert_eq!(run.list("changed").len(), 1, "{run}");
    assert_eq!(site.api.invalidated_assets(), vec![url("a.jpg")]);
}

/// A 64 MiB file truncated and rewritten 50 times while `watch` and a
/// loop of `scan`s hash it: no process dies of a signal (a memory map
/// would end them with SIGBUS).
#[test]
fn truncating_a_large_file_while_it_is_hashed_kills_no_process() {
    let site = Site::new().fast_watch("20ms");
    let big = site.path("big.tif");
    let block: Vec<u8> = (0..1 << 20).map(|n: u32| (n % 253) as u8).collect();
    let rewrite = |round: u8| {
        let mut f = std::fs::File::create(&big).unwrap();
        for _ in 0..64 {
            f.write_all(&[round]).unwrap();
            f.write_all(&block[1..]).unwrap();
        }
    };
    rewrite(0);
    site.scan(&[]).expect(0);
    let mut daemon = site.watch();
    // The scans use a store of their own (the daemon holds the lock of its own).
    let mut scans = site.config.clone();
    scans.set(Table::Top, "state = \"scans.db\"");
    std::fs::write(site.at("scan.toml"), scans.render()).unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    let (scans, signals) = std::thread::scope(|s| {
        let scanner = s.spawn(|| {
            let (mut scans, mut signals) = (0, Vec::new());
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let status = site
                    .optiwatch_looking_up_config()
                    .args(&["-q", "--config", "scan.toml", "scan"])
                    .command()
                    .output()
                    .unwrap()
                    .status;
                scans += 1;
                if let Some(signal) = status.signal() {
                    signals.push(signal);
                }
            }
            (scans, signals)
        });
        for round in 1..=50u8 {
            rewrite(round);
            // Room for the daemon's debounce to pass, so it hashes the
            // file just before the next truncation.
            std::thread::sleep(Duration::from_millis(20 + u64::from(round % 4) * 10));
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        scanner.join().unwrap()
    });
    println!("{scans} scans ran during the 50 rewrites");
    assert!(signals.is_empty(), "scans killed by signals {signals:?}");
    assert!(scans > 0);
    assert!(daemon.is_running(), "watch died: {}", daemon.log());
    // Settled at last: the daemon records the final content.
    site.api.wait_for("the final content", WAIT, |_| {
        site.api.invalidated_assets().contains(&url("big.tif"))
    });
    assert!(daemon.is_running(), "watch died: {}", daemon.log());
}

// --------------------------------------------------------------- item 15

/// Hard links are aliases: writing one name invalidates every recorded
/// name of the inode, also a link made while the daemon runs.
#[test]
fn watch_invalidates_every_hard_link_of_a_written_file() {
    let site = Site::new().fast_watch("100ms");
    site.write("a.jpg", b"v1");
    site.write("c.jpg", b"v1");
    std::fs::create_dir(site.path("sub")).unwrap();
    std::fs::hard_link(site.path("a.jpg"), site.path("sub/b.jpg")).unwrap();
    site.scan(&[]).expect(0);
    let daemon = site.optiwatch().arg("-v").start_watch();
    // A link made now: the daemon must learn that c.jpg has two names.
    std::fs::hard_link(site.path("c.jpg"), site.path("d.jpg")).unwrap();
    daemon.wait_log(&site.path("d.jpg").display().to_string(), WAIT);
    // In place (same inode), through one name each.
    std::fs::write(site.path("a.jpg"), b"v2").unwrap();
    std::fs::write(site.path("d.jpg"), b"v2").unwrap();
    let want = vec![url("a.jpg"), url("c.jpg"), url("d.jpg"), url("sub/b.jpg")];
    site.api.wait_for("every name of both files", WAIT, |_| {
        let got = site.api.invalidated_assets();
        want.iter().all(|w| got.contains(w))
    });
    assert_eq!(sorted(site.api.invalidated_assets()), want);
}
