//! Symbolic links and deploy layouts: every URL that serves changed bytes
//! is invalidated (aliases through file and folder links, in `scan` and
//! `watch`), creating, retargeting and removing a link is a change of its
//! URLs, nothing outside the rule folders is looked at unless allowed,
//! cycles end, a `current -> releases/N` switch costs exactly the files
//! that differ and one token, and `urls`/`invalidate` take `..` and linked
//! paths. The real binary against the fake API; every wait is on a
//! condition with a deadline.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::fake_api::FakeApi;

use crate::support::{sorted, url, Site, Table, SITE_URL};

const WAIT: Duration = Duration::from_secs(30);

/// An icon theme in miniature, laid out like papirus-icon-theme: file
/// links beside their target (one through `..`, one a chain), a folder
/// link beside its target, a `@2x` folder link and another theme linking
/// the size folder.
fn icons(site: &Site) {
    let apps = site.path("Papirus/48x48/apps");
    std::fs::create_dir_all(&apps).unwrap();
    std::fs::create_dir_all(site.path("ePapirus")).unwrap();
    site.write("Papirus/48x48/apps/java.svg", b"<svg>1</svg>");
    site.write("Papirus/48x48/apps/other.svg", b"<svg>o</svg>");
    site.write("Papirus/48x48/apps/readme.txt", b"text");
    symlink("java.svg", apps.join("java-1.svg")).unwrap();
    symlink("java-1.svg", apps.join("java-2.svg")).unwrap();
    symlink("../apps/./java.svg", apps.join("sub-java.svg")).unwrap();
    symlink("apps", site.path("Papirus/48x48/categories")).unwrap();
    symlink("48x48", site.path("Papirus/48x48@2x")).unwrap();
    symlink("../Papirus/48x48", site.path("ePapirus/48x48")).unwrap();
}

/// Every URL under which a web server serves the bytes of `rel`,
/// according to `find -L`: an oracle independent of optiwatch.
fn served(site: &Site, rel: &str) -> Vec<String> {
    let out = std::process::Command::new("find")
        .arg("-L")
        .arg(&site.media)
        .arg("-samefile")
        .arg(site.path(rel))
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    sorted(
        text.lines()
            .filter(|l| l.ends_with(".svg") || l.ends_with(".jpg"))
            .map(|l| {
                url(Path::new(l)
                    .strip_prefix(&site.media)
                    .unwrap()
                    .to_str()
                    .unwrap())
            })
            .collect(),
    )
}

fn invalidated_since(site: &Site, before: usize) -> Vec<String> {
    sorted(site.api.invalidated_assets()[before..].to_vec())
}

#[test]
fn an_edit_invalidates_every_alias_once_and_files_are_recorded_once() {
    let site = Site::new();
    icons(&site);
    let baseline = site.scan(&[]).expect(0);
    assert_eq!(baseline.json()["counts"]["scanned"], 2, "{baseline}");
    assert_eq!(site.status()["rules"][0]["files"], 2);
    assert_eq!(site.status()["rules"][0]["links"], 6);

    site.write("Papirus/48x48/apps/java.svg", b"<svg>2</svg>");
    let run = site.scan(&[]).expect(0);
    let want = served(&site, "Papirus/48x48/apps/java.svg");
    // 4 names (java.svg and 3 links) through 6 routes.
    assert_eq!(want.len(), 24, "{want:#?}");
    assert_eq!(sorted(run.list("invalidated")), want, "{run}");
    assert_eq!(site.api.token_requests().len(), 1);

    // A file only a folder link leads to more than once: its own aliases.
    site.write("Papirus/48x48/apps/other.svg", b"<svg>p</svg>");
    let run = site.scan(&[]).expect(0);
    assert_eq!(
        sorted(run.list("invalidated")),
        served(&site, "Papirus/48x48/apps/other.svg")
    );
}

#[test]
fn creating_retargeting_and_removing_links_invalidate_their_urls() {
    let site = Site::new();
    icons(&site);
    site.scan(&[]).expect(0);
    let apps = site.path("Papirus/48x48/apps");
    let routes = |name: &str| {
        sorted(
            [
                "Papirus/48x48/apps",
                "Papirus/48x48/categories",
                "Papirus/48x48@2x/apps",
                "Papirus/48x48@2x/categories",
                "ePapirus/48x48/apps",
                "ePapirus/48x48/categories",
            ]
            .iter()
            .map(|r| url(&format!("{r}/{name}")))
            .collect(),
        )
    };

    symlink("other.svg", apps.join("new.svg")).unwrap();
    let run = site.scan(&[]).expect(0);
    assert_eq!(
        sorted(run.list("invalidated")),
        routes("new.svg"),
        "created"
    );

    std::fs::remove_file(apps.join("new.svg")).unwrap();
    symlink("java.svg", apps.join("new.svg")).unwrap();
    let run = site.scan(&[]).expect(0);
    assert_eq!(
        sorted(run.list("invalidated")),
        routes("new.svg"),
        "retargeted"
    );

    let run = site.scan(&[]).expect(0);
    assert!(run.list("invalidated").is_empty(), "unchanged: {run}");

    std::fs::remove_file(apps.join("new.svg")).unwrap();
    let run = site.scan(&[]).expect(0);
    assert_eq!(
        sorted(run.list("invalidated")),
        routes("new.svg"),
        "removed"
    );

    // A new folder link serves everything below its target anew.
    symlink("apps", site.path("Papirus/48x48/apps2")).unwrap();
    let run = site.scan(&[]).expect(0);
    let mut want = Vec::new();
    for route in ["Papirus/48x48", "Papirus/48x48@2x", "ePapirus/48x48"] {
        for name in [
            "java.svg",
            "java-1.svg",
            "java-2.svg",
            "sub-java.svg",
            "other.svg",
        ] {
            want.push(url(&format!("{route}/apps2/{name}")));
        }
    }
    assert_eq!(sorted(run.list("invalidated")), sorted(want));
    // Nothing was walked twice, nothing else recorded.
    assert_eq!(run.json()["counts"]["scanned"], 2, "{run}");
}

#[test]
fn watch_invalidates_aliases_of_an_edit_and_new_links() {
    let mut site = Site::new();
    site.config.set(Table::Watch, "debounce = \"200ms\"");
    site.config.set(Table::Watch, "token_interval = \"1s\"");
    icons(&site);
    site.scan(&[]).expect(0);
    let _daemon = site.watch();
    site.write("Papirus/48x48/apps/java.svg", b"<svg>3</svg>");
    let want = served(&site, "Papirus/48x48/apps/java.svg");
    site.api.wait_for("every alias and a token", WAIT, |rs| {
        crate::support::accepted(rs).len() >= want.len() && rs.iter().any(|r| r.path == "/token")
    });
    assert_eq!(invalidated_since(&site, 0), want);

    let before = site.api.invalidated_assets().len();
    symlink("other.svg", site.path("Papirus/48x48/apps/new.svg")).unwrap();
    site.api.wait_for("the new link's 6 URLs", WAIT, |rs| {
        crate::support::accepted(rs).len() >= before + 6
    });
    let got = invalidated_since(&site, before);
    assert_eq!(got.len(), 6, "{got:#?}");
    assert!(
        got.contains(&url("ePapirus/48x48/categories/new.svg")),
        "{got:#?}"
    );
}

/// The first quoted argument of each traced call: the path it looked at
/// (strace shows what `readlink` read as a later argument).
fn looked_at(trace: &str) -> Vec<String> {
    trace
        .lines()
        .filter_map(|line| {
            let args = line.split_once('(')?.1;
            let start = args.find('"')? + 1;
            let len = args[start..].find('"')?;
            Some(args[start..start + len].to_string())
        })
        .collect()
}

#[test]
fn links_outside_are_never_looked_at_unless_allowed() {
    if std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_err()
    {
        eprintln!("skipped: strace is not installed (apt-get install strace)");
        return;
    }
    let mut site = Site::new();
    let outside = site.root.path().join("outside");
    let shared = site.root.path().join("shared");
    std::fs::create_dir_all(outside.join("dir")).unwrap();
    std::fs::create_dir_all(shared.join("sub")).unwrap();
    std::fs::write(outside.join("secret.svg"), b"secret").unwrap();
    std::fs::write(outside.join("dir/x.svg"), b"x").unwrap();
    let fifo = outside.join("pipe.svg");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    std::fs::write(shared.join("logo.svg"), b"logo 1").unwrap();
    std::fs::write(shared.join("sub/s.svg"), b"s 1").unwrap();
    symlink("../outside/secret.svg", site.path("leak.svg")).unwrap();
    symlink(&fifo, site.path("pipe.svg")).unwrap();
    symlink("../outside/dir", site.path("leakdir")).unwrap();
    symlink("../outside/../outside/secret.svg", site.path("twisty.svg")).unwrap();
    symlink("../shared/logo.svg", site.path("logo.svg")).unwrap();
    symlink("../shared", site.path("shared")).unwrap();
    site.write("real.svg", b"r");
    site.config.rules.push_str("allow_outside = [\"shared\"]\n");

    let trace = site.root.path().join("trace.txt");
    let strace = [
        "strace",
        "-f",
        "-qq",
        "-e",
        "trace=%file",
        "-o",
        trace.to_str().unwrap(),
    ];
    let run = site
        .optiwatch_via(&strace)
        .args(&["scan", "--json", "--all-paths"])
        .run()
        .expect(0);
    assert_eq!(
        sorted(run.list("scanned")),
        sorted(vec![
            site.path("logo.svg").display().to_string(),
            site.path("real.svg").display().to_string(),
            site.path("shared/logo.svg").display().to_string(),
            site.path("shared/sub/s.svg").display().to_string(),
        ]),
        "{run}"
    );
    let paths = looked_at(&std::fs::read_to_string(&trace).unwrap());
    let outside_text = outside.display().to_string();
    let touched: Vec<&String> = paths
        .iter()
        .filter(|p| p.starts_with(&outside_text))
        .collect();
    assert!(touched.is_empty(), "looked outside: {touched:#?}");
    // The trace does show what was read: the allowed place.
    let shared_text = shared.display().to_string();
    assert!(
        paths.iter().any(|p| p.starts_with(&shared_text)),
        "{paths:#?}"
    );

    std::fs::write(outside.join("secret.svg"), b"secret 2").unwrap();
    std::fs::write(shared.join("logo.svg"), b"logo 2").unwrap();
    std::fs::write(shared.join("sub/s.svg"), b"s 2").unwrap();
    let run = site.scan(&[]).expect(0);
    assert_eq!(
        sorted(run.list("invalidated")),
        vec![
            url("logo.svg"),
            url("shared/logo.svg"),
            url("shared/sub/s.svg")
        ]
    );
}

#[test]
fn watch_looks_at_allowed_places_at_every_tick() {
    let mut site = Site::new();
    site.config.set(Table::Watch, "debounce = \"200ms\"");
    site.config.set(Table::Watch, "token_interval = \"1s\"");
    site.config.set(Table::Watch, "poll_interval = \"1s\"");
    let shared = site.root.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(shared.join("logo.svg"), b"1").unwrap();
    symlink("../shared", site.path("shared")).unwrap();
    symlink("../shared/logo.svg", site.path("logo.svg")).unwrap();
    site.config.rules.push_str("allow_outside = [\"shared\"]\n");
    // Setup, not proof: files older than the racy window leave the daemon
    // nothing to look at again after its start, so only a tick can see
    // the edit below.
    std::thread::sleep(Duration::from_millis(2100));
    site.scan(&[]).expect(0);
    let _daemon = site.watch();
    std::fs::write(shared.join("logo.svg"), b"2").unwrap();
    site.api.wait_for("both links' URLs", WAIT, |_| {
        site.api.invalidated_assets().len() >= 2
    });
    assert_eq!(
        sorted(site.api.invalidated_assets()),
        vec![url("logo.svg"), url("shared/logo.svg")]
    );
}

#[test]
fn follow_symlinks_true_is_refused_with_what_to_use_instead() {
    let mut site = Site::new();
    site.config.rules.push_str("follow_symlinks = true\n");
    let run = site.optiwatch().arg("check").run().expect(2);
    assert!(run.stderr.contains("follow_symlinks"), "{run}");
    assert!(run.stderr.contains("allow_outside"), "{run}");
    // `false` (the old default, in many configs) still loads.
    site.config.rules = site.config.rules.replace("= true", "= false");
    site.scan(&[]).expect(0);
}

#[test]
fn link_cycles_are_reported_once_and_skipped() {
    let site = Site::new();
    for dir in ["a", "b", "c"] {
        std::fs::create_dir_all(site.path(dir)).unwrap();
    }
    site.write("b/real.svg", b"1");
    symlink("..", site.path("a/up")).unwrap();
    symlink("y.svg", site.path("x.svg")).unwrap();
    symlink("x.svg", site.path("y.svg")).unwrap();
    symlink("../c", site.path("b/to-c")).unwrap();
    symlink("../b", site.path("c/to-b")).unwrap();
    let first = site.scan(&[]).expect(0);
    for link in ["a/up", "x.svg", "b/to-c", "c/to-b"] {
        let shown = site.path(link).display().to_string();
        let lines = first.stderr.lines().filter(|l| l.contains(&shown)).count();
        assert_eq!(lines, 1, "{link} reported once:\n{first}");
    }
    let second = site.scan(&[]).expect(0);
    assert!(
        !second.stderr.contains("cycle") && !second.stderr.contains("loop"),
        "{second}"
    );
    site.write("b/real.svg", b"2");
    let run = site.scan(&[]).expect(0);
    assert_eq!(run.list("invalidated"), vec![url("b/real.svg")]);
}

/// `root/site/releases/N` with 300 images, `media -> releases/1` (the
/// rule folder, `current` in Capistrano's words); release 2 differs in 3
/// images, lacks 2 and has 1 more.
fn releases(site: &Site) -> (PathBuf, Vec<String>) {
    let releases = site.root.path().join("releases");
    for r in ["1", "2"] {
        std::fs::create_dir_all(releases.join(r)).unwrap();
    }
    for n in 0..300 {
        let name = format!("img{n:03}.jpg");
        std::fs::write(releases.join("1").join(&name), format!("image {n}")).unwrap();
        // Deploys copy unchanged files (new inodes, same bytes).
        let content = match n {
            10 | 20 | 30 => format!("image {n} v2"),
            _ => format!("image {n}"),
        };
        if n != 40 && n != 50 {
            std::fs::write(releases.join("2").join(&name), content).unwrap();
        }
    }
    std::fs::write(releases.join("2/img300.jpg"), b"added").unwrap();
    std::fs::remove_dir(&site.media).unwrap();
    symlink("releases/1", &site.media).unwrap();
    let want = [
        "img010.jpg",
        "img020.jpg",
        "img030.jpg",
        "img040.jpg",
        "img050.jpg",
    ];
    (releases, want.iter().map(|n| url(n)).collect())
}

fn switch(site: &Site, to: &str) {
    let next = site.root.path().join("media.next");
    symlink(to, &next).unwrap();
    std::fs::rename(&next, &site.media).unwrap();
}

#[test]
fn a_deploy_switch_seen_by_watch_invalidates_exactly_what_differs_with_one_token() {
    let mut site = Site::with_api(FakeApi::start());
    // A poll tick would notice the switch too: an hour is too late, so
    // only the watch on the link's folder can.
    site.config.set(Table::Watch, "debounce = \"200ms\"");
    site.config.set(Table::Watch, "token_interval = \"1s\"");
    site.config.set(Table::Watch, "poll_interval = \"1h\"");
    let (_, want) = releases(&site);
    site.scan(&[]).expect(0);
    let daemon = site.watch();
    switch(&site, "releases/2");
    site.api.wait_for("5 URLs and a token", WAIT, |rs| {
        crate::support::accepted(rs).len() >= 5 && rs.iter().any(|r| r.path == "/token")
    });
    assert_eq!(daemon.stop_with(libc::SIGTERM, WAIT), Some(0));
    assert_eq!(sorted(site.api.invalidated_assets()), want);
    assert_eq!(site.api.token_requests().len(), 1);
}

#[test]
fn a_deploy_switch_seen_by_scan_invalidates_exactly_what_differs_with_one_token() {
    let site = Site::new();
    let (releases, want) = releases(&site);
    site.scan(&[]).expect(0);
    switch(&site, "releases/2");
    let run = site.scan(&[]).expect(0);
    assert_eq!(sorted(run.list("invalidated")), want, "{run}");
    assert_eq!(site.api.token_requests().len(), 1);
    // Where the rule folder leads now is shown.
    let real = std::fs::canonicalize(releases.join("2")).unwrap();
    assert_eq!(
        site.status()["rules"][0]["resolved"],
        real.display().to_string()
    );
    let check = site.optiwatch().arg("check").run();
    assert!(
        check.stdout.contains(&real.display().to_string()),
        "{check}"
    );
}

#[test]
fn urls_and_invalidate_take_dot_dot_and_linked_paths() {
    let mut site = Site::new();
    let up = site.root.path().join("site/releases/1/uploads");
    std::fs::create_dir_all(up.join("2026")).unwrap();
    std::fs::write(up.join("a.jpg"), b"a").unwrap();
    symlink("a.jpg", up.join("logo.jpg")).unwrap();
    symlink("releases/1", site.root.path().join("site/current")).unwrap();
    // The way many configs point at a WordPress site: through `..` and
    // the deploy's `current` link.
    site.config.rules =
        format!("[[rules]]\ndir = \"media/../site/current/uploads\"\nurl = \"{SITE_URL}\"\n");
    let root = site.root.path().display().to_string();
    let asked = [
        format!("{}/a.jpg", up.display()),
        format!("{root}/media/../site/current/uploads/2026/../a.jpg"),
        "site/current/uploads/./a.jpg".to_string(),
        "site/current/uploads/logo.jpg".to_string(),
        "site/current/uploads/gone/../b.jpg".to_string(),
    ];
    let args: Vec<&str> = asked.iter().map(String::as_str).collect();
    let run = site
        .optiwatch()
        .args(&["urls", "--json"])
        .args(&args)
        .run()
        .expect(0);
    let urls: Vec<String> = run.json()["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["urls"][0].as_str().unwrap_or("none").to_string())
        .collect();
    assert_eq!(
        urls,
        vec![
            url("a.jpg"),
            url("a.jpg"),
            url("a.jpg"),
            url("logo.jpg"),
            url("b.jpg")
        ],
        "{run}"
    );
    site.optiwatch()
        .args(&["invalidate", "--json"])
        .arg(format!("{root}/site/releases/1/uploads/2026/../a.jpg"))
        .run()
        .expect(0);
    assert_eq!(site.api.invalidated_assets(), vec![url("a.jpg")]);
}

#[test]
fn an_upgraded_store_records_existing_links_without_invalidating_them() {
    let site = Site::new();
    icons(&site);
    site.scan(&[]).expect(0);
    // What a store written before links were recorded looks like.
    let db = site.root.path().join("optiwatch.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch("DROP TABLE links; DROP TABLE links_seen; PRAGMA user_version = 4;")
        .unwrap();
    drop(conn);
    let run = site.scan(&[]).expect(0);
    assert!(run.list("invalidated").is_empty(), "{run}");
    assert_eq!(site.status()["rules"][0]["links"], 6);
    site.write("Papirus/48x48/apps/java.svg", b"<svg>2</svg>");
    let run = site.scan(&[]).expect(0);
    assert_eq!(run.list("invalidated").len(), 24, "{run}");
}

/// Debian's papirus-icon-theme unpacked (`apt-get download
/// papirus-icon-theme && dpkg -x papirus-icon-theme_*.deb DIR`), set in
/// `OPTIWATCH_PAPIRUS` or at /work/data/papirus; skipped when absent.
#[test]
fn papirus_icon_theme_baseline_and_an_edit_with_every_alias() {
    let tree = std::env::var_os("OPTIWATCH_PAPIRUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/data/papirus"));
    let icons = tree.join("usr/share/icons");
    if !icons.is_dir() {
        eprintln!(
            "skipped: no papirus-icon-theme tree at {} (set OPTIWATCH_PAPIRUS)",
            tree.display()
        );
        return;
    }
    // A copy, made once (the test edits a file; copying 116,000 entries
    // takes a minute on a busy disk), with that file put back.
    let copy = Path::new(env!("CARGO_TARGET_TMPDIR")).join("papirus-icons");
    let java = "Papirus/48x48/apps/java.svg";
    if !copy.join(java).exists() {
        let part = copy.with_extension("part");
        let _ = std::fs::remove_dir_all(&part);
        let copied = std::process::Command::new("cp")
            .arg("-a")
            .arg(&icons)
            .arg(&part)
            .status()
            .unwrap();
        assert!(copied.success());
        std::fs::rename(&part, &copy).unwrap();
    }
    std::fs::write(copy.join(java), std::fs::read(icons.join(java)).unwrap()).unwrap();
    let mut site = Site::new();
    site.config.rules = format!(
        "[[rules]]\ndir = \"{}\"\nurl = \"{SITE_URL}\"\n",
        copy.display()
    );
    site.media = copy;
    site.config.rules.push_str("include = [\"*.svg\"]\n");
    let count = |kind: &str| {
        let out = std::process::Command::new("find")
            .arg(&site.media)
            .args(["-type", kind, "-name", "*.svg"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().lines().count()
    };
    let baseline = site.scan(&[]).expect(0);
    assert_eq!(
        baseline.json()["counts"]["scanned"].as_u64().unwrap() as usize,
        count("f")
    );
    site.write(java, b"<svg>edited</svg>");
    let run = site.scan(&[]).expect(0);
    let want = served(&site, java);
    assert!(want.len() > 100, "{}", want.len());
    assert_eq!(sorted(run.list("invalidated")), want);

    site.config.set(Table::Watch, "debounce = \"200ms\"");
    site.config.set(Table::Watch, "token_interval = \"1s\"");
    let daemon = site.optiwatch().arg("watch").spawn();
    daemon.wait_log("watching", Duration::from_secs(120));
    let before = site.api.invalidated_assets().len();
    site.write(java, b"<svg>edited again</svg>");
    site.api.wait_for("every alias again", WAIT, |rs| {
        crate::support::accepted(rs).len() >= before + want.len()
    });
    assert_eq!(invalidated_since(&site, before), want);
}

/// `urls` and `invalidate` on a file list and send the URLs of every
/// recorded alias too (the web server serves the same bytes there), also
/// when the path named is one of the links.
#[test]
fn urls_and_invalidate_include_every_recorded_alias() {
    let site = Site::new();
    icons(&site);
    site.scan(&[]).expect(0);
    let java = "Papirus/48x48/apps/java.svg";
    let want = served(&site, java);
    assert_eq!(want.len(), 24, "{want:#?}");
    for asked in [java, "Papirus/48x48/apps/java-2.svg"] {
        let run = site
            .optiwatch()
            .args(&["urls", "--json"])
            .arg(site.path(asked))
            .run()
            .expect(0);
        let urls: Vec<String> = run.json()["paths"][0]["urls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u.as_str().unwrap().to_string())
            .collect();
        assert_eq!(urls[0], url(asked), "own URL first: {run}");
        assert_eq!(sorted(urls), want, "{asked}: {run}");
    }
    let before = site.api.invalidated_assets().len();
    site.optiwatch()
        .args(&["invalidate", "--json"])
        .arg(site.path(java))
        .run()
        .expect(0);
    assert_eq!(invalidated_since(&site, before), want);
}
