//! A run of the binary in the background (`watch`, or a scan a test stops
//! at a pause point), killed when dropped. Its stderr (the log) is
//! collected line by line so tests can wait for log lines.

use std::io::BufRead;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{is_stopped, Run};

pub struct Daemon {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    /// Reads the log until the process closes its stderr.
    reader: Option<JoinHandle<()>>,
}

impl Run {
    /// Starts the command in the background.
    pub fn spawn(mut self) -> Daemon {
        let mut child = self
            .command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the optiwatch binary starts");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
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
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
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
    pub fn stop_with(self, signal: i32, timeout: Duration) -> Option<i32> {
        self.signal(signal);
        self.wait(timeout)
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has stopped itself (a crash-test pause point);
    /// `None` once it has exited.
    pub fn paused(&mut self) -> Option<bool> {
        if !self.is_running() {
            return None;
        }
        Some(is_stopped(self.pid()))
    }

    /// SIGKILL, and reap.
    pub fn kill9(mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }

    /// Waits for the process to exit, returning its exit code.
    pub fn wait(mut self, timeout: Duration) -> Option<i32> {
        self.exit_within(timeout)
    }

    /// Waits for the process to exit and for the end of its log (which a
    /// child it left behind could hold open); returns the exit code and
    /// every log line.
    pub fn wait_with_log(mut self, timeout: Duration) -> (Option<i32>, Vec<String>) {
        let code = self.exit_within(timeout);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let lines = self.log.lock().unwrap().clone();
        (code, lines)
    }

    fn exit_within(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                panic!("did not exit within {timeout:?}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
