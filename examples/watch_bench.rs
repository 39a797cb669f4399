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
    let quick = std::env::var_os("WATCH_BENCH_QUICK").is_some();
    let (samples, burst, tracked, idle) = if quick {
        (10, 1_000, 10_000, Duration::from_secs(5))
    } else {
        (60, 10_000, 100_000, Duration::from_secs(60))
    };
    let bin = build_optiwatch()?;
    println!("machine: {} cores; optiwatch {}", cores(), bin.display());

    let (median, p99) = latency(&bin, samples)?;
    println!("latency close -> invalidate request, minus debounce {DEBOUNCE:?}: median {median:?}, p99 {p99:?} ({samples} edits)");

    let (invalidations, tokens) = burst_requests(&bin, burst)?;
    println!("burst of {burst} edits: {invalidations} invalidate requests (minimum {}), {tokens} token request(s)", burst.div_ceil(100));

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

/// A temp site with `files` baselined files and a running daemon.
struct Bench {
    dir: tempfile::TempDir,
    daemon: Child,
}

impl Bench {
    fn start(bin: &Path, api: &FakeApi, files: usize) -> Result<Bench, Error> {
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
                "[api]\nbase_url = \"{}\"\n[[rules]]\ndir = \"media\"\nurl = \"{URL}\"\n[watch]\ndebounce = \"{}ms\"\n",
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

fn latency(bin: &Path, samples: usize) -> Result<(Duration, Duration), Error> {
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
        lat.push(
            at.saturating_duration_since(closed)
                .saturating_sub(DEBOUNCE),
        );
    }
    lat.sort();
    let p99 = lat[((lat.len() as f64 * 0.99).ceil() as usize).min(lat.len()) - 1];
    Ok((lat[lat.len() / 2], p99))
}

fn burst_requests(bin: &Path, burst: usize) -> Result<(usize, usize), Error> {
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
    Ok((api.invalidate_requests().len(), api.token_requests().len()))
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
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
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
