//! Control requests inside the sender: `invalidate` and `token` are owed
//! here (through the store, like any change), a `scan` arrives with the
//! report of the detector's reconcile; each then waits until a round of
//! flushing leaves nothing owed and every token published, and is answered
//! with what was sent meanwhile. A failure is answered once it has lasted
//! `[api] retry_for` (what a standalone command would have retried), or at
//! once when Optimole refuses the key or the base URL.

use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::accounts::Accounts;
use crate::api::ApiError;
use crate::commands::scan::report::ScanReport;
use crate::commands::sent::SendReport;
use crate::config::Config;
use crate::control::jobs::Job;
use crate::control::protocol::{Invalidation, Reply};
use crate::flush::{api_error, refused_error, Flusher, Outcome, Purge, Sent};
use crate::retry::RetryPolicy;
use crate::state::{Changes, Owed, Store, TokenState};

#[derive(Debug, Default)]
pub struct Waiters {
    list: Vec<Waiter>,
}

#[derive(Debug)]
enum Report {
    /// A scan whose reconcile has not reported yet.
    Reconciling(oneshot::Receiver<Result<Box<ScanReport>, String>>),
    Scan(Box<ScanReport>),
    Send(Box<SendReport>),
}

#[derive(Debug)]
struct Waiter {
    report: Report,
    reply: oneshot::Sender<Reply>,
    sent: Sent,
    /// The API requests of every account when it came.
    requests_before: u32,
    errors: Vec<String>,
    failing_since: Option<Instant>,
    fatal: bool,
}

impl Waiters {
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Takes a request on: owes its work, then waits. `held`: the errors
    /// of accounts held back after failures, which count as the request's
    /// own (a refused key is answered at once).
    #[allow(clippy::too_many_arguments)]
    pub async fn take(
        &mut self,
        job: Job,
        store: &mut Store,
        accounts: &Accounts,
        flusher: &mut Flusher,
        config: &Config,
        requests_before: u32,
        held: &[(String, bool)],
    ) {
        let (report, reply) = match job {
            Job::Wait {
                report,
                registered,
                reply,
            } => {
                let _ = registered.send(());
                (Report::Reconciling(report), reply)
            }
            Job::Token { reply } => {
                let owed = accounts.iter().try_for_each(|a| store.owe_token(&a.id));
                if let Err(e) = owed {
                    let _ = reply.send(Reply::error(format!("{e:#}")));
                    return;
                }
                (Report::Send(Box::default()), reply)
            }
            Job::Invalidate { asked, reply } => {
                let mut report = SendReport {
                    assets: asked.assets.iter().map(|a| a.asset.clone()).collect(),
                    domains: asked.domains.clone(),
                    all: asked.all,
                    ..SendReport::default()
                };
                match owe(store, accounts, flusher, config, asked, &mut report).await {
                    Ok(()) => (Report::Send(Box::new(report)), reply),
                    Err(reply_now) => {
                        let _ = reply.send(reply_now);
                        return;
                    }
                }
            }
            Job::Scan { reply, .. } => {
                let _ = reply.send(Reply::error("a scan went to the sender (a bug)"));
                return;
            }
        };
        self.list.push(Waiter {
            report,
            reply,
            sent: Sent::default(),
            requests_before,
            errors: held.iter().map(|(text, _)| text.clone()).collect(),
            failing_since: (!held.is_empty()).then(Instant::now),
            fatal: held.iter().any(|(_, fatal)| *fatal),
        });
    }

    /// Adds what one account's flush did to every waiting request.
    pub fn sent(&mut self, sent: &Sent, outcome: &Outcome) {
        for w in &mut self.list {
            w.sent.invalidated.extend(sent.invalidated.iter().cloned());
            w.sent.domains.extend(sent.domains.iter().cloned());
            w.sent.refused.extend(sent.refused.iter().cloned());
            if sent.token.is_some() {
                w.sent.token.clone_from(&sent.token);
            }
            if let Outcome::Failed(err) = outcome {
                w.failing_since.get_or_insert_with(Instant::now);
                w.fatal |= matches!(
                    api_error(err),
                    Some(ApiError::Unauthorized { .. } | ApiError::Misconfigured { .. })
                );
                let text = format!("{err:#}");
                if !w.errors.contains(&text) {
                    w.errors.push(text);
                }
            }
        }
    }

    /// After a round of flushing: answers the requests whose work is sent
    /// and covered by a published token, or that failed for good.
    pub fn answer(&mut self, store: &Store, accounts: &Accounts, retry_for: Duration) {
        if self.list.is_empty() {
            return;
        }
        // Reports first: a scan's recording happened before its report
        // came, so the store read below includes it.
        let mut failed = Vec::new();
        for (i, w) in self.list.iter_mut().enumerate() {
            if let Report::Reconciling(rx) = &mut w.report {
                match rx.try_recv() {
                    Ok(Ok(report)) => w.report = Report::Scan(report),
                    Ok(Err(message)) => failed.push((i, message)),
                    Err(oneshot::error::TryRecvError::Empty) => {}
                    Err(oneshot::error::TryRecvError::Closed) => failed.push((
                        i,
                        "the scan's reconcile failed; see the daemon's log".into(),
                    )),
                }
            }
        }
        for (i, message) in failed.into_iter().rev() {
            let w = self.list.remove(i);
            let _ = w.reply.send(Reply::error(message));
        }
        let settled = store.owed_count().is_ok_and(|n| n == 0)
            && accounts
                .iter()
                .all(|a| matches!(store.token_state(&a.id), Ok(TokenState::Settled)));
        let (done, waiting) = std::mem::take(&mut self.list).into_iter().partition(|w| {
            !matches!(w.report, Report::Reconciling(_))
                && (settled || w.fatal || w.failing_since.is_some_and(|t| t.elapsed() >= retry_for))
        });
        self.list = waiting;
        for mut w in done {
            // Work done after all: earlier failures were overcome.
            if settled && !w.fatal {
                w.errors.clear();
            }
            answer(w, store, accounts);
        }
    }
}

fn answer(w: Waiter, store: &Store, accounts: &Accounts) {
    let Waiter {
        report,
        reply: to,
        sent,
        requests_before,
        mut errors,
        ..
    } = w;
    errors.extend(refused_error(&sent.refused));
    let pending = store.owed().unwrap_or_default();
    let refused: Vec<String> = store
        .refused()
        .map(|r| r.into_iter().map(|r| r.asset).collect())
        .unwrap_or_default();
    let requests = accounts.requests().wrapping_sub(requests_before);
    let reply = match report {
        Report::Reconciling(_) => Reply::error("a scan was answered before its report (a bug)"),
        Report::Scan(mut r) => {
            r.errors.extend(errors);
            r.counts.invalidated = sent.invalidated.len();
            r.invalidated = sent.invalidated;
            r.token = sent.token;
            r.requests = requests;
            r.counts.pending = pending.len();
            r.pending = pending;
            r.counts.refused = refused.len();
            r.refused = refused;
            Reply::Scan { report: r }
        }
        Report::Send(mut r) => {
            r.errors.extend(errors);
            r.invalidated = sent.invalidated;
            r.token = sent.token;
            r.requests = requests;
            r.pending = pending;
            r.refused = refused;
            Reply::Sent { report: r }
        }
    };
    // The client may have given up (its --timeout): the work is done anyway.
    let _ = to.send(reply);
}

/// Owes what `invalidate` names, as the command does standalone: assets
/// into the outbox first (a failure below keeps them), then the purges.
async fn owe(
    store: &mut Store,
    accounts: &Accounts,
    flusher: &mut Flusher,
    config: &Config,
    asked: Invalidation,
    report: &mut SendReport,
) -> Result<(), Reply> {
    let Invalidation {
        assets,
        account,
        refused,
        ..
    } = asked;
    let owed: Vec<Owed> = assets.into_iter().map(Owed::from).collect();
    let failed = |e: anyhow::Error| Reply::error(format!("{e:#}"));
    let chosen = match &account {
        Some(name) => Some(accounts.by_name(name).map_err(|message| Reply::Error {
            message,
            usage: true,
        })?),
        None => None,
    };
    if refused {
        let again = store.owe_refused().map_err(failed)?;
        tracing::info!(assets = again.len(), "refused assets are owed again");
        report.assets.extend(again);
    }
    store
        .record(&Changes {
            assets: owed,
            ..Changes::default()
        })
        .map_err(failed)?;
    // Assets of an account this daemon does not have go to the [api] key's.
    crate::session::adopt_orphans(store, accounts).map_err(failed)?;
    let purges = report
        .domains
        .iter()
        .map(|d| Purge::Domain(d.clone()))
        .chain(report.all.then_some(Purge::Account))
        .collect::<Vec<_>>();
    if purges.is_empty() {
        return Ok(());
    }
    let retry = RetryPolicy::bounded(config.api.retry_for);
    for purge in purges {
        for target in purge.targets(accounts, chosen) {
            let Err(e) = flusher.purge(store, target, &purge, retry).await else {
                continue;
            };
            match api_error(&e) {
                Some(ApiError::Misconfigured { .. }) => {
                    return Err(Reply::Error {
                        message: format!("{e:#}"),
                        usage: true,
                    })
                }
                _ => report.errors.push(format!("account {}: {e:#}", target.id)),
            }
        }
    }
    Ok(())
}
