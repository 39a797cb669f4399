//! `optiwatch status`: what the state store says, for a person or a
//! monitoring script. Read-only: it runs beside a daemon and never creates
//! the store. Beside a running daemon it adds the daemon's live state
//! (asked over the control socket): what is settling, the next token,
//! per-account holds.

use serde::Serialize;

use super::JsonArg;
use crate::accounts::{AccountId, Accounts};
use crate::config::Config;
use crate::control::client;
use crate::control::protocol::{Live, Op, Reply};
use crate::display::show_path;
use crate::exit_codes::ExitCode;
use crate::session::{Access, Session};
use crate::state::{lock_holder, Refused, TokenState};

#[derive(Debug, Serialize)]
pub struct Status {
    pub config: String,
    pub state: String,
    /// Whether the store exists yet (it is made by the first scan).
    pub exists: bool,
    pub state_bytes: u64,
    /// The process using the store now, if any (e.g. the daemon).
    pub running: Option<String>,
    pub rules: Vec<RuleStatus>,
    pub assets_owed: usize,
    /// Times are Unix seconds here, RFC 3339 (UTC) in `--json`.
    #[serde(serialize_with = "crate::rfc3339::serialize_opt")]
    pub oldest_owed_at: Option<i64>,
    /// "settled", "owed" or "fetched" (received, not yet published).
    pub token: &'static str,
    /// Assets Optimole refused by name: no longer sent until
    /// `invalidate --refused`, never dropped.
    pub assets_refused: usize,
    pub refused: Vec<Refused>,
    /// The oldest invalidation Optimole accepted that no
    /// published token covers yet (any account).
    #[serde(serialize_with = "crate::rfc3339::serialize_opt")]
    pub oldest_uncovered_at: Option<i64>,
    /// Seconds since then: the "uncovered age".
    pub uncovered_age_seconds: Option<u64>,
    #[serde(serialize_with = "crate::rfc3339::serialize_opt")]
    pub last_flush_at: Option<i64>,
    pub last_token: Option<String>,
    #[serde(serialize_with = "crate::rfc3339::serialize_opt")]
    pub last_token_at: Option<i64>,
    pub last_error: Option<String>,
    #[serde(serialize_with = "crate::rfc3339::serialize_opt")]
    pub last_error_at: Option<i64>,
    /// The running daemon's live state (`null`: no daemon answered).
    pub live: Option<Live>,
    /// Per Optimole account of the config (the `[api]` one, `default`,
    /// first), and any the store still owes work to.
    pub accounts: Vec<AccountStatus>,
    /// `[shared]`: the nodes and the shared outbox.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared: Option<crate::shared::status::SharedStatus>,
}

/// One account's share of the store.
#[derive(Debug, Serialize)]
pub struct AccountStatus {
    pub name: AccountId,
    /// "settled", "owed" or "fetched".
    pub token: &'static str,
    pub assets_owed: usize,
    pub assets_refused: usize,
    /// Its last accepted invalidation batch.
    #[serde(serialize_with = "crate::rfc3339::serialize_opt")]
    pub last_flush_at: Option<i64>,
    /// Seconds its oldest accepted invalidation has waited for a
    /// published token.
    pub uncovered_age_seconds: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct RuleStatus {
    pub dir: String,
    pub url: String,
    pub files: usize,
    /// Where `dir` leads when it is (or is reached through) a link.
    pub resolved: Option<String>,
    /// Symbolic links recorded under `dir`.
    pub links: usize,
}

pub fn run(config: &Config, args: JsonArg) -> anyhow::Result<ExitCode> {
    let status = status(config)?;
    super::emit(args.json, &status, || status.human(), &[])
}

fn status(config: &Config) -> anyhow::Result<Status> {
    let mut status = Status {
        config: show_path(&config.path),
        state: show_path(&config.state),
        exists: config.state.exists(),
        state_bytes: 0,
        running: None,
        rules: Vec::new(),
        assets_owed: 0,
        oldest_owed_at: None,
        token: "settled",
        assets_refused: 0,
        refused: Vec::new(),
        oldest_uncovered_at: None,
        uncovered_age_seconds: None,
        last_flush_at: None,
        last_token: None,
        last_token_at: None,
        last_error: None,
        last_error_at: None,
        live: None,
        accounts: Vec::new(),
        shared: match &config.shared {
            Some(shared) => Some(crate::shared::status::read(shared)?),
            None => None,
        },
    };
    status.live = live(config);
    if status.exists {
        status.running = lock_holder(&config.state);
    }
    let session = Session::open(config, Access::ReadOnly)?;
    let store = session.store();
    for rule in &config.rules {
        status.rules.push(RuleStatus {
            dir: show_path(&rule.dir),
            url: rule.url.clone(),
            files: match store {
                Some(store) => store.file_count_under(&rule.dir)?,
                None => 0,
            },
            resolved: crate::links::resolved_dir(&rule.dir).map(|p| show_path(&p)),
            links: match &store {
                Some(store) => store.link_count_under(&rule.dir)?,
                None => 0,
            },
        });
    }
    let Some(store) = store else {
        return Ok(status);
    };
    let number = |key: &str| -> anyhow::Result<Option<i64>> {
        Ok(store.meta(key)?.and_then(|v| v.parse().ok()))
    };
    status.state_bytes = store.size_bytes();
    status.assets_owed = store.owed_count()?;
    status.oldest_owed_at = store.oldest_owed_at()?;
    status.token = token_word(store.token_state(&AccountId::Default)?);
    status.refused = store.refused()?;
    status.assets_refused = status.refused.len();
    if let Some(since) = store.oldest_uncovered_at()? {
        let unix = since
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        status.oldest_uncovered_at = Some(i64::try_from(unix.as_secs()).unwrap_or(i64::MAX));
        status.uncovered_age_seconds = Some(
            std::time::SystemTime::now()
                .duration_since(since)
                .unwrap_or_default()
                .as_secs(),
        );
    }
    status.last_flush_at = number("last_flush_at")?;
    status.last_token = store.meta("last_token")?;
    status.last_token_at = number("last_token_at")?;
    status.last_error = store.meta("last_error")?;
    status.last_error_at = number("last_error_at")?;
    let mut ids = Accounts::ids_of(config);
    for id in store.accounts_with_work()? {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    for id in ids {
        let refused = status.refused.iter().filter(|r| r.account == id).count();
        status.accounts.push(AccountStatus {
            token: token_word(store.token_state(&id)?),
            assets_owed: store.owed_count_by(&id)?,
            assets_refused: refused,
            last_flush_at: store.last_accepted_at(&id)?,
            uncovered_age_seconds: store.uncovered_since(&id)?.map(|since| {
                std::time::SystemTime::now()
                    .duration_since(since)
                    .unwrap_or_default()
                    .as_secs()
            }),
            name: id,
        });
    }
    Ok(status)
}

/// How long `status` waits for a daemon's answer (it has it at hand).
const LIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The daemon's live state, when one answers; a failure to ask is logged,
/// the store's status is shown all the same.
fn live(config: &Config) -> Option<Live> {
    match client::ask(config, &Op::Status, LIVE_TIMEOUT) {
        Ok(Some(Reply::Status { live })) => Some(*live),
        Ok(None) => None,
        Ok(Some(other)) => {
            tracing::warn!(error = %client::unexpected(&other), "no live state from the daemon");
            None
        }
        Err(e) => {
            tracing::warn!(error = format!("{e:#}"), "no live state from the daemon");
            None
        }
    }
}

fn token_word(state: TokenState) -> &'static str {
    match state {
        TokenState::Settled => "settled",
        TokenState::Owed => "owed",
        TokenState::Fetched(_) => "fetched",
    }
}

impl Status {
    pub fn human(&self) -> String {
        let when = |t: Option<i64>| match t {
            Some(secs) => crate::rfc3339::from_secs(secs),
            None => "never".into(),
        };
        let mut out = format!("config       {}\n", self.config);
        if !self.exists {
            out.push_str(&format!(
                "state store  {} (not created yet: run `optiwatch scan`)\n",
                self.state
            ));
        } else {
            out.push_str(&format!(
                "state store  {} ({} KiB)\n",
                self.state,
                self.state_bytes / 1024
            ));
        }
        out.push_str(&format!(
            "running      {}\n",
            self.running
                .as_deref()
                .unwrap_or("no optiwatch process uses the store")
        ));
        for (i, rule) in self.rules.iter().enumerate() {
            out.push_str(&format!(
                "rule {}       {}{} -> {} ({} files tracked, {} links)\n",
                i + 1,
                rule.dir,
                match &rule.resolved {
                    Some(real) => format!(" (a link to {real})"),
                    None => String::new(),
                },
                rule.url,
                rule.files,
                rule.links
            ));
        }
        out.push_str(&format!(
            "owed         {} asset(s){}; token {}\n",
            self.assets_owed,
            match self.oldest_owed_at {
                Some(t) => format!(", oldest since {}", when(Some(t))),
                None => String::new(),
            },
            self.token
        ));
        // One line per account once there is more than the [api] one.
        if self.accounts.len() > 1 {
            for a in &self.accounts {
                out.push_str(&format!(
                    "account      {}: {} owed, {} refused, token {}, last flush {}, uncovered {}\n",
                    a.name,
                    a.assets_owed,
                    a.assets_refused,
                    a.token,
                    when(a.last_flush_at),
                    a.uncovered_age_seconds
                        .map_or_else(|| "none".to_string(), |s| format!("{s} s"))
                ));
            }
        }
        if !self.refused.is_empty() {
            out.push_str(&format!(
                "refused      {} asset(s) optimole refused by name; re-send them with `optiwatch invalidate --refused`\n",
                self.refused.len()
            ));
            const SHOWN: usize = 20;
            for r in self.refused.iter().take(SHOWN) {
                out.push_str(&format!(
                    "  {} ({}, at {})\n",
                    r.asset,
                    r.message,
                    when(Some(r.refused_at))
                ));
            }
            if self.refused.len() > SHOWN {
                out.push_str(&format!(
                    "  … and {} more (`optiwatch status --json` lists them all)\n",
                    self.refused.len() - SHOWN
                ));
            }
        }
        out.push_str(&match self.uncovered_age_seconds {
            Some(age) => format!(
                "uncovered    {age} s: accepted invalidations since {} wait for a published token\n",
                when(self.oldest_uncovered_at)
            ),
            None => "uncovered    none (every accepted invalidation is covered by a published token)\n".into(),
        });
        out.push_str(&format!("last flush   {}\n", when(self.last_flush_at)));
        out.push_str(&format!(
            "last token   {} at {}\n",
            self.last_token.as_deref().unwrap_or("none"),
            when(self.last_token_at)
        ));
        if let Some(live) = &self.live {
            out.push_str(&live_text(live));
        }
        if let Some(error) = &self.last_error {
            out.push_str(&format!(
                "last error   {} at {}\n",
                error,
                when(self.last_error_at)
            ));
        }
        if let Some(shared) = &self.shared {
            out.push_str(&shared.human());
        }
        out
    }
}

/// The daemon's part of the human status.
fn live_text(live: &Live) -> String {
    let secs = |s: Option<f64>| match s {
        Some(s) if s <= 0.0 => "now".to_string(),
        Some(s) => format!("in {s:.0} s"),
        None => "none due".to_string(),
    };
    let mut out = format!(
        "daemon       pid {}: {} path(s) settling, {} request(s) waiting\n",
        live.pid, live.settling, live.requests_waiting
    );
    for path in &live.settling_paths {
        out.push_str(&format!("  settling {path}\n"));
    }
    for a in &live.accounts {
        out.push_str(&format!(
            "account      {}: {} asset(s) queued, next token {}{}\n",
            a.account,
            a.assets_owed,
            secs(a.next_token_in_seconds),
            match (a.hold_for_seconds, a.failing) {
                (Some(hold), _) => format!(", held back {hold:.0} s after failures"),
                (None, true) => ", failing".to_string(),
                (None, false) => String::new(),
            }
        ));
    }
    out
}
