//! The per-account series of `/metrics`, labelled `account="<name>"`
//! with the account's name (`default` for the `[api]` key's; see
//! [`crate::accounts`]). The unlabelled series stay the totals over every
//! account. An account appears once something happened to it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::SystemTime;

use crate::accounts::AccountId;

#[derive(Debug, Default, Clone, Copy)]
struct Series {
    invalidated: u64,
    tokens: u64,
    owed: usize,
    refused: usize,
    /// When the oldest accepted invalidation no published token covers
    /// yet was accepted.
    uncovered_since: Option<SystemTime>,
}

static ACCOUNTS: Mutex<BTreeMap<String, Series>> = Mutex::new(BTreeMap::new());

fn with(account: &AccountId, change: impl FnOnce(&mut Series)) {
    // A poisoned lock only means a panic elsewhere; the counts are plain
    // numbers and stay usable.
    let mut map = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
    change(map.entry(account.to_string()).or_default());
}

/// Optimole accepted `n` assets of `account`.
pub fn invalidated(account: &AccountId, n: usize) {
    with(account, |s| {
        s.invalidated = s
            .invalidated
            .saturating_add(u64::try_from(n).unwrap_or(u64::MAX))
    });
}

/// Optimole handed `account` a token.
pub fn token(account: &AccountId) {
    with(account, |s| s.tokens = s.tokens.saturating_add(1));
}

/// What the store holds for `account` now.
pub fn state(
    account: &AccountId,
    owed: usize,
    refused: usize,
    uncovered_since: Option<SystemTime>,
) {
    with(account, |s| {
        s.owed = owed;
        s.refused = refused;
        s.uncovered_since = uncovered_since;
    });
}

/// A metric family: name, type, help, and its value for one account.
type Family<'a> = (&'a str, &'a str, &'a str, &'a dyn Fn(&Series) -> String);

/// The labelled series, in Prometheus text format.
pub(super) fn render(out: &mut String) {
    let map = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
    if map.is_empty() {
        return;
    }
    let now = SystemTime::now();
    let families: [Family<'_>; 5] = [
        (
            "optiwatch_account_assets_invalidated_total",
            "counter",
            "Assets Optimole accepted, per account.",
            &|s| s.invalidated.to_string(),
        ),
        (
            "optiwatch_account_tokens_received_total",
            "counter",
            "Cache tokens received, per account.",
            &|s| s.tokens.to_string(),
        ),
        (
            "optiwatch_account_assets_owed",
            "gauge",
            "Assets recorded and not yet accepted, per account.",
            &|s| s.owed.to_string(),
        ),
        (
            "optiwatch_account_assets_refused",
            "gauge",
            "Assets Optimole refused by name, per account.",
            &|s| s.refused.to_string(),
        ),
        (
            "optiwatch_account_uncovered_age_seconds",
            "gauge",
            "Time since the account's oldest accepted invalidation not yet covered by a published token (0: none).",
            &|s| {
                let age = s
                    .uncovered_since
                    .and_then(|t| now.duration_since(t).ok())
                    .unwrap_or_default();
                format!("{:.3}", age.as_secs_f64())
            },
        ),
    ];
    for (name, kind, help, value) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (account, series) in map.iter() {
            let label = account
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            let _ = writeln!(out, "{name}{{account=\"{label}\"}} {}", value(series));
        }
    }
}
