//! Test harness: a site (temp folder with a media tree and a config) wired to
//! a fresh fake Optimole API, and a builder that runs the real `optiwatch`
//! binary against it.

#![allow(dead_code)]

pub mod fake_api;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use fake_api::{FakeApi, GOOD_KEY};
use serde_json::Value;
use tempfile::TempDir;

pub const SITE_URL: &str = "https://example.com/uploads";

/// Pieces of the config file; tests append to them before running.
#[derive(Debug, Clone, Default)]
pub struct ConfigText {
    pub top: String,
    pub api: String,
    pub rules: String,
    pub tail: String,
}

pub struct Site {
    pub root: TempDir,
    pub media: PathBuf,
    pub api: FakeApi,
    pub config: ConfigText,
    pub key: String,
}

impl Site {
    pub fn new() -> Site {
        Site::with_api(FakeApi::start())
    }

    /// A site talking to a fake API set up by the caller.
    pub fn with_api(api: FakeApi) -> Site {
        let root = tempfile::Builder::new()
            .prefix("optiwatch-test")
            .tempdir()
            .unwrap();
        let media = root.path().join("media");
        std::fs::create_dir(&media).unwrap();
        let config = ConfigText {
            rules: format!("[[rules]]\ndir = \"media\"\nurl = \"{SITE_URL}\"\n"),
            ..ConfigText::default()
        };
        Site {
            root,
            media,
            api,
            config,
            key: GOOD_KEY.to_string(),
        }
    }

    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.media.join(rel)
    }

    pub fn config_path(&self) -> PathBuf {
        self.root.path().join("watcher.toml")
    }

    /// Writes the config file from its pieces.
    pub fn write_config(&self) {
        let c = &self.config;
        let text = format!(
            "{}\n[api]\nbase_url = \"{}\"\nretry_for = \"3s\"\n{}\n{}\n{}\n",
            c.top,
            self.api.base_url(),
            c.api,
            c.rules,
            c.tail
        );
        std::fs::write(self.config_path(), text).unwrap();
    }

    pub fn write(&self, rel: impl AsRef<Path>, content: &[u8]) {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    /// Moves the mtime forward without changing the content.
    pub fn touch(&self, rel: impl AsRef<Path>) {
        let file = std::fs::File::options()
            .write(true)
            .open(self.path(rel))
            .unwrap();
        let later = SystemTime::now() + Duration::from_secs(5);
        file.set_modified(later).unwrap();
    }

    pub fn remove(&self, rel: impl AsRef<Path>) {
        std::fs::remove_file(self.path(rel)).unwrap();
    }

    pub fn optiwatch(&self) -> Run {
        Run::new(self, &[])
    }

    /// Runs the binary through a launcher, e.g. `["unshare", "-Ur", ...]`:
    /// the launcher gets the binary's path and arguments after its own.
    pub fn optiwatch_via(&self, launcher: &[&str]) -> Run {
        Run::new(self, launcher)
    }

    /// `optiwatch scan --json` with extra args; asserts nothing.
    pub fn scan(&self, extra: &[&str]) -> Outcome {
        self.optiwatch().arg("scan").arg("--json").args(extra).run()
    }
}

/// One run of the real binary, configured builder-style.
pub struct Run {
    command: Command,
}

impl Run {
    fn new(site: &Site, launcher: &[&str]) -> Run {
        site.write_config();
        let binary = env!("CARGO_BIN_EXE_optiwatch");
        let mut command = match launcher.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        command
            .current_dir(site.root.path())
            .env_remove("OPTIWATCH_CONFIG")
            .env_remove("OPTIWATCH_LOG_FORMAT")
            .env_remove("RUST_LOG")
            .env("OPTIMOLE_API_KEY", &site.key)
            .arg("--config")
            .arg(site.config_path());
        Run { command }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Run {
        self.command.arg(arg);
        self
    }

    pub fn args(mut self, args: &[&str]) -> Run {
        self.command.args(args);
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Run {
        self.command.env(key, value);
        self
    }

    pub fn env_remove(mut self, key: &str) -> Run {
        self.command.env_remove(key);
        self
    }

    pub fn run(mut self) -> Outcome {
        let output = self.command.output().expect("the optiwatch binary runs");
        Outcome::from(output)
    }
}

#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Outcome {
    fn from(output: Output) -> Outcome {
        Outcome {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Outcome {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}):\n{self}"))
    }

    /// Asserts the exit code, showing all output when it differs.
    pub fn expect(self, code: i32) -> Outcome {
        assert_eq!(self.code, code, "unexpected exit code:\n{self}");
        self
    }

    pub fn list(&self, field: &str) -> Vec<String> {
        let json = self.json();
        json[field]
            .as_array()
            .unwrap_or_else(|| panic!("{field} is not a list in:\n{self}"))
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit code {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Sorted copy, for comparing sets of URLs.
pub fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// A running `optiwatch watch`, killed when dropped. Its stderr (the log)
/// is collected line by line so tests can wait for log lines.
pub struct Daemon {
    child: std::process::Child,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// Reads the log until the process closes its stderr.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Run {
    /// Starts the command in the background (for `watch`).
    pub fn spawn(mut self) -> Daemon {
        use std::io::BufRead;
        use std::process::Stdio;
        let mut child = self
            .command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the optiwatch binary starts");
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        Daemon {
            child,
            log,
            reader: Some(reader),
        }
    }
}

impl Site {
    /// `optiwatch watch` in the background, returned once it logs that it
    /// is watching.
    pub fn watch(&self) -> Daemon {
        let daemon = self.optiwatch().arg("watch").spawn();
        daemon.wait_log("watching", Duration::from_secs(20));
        daemon
    }
}

impl Daemon {
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits until a log line contains `needle`; panics with the log after
    /// `timeout`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        self.wait_lines(timeout, &format!("a log line with {needle:?}"), |lines| {
            lines.iter().any(|l| l.contains(needle))
        });
    }

    /// Waits until `count` log lines contain `needle`.
    pub fn wait_log_count(&self, needle: &str, count: usize, timeout: Duration) {
        self.wait_lines(
            timeout,
            &format!("{count} log lines with {needle:?}"),
            |lines| lines.iter().filter(|l| l.contains(needle)).count() >= count,
        );
    }

    fn wait_lines(&self, timeout: Duration, what: &str, done: impl Fn(&[String]) -> bool) {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if done(&self.log.lock().unwrap()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("timed out waiting for {what}; log:\n{}", self.log());
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Sends `signal` and waits for the exit code.
    pub fn stop_with(mut self, signal: i32, timeout: Duration) -> Option<i32> {
        self.signal(signal);
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if std::time::Instant::now() > deadline {
                panic!(
                    "did not exit within {timeout:?} of signal {signal}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Daemon {
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has stopped itself (a crash-test pause point);
    /// `None` once it has exited.
    pub fn is_stopped(&mut self) -> Option<bool> {
        if self.child.try_wait().unwrap().is_some() {
            return None;
        }
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).ok()?;
        let state = stat.rsplit(')').next()?.split_whitespace().next()?;
        Some(state == "T")
    }

    /// SIGKILL, and reap.
    pub fn kill9(mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }

    /// Waits for the process to exit, returning its exit code.
    pub fn wait(mut self, timeout: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if std::time::Instant::now() > deadline {
                panic!("did not exit within {timeout:?}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Daemon {
    /// Waits for the process to exit on its own and for the end of its
    /// log; returns the exit code and every log line.
    pub fn wait_with_log(mut self, timeout: Duration) -> (Option<i32>, Vec<String>) {
        let deadline = std::time::Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                panic!("did not exit within {timeout:?}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let lines = self.log.lock().unwrap().clone();
        (status.code(), lines)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `done` every 10 ms; panics with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Assets of the requests Optimole accepted, in order.
pub fn accepted(rs: &[fake_api::Recorded]) -> Vec<String> {
    rs.iter()
        .filter(|r| r.status == 200)
        .flat_map(|r| r.assets.clone())
        .collect()
}

impl Site {
    /// A site for daemon tests: `files` baselined by a scan, fast watch
    /// settings (`debounce`, a 1 s token interval).
    pub fn watched(api: FakeApi, files: &[&str], debounce: &str) -> Site {
        let mut site = Site::with_api(api);
        site.config.tail = format!("[watch]\ndebounce = \"{debounce}\"\ntoken_interval = \"1s\"\n");
        for rel in files {
            site.write(rel, b"v1");
        }
        site.scan(&[]).expect(0);
        site
    }

    /// `optiwatch status --json`.
    pub fn status(&self) -> Value {
        self.optiwatch()
            .args(&["status", "--json"])
            .run()
            .expect(0)
            .json()
    }
}
