//! `optiwatch history`: what Optimole accepted, when, why and in which
//! request, from the store's history (see `state::history`). Read-only:
//! it runs beside a daemon and never creates the store.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use serde::Serialize;

use crate::accounts::AccountId;
use crate::config::Config;
use crate::display::one_line;
use crate::exit_codes::{ExitCode, UsageError};
use crate::session::{Access, Session};
use crate::state::{Entry, Reason, TokenEntry};

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Only what was accepted since then: an age (`1d`, `2h30m`) or an RFC 3339 time
    #[arg(long, value_name = "AGE|TIME", default_value = "1d")]
    pub since: String,
    /// Only assets whose file path (or URL) matches this glob (`**` crosses folders)
    #[arg(long, value_name = "GLOB")]
    pub path: Option<String>,
    /// Only this account (`default` is the [api] key's)
    #[arg(long, value_name = "NAME")]
    pub account: Option<String>,
    /// At most this many entries: the newest
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Print one JSON object on stdout
    #[arg(long)]
    pub json: bool,
}

/// The `--json` object.
#[derive(Debug, Serialize)]
pub struct History {
    pub version: u32,
    pub entries: Vec<Line>,
    pub tokens: Vec<TokenLine>,
}

#[derive(Debug, Serialize)]
pub struct Line {
    /// RFC 3339, UTC.
    pub at: String,
    pub request: i64,
    pub account: AccountId,
    pub reason: Reason,
    pub url: String,
    pub path: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct TokenLine {
    pub at: String,
    pub request: i64,
    pub account: AccountId,
    /// The token's first characters.
    pub token: String,
}

pub fn run(config: &Config, args: HistoryArgs) -> anyhow::Result<ExitCode> {
    let history = history(config, &args)?;
    super::emit(args.json, &history, || history.human(), &[])
}

/// `--account` may name an account of an earlier config (history keeps
/// its rows), so an unknown name is no error, but a typo should not look
/// like a quiet day.
fn warn_if_unknown(config: &Config, asked: &AccountId) {
    let mut known: Vec<AccountId> = config.rules.iter().map(AccountId::of_rule).collect();
    known.push(AccountId::Default);
    known.sort();
    known.dedup();
    if !known.contains(asked) {
        let names: Vec<String> = known.iter().map(AccountId::to_string).collect();
        tracing::warn!(
            "the config has no account named {asked}: its accounts are {}; history still lists what an earlier config's account of that name did",
            names.join(", ")
        );
    }
}

fn history(config: &Config, args: &HistoryArgs) -> anyhow::Result<History> {
    let since = since(&args.since)?;
    let glob = match &args.path {
        Some(pattern) => Some(
            globset::GlobBuilder::new(pattern)
                .literal_separator(true)
                .build()
                .map_err(|e| UsageError(format!("--path {pattern:?} is not a valid glob: {e}")))?
                .compile_matcher(),
        ),
        None => None,
    };
    let account = args.account.as_deref().map(AccountId::named);
    if let Some(asked) = &account {
        warn_if_unknown(config, asked);
    }
    let mut out = History {
        version: 1,
        entries: Vec::new(),
        tokens: Vec::new(),
    };
    let session = Session::open(config, Access::ReadOnly)?;
    let Some(store) = session.store() else {
        return Ok(out);
    };
    let wanted = |a: &AccountId| account.as_ref().is_none_or(|want| want == a);
    // Only the newest `--limit` are kept while reading.
    let mut entries: VecDeque<Entry> = VecDeque::new();
    store.each_history(since, |e| {
        let matches = match &glob {
            None => true,
            Some(glob) => {
                e.path.as_deref().is_some_and(|p| glob.is_match(p)) || glob.is_match(&e.asset)
            }
        };
        if wanted(&e.account) && matches {
            entries.push_back(e);
            if args.limit.is_some_and(|limit| entries.len() > limit) {
                entries.pop_front();
            }
        }
    })?;
    let mut tokens: Vec<TokenEntry> = match glob {
        // Tokens have no path: a path filter asks about assets only.
        Some(_) => Vec::new(),
        None => store
            .token_history(since)?
            .into_iter()
            .filter(|t| wanted(&t.account))
            .collect(),
    };
    if let Some(limit) = args.limit {
        tokens.drain(..tokens.len().saturating_sub(limit));
    }
    out.entries = entries
        .into_iter()
        .map(|e| Line {
            at: rfc3339(e.at),
            request: e.request,
            account: e.account,
            reason: e.reason,
            url: e.asset,
            path: e.path,
        })
        .collect();
    out.tokens = tokens
        .into_iter()
        .map(|t| TokenLine {
            at: rfc3339(t.at),
            request: t.request,
            account: t.account,
            token: t.token,
        })
        .collect();
    Ok(out)
}

/// `--since`: an age back from now, or an RFC 3339 time; unix seconds.
fn since(text: &str) -> anyhow::Result<i64> {
    let at = match humantime::parse_duration(text) {
        Ok(age) => SystemTime::now()
            .checked_sub(age)
            .unwrap_or(UNIX_EPOCH),
        Err(_) => time(text).ok_or_else(|| {
            UsageError(format!(
                "--since {text:?} is neither an age (like 1d or 2h) nor an RFC 3339 time (like 2026-11-29T10:00:00Z)"
            ))
        })?,
    };
    let secs = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    Ok(i64::try_from(secs).unwrap_or(i64::MAX))
}

/// An RFC 3339 time: UTC (`Z`, or none) or with an offset (`+02:00`).
fn time(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    if let Ok(at) = humantime::parse_rfc3339_weak(text) {
        return Some(at);
    }
    let (base, offset) = text.split_at_checked(text.len().checked_sub(6)?)?;
    let east = match offset.as_bytes() {
        [b'+', _, _, b':', _, _] => true,
        [b'-', _, _, b':', _, _] => false,
        _ => return None,
    };
    let hours: u64 = offset.get(1..3)?.parse().ok()?;
    let minutes: u64 = offset.get(4..6)?.parse().ok()?;
    if hours > 23 || minutes > 59 {
        return None;
    }
    let local = humantime::parse_rfc3339_weak(base).ok()?;
    let shift = Duration::from_secs(hours * 3600 + minutes * 60);
    match east {
        true => local.checked_sub(shift),
        false => local.checked_add(shift),
    }
}

fn rfc3339(unix: i64) -> String {
    crate::rfc3339::from_secs(unix)
}

impl History {
    /// One line per invalidated asset, newest last, then the tokens.
    pub fn human(&self) -> String {
        let mut out = String::new();
        for e in &self.entries {
            let url = match e.reason {
                Reason::All => "(every image of the account)",
                _ => e.url.as_str(),
            };
            out.push_str(&format!(
                "{} {:<8} {} {}{}\n",
                e.at,
                e.reason.as_str(),
                e.account,
                one_line(url),
                e.path
                    .as_deref()
                    .map(|p| format!(" {}", one_line(p)))
                    .unwrap_or_default()
            ));
        }
        for t in &self.tokens {
            out.push_str(&format!("{} token    {} {}…\n", t.at, t.account, t.token));
        }
        if self.entries.is_empty() && self.tokens.is_empty() {
            out.push_str("nothing was invalidated in that time\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_an_age_or_a_time() {
        assert_eq!(since("2026-11-29T10:00:00Z").unwrap(), 1_795_946_400);
        let day_ago = since("1d").unwrap();
        let now = i64::try_from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        )
        .unwrap();
        assert!((now - 86_400 - day_ago).abs() <= 2);
        assert!(since("yesterday").is_err());
        assert_eq!(since("2026-11-29T11:30:00+01:30").unwrap(), 1_795_946_400);
        assert_eq!(since("2026-11-29T05:00:00-05:00").unwrap(), 1_795_946_400);
        assert!(since("2026-11-29T05:00:00-25:00").is_err());
        assert!(since("2026-11-29T05:00:00x05:00").is_err());
    }
}
