//! Cache tokens under sustained change: while edits keep coming, `watch`
//! requests a token at most once per `token_interval` and within one
//! interval of every invalidation Optimole accepted; the last token follows
//! the last accepted invalidation; the age of what no token covers yet shows
//! in `status`, `/metrics`, `/healthz` and the logs. Timings are read from
//! the fake API's record of when each request arrived.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::support::fake_api::{Recorded, GOOD_KEY};
use crate::support::http::{free_addr, gauge, get};
use crate::support::{accepted, shop_url, url, wait_until, Site, Table, KEY_A, KEY_B, WAIT};

/// `token_interval` of the churn tests.
const INTERVAL: Duration = Duration::from_secs(2);
/// Slack for a loaded machine on top of an interval.
const SLACK: Duration = Duration::from_secs(2);

fn names(n: usize) -> Vec<String> {
    (0..n).map(|n| format!("{:02}/{n}.jpg", n % 20)).collect()
}

/// The churn tests' `token_interval` line.
fn interval() -> String {
    format!("token_interval = \"{}s\"", INTERVAL.as_secs())
}

/// Edits `files` round-robin, `rate` edits per second, for `length`, each
/// with new content. Returns each file's last write and when it stopped.
fn churn(
    site: &Site,
    files: &[String],
    rate: u32,
    length: Duration,
) -> (HashMap<String, Instant>, Instant) {
    let started = Instant::now();
    let mut last = HashMap::new();
    let mut n = 0usize;
    while started.elapsed() < length {
        let due = (started.elapsed().as_secs_f64() * f64::from(rate)) as usize;
        while n < due {
            let name = &files[n % files.len()];
            site.write(name, format!("edit {n}").as_bytes());
            last.insert(name.clone(), Instant::now());
            n += 1;
        }
        // Paces the writer; nothing is concluded from it.
        std::thread::sleep(Duration::from_millis(5));
    }
    (last, Instant::now())
}

/// Whether every file was invalidated after its last write.
fn all_sent_after(rs: &[Recorded], last: &HashMap<String, Instant>) -> bool {
    last.iter().all(|(name, written)| {
        let want = url(name);
        rs.iter()
            .any(|r| r.status == 200 && r.at > *written && r.assets.contains(&want))
    })
}

fn by_key<'a>(rs: &'a [Recorded], key: &str, path: &str) -> Vec<&'a Recorded> {
    let bearer = format!("Bearer {key}");
    rs.iter()
        .filter(|r| r.status == 200 && r.path == path)
        .filter(|r| r.authorization.as_deref() == Some(bearer.as_str()))
        .collect()
}

/// Arrival times of an account's accepted invalidations and its tokens.
struct Timeline {
    accepted: Vec<Instant>,
    tokens: Vec<Instant>,
}

impl Timeline {
    fn of(rs: &[Recorded], key: &str) -> Timeline {
        Timeline {
            accepted: by_key(rs, key, "/invalidate/asset")
                .iter()
                .map(|r| r.at)
                .collect(),
            tokens: by_key(rs, key, "/token").iter().map(|r| r.at).collect(),
        }
    }

    /// Tokens requested before the last accepted invalidation.
    fn during(&self) -> usize {
        let last = *self.accepted.last().expect("some invalidation accepted");
        self.tokens.iter().filter(|t| **t < last).count()
    }

    /// The longest wait from an accepted invalidation to the next token
    /// request; panics naming one that got none.
    fn longest_wait(&self) -> Duration {
        self.accepted
            .iter()
            .map(|a| {
                let next = self.tokens.iter().find(|t| *t > a);
                next.unwrap_or_else(|| panic!("no token after an invalidation; {self}"))
                    .duration_since(*a)
            })
            .max()
            .unwrap_or_default()
    }

    /// The invariants that hold in every run: each token follows an
    /// acceptance made since the previous token, tokens are one interval
    /// apart, every acceptance gets a token within an interval (plus slack),
    /// and exactly one token follows the last acceptance.
    fn check(&self, interval: Duration) {
        assert!(!self.tokens.is_empty(), "no token; {self}");
        let mut previous: Option<Instant> = None;
        for token in &self.tokens {
            assert!(
                self.accepted
                    .iter()
                    .any(|a| a < token && previous.is_none_or(|p| *a > p)),
                "a token without an invalidation accepted since the previous one; {self}"
            );
            if let Some(p) = previous {
                // The daemon spaces request starts; arrivals may jitter.
                assert!(
                    token.duration_since(p) >= interval.mul_f64(0.75),
                    "two tokens within one interval; {self}"
                );
            }
            previous = Some(*token);
        }
        let wait = self.longest_wait();
        assert!(
            wait <= interval + SLACK,
            "an accepted invalidation waited {wait:?} for a token; {self}"
        );
        let last = self.accepted.last().unwrap();
        let after = self.tokens.iter().filter(|t| *t > last).count();
        assert_eq!(after, 1, "one final token; {self}");
    }
}

impl std::fmt::Display for Timeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Some(start) = self.accepted.first().copied() else {
            return write!(f, "nothing accepted");
        };
        let rel = |t: &Instant| format!("{:.2}", t.saturating_duration_since(start).as_secs_f64());
        let tokens: Vec<String> = self.tokens.iter().map(rel).collect();
        write!(
            f,
            "{} invalidations accepted over {}s after the first; tokens at {:?}",
            self.accepted.len(),
            rel(self.accepted.last().unwrap()),
            tokens
        )
    }
}

/// Waits until the account's token is settled and nothing is owed or
/// uncovered: from then on nothing is due, so the record is complete.
fn wait_settled(site: &Site) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let status = site.status();
        if status["assets_owed"] == 0
            && status["token"] == "settled"
            && status["uncovered_age_seconds"].is_null()
        {
            return status;
        }
        assert!(Instant::now() < deadline, "never settled: {status}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The daemon equivalent of 60 s of edits at a few hundred per second with
/// `token_interval = "10s"`, scaled to a 2 s interval. The churn runs 14 s
/// (seven intervals, where the 60 s case has six) because a token goes one
/// interval after the first invalidation accepted after the previous token,
/// and that gap (one batch, about 0.3 s here) does not shrink with the
/// interval.
#[test]
fn sustained_change_gets_a_token_every_interval_and_one_after_it() {
    let files = names(1500);
    let site = Site::watched("200ms", &files).setting(Table::Watch, &interval());
    let daemon = site.watch();
    let (last, stopped) = churn(&site, &files, 300, Duration::from_secs(14));
    site.api
        .wait_for("every edit invalidated after it", WAIT, |rs| {
            all_sent_after(rs, &last)
        });
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| wait_settled(&site))).is_err() {
        panic!("never settled; the daemon's log:\n{}", daemon.log());
    }
    let timeline = Timeline::of(&site.api.requests(), GOOD_KEY);
    eprintln!("{timeline}; longest wait {:?}", timeline.longest_wait());
    timeline.check(INTERVAL);
    let during = timeline.during();
    assert!(
        (5..=7).contains(&during),
        "{during} tokens during the churn; {timeline}"
    );
    assert!(
        *timeline.tokens.last().unwrap() > stopped,
        "the final token comes after the churn stopped; {timeline}"
    );
    assert!(daemon.log().contains("uncovered_age="), "{}", daemon.log());
}

/// A burst that ends within one interval still costs exactly one token,
/// after it (and none is requested once it is covered).
#[test]
fn a_burst_within_one_interval_costs_one_token() {
    let files = names(1000);
    let site = Site::watched("200ms", &files).setting(Table::Watch, "token_interval = \"10s\"");
    let _daemon = site.watch();
    let started = Instant::now();
    for name in &files {
        site.write(name, b"v2");
    }
    let last: HashMap<String, Instant> = files.iter().map(|f| (f.clone(), started)).collect();
    site.api
        .wait_for("the whole burst", WAIT, |rs| all_sent_after(rs, &last));
    wait_settled(&site);
    let timeline = Timeline::of(&site.api.requests(), GOOD_KEY);
    let span = timeline
        .accepted
        .last()
        .unwrap()
        .duration_since(timeline.accepted[0]);
    assert!(
        span < Duration::from_secs(10),
        "the burst must end within one interval to prove anything; {timeline}"
    );
    assert_eq!(timeline.tokens.len(), 1, "{timeline}");
    timeline.check(Duration::from_secs(10));
}

/// Each account's tokens follow its own accepted invalidations: a site that
/// keeps changing gets its paced tokens, a quiet one on another account one
/// token after its single edit.
#[test]
fn each_account_gets_tokens_for_its_own_acceptances() {
    let files = names(600);
    let site = Site::with_keys(&[KEY_A, KEY_B])
        .shop(KEY_B)
        .fast_watch("200ms")
        .setting(Table::Watch, &interval())
        .files(&files);
    let shop = site.at("shop/s.jpg");
    std::fs::write(&shop, b"1").unwrap();
    let site = site.baselined();
    let _daemon = site.watch();
    std::fs::write(&shop, b"2").unwrap();
    let (last, _) = churn(&site, &files, 200, Duration::from_secs(7));
    site.api.wait_for("every edit", WAIT, |rs| {
        all_sent_after(rs, &last) && accepted(rs).contains(&shop_url("s.jpg"))
    });
    wait_settled(&site);
    let rs = site.api.requests();
    let media = Timeline::of(&rs, KEY_A);
    let shop = Timeline::of(&rs, KEY_B);
    eprintln!("media: {media}\nshop: {shop}");
    media.check(INTERVAL);
    shop.check(INTERVAL);
    assert!(
        media.during() >= 2,
        "paced tokens for the busy site; {media}"
    );
    assert_eq!(shop.tokens.len(), 1, "one token for the quiet site; {shop}");
}

/// An accepted invalidation whose token cannot be published stays
/// uncovered: `status`, `/metrics`, `/healthz` and the logs show its age,
/// with nothing owed; once a token is published, all is well again.
#[test]
fn the_uncovered_age_is_shown_and_turns_health_red() {
    let addr = free_addr();
    let mut site = Site::watched("100ms", &["a.jpg"])
        .setting(Table::Watch, "max_backoff = \"500ms\"")
        .setting(Table::Metrics, &format!("listen = \"{addr}\""))
        .setting(Table::Metrics, "max_owed_age = \"2s\"")
        .setting(Table::Token, "command = [\"false\"]");
    let daemon = site.watch();
    site.write("a.jpg", b"v2");
    site.api
        .wait_for("the edit", WAIT, |rs| accepted(rs) == [url("a.jpg")]);
    wait_until("health to turn unhealthy", WAIT, || {
        get(&addr, "/healthz").0 == 503
    });
    let (_, health) = get(&addr, "/healthz");
    assert!(health.contains("token"), "{health}");
    let (_, metrics) = get(&addr, "/metrics");
    assert!(
        gauge(&metrics, "optiwatch_uncovered_age_seconds") > 2.0,
        "{metrics}"
    );
    assert_eq!(gauge(&metrics, "optiwatch_assets_owed"), 0.0, "{metrics}");
    let status = site.status();
    assert_eq!(status["assets_owed"], 0, "{status}");
    assert!(
        status["uncovered_age_seconds"].as_u64().unwrap() >= 2,
        "{status}"
    );
    assert!(status["oldest_uncovered_at"].as_str().is_some(), "{status}");
    let text = site.run(&["status"]).expect(0);
    assert!(text.stdout.contains("uncovered    "), "{text}");
    assert!(daemon.log().contains("uncovered_age="), "{}", daemon.log());

    // The publisher is fixed: the token goes out and covers the edit.
    site.config.unset(Table::Token, "command");
    site.config.set(Table::Token, "file = \"token.txt\"");
    site.write_config();
    daemon.signal(libc::SIGHUP);
    wait_until("health to recover", WAIT, || {
        get(&addr, "/healthz").0 == 200
    });
    let status = wait_settled(&site);
    assert!(status["oldest_uncovered_at"].is_null(), "{status}");
    let (_, metrics) = get(&addr, "/metrics");
    assert_eq!(gauge(&metrics, "optiwatch_uncovered_age_seconds"), 0.0);
    let published = std::fs::read_to_string(site.at("token.txt")).unwrap();
    assert_eq!(Some(&published), site.api.tokens_issued().last());
}
