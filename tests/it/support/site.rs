//! A test site: a temp folder holding `media/` (the default rule's folder),
//! the config file and the store, with its own fake Optimole API. Built
//! builder-style, e.g.
//! `Site::new().fast_watch("100ms").setting(Table::Top, "invalidate_new = true").files(&["a.jpg"]).baselined()`,
//! and changed in place (`site.config.set(..)`) by tests that reload.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tempfile::TempDir;

use super::config::{ConfigText, Table};
use super::fake_api::{FakeApi, GOOD_KEY};
use super::run::ConfigArg;
use super::{Daemon, Outcome, Run, SHOP_URL, SITE_URL};

pub struct Site {
    pub root: TempDir,
    pub media: PathBuf,
    pub api: FakeApi,
    pub config: ConfigText,
    /// The `[api]` key, passed as `OPTIMOLE_API_KEY` to every run.
    pub key: String,
    /// More environment for every run (e.g. a second account's key).
    pub env: Vec<(String, OsString)>,
}

impl Site {
    /// A site with one rule (`media` → [`SITE_URL`]) and a fresh fake API
    /// that knows [`GOOD_KEY`].
    pub fn new() -> Site {
        Site::with_api(FakeApi::start())
    }

    /// A site for daemon tests: `files` baselined, then fast watch settings
    /// (see [`Site::fast_watch`]).
    pub fn watched(debounce: &str, files: &[impl AsRef<Path>]) -> Site {
        Site::new().files(files).baselined().fast_watch(debounce)
    }

    /// A site on a fake API that knows `keys`; the first is the `[api]` key.
    pub fn with_keys(keys: &[&str]) -> Site {
        let mut site = Site::with_api(FakeApi::start_with_keys(keys));
        site.key = keys[0].to_string();
        site
    }

    /// A site talking to a fake API set up by the caller.
    pub fn with_api(api: FakeApi) -> Site {
        let root = tempfile::Builder::new()
            .prefix("optiwatch-test")
            .tempdir()
            .unwrap();
        let media = root.path().join("media");
        std::fs::create_dir(&media).unwrap();
        let rules = format!("[[rules]]\ndir = \"media\"\nurl = \"{SITE_URL}\"\n");
        let config = ConfigText::new(&api.base_url(), rules);
        Site {
            root,
            media,
            api,
            config,
            key: GOOD_KEY.to_string(),
            env: Vec::new(),
        }
    }

    // --- the builder ---------------------------------------------------

    /// Sets `line` (`key = value`) in `table`.
    pub fn setting(mut self, table: Table, line: &str) -> Site {
        self.config.set(table, line);
        self
    }

    /// Daemon settings fast enough for tests: this debounce, a 1 s token
    /// interval.
    pub fn fast_watch(self, debounce: &str) -> Site {
        self.setting(Table::Watch, &format!("debounce = \"{debounce}\""))
            .setting(Table::Watch, "token_interval = \"1s\"")
    }

    /// Another `[[rules]]` table.
    pub fn rule(mut self, dir: &str, url: &str) -> Site {
        let rule = format!("[[rules]]\ndir = \"{dir}\"\nurl = \"{url}\"\n");
        self.config.rules.push_str(&rule);
        self
    }

    /// A line for the last `[[rules]]` table.
    pub fn rule_setting(mut self, line: &str) -> Site {
        self.config.rules.push_str(&format!("{line}\n"));
        self
    }

    /// A second account: the folder `shop` (made here) maps to
    /// [`SHOP_URL`] with the key in `$SHOP_KEY`, which every run gets as
    /// `key`.
    pub fn shop(self, key: &str) -> Site {
        std::fs::create_dir(self.at("shop")).unwrap();
        self.rule("shop", SHOP_URL)
            .rule_setting("key_env = \"SHOP_KEY\"")
            .env("SHOP_KEY", key)
    }

    /// The store in the folder `dir` of the site (made here) instead of
    /// beside the config.
    pub fn store_in(self, dir: &str) -> Site {
        std::fs::create_dir(self.at(dir)).unwrap();
        self.setting(Table::Top, &format!("state = \"{dir}/optiwatch.db\""))
    }

    /// An environment variable for every run.
    pub fn env(mut self, key: &str, value: impl Into<OsString>) -> Site {
        self.env.push((key.to_string(), value.into()));
        self
    }

    /// Writes each file of the media folder with the content `v1`.
    pub fn files(self, rels: &[impl AsRef<Path>]) -> Site {
        for rel in rels {
            self.write(rel, b"v1");
        }
        self
    }

    /// Runs a first `scan`, which records the baseline.
    pub fn baselined(self) -> Site {
        self.scan(&[]).expect(0);
        self
    }

    // --- files -----------------------------------------------------------

    /// A path in the media folder.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.media.join(rel)
    }

    /// A path in the site's folder (beside the config and the store).
    pub fn at(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.root.path().join(rel)
    }

    pub fn config_path(&self) -> PathBuf {
        self.at("watcher.toml")
    }

    /// Writes the config file as it is now.
    pub fn write_config(&self) {
        std::fs::write(self.config_path(), self.config.render()).unwrap();
    }

    /// Writes a file of the media folder, making its folders.
    pub fn write(&self, rel: impl AsRef<Path>, content: &[u8]) {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    /// Writes an executable shell script into the site's folder.
    pub fn script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.at(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
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

    // --- runs ------------------------------------------------------------

    /// The binary with `--config` and the site's environment.
    pub fn optiwatch(&self) -> Run {
        Run::new(self, &[], ConfigArg::Flag)
    }

    /// The binary without `--config`: it looks for its config itself.
    pub fn optiwatch_looking_up_config(&self) -> Run {
        Run::new(self, &[], ConfigArg::LookedUp)
    }

    /// Runs the binary through a launcher, e.g. `["unshare", "-Ur", ...]`:
    /// the launcher gets the binary's path and arguments after its own.
    pub fn optiwatch_via(&self, launcher: &[&str]) -> Run {
        Run::new(self, launcher, ConfigArg::Flag)
    }

    /// `optiwatch <args>`; asserts nothing.
    pub fn run(&self, args: &[&str]) -> Outcome {
        self.optiwatch().args(args).run()
    }

    /// `optiwatch scan --json` with extra args; asserts nothing.
    pub fn scan(&self, extra: &[&str]) -> Outcome {
        self.optiwatch().arg("scan").arg("--json").args(extra).run()
    }

    /// `optiwatch watch` in the background, returned once it logs that it
    /// is watching.
    pub fn watch(&self) -> Daemon {
        self.optiwatch().start_watch()
    }

    /// `examples/deploy-hook.sh <config>` (the config written first), with
    /// the binary under test first on `PATH` and the site's key.
    pub fn deploy_hook(&self, config: &Path) -> Command {
        self.write_config();
        let hook = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/deploy-hook.sh");
        let bin_dir = Path::new(env!("CARGO_BIN_EXE_optiwatch")).parent().unwrap();
        let path = format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut command = Command::new(hook);
        command
            .arg(config)
            .env("PATH", path)
            .env("OPTIMOLE_API_KEY", &self.key);
        command
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
