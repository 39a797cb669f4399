//! Watch-mode benchmark (not a test): `cargo run --release --example watch_bench`.
//!
//! Runs the real `optiwatch watch` against the in-process fake Optimole API
//! and prints:
//! - latency from a file's close to its invalidate request reaching the fake
//!   API, minus the configured debounce (median and p99);
//! - requests used by a burst of 10,000 edits;
//! - resident memory while watching 100,000 files;
//! - CPU time used over 60 idle seconds.
//!
//! Set WATCH_BENCH_QUICK=1 for a short run (smaller numbers, 5 idle seconds).
//!
//! Single measures with machine-readable output (used by `bench/run.sh`):
//! set `WATCH_BENCH_ONLY` to a comma-separated list of
//! - `latency`: `WATCH_BENCH_SAMPLES` edits (default 60);
//! - `burst`: `WATCH_BENCH_BURST` edits at once (default 10000);
//! - `memory`: memory while watching `WATCH_BENCH_TRACKED` files (default
//!   100000) and CPU over `WATCH_BENCH_IDLE_SECS` idle seconds (default 60);
//! - `startup`: starts `optiwatch watch` with the existing config
//!   `WATCH_BENCH_CONFIG` (its store already baselined, nothing owed), times
//!   spawn -> the "watching" log line, reads VmHWM/VmRSS there, then stops it
//!   with SIGTERM; `WATCH_BENCH_RUNS` times (default 1);
//! - `serve`: runs the fake API until killed, printing its base URL and one
//!   line per request it receives;
//! - `tokens`: sustained change: `WATCH_BENCH_TOKEN_RATE` edits per second
//!   (default 434) for `WATCH_BENCH_TOKEN_SECS` seconds (default 60), round
//!   robin over `WATCH_BENCH_TOKEN_FILES` files (default 5000), with
//!   `token_interval` = `WATCH_BENCH_TOKEN_INTERVAL` seconds (default 10):
//!   token requests before the last accepted invalidation, the wait from
//!   each accepted invalidate request to the next token request (p50, p99,
//!   max) and the tokens after the last accepted invalidation (one: the
//!   final token).
//!
//! `WATCH_BENCH_BIN` names the optiwatch binary to run (default: build it).
//! Each then prints, besides its human line, one `bench NAME key=value...`
//! line on stdout (durations in microseconds, memory in KiB).

mod common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::build_optiwatch;
use common::fake_api::{FakeApi, GOOD_KEY};

const DEBOUNCE: Duration = Duration::from_millis(500);
const URL: &str = "https://example.com/uploads";

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    if let Some(only) = std::env::var_os("WATCH_BENCH_ONLY") {
        return only_mode(&only.to_string_lossy());
    }
    let quick = std::env::var_os("WATCH_BENCH_QUICK").is_some();
    let (samples, burst, tracked, idle) = if quick {
        (10, 1_000, 10_000, Duration::from_secs(5))
    } else {
        (60, 10_000, 100_000, Duration::from_secs(60))
    };
    let bin = build_optiwatch()?;
    println!("machine: {} cores; optiwatch {}", cores(), bin.display());

    let lat = latency(&bin, samples)?;
    let (median, p99) = (
        lat[lat.len() / 2].saturating_sub(DEBOUNCE),
        percentile(&lat, 99.0).saturating_sub(DEBOUNCE),
    );
    println!("latency close -> invalidate request, minus debounce {DEBOUNCE:?}: median {median:?}, p99 {p99:?} ({samples} edits)");

    let b = burst_requests(&bin, burst, Duration::ZERO)?;
    println!(
        "burst of {burst} edits: {} invalidate requests (minimum {}), {} token request(s)",
        b.invalidations,
        burst.div_ceil(100),
        b.tokens
    );

    let (rss, peak, cpu) = memory_and_idle(&bin, tracked, idle)?;
    println!(
        "watching {tracked} files: resident {} MiB now, {} MiB peak ({} bytes/file at peak)",
        rss / (1 << 20),
        peak / (1 << 20),
        peak / tracked as u64
    );
    println!("idle for {idle:?}: {cpu:?} of CPU time");
    Ok(())
}

fn env_num(name: &str, default: u64) -> Result<u64, Error> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("{name}={v:?} is not a number").into()),
        Err(_) => Ok(default),
    }
}

/// `WATCH_BENCH_ONLY=part,...`: the named measures only, each followed by a
/// `bench NAME key=value...` line.
fn only_mode(only: &str) -> Result<(), Error> {
    let parts: Vec<&str> = only
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    for part in &parts {
        if !["latency", "burst", "memory", "startup", "serve", "tokens"].contains(part) {
            return Err(format!(
                "WATCH_BENCH_ONLY: unknown part {part:?} (latency, burst, memory, startup, serve, tokens)"
            )
            .into());
        }
    }
    if parts.contains(&"serve") {
        return serve();
    }
    // WATCH_BENCH_BIN: an optiwatch binary to use instead of building one.
    let bin = match std::env::var_os("WATCH_BENCH_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => build_optiwatch()?,
    };
    for part in parts {
        match part {
            "latency" => {
                let samples = env_num("WATCH_BENCH_SAMPLES", 60)?.max(1) as usize;
                let lat = latency(&bin, samples)?;
                let (p50, p99) = (lat[lat.len() / 2], percentile(&lat, 99.0));
                println!("latency close -> invalidate request (debounce {DEBOUNCE:?} included): median {p50:?}, p99 {p99:?}, max {:?} ({samples} edits)", lat[lat.len() - 1]);
                println!(
                    "bench latency samples={samples} debounce_us={} p50_us={} p99_us={} max_us={}",
                    DEBOUNCE.as_micros(),
                    p50.as_micros(),
                    p99.as_micros(),
                    lat[lat.len() - 1].as_micros()
                );
            }
            "burst" => {
                let burst = env_num("WATCH_BENCH_BURST", 10_000)?.max(1) as usize;
                // Wait a little after the token so late extra requests are counted.
                let b = burst_requests(&bin, burst, Duration::from_secs(3))?;
                println!(
                    "burst of {burst} edits: {} invalidate requests (minimum {}; {} sent in all), {} token request(s) ({} sent in all), {} assets accepted",
                    b.invalidations, burst.div_ceil(100), b.invalidations_sent, b.tokens, b.tokens_sent, b.assets
                );
                println!(
                    "bench burst edits={burst} invalidate_ok={} invalidate_sent={} token_ok={} token_sent={} assets={} minimum={}",
                    b.invalidations,
                    b.invalidations_sent,
                    b.tokens,
                    b.tokens_sent,
                    b.assets,
                    burst.div_ceil(100)
                );
            }
            "memory" => {
                let tracked = env_num("WATCH_BENCH_TRACKED", 100_000)?.max(1) as usize;
                let idle = Duration::from_secs(env_num("WATCH_BENCH_IDLE_SECS", 60)?);
                let (rss, peak, cpu) = memory_and_idle(&bin, tracked, idle)?;
                println!(
                    "watching {tracked} files: resident {} MiB now, {} MiB peak; idle for {idle:?}: {cpu:?} of CPU time",
                    rss / (1 << 20),
                    peak / (1 << 20)
                );
                println!(
                    "bench memory files={tracked} vmrss_kib={} vmhwm_kib={} idle_us={} idle_cpu_us={}",
                    rss / 1024,
                    peak / 1024,
                    idle.as_micros(),
                    cpu.as_micros()
                );
            }
            "startup" => {
                let config = std::env::var_os("WATCH_BENCH_CONFIG").ok_or(
                    "startup needs WATCH_BENCH_CONFIG (a config whose store is baselined)",
                )?;
                let runs = env_num("WATCH_BENCH_RUNS", 1)?.max(1);
                for run in 1..=runs {
                    let s = startup(&bin, Path::new(&config))?;
                    println!(
                        "start-up to \"{}\": {:?}; resident {} MiB, {} MiB peak",
                        s.line,
                        s.elapsed,
                        s.vmrss_kib / 1024,
                        s.vmhwm_kib / 1024
                    );
                    println!(
                        "bench startup run={run} elapsed_us={} vmrss_kib={} vmhwm_kib={} folders={} files={}",
                        s.elapsed.as_micros(),
                        s.vmrss_kib,
                        s.vmhwm_kib,
                        s.folders,
                        s.files
                    );
                }
            }
            "tokens" => {
                let t = tokens(
                    &bin,
                    env_num("WATCH_BENCH_TOKEN_FILES", 5_000)?.max(1) as usize,
                    env_num("WATCH_BENCH_TOKEN_RATE", 434)?.max(1),
                    Duration::from_secs(env_num("WATCH_BENCH_TOKEN_SECS", 60)?),
                    Duration::from_secs(env_num("WATCH_BENCH_TOKEN_INTERVAL", 10)?.max(1)),
                )?;
                println!(
                    "{} edits over {:?} ({} per second; token_interval {:?}): {} invalidate requests accepted; {} token requests before the last of them, {} after it ({:?} after it); wait from an accepted invalidation to the next token request: p50 {:?}, p99 {:?}, max {:?}; {} edits never invalidated after their last write",
                    t.edits, t.length, t.rate, t.interval, t.invalidations, t.during, t.after,
                    t.final_after, t.p50, t.p99, t.max, t.missing
                );
                println!(
                    "bench tokens edits={} secs={} rate={} interval_us={} invalidate_ok={} tokens_during={} tokens_after={} final_after_us={} p50_us={} p99_us={} max_us={} missing={}",
                    t.edits,
                    t.length.as_secs(),
                    t.rate,
                    t.interval.as_micros(),
                    t.invalidations,
                    t.during,
                    t.after,
                    t.final_after.as_micros(),
                    t.p50.as_micros(),
                    t.p99.as_micros(),
                    t.max.as_micros(),
                    t.missing
                );
            }
            _ => unreachable!(),
        }
    }
    Ok(())
}

/// The value at `pct` percent of sorted samples (nearest rank). (The median
/// printed is `sorted[len / 2]`, as it always was.)
fn percentile(sorted: &[Duration], pct: f64) -> Duration {
    let rank = ((sorted.len() as f64 * pct / 100.0).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Runs the fake API until killed: prints `bench serve base_url=...`, then
/// one `bench request ...` line per request as it is answered.
fn serve() -> Result<(), Error> {
    let api = FakeApi::start();
    println!("bench serve base_url={} key={GOOD_KEY}", api.base_url());
    let mut shown = 0;
    loop {
        let rs = api.requests();
        // A request still in progress has status 0; show it once answered.
        while shown < rs.len() && rs[shown].status != 0 {
            let r = &rs[shown];
            println!(
                "bench request method={} path={} status={} assets={}",
                r.method,
                r.path,
                r.status,
                r.assets.len()
            );
            shown += 1;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Startup {
    elapsed: Duration,
    line: String,
    vmrss_kib: u64,
    vmhwm_kib: u64,
    folders: u64,
    files: u64,
}

/// Starts `optiwatch watch` with `config`, waits for its "watching" line,
/// reads its memory, then stops it with SIGTERM.
fn startup(bin: &Path, config: &Path) -> Result<Startup, Error> {
    let started = Instant::now();
    let mut daemon = Command::new(bin)
        .arg("--config")
        .arg(config)
        .arg("watch")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    let stderr = daemon.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut sent = false;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if !sent && line.contains("watching") {
                let _ = tx.send((Instant::now(), line));
                sent = true;
            }
        }
    });
    let got = rx.recv_timeout(Duration::from_secs(900));
    let pid = daemon.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    // SAFETY: kill(2) on our own child, which has not been reaped yet.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while daemon.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = daemon.kill();
            let _ = daemon.wait();
            return Err("the daemon did not stop within 30 s of SIGTERM".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = reader.join();
    let (at, line) = got.map_err(|_| "the daemon did not log its \"watching\" line")?;
    let kib = |key: &str| status_kib(&status, key);
    // "watching N folders and M files"
    let words: Vec<&str> = line.split_whitespace().collect();
    let number_before = |word: &str| -> u64 {
        words
            .windows(2)
            .rev()
            .find(|w| w[1].trim_matches(|c: char| !c.is_alphanumeric()) == word)
            .and_then(|w| w[0].parse().ok())
            .unwrap_or(0)
    };
    Ok(Startup {
        elapsed: at - started,
        vmrss_kib: kib("VmRSS:"),
        vmhwm_kib: kib("VmHWM:"),
        folders: number_before("folders"),
        files: number_before("files"),
        line: line
            .get(line.find("watching").unwrap_or(0)..)
            .unwrap_or(&line)
            .to_string(),
    })
}

/// A temp site with `files` baselined files and a running daemon.
struct Bench {
    dir: tempfile::TempDir,
    daemon: Child,
}

impl Bench {
    fn start(bin: &Path, api: &FakeApi, files: usize) -> Result<Bench, Error> {
        Bench::start_with(bin, api, files, "")
    }

    /// `watch_extra`: more `[watch]` settings, one per line.
    fn start_with(
        bin: &Path,
        api: &FakeApi,
        files: usize,
        watch_extra: &str,
    ) -> Result<Bench, Error> {
        let dir = tempfile::Builder::new()
            .prefix("optiwatch-bench")
            .tempdir()?;
        let media = dir.path().join("media");
        for n in 0..files {
            let path = file(&media, n);
            if n % 100 == 0 {
                std::fs::create_dir_all(path.parent().unwrap())?;
            }
            std::fs::write(path, format!("original {n}"))?;
        }
        let config = dir.path().join("watcher.toml");
        std::fs::write(
            &config,
            format!(
                "[api]\nbase_url = \"{}\"\n[[rules]]\ndir = \"media\"\nurl = \"{URL}\"\n[watch]\ndebounce = \"{}ms\"\n{watch_extra}",
                api.base_url(),
                DEBOUNCE.as_millis()
            ),
        )?;
        let run = |args: &[&str]| {
            let mut cmd = Command::new(bin);
            cmd.arg("--config")
                .arg(&config)
                .args(args)
                .env("OPTIMOLE_API_KEY", GOOD_KEY);
            cmd
        };
        if !run(&["-q", "scan"])
            .stdout(Stdio::null())
            .status()?
            .success()
        {
            return Err("baseline scan failed".into());
        }
        let mut daemon = run(&["watch"])
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()?;
        let (tx, rx) = mpsc::channel();
        let stderr = daemon.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if line.contains("watching") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(300))
            .map_err(|_| "the daemon did not start watching")?;
        Ok(Bench { dir, daemon })
    }

    fn path(&self, n: usize) -> PathBuf {
        file(&self.dir.path().join("media"), n)
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

fn file(media: &Path, n: usize) -> PathBuf {
    media.join(format!(
        "{}/{:02}/img{n}.jpg",
        2000 + n / 10_000,
        n / 100 % 100
    ))
}

fn url_of(n: usize) -> String {
    format!(
        "{URL}/{}/{:02}/img{n}.jpg",
        2000 + n / 10_000,
        n / 100 % 100
    )
}

/// Sorted latencies from a file's close to its invalidate request (debounce included).
fn latency(bin: &Path, samples: usize) -> Result<Vec<Duration>, Error> {
    let api = FakeApi::start();
    let bench = Bench::start(bin, &api, samples)?;
    let mut lat = Vec::new();
    for n in 0..samples {
        std::fs::write(bench.path(n), format!("edited {n}"))?;
        let closed = Instant::now();
        let want = url_of(n);
        let rs = api.wait_for("the edit", Duration::from_secs(30), |rs| {
            rs.iter().any(|r| r.assets.contains(&want))
        });
        let at = rs.iter().find(|r| r.assets.contains(&want)).unwrap().at;
        lat.push(at.saturating_duration_since(closed));
    }
    lat.sort();
    Ok(lat)
}

struct Burst {
    /// Successful invalidate and token requests.
    invalidations: usize,
    tokens: usize,
    /// Every invalidate and token request received, whatever the answer.
    invalidations_sent: usize,
    tokens_sent: usize,
    /// Assets in successful invalidate requests.
    assets: usize,
}

/// Requests used by `burst` edits at once; waits `linger` after the burst and
/// its token were received, so that late extra requests are counted.
fn burst_requests(bin: &Path, burst: usize, linger: Duration) -> Result<Burst, Error> {
    let api = FakeApi::start();
    let bench = Bench::start(bin, &api, burst)?;
    for n in 0..burst {
        std::fs::write(bench.path(n), format!("edited {n}"))?;
    }
    api.wait_for(
        "the whole burst and its token",
        Duration::from_secs(300),
        |rs| {
            rs.iter()
                .filter(|r| r.status == 200)
                .map(|r| r.assets.len())
                .sum::<usize>()
                >= burst
                && rs.iter().any(|r| r.path == "/token")
        },
    );
    std::thread::sleep(linger);
    let all = api.requests();
    let sent = |path: &str| all.iter().filter(|r| r.path == path).count();
    Ok(Burst {
        invalidations: api.invalidate_requests().len(),
        tokens: api.token_requests().len(),
        invalidations_sent: sent("/invalidate/asset"),
        tokens_sent: sent("/token"),
        assets: api.invalidated_assets().len(),
    })
}

struct Tokens {
    edits: usize,
    length: Duration,
    rate: u64,
    interval: Duration,
    invalidations: usize,
    /// Token requests before the last accepted invalidation, and after it.
    during: usize,
    after: usize,
    /// From the last accepted invalidation to the last token request.
    final_after: Duration,
    /// Waits from each accepted invalidate request to the next token request.
    p50: Duration,
    p99: Duration,
    max: Duration,
    /// Edits whose file was never invalidated after its last write.
    missing: usize,
}

/// Sustained change: `rate` edits per second for `length` under a running
/// daemon, then the token requests read from the fake API's record.
fn tokens(
    bin: &Path,
    files: usize,
    rate: u64,
    length: Duration,
    interval: Duration,
) -> Result<Tokens, Error> {
    let api = FakeApi::start();
    let extra = format!("token_interval = \"{}s\"\n", interval.as_secs());
    let bench = Bench::start_with(bin, &api, files, &extra)?;
    let mut last = vec![None; files];
    let started = Instant::now();
    let mut edits = 0usize;
    while started.elapsed() < length {
        let due = (started.elapsed().as_secs_f64() * rate as f64) as usize;
        while edits < due {
            let n = edits % files;
            std::fs::write(bench.path(n), format!("edit {edits}"))?;
            last[n] = Some(Instant::now());
            edits += 1;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let sent_after = |rs: &[common::fake_api::Recorded], n: usize, at: Instant| {
        let want = url_of(n);
        rs.iter()
            .any(|r| r.status == 200 && r.at > at && r.assets.contains(&want))
    };
    let deadline = Duration::from_secs(120) + interval * 2;
    api.wait_for("every edit and a token after it", deadline, |rs| {
        let last_ok = rs
            .iter()
            .filter(|r| r.status == 200 && r.path == "/invalidate/asset")
            .map(|r| r.at)
            .max();
        let token_after = rs
            .iter()
            .any(|r| r.status == 200 && r.path == "/token" && Some(r.at) > last_ok);
        token_after
            && last
                .iter()
                .enumerate()
                .all(|(n, at)| at.is_none_or(|at| sent_after(rs, n, at)))
    });
    // A token due after the final one would come within an interval.
    std::thread::sleep(interval + Duration::from_secs(1));
    let rs = api.requests();
    let accepted: Vec<Instant> = api.invalidate_requests().iter().map(|r| r.at).collect();
    let tokens: Vec<Instant> = api.token_requests().iter().map(|r| r.at).collect();
    let last_ok = *accepted.last().ok_or("nothing was invalidated")?;
    let mut waits: Vec<Duration> = accepted
        .iter()
        .map(|a| {
            tokens
                .iter()
                .find(|t| *t > a)
                .map_or(Duration::MAX, |t| t.duration_since(*a))
        })
        .collect();
    waits.sort();
    Ok(Tokens {
        edits,
        length,
        rate,
        interval,
        invalidations: accepted.len(),
        during: tokens.iter().filter(|t| **t < last_ok).count(),
        after: tokens.iter().filter(|t| **t > last_ok).count(),
        final_after: tokens
            .last()
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(last_ok)),
        p50: waits[waits.len() / 2],
        p99: percentile(&waits, 99.0),
        max: waits[waits.len() - 1],
        missing: last
            .iter()
            .enumerate()
            .filter(|(n, at)| at.is_some_and(|at| !sent_after(&rs, *n, at)))
            .count(),
    })
}

fn memory_and_idle(
    bin: &Path,
    files: usize,
    idle: Duration,
) -> Result<(u64, u64, Duration), Error> {
    let api = FakeApi::start();
    let bench = Bench::start(bin, &api, files)?;
    let pid = bench.daemon.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| status_kib(&status, key);
    let (rss, peak) = (kib("VmRSS:") * 1024, kib("VmHWM:") * 1024);
    let before = cpu_time(pid)?;
    std::thread::sleep(idle);
    let used = cpu_time(pid)? - before;
    Ok((rss, peak, used))
}

/// utime + stime of a process, from /proc/PID/stat.
fn cpu_time(pid: u32) -> Result<Duration, Error> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_name = &stat[stat.rfind(')').ok_or("bad /proc stat")? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of stat(5), counted from the state field (3rd).
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // SAFETY: sysconf has no memory effects.
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Ok(Duration::from_millis(ticks * 1000 / per_sec))
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A `VmRSS:`-style field of /proc/PID/status, in KiB (0 if absent).
fn status_kib(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
