//! The report of a command that sends what is owed (`invalidate`,
//! `token`): what it sent, what Optimole accepted or refused, the token,
//! what is still owed. One flush of every account fills it.

use serde::{Deserialize, Serialize};

use crate::flush::{refused_error, Flusher, Policy, Sent};
use crate::session::Session;

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SendReport {
    /// Assets (URLs or hashes) sent, or with `dry_run` to be sent.
    pub assets: Vec<String>,
    pub domains: Vec<String>,
    pub all: bool,
    pub dry_run: bool,
    /// Assets Optimole accepted.
    pub invalidated: Vec<String>,
    pub requests: u32,
    pub token: Option<String>,
    pub pending: Vec<String>,
    /// Assets Optimole refused by name, after this run.
    pub refused: Vec<String>,
    pub errors: Vec<String>,
}

impl SendReport {
    /// Flushes every account of the session and notes the result.
    pub async fn flush(
        &mut self,
        session: &mut Session,
        flusher: &mut Flusher,
        policy: Policy<'_>,
    ) -> anyhow::Result<()> {
        let (store, accounts) = session.parts()?;
        let mut sent = Sent::default();
        let failed = flusher.run_all(store, accounts, policy, &mut sent).await?;
        self.errors.extend(failed);
        self.errors.extend(refused_error(&sent.refused));
        self.invalidated = sent.invalidated;
        self.token = sent.token;
        self.requests = accounts.requests();
        self.pending = store.owed()?;
        self.refused = store.refused()?.into_iter().map(|r| r.asset).collect();
        Ok(())
    }

    pub fn human(&self) -> String {
        let mut out = String::new();
        if self.dry_run {
            out.push_str("dry run: would invalidate\n");
            for asset in &self.assets {
                out.push_str(&format!("  {asset}\n"));
            }
            for domain in &self.domains {
                out.push_str(&format!("  every image of domain {domain}\n"));
            }
            if self.all {
                out.push_str("  every image of the account\n");
            }
            return out;
        }
        out.push_str(&format!(
            "invalidated {} asset(s){}{}; {} API request(s); {} asset(s) still owed\n",
            self.invalidated.len(),
            if self.domains.is_empty() {
                String::new()
            } else {
                format!(", domain(s) {}", self.domains.join(", "))
            },
            if self.all { ", the whole account" } else { "" },
            self.requests,
            self.pending.len()
        ));
        if !self.refused.is_empty() {
            out.push_str(&format!(
                "{} asset(s) refused by optimole (see `optiwatch status`)\n",
                self.refused.len()
            ));
        }
        if let Some(token) = &self.token {
            out.push_str(&format!("cache token: {token}\n"));
        }
        out
    }
}
