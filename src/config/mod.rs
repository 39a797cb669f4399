//! The configuration file: its TOML schema, where relative paths point, and
//! every check a config must pass before optiwatch touches a file or the API.
//!
//! Parsing is strict (unknown keys are errors) and every error names the key
//! with its line and column, so a typo never silently turns into a default.

mod hints;
mod keys;
pub mod lookup;
mod raw;
mod shared;
mod values;

use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

use keys::key_source;
use raw::{RawConfig, RawToken};
pub use shared::SharedConfig;
pub use values::{is_loopback, MAX_BATCH};

use crate::display::normalize;
use crate::exit_codes::UsageError;

pub const DEFAULT_BASE_URL: &str = "https://dashboard.optimole.com/api/optml/v2/cache";
pub const DEFAULT_KEY_ENV: &str = "OPTIMOLE_API_KEY";
/// The most file events `[watch] event_queue` may buffer.
pub const MAX_EVENT_QUEUE: usize = 1 << 20;

/// A loaded, validated configuration. Paths in it are absolute.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from.
    pub path: PathBuf,
    /// The SQLite state store.
    pub state: PathBuf,
    /// Invalidate files seen for the first time (see README: cached 404s).
    pub invalidate_new: bool,
    pub api: ApiConfig,
    pub rules: Vec<RuleConfig>,
    pub token: TokenConfig,
    pub watch: WatchConfig,
    pub metrics: MetricsConfig,
    pub history: HistoryConfig,
    /// `[shared]`: the PostgreSQL store several nodes share, if any.
    pub shared: Option<SharedConfig>,
}

/// `[history]`: how long the store remembers what Optimole accepted
/// (`optiwatch history`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryConfig {
    /// Rows older than this are pruned.
    pub keep: Duration,
    /// At most this many rows are kept (the oldest go first).
    pub max_rows: u64,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            keep: Duration::from_secs(90 * 24 * 3600),
            max_rows: 1_000_000,
        }
    }
}

/// `[metrics]`: the daemon's HTTP endpoint for Prometheus and health checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Where to serve `/metrics` and `/healthz`; off when `None`.
    pub listen: Option<std::net::SocketAddr>,
    /// `/healthz` fails once assets have been owed longer than this.
    pub max_owed_age: Duration,
}

/// `[watch]`: how the daemon turns file events into flushes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchConfig {
    /// A path is acted on once it has been quiet this long.
    pub debounce: Duration,
    /// Minimum time between two token requests.
    pub token_interval: Duration,
    /// Poll every rule instead of using file events (NFS, SMB, FUSE).
    pub poll: bool,
    pub poll_interval: Duration,
    /// File events buffered between the watcher thread and the daemon;
    /// beyond it, events turn into a rescan.
    pub event_queue: usize,
    /// The longest pause between two tries while Optimole is unreachable.
    pub max_backoff: Duration,
    /// Serve the control socket `<state>.sock` (see `crate::control`).
    pub control: bool,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            debounce: Duration::from_millis(500),
            token_interval: Duration::from_secs(60),
            poll: false,
            poll_interval: Duration::from_secs(30),
            event_queue: 4096,
            max_backoff: Duration::from_secs(300),
            control: true,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub base_url: Url,
    pub key: KeySource,
    pub batch_size: usize,
    pub timeout: Duration,
    /// How long one run keeps retrying transient API failures before giving
    /// up and leaving the work owed.
    pub retry_for: Duration,
    /// Above this many assets of one domain in one flush, one domain
    /// invalidation replaces them (opt-in).
    pub domain_threshold: Option<usize>,
}

/// Where the API key comes from. The key itself is read only when needed, so
/// that `--dry-run` works without one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Env(String),
    File(PathBuf),
    /// A systemd credential: `$CREDENTIALS_DIRECTORY/<name>`.
    Credential(String),
}

#[derive(Debug, Clone)]
pub struct RuleConfig {
    pub dir: PathBuf,
    pub url: String,
    pub also: Vec<String>,
    /// `None` means the default image extensions.
    pub include: Option<Vec<String>>,
    pub exclude: Vec<String>,
    /// Always false: links are handled as aliases (see [`crate::links`]);
    /// Places outside the rule folders that links in this one may lead to
    /// and be read from (absolute).
    pub allow_outside: Vec<PathBuf>,
    /// The rule's own key, when it has one other than the `[api]` key
    /// (its account: [`crate::accounts::AccountId::of_rule`]).
    pub key: Option<KeySource>,
    /// The name of the rule's own key's account (`account = "shop"`);
    /// `None`: named by the key's source (see [`crate::accounts`]).
    pub account: Option<String>,
    /// The rule's own `[rules.token]`; `None` means the global `[token]`.
    pub token: Option<TokenConfig>,
}

impl KeySource {
    /// A stable name for the account behind this key, kept in the store.
    pub fn id(&self) -> String {
        match self {
            KeySource::Env(var) => format!("env:{var}"),
            KeySource::File(path) => format!("file:{}", path.display()),
            KeySource::Credential(name) => format!("credential:{name}"),
        }
    }
}

impl Config {
    /// Environment variables that hold API keys: never passed on to the
    /// token command, which may run third-party code.
    pub fn key_env_vars(&self) -> Vec<String> {
        let mut vars = vec![DEFAULT_KEY_ENV.to_string()];
        let sources =
            std::iter::once(&self.api.key).chain(self.rules.iter().filter_map(|r| r.key.as_ref()));
        for source in sources {
            if let KeySource::Env(var) = source {
                if !vars.contains(var) {
                    vars.push(var.clone());
                }
            }
        }
        vars
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenConfig {
    pub file: Option<PathBuf>,
    pub command: Option<Vec<String>>,
    pub command_timeout: Duration,
}

impl Config {
    /// Reads and validates the config file. Every failure is a [`UsageError`].
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let path = crate::display::from_cwd(path)?;
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(UsageError(format!(
                    "config file {} not found: pass --config FILE, set OPTIWATCH_CONFIG, \
                     or start from watcher.example.toml",
                    path.display()
                ))
                .into())
            }
            Err(e) => {
                return Err(
                    UsageError(format!("cannot read config file {}: {e}", path.display())).into(),
                )
            }
        };
        Self::parse(&text, &path).map_err(|msg| {
            // The parser's message quotes the config line; a URL there may
            // carry a password (refused, but it must not be echoed either).
            let msg = hide_credentials(msg.trim_end());
            UsageError(format!("config {}: {msg}", path.display())).into()
        })
    }

    /// Parses config text; `path` anchors relative paths. Errors are
    /// messages with line and column.
    pub fn parse(text: &str, path: &Path) -> Result<Config, String> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| hints::explain(text, &e))?;
        let base = path.parent().unwrap_or(Path::new("/")).to_path_buf();
        let at = |span: std::ops::Range<usize>| locate(text, span.start);

        let raw_rules = raw.rules.unwrap_or_default();
        if raw_rules.is_empty() {
            return Err(
                "no [[rules]]: add at least one [[rules]] table with `dir` and `url`".into(),
            );
        }
        let mut rules: Vec<RuleConfig> = Vec::with_capacity(raw_rules.len());
        for spanned in raw_rules {
            let span = spanned.span();
            let raw = spanned.into_inner();
            let dir = normalize(&base, &raw.dir);
            if rules.iter().any(|r| r.dir == dir) {
                return Err(format!(
                    "{}: rules.dir {} is used by two [[rules]]: merge them (use `also` for extra URL prefixes)",
                    at(span),
                    dir.display()
                ));
            }
            if let Some(follow) = raw.follow_symlinks.as_ref().filter(|f| *f.get_ref()) {
                return Err(format!(
                    "{}: rules.follow_symlinks = true is no longer supported: links inside rule folders \
                     are always followed as aliases of what they lead to, and links that lead outside \
                     are read only from places listed in `allow_outside = [\"/path\"]`; remove the key",
                    at(follow.span())
                ));
            }
            let key = key_source(
                text,
                &base,
                "rules",
                [raw.key_env, raw.key_file, raw.key_credential],
            )?;
            rules.push(RuleConfig {
                dir,
                key,
                account: raw.account,
                token: raw.token.map(|t| token_config(&base, t)),
                url: raw.url.0,
                also: raw.also.into_iter().map(|p| p.0).collect(),
                include: raw.include.map(|v| v.into_iter().map(|p| p.0).collect()),
                exclude: raw.exclude.into_iter().map(|p| p.0).collect(),
                allow_outside: raw
                    .allow_outside
                    .iter()
                    .map(|p| normalize(&base, p))
                    .collect(),
            });
        }

        let key = key_source(
            text,
            &base,
            "api",
            [raw.api.key_env, raw.api.key_file, raw.api.key_credential],
        )?
        .unwrap_or_else(|| KeySource::Env(DEFAULT_KEY_ENV.to_string()));
        let api = ApiConfig {
            base_url: match raw.api.base_url {
                Some(b) => b.0,
                None => Url::parse(DEFAULT_BASE_URL).expect("default base URL parses"),
            },
            key,
            batch_size: raw.api.batch_size.map_or(MAX_BATCH, |b| b.0),
            timeout: raw.api.timeout.map_or(Duration::from_secs(30), |d| d.0),
            retry_for: raw.api.retry_for.map_or(Duration::from_secs(120), |d| d.0),
            domain_threshold: raw.api.domain_threshold,
        };
        // A rule key equal to the [api] key is the same account.
        for rule in &mut rules {
            if rule.key.as_ref() == Some(&api.key) {
                rule.key = None;
            }
        }
        crate::accounts::check_names(&rules)?;
        let token = token_config(&base, raw.token);
        let defaults = WatchConfig::default();
        let watch = WatchConfig {
            debounce: raw.watch.debounce.map_or(defaults.debounce, |d| d.0),
            token_interval: raw
                .watch
                .token_interval
                .map_or(defaults.token_interval, |d| d.0),
            poll: raw.watch.poll.unwrap_or(defaults.poll),
            poll_interval: match raw.watch.poll_interval {
                Some(d) if d.get_ref().0.is_zero() => {
                    return Err(format!(
                        "{}: watch.poll_interval must be more than zero",
                        at(d.span())
                    ))
                }
                Some(d) => d.into_inner().0,
                None => defaults.poll_interval,
            },
            event_queue: match raw.watch.event_queue {
                // Beyond the ceiling the daemon's channel cannot be built
                // (tokio panics above 2^61), and it would be memory, not
                // safety: a full queue already turns into a rescan.
                Some(n) if !(1..=MAX_EVENT_QUEUE).contains(n.get_ref()) => {
                    return Err(format!(
                        "{}: watch.event_queue must be 1 to {MAX_EVENT_QUEUE}",
                        at(n.span())
                    ))
                }
                Some(n) => n.into_inner(),
                None => defaults.event_queue,
            },
            max_backoff: raw.watch.max_backoff.map_or(defaults.max_backoff, |d| d.0),
            control: raw.watch.control.unwrap_or(defaults.control),
        };
        let metrics = MetricsConfig {
            listen: raw.metrics.listen.map(|l| l.0),
            max_owed_age: raw
                .metrics
                .max_owed_age
                .map_or(Duration::from_secs(900), |d| d.0),
        };
        let defaults = HistoryConfig::default();
        let history = HistoryConfig {
            keep: raw.history.keep.map_or(defaults.keep, |d| d.0),
            max_rows: raw.history.max_rows.unwrap_or(defaults.max_rows),
        };
        let state = normalize(&base, raw.state.as_deref().unwrap_or("optiwatch.db"));
        // The walk would read the store (and its -wal, -shm, .lock) like any
        // other file: hashing it opens and closes it, which drops this
        // process's SQLite locks, and it changes on every run.
        if let Some(rule) = rules.iter().find(|r| state.starts_with(&r.dir)) {
            return Err(format!(
                "state {} is inside the rule folder {}: optiwatch would read its own store as a                  site file; put `state` outside every rule folder (e.g. /var/lib/optiwatch/optiwatch.db)",
                state.display(),
                rule.dir.display()
            ));
        }
        let shared = match raw.shared {
            Some(s) => Some(shared::resolve(&base, s, at)?),
            None => None,
        };
        Ok(Config {
            path: path.to_path_buf(),
            shared,
            watch,
            metrics,
            history,
            state,
            invalidate_new: raw.invalidate_new,
            api,
            rules,
            token,
        })
    }
}

/// Replaces the user name and password of every `scheme://user:pass@host`
/// in `text` with `***`.
fn hide_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c == '/' || c == '"' || c == '\'' || c.is_whitespace())
            .unwrap_or(tail.len());
        match tail[..end].rfind('@') {
            Some(userinfo) => {
                out.push_str("***");
                rest = &tail[userinfo..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    // `?password=...` of a database URL.
    let mut hidden = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(at) = rest.find("password=") {
        let (head, tail) = rest.split_at(at + "password=".len());
        hidden.push_str(head);
        hidden.push_str("***");
        let end = tail
            .find(|c: char| c == '&' || c == '"' || c == '\'' || c.is_whitespace())
            .unwrap_or(tail.len());
        rest = &tail[end..];
    }
    hidden.push_str(rest);
    hidden
}

fn token_config(base: &Path, raw: RawToken) -> TokenConfig {
    TokenConfig {
        file: raw.file.map(|f| normalize(base, &f)),
        command: raw.command.map(|a| a.0),
        command_timeout: raw.command_timeout.map_or(Duration::from_secs(60), |d| d.0),
    }
}

/// `line L, column C` (both 1-based) of a byte offset.
fn locate(text: &str, offset: usize) -> String {
    // Spans start on a token, so on a char boundary; `get` keeps even a
    // wrong offset from panicking.
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("line {line}, column {column}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_parses_with_every_key() {
        let text = include_str!("../../watcher.example.toml");
        let cfg = Config::parse(text, Path::new("/etc/optiwatch/watcher.toml")).unwrap();
        assert_eq!(cfg.state, PathBuf::from("/etc/optiwatch/optiwatch.db"));
        assert_eq!(cfg.api.batch_size, 100);
        assert_eq!(cfg.rules[0].also.len(), 1);
        assert!(cfg.token.command.is_some());
        assert_eq!(cfg.watch, WatchConfig::default());
        assert_eq!(cfg.metrics.max_owed_age, Duration::from_secs(900));
    }

    #[test]
    fn credentials_in_quoted_lines_are_hidden() {
        assert_eq!(
            hide_credentials("5 | url = \"https://ed:s3cret@example.com/up\" and http://a.com/x@y"),
            "5 | url = \"https://***@example.com/up\" and http://a.com/x@y"
        );
    }

    #[test]
    fn locate_counts_lines_and_columns_from_one() {
        assert_eq!(locate("a = 1\nbb = 2\n", 8), "line 2, column 3");
    }
}
