//! The wire format of the control socket, version 1: one JSON object per
//! line each way. A request is `{"version":1,"op":"scan"}` (or `invalidate`
//! with its assets, `token`, `status`); the answer is
//! `{"version":1,"reply":"scan","report":{…}}`, `"reply":"sent"`,
//! `"reply":"status"` or `{"version":1,"reply":"error","message":"…"}`.
//! The reports are the ones the standalone commands print.

use serde::{Deserialize, Serialize};

use crate::accounts::AccountId;
use crate::commands::scan::report::ScanReport;
use crate::commands::sent::SendReport;
use crate::state::{Owed, Reason};

pub const VERSION: u32 = 1;
/// The longest line either side reads: a request or a report listing
/// every path of a large site.
pub const MAX_LINE: u64 = 256 * 1024 * 1024;

#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub version: u32,
    #[serde(flatten)]
    pub op: Op,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Reconcile now; answer once what it found was sent and covered by a
    /// published token. `all_paths`: the report lists every path (`scan
    /// --json --all-paths`), else only the changed, new, deleted and
    /// touched ones.
    Scan {
        #[serde(default)]
        all_paths: bool,
    },
    /// Owe these assets (already mapped by the client), purge the domains
    /// or the account; answer once sent and covered.
    Invalidate(Invalidation),
    /// A fresh token for every account, sent without waiting for
    /// `token_interval`.
    Token,
    /// The daemon's live state.
    Status,
}

/// What `invalidate` asks the daemon for: its fields sit beside `"op"` on
/// the wire.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Invalidation {
    #[serde(default)]
    pub assets: Vec<Asset>,
    #[serde(default)]
    pub domains: Vec<String>,
    #[serde(default)]
    pub all: bool,
    /// `--account NAME`: only this account's purges (`--all`,
    /// `--domain`); `null`: every account concerned.
    #[serde(default)]
    pub account: Option<String>,
    /// `--refused`: owe the refused assets again.
    #[serde(default)]
    pub refused: bool,
}

/// An asset and its account (`null`: the `[api]` key's).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Asset {
    pub asset: String,
    pub account: Option<String>,
    /// The file it was named by, for history (none for URLs and hashes).
    #[serde(default)]
    pub path: Option<String>,
}

impl From<&Owed> for Asset {
    fn from(o: &Owed) -> Asset {
        Asset {
            asset: o.asset.clone(),
            account: match &o.account {
                AccountId::Default => None,
                AccountId::Key(name) => Some(name.clone()),
            },
            path: o.path.clone(),
        }
    }
}

impl From<Asset> for Owed {
    fn from(a: Asset) -> Owed {
        Owed {
            asset: a.asset,
            account: a.account.map_or(AccountId::Default, AccountId::Key),
            reason: Reason::Manual,
            path: a.path,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Response {
    pub version: u32,
    #[serde(flatten)]
    pub reply: Reply,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Scan {
        report: Box<ScanReport>,
    },
    Sent {
        report: Box<SendReport>,
    },
    Status {
        live: Box<Live>,
    },
    /// The request was not done; `usage`: the caller's to fix (exit 2).
    Error {
        message: String,
        #[serde(default)]
        usage: bool,
    },
}

impl Reply {
    pub fn error(message: impl Into<String>) -> Reply {
        Reply::Error {
            message: message.into(),
            usage: false,
        }
    }
}

/// What `status` shows of a running daemon.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Live {
    pub pid: u32,
    /// Paths with file events, waiting to be quiet for `debounce`.
    pub settling: usize,
    /// The first few of them.
    pub settling_paths: Vec<String>,
    /// Requests (`scan`, `invalidate`, `token`) waiting for their outcome.
    pub requests_waiting: usize,
    pub accounts: Vec<LiveAccount>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct LiveAccount {
    /// `default` for the `[api]` key's.
    pub account: String,
    pub assets_owed: usize,
    /// Seconds until the next token request is due (`0`: now; `null`:
    /// nothing is due).
    pub next_token_in_seconds: Option<f64>,
    /// Seconds the account is held back after failures (`null`: not).
    pub hold_for_seconds: Option<f64>,
    /// Whether its last attempt failed.
    pub failing: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_read_as_documented() {
        let r: Request = serde_json::from_str(r#"{"version":1,"op":"scan"}"#).unwrap();
        assert!(matches!(r.op, Op::Scan { all_paths: false }));
        let r: Request = serde_json::from_str(
            r#"{"version":1,"op":"invalidate","assets":[{"asset":"https://x/a.jpg","account":"shop"}]}"#,
        )
        .unwrap();
        let Op::Invalidate(asked) = r.op else {
            panic!("not an invalidate: {r:?}");
        };
        assert!(!asked.all);
        let owed = Owed::from(asked.assets[0].clone());
        assert_eq!(owed.account, AccountId::Key("shop".into()));
        assert_eq!(Asset::from(&owed).account.as_deref(), Some("shop"));
        assert!(serde_json::from_str::<Request>(r#"{"version":1,"op":"format"}"#).is_err());
    }

    #[test]
    fn answers_carry_their_version_and_kind() {
        let text = serde_json::to_string(&Response {
            version: VERSION,
            reply: Reply::error("no"),
        })
        .unwrap();
        assert_eq!(
            text,
            r#"{"version":1,"reply":"error","message":"no","usage":false}"#
        );
        let back: Response = serde_json::from_str(&text).unwrap();
        assert!(matches!(back.reply, Reply::Error { usage: false, .. }));
    }
}
