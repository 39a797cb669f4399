//! The shared PostgreSQL store (`[shared]`), against a real PostgreSQL
//! server the harness starts ([`Pg`]): connecting (password from a file,
//! never echoed), versioned migrations, the leader's lease with its fence,
//! and the shared outbox that owes one change once however many nodes
//! record it.

use std::time::Duration;

use optiwatch::config::SharedConfig;
use optiwatch::shared::{AccountId, Fenced, OwedChange, Role, SharedStore};

use crate::support::pg::Pg;
use crate::support::skip::{self, Need};
use crate::support::{
    has_all, is_stopped, sorted, token_after_last_invalidation, url, wait_until, Daemon, Site,
    Table, SITE_URL, WAIT,
};

fn config(pg: &Pg, node: &str, lease: Duration) -> SharedConfig {
    SharedConfig {
        database: pg.url(),
        node: node.into(),
        password_file: Some(pg.password_file()),
        ca_file: None,
        lease,
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn change(asset: &str, hash: u8) -> OwedChange {
    OwedChange {
        asset: asset.into(),
        account: AccountId::Default,
        hash: [hash; 32],
    }
}

#[test]
fn nodes_connect_with_a_password_file_and_migrate_once() {
    let Some(pg) = Pg::start() else { return };
    rt().block_on(async {
        let lease = Duration::from_secs(15);
        // Two nodes starting together: one migrates, the other finds the
        // schema done (a migration run twice fails on CREATE TABLE).
        let (one, two) = (config(&pg, "web-1", lease), config(&pg, "web-2", lease));
        let (a, b) = tokio::join!(SharedStore::open(&one), SharedStore::open(&two));
        let (a, _b) = (a.unwrap(), b.unwrap());
        drop(a);
        let again = SharedStore::open(&config(&pg, "web-1", lease))
            .await
            .unwrap();
        let nodes = again.nodes().await.unwrap();
        let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["web-1", "web-2"]);
    });
}

#[test]
fn a_wrong_or_missing_password_file_is_a_clear_error_without_the_password() {
    let Some(pg) = Pg::start() else { return };
    rt().block_on(async {
        let mut cfg = config(&pg, "web-1", Duration::from_secs(15));
        let wrong = pg.password_file().with_file_name("wrong");
        std::fs::write(&wrong, "not-the-password-9c1e\n").unwrap();
        cfg.password_file = Some(wrong);
        let err = format!("{:#}", SharedStore::open(&cfg).await.unwrap_err());
        assert!(err.contains("password authentication failed"), "{err}");
        assert!(err.contains("shared.password_file"), "{err}");
        assert!(err.contains(&pg.url()), "names the URL: {err}");
        assert!(!err.contains("not-the-password"), "{err}");

        let missing = pg.password_file().with_file_name("absent");
        cfg.password_file = Some(missing.clone());
        let err = format!("{:#}", SharedStore::open(&cfg).await.unwrap_err());
        assert!(err.contains(&missing.display().to_string()), "{err}");
        assert!(err.contains("shared.password_file"), "{err}");
    });
}

#[test]
fn one_contender_leads_and_an_expired_lease_passes_on_with_a_new_fence() {
    let Some(pg) = Pg::start() else { return };
    rt().block_on(async {
        let lease = Duration::from_secs(2);
        let mut a = SharedStore::open(&config(&pg, "web-1", lease))
            .await
            .unwrap();
        let mut b = SharedStore::open(&config(&pg, "web-2", lease))
            .await
            .unwrap();
        let (ra, rb) = (a.try_lead().await.unwrap(), b.try_lead().await.unwrap());
        let Role::Leader { fence: first } = ra else {
            panic!("the first contender leads: {ra:?}")
        };
        assert_eq!(
            rb,
            Role::Follower {
                leader: Some("web-1".into())
            }
        );
        // Renewing keeps the fence; the follower stays a follower.
        assert_eq!(a.try_lead().await.unwrap(), Role::Leader { fence: first });
        assert!(matches!(b.try_lead().await.unwrap(), Role::Follower { .. }));
        let leaders: Vec<String> = b
            .nodes()
            .await
            .unwrap()
            .into_iter()
            .filter(|n| n.leader)
            .map(|n| n.name)
            .collect();
        assert_eq!(leaders, ["web-1"]);
        // web-1 falls silent: after its lease web-2 takes over.
        let start = std::time::Instant::now();
        let second = loop {
            if let Role::Leader { fence } = b.try_lead().await.unwrap() {
                break fence;
            }
            assert!(start.elapsed() < WAIT, "no take-over");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(
            start.elapsed() >= Duration::from_millis(1500),
            "not before the lease ended"
        );
        assert_eq!(second, first + 1);
        assert!(matches!(a.try_lead().await.unwrap(), Role::Follower { .. }));
        // A clean stop hands over at once.
        b.resign().await.unwrap();
        assert_eq!(
            a.try_lead().await.unwrap(),
            Role::Leader { fence: second + 1 }
        );
    });
}

#[test]
fn a_stale_fence_cannot_settle_and_the_new_leader_can() {
    let Some(pg) = Pg::start() else { return };
    rt().block_on(async {
        let lease = Duration::from_secs(2);
        let mut old = SharedStore::open(&config(&pg, "web-1", lease))
            .await
            .unwrap();
        let mut new = SharedStore::open(&config(&pg, "web-2", lease))
            .await
            .unwrap();
        let Role::Leader { fence: stale } = old.try_lead().await.unwrap() else {
            panic!()
        };
        old.owe(&[change("https://a.com/1.jpg", 1)]).await.unwrap();
        let batch = old.owed_by(&AccountId::Default).await.unwrap();
        // The old leader pauses past its lease; the other takes over.
        let fence = loop {
            if let Role::Leader { fence } = new.try_lead().await.unwrap() {
                break fence;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let err = old
            .settle(stale, &AccountId::Default, &batch)
            .await
            .unwrap_err();
        assert!(err.downcast_ref::<Fenced>().is_some(), "{err:#}");
        assert_eq!(
            new.owed_count().await.unwrap(),
            1,
            "nothing settled by the old leader"
        );
        let err = old
            .token_published(stale, &AccountId::Default, "t-old", 0)
            .await
            .unwrap_err();
        assert!(err.downcast_ref::<Fenced>().is_some(), "{err:#}");
        assert_eq!(
            new.published_token(&AccountId::Default).await.unwrap(),
            None
        );

        new.settle(fence, &AccountId::Default, &batch)
            .await
            .unwrap();
        assert_eq!(new.owed_count().await.unwrap(), 0);
        let mark = new.token_mark(&AccountId::Default).await.unwrap();
        new.token_published(fence, &AccountId::Default, "t-new", mark)
            .await
            .unwrap();
        let token = old
            .published_token(&AccountId::Default)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(token.token, "t-new", "every node reads the newest token");
        assert!(!old.token_owed(&AccountId::Default).await.unwrap());
    });
}

#[test]
fn one_change_recorded_by_every_node_is_owed_once() {
    let Some(pg) = Pg::start() else { return };
    rt().block_on(async {
        let lease = Duration::from_secs(15);
        let mut nodes = Vec::new();
        for name in ["web-1", "web-2", "web-3"] {
            nodes.push(SharedStore::open(&config(&pg, name, lease)).await.unwrap());
        }
        let Role::Leader { fence } = nodes[0].try_lead().await.unwrap() else {
            panic!()
        };
        let changes: Vec<OwedChange> = (0..50)
            .map(|i| change(&format!("https://a.com/{i}.jpg"), 7))
            .collect();
        assert_eq!(nodes[0].owe(&changes).await.unwrap(), 50);
        assert_eq!(
            nodes[1].owe(&changes).await.unwrap(),
            0,
            "the same change again"
        );
        let batch = nodes[0].owed_by(&AccountId::Default).await.unwrap();
        assert_eq!(batch.len(), 50);
        // In flight: a different change of one asset is owed anew.
        assert_eq!(
            nodes[1]
                .owe(&[change("https://a.com/0.jpg", 8)])
                .await
                .unwrap(),
            1
        );
        nodes[0]
            .settle(fence, &AccountId::Default, &batch)
            .await
            .unwrap();
        let left = nodes[0].owed_by(&AccountId::Default).await.unwrap();
        assert_eq!(left.len(), 1, "the newer change stays owed: {left:?}");
        assert_eq!(left[0].hash, vec![8; 32]);
        // A slow replica records the change that was already sent.
        assert_eq!(
            nodes[2].owe(&changes[1..]).await.unwrap(),
            0,
            "already sent"
        );
        assert_eq!(nodes[0].owed_count().await.unwrap(), 1);
    });
}

/// How the nodes see the site's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// Each node has its own copy; a change is written to every copy.
    Replicated,
    /// All nodes watch one folder; a change is written once.
    SharedFolder,
}

const IMAGES: usize = 1000;

fn image(i: usize) -> String {
    format!("img/{i:04}.jpg")
}

/// `n` nodes on one fake API (the first site's) and one PostgreSQL, each
/// with its own config, store and token file; the tree baselined on every
/// node before `[shared]` is set.
fn nodes(pg: &Pg, n: usize, layout: Layout, lease: &str, images: usize) -> Vec<Site> {
    let files: Vec<String> = (0..images).map(image).collect();
    let mut sites: Vec<Site> = Vec::new();
    for i in 0..n {
        let mut site = Site::new();
        if let Some(first) = sites.first() {
            site.config.set(
                Table::Api,
                &format!("base_url = \"{}\"", first.api.base_url()),
            );
            if layout == Layout::SharedFolder {
                site.config.rules = format!(
                    "[[rules]]\ndir = \"{}\"\nurl = \"{SITE_URL}\"\n",
                    first.media.display()
                );
            }
        }
        if i == 0 || layout == Layout::Replicated {
            site = site.files(&files);
        }
        let site = site
            .baselined()
            .fast_watch("300ms")
            .setting(Table::Token, "file = \"token.txt\"")
            .setting(Table::Shared, &format!("database = \"{}\"", pg.url()))
            .setting(Table::Shared, &format!("node = \"web-{}\"", i + 1))
            .setting(
                Table::Shared,
                &format!("password_file = \"{}\"", pg.password_file().display()),
            )
            .setting(Table::Shared, &format!("lease = \"{lease}\""));
        sites.push(site);
    }
    sites
}

/// Changes images `range` in every copy (replicated) or once.
fn change_images(sites: &[Site], layout: Layout, range: std::ops::Range<usize>, content: &[u8]) {
    for i in range {
        for site in sites {
            site.write(image(i), content);
            if layout == Layout::SharedFolder {
                break;
            }
        }
    }
}

/// Assets a daemon moved into the shared store so far.
fn pushed(daemon: &Daemon) -> usize {
    daemon
        .log()
        .lines()
        .filter(|l| l.contains("recorded in the shared store"))
        .filter_map(|l| {
            l.split("assets=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<usize>()
                .ok()
        })
        .sum()
}

fn token_file(site: &Site) -> String {
    std::fs::read_to_string(site.at("token.txt"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Which daemon leads, once one does.
fn leader(daemons: &[Daemon]) -> usize {
    let leading = || (0..daemons.len()).find(|i| daemons[*i].log().contains("this node leads"));
    wait_until("a node to lead", WAIT, || leading().is_some());
    leading().unwrap_or_default()
}

fn many_nodes_send_once(layout: Layout) {
    if skip::lacks(&[Need::Program("setpriv")]) {
        return;
    }
    let Some(pg) = Pg::start() else { return };
    let sites = nodes(&pg, 3, layout, "5s", IMAGES);
    let daemons: Vec<Daemon> = sites.iter().map(Site::watch).collect();
    leader(&daemons);
    change_images(&sites, layout, 0..50, b"v2");
    let want: Vec<String> = (0..50).map(|i| url(&image(i))).collect();
    let api = &sites[0].api;
    wait_until("the 50 changed images to be invalidated", WAIT, || {
        has_all(&want)(&api.requests())
    });
    wait_until("every node to record its changes", WAIT, || {
        daemons
            .iter()
            .all(|d| pushed(d) >= if layout == Layout::Replicated { 50 } else { 0 })
    });
    wait_until("a token in every node's token file", WAIT, || {
        let issued = api.tokens_issued();
        issued.len() == 1 && sites.iter().all(|s| token_file(s) == issued[0])
    });
    let logs = || {
        daemons
            .iter()
            .map(Daemon::log)
            .collect::<Vec<_>>()
            .join("\n----\n")
    };
    let invalidations = api.invalidate_requests();
    assert_eq!(
        invalidations.len(),
        1,
        "one request for the 50 assets: {invalidations:?}\n{}",
        logs()
    );
    assert_eq!(sorted(invalidations[0].assets.clone()), sorted(want));
    assert_eq!(api.token_requests().len(), 1, "{}", logs());
    // `status` on any node shows every node and the one leader.
    let status = sites[2].status();
    let nodes = status["shared"]["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = nodes.iter().filter_map(|n| n["name"].as_str()).collect();
    assert_eq!(names, ["web-1", "web-2", "web-3"], "{status}");
    let leaders = nodes.iter().filter(|n| n["leader"] == true).count();
    assert_eq!(leaders, 1, "{status}");
    assert!(
        nodes
            .iter()
            .all(|n| n["watches"].as_str().is_some_and(|w| !w.is_empty())),
        "{status}"
    );
    assert_eq!(status["shared"]["assets_owed"], 0, "{status}");
    // The node's own store owes nothing: it went to the shared store.
    assert_eq!(status["assets_owed"], 0, "{status}");
    assert_eq!(status["token"], "settled", "{status}");
    let human = sites[0].run(&["status"]).expect(0).stdout;
    assert!(human.contains("(leader: sends)"), "{human}");
}

#[test]
fn three_replicas_of_one_change_give_one_request_and_one_token_on_every_node() {
    many_nodes_send_once(Layout::Replicated);
}

#[test]
fn three_nodes_on_one_shared_folder_give_one_request_and_one_token() {
    many_nodes_send_once(Layout::SharedFolder);
}

#[test]
fn the_leader_killed_during_a_burst_is_replaced_and_everything_is_invalidated() {
    if skip::lacks(&[Need::Program("setpriv")]) {
        return;
    }
    let Some(pg) = Pg::start() else { return };
    const BURST: usize = 5000;
    let sites = nodes(&pg, 3, Layout::Replicated, "3s", BURST);
    let mut daemons: Vec<Daemon> = sites.iter().map(Site::watch).collect();
    let first = leader(&daemons);
    let api = &sites[0].api;
    change_images(&sites, Layout::Replicated, 0..BURST / 2, b"v2");
    wait_until("the first invalidations", WAIT, || {
        !api.invalidate_requests().is_empty()
    });
    let started = std::time::Instant::now();
    daemons.remove(first).kill9();
    let live: Vec<&Site> = sites
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != first)
        .map(|(_, s)| s)
        .collect();
    change_images(&sites, Layout::Replicated, BURST / 2..BURST, b"v2");
    wait_until("another node to take over", WAIT, || {
        daemons.iter().any(|d| d.log().contains("this node leads"))
    });
    let took_over = started.elapsed();
    let want: Vec<String> = (0..BURST).map(|i| url(&image(i))).collect();
    wait_until("every changed image to be invalidated", WAIT * 2, || {
        has_all(&want)(&api.requests())
    });
    wait_until(
        "a token after the last invalidation in the live nodes' token files",
        WAIT,
        || {
            let rs = api.requests();
            let last = api.tokens_issued().last().cloned().unwrap_or_default();
            token_after_last_invalidation(&rs) && live.iter().all(|s| token_file(s) == last)
        },
    );
    assert_eq!(pg.number("SELECT count(*) FROM owed"), 0);
    eprintln!("fail-over: the new leader logged {took_over:?} after the SIGKILL (lease 3s)");
}

#[test]
fn a_paused_old_leader_settles_nothing_after_the_take_over() {
    if skip::lacks(&[Need::Program("setpriv")]) {
        return;
    }
    let Some(pg) = Pg::start() else { return };
    let mut sites = nodes(&pg, 2, Layout::Replicated, "3s", 100);
    // The first node stops itself right before it settles in PostgreSQL
    // what Optimole accepted: a pause (GC, SIGSTOP) at the worst moment.
    sites[0]
        .env
        .push(("OPTIWATCH_PAUSE_AT".into(), "shared-settle".into()));
    let old = sites[0].watch();
    old.wait_log("this node leads", WAIT);
    let new = sites[1].watch();
    change_images(&sites, Layout::Replicated, 0..50, b"v2");
    let pid = old.pid();
    let deadline = std::time::Instant::now() + WAIT;
    while !is_stopped(pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "the old leader did not pause before settling:\n{}\n----\n{}",
            old.log(),
            new.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let api = &sites[0].api;
    assert_eq!(
        api.invalidate_requests().len(),
        1,
        "the old leader's request went out"
    );
    new.wait_log("this node leads", WAIT);
    wait_until("the new leader to settle everything", WAIT, || {
        pg.number("SELECT count(*) FROM owed") == 0 && pg.number("SELECT count(*) FROM sent") == 50
    });
    old.signal(libc::SIGCONT);
    old.wait_log("fenced", WAIT);
    assert_eq!(
        pg.number("SELECT count(*) FROM sent WHERE node = 'web-1'"),
        0,
        "the old leader settled after the take-over:\n{}",
        old.log()
    );
    assert_eq!(pg.number("SELECT count(*) FROM owed"), 0);
    wait_until("the new leader's token in its token file", WAIT, || {
        api.tokens_issued().contains(&token_file(&sites[1]))
    });
}

/// The PostgreSQL side of the recording figure (README, "Many web
/// nodes"): 100,000 changes into the shared outbox in chunks of 10,000,
/// then the same again from a second node (all no-ops: already owed). Run
/// with `cargo test --release --test it bench_postgres_records -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_postgres_records_100k_changes() {
    let Some(pg) = Pg::start() else { return };
    rt().block_on(async {
        let lease = Duration::from_secs(15);
        let mut a = SharedStore::open(&config(&pg, "web-1", lease)).await.unwrap();
        let mut b = SharedStore::open(&config(&pg, "web-2", lease)).await.unwrap();
        let chunks: Vec<Vec<OwedChange>> = (0..10)
            .map(|c| (0..10_000).map(|i| change(&format!("https://example.com/uploads/img/{c}/{i}.jpg"), 1)).collect())
            .collect();
        let started = std::time::Instant::now();
        for chunk in &chunks {
            a.owe(chunk).await.unwrap();
        }
        let first = started.elapsed();
        let started = std::time::Instant::now();
        for chunk in &chunks {
            assert_eq!(b.owe(chunk).await.unwrap(), 0);
        }
        let again = started.elapsed();
        eprintln!("postgres: 100000 changes recorded in {first:?}; the same 100000 from a second node in {again:?}");
        assert_eq!(a.owed_count().await.unwrap(), 100_000);
    });
}

#[test]
fn sslmode_require_speaks_tls_with_the_ca_file_and_refuses_without_tls() {
    if skip::lacks(&[Need::Program("openssl")]) {
        return;
    }
    let Some(pg) = Pg::start() else { return };
    let rt = rt();
    let mut cfg = config(&pg, "web-1", Duration::from_secs(15));
    cfg.database = format!("{}?sslmode=require", pg.url());
    // The server has no TLS yet: `require` refuses to go on in clear.
    let err = format!("{:#}", rt.block_on(SharedStore::open(&cfg)).unwrap_err());
    assert!(err.contains("cannot connect to the shared store"), "{err}");
    let ca = pg.enable_tls();
    // A certificate no public authority signed: refused without ca_file.
    let err = format!("{:#}", rt.block_on(SharedStore::open(&cfg)).unwrap_err());
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    cfg.ca_file = Some(ca);
    let store = rt.block_on(SharedStore::open(&cfg)).unwrap();
    let tls = pg.number(
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE s.ssl AND a.usename = 'optiwatch'",
    );
    assert_eq!(tls, 1, "the node's connection is encrypted");
    drop(store);
}

#[test]
fn a_leader_that_loses_its_database_connection_stops_and_another_takes_over() {
    if skip::lacks(&[Need::Program("setpriv")]) {
        return;
    }
    let Some(pg) = Pg::start() else { return };
    let sites = nodes(&pg, 2, Layout::Replicated, "3s", 20);
    let mut daemons: Vec<Daemon> = sites.iter().map(Site::watch).collect();
    let first = leader(&daemons);
    let node = format!("optiwatch web-{}", first + 1);
    pg.admin(&[&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{node}'"
    )]);
    let cut = daemons.remove(first);
    let code = cut.wait(WAIT);
    assert_eq!(code, Some(1), "the cut-off leader stops with an error");
    let other = &daemons[0];
    other.wait_log("this node leads", WAIT);
    change_images(&sites, Layout::Replicated, 0..20, b"v2");
    let want: Vec<String> = (0..20).map(|i| url(&image(i))).collect();
    let api = &sites[0].api;
    wait_until("the new leader to send the changes", WAIT, || {
        has_all(&want)(&api.requests())
    });
}
