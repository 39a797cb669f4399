//! One run of the real binary, configured builder-style, and its outcome.

use std::ffi::OsStr;
use std::process::{Command, Output};

use serde_json::Value;

use super::{Daemon, Site, WAIT};

/// How the run finds its config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ConfigArg {
    /// `--config <the site's file>`.
    Flag,
    /// No flag: the binary looks the config up itself (from the working
    /// directory, the site's folder).
    LookedUp,
}

pub struct Run {
    pub(super) command: Command,
}

impl Run {
    pub(super) fn new(site: &Site, launcher: &[&str], config: ConfigArg) -> Run {
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
            .env_remove("OPTIWATCH_PAUSE_AT")
            .env_remove("RUST_LOG")
            .env("OPTIMOLE_API_KEY", &site.key)
            .envs(site.env.iter().map(|(k, v)| (k, v)));
        if config == ConfigArg::Flag {
            command.arg("--config").arg(site.config_path());
        }
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

    /// Stops the binary at the crash-test pause point `point` (SIGSTOP);
    /// see `src/failpoint.rs`.
    pub fn pause_at(self, point: &str) -> Run {
        self.env("OPTIWATCH_PAUSE_AT", point)
    }

    /// The command itself, for a test that runs it in its own way.
    pub fn command(self) -> Command {
        self.command
    }

    pub fn run(mut self) -> Outcome {
        let output = self.command.output().expect("the optiwatch binary runs");
        Outcome::from(output)
    }

    /// `watch` in the background, returned once it logs that it is
    /// watching.
    pub fn start_watch(self) -> Daemon {
        let daemon = self.arg("watch").spawn();
        daemon.wait_log("watching", WAIT);
        daemon
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
