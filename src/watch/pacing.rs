//! When the daemon asks Optimole for the next cache token of one account.
//!
//! Two rules, both measured with `[watch] token_interval`:
//! - at most one request per interval (from the start of the last one,
//!   remembered across restarts);
//! - while changes keep coming, an invalidation Optimole accepted waits at
//!   most one interval for a token request that covers it: the request is
//!   due one interval after the oldest accepted-but-uncovered invalidation.
//!   Measuring from that acceptance, not from the last token, lets a burst
//!   after a quiet spell share one token.
//!
//! Once the account owes no asset and nothing is settling, the owed token
//! goes as soon as the first rule allows: the final token after a change.
//! With nothing owed and nothing uncovered nothing is due, so an idle daemon
//! requests nothing.

use std::time::{Duration, SystemTime};

/// What one account's next token request depends on.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    pub interval: Duration,
    /// When the last token request started.
    pub last_request: Option<SystemTime>,
    /// The oldest accepted invalidation no published token covers.
    pub uncovered_since: Option<SystemTime>,
    /// A token is owed (or fetched and not yet published).
    pub owed: bool,
    /// Whether the account owes no asset and no path is settling.
    pub intake: Intake,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intake {
    /// Nothing owed, nothing settling: the change is complete.
    Quiet,
    /// Assets are owed or paths still settling: more is on its way.
    Busy,
}

/// When the next token request is due (`None`: nothing to request). A time
/// not after `now` means now.
pub fn next_request(now: SystemTime, p: &Pacing) -> Option<SystemTime> {
    if !p.owed {
        return None;
    }
    // A clock set back must not postpone tokens by the jump.
    let past = |t: SystemTime| t.min(now);
    let wanted = match p.intake {
        Intake::Quiet => now,
        Intake::Busy => past(p.uncovered_since?).checked_add(p.interval)?,
    };
    let earliest = match p.last_request {
        Some(last) => past(last).checked_add(p.interval)?,
        None => now,
    };
    Some(wanted.max(earliest))
}

#[cfg(test)]
mod tests {
    use super::*;

    const I: Duration = Duration::from_secs(10);

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
    }

    fn pacing(last: Option<u64>, uncovered: Option<u64>, intake: Intake) -> Pacing {
        Pacing {
            interval: I,
            last_request: last.map(at),
            uncovered_since: uncovered.map(at),
            owed: true,
            intake,
        }
    }

    #[test]
    fn idle_requests_nothing() {
        let mut p = pacing(Some(0), None, Intake::Quiet);
        p.owed = false;
        assert_eq!(next_request(at(100), &p), None);
        // Owed assets not yet accepted need no token yet.
        assert_eq!(
            next_request(at(100), &pacing(Some(0), None, Intake::Busy)),
            None
        );
    }

    #[test]
    fn churn_gets_a_token_one_interval_after_the_oldest_acceptance() {
        let p = pacing(Some(0), Some(3), Intake::Busy);
        assert_eq!(next_request(at(5), &p), Some(at(13)));
        // Long after the last token, still a full interval after the
        // acceptance: a burst shares one token.
        let p = pacing(Some(0), Some(500), Intake::Busy);
        assert_eq!(next_request(at(501), &p), Some(at(510)));
        let p = pacing(None, Some(500), Intake::Busy);
        assert_eq!(next_request(at(501), &p), Some(at(510)));
    }

    #[test]
    fn never_two_requests_within_one_interval() {
        // Uncovered since before the last request (it was not published).
        let p = pacing(Some(8), Some(1), Intake::Busy);
        assert_eq!(next_request(at(9), &p), Some(at(18)));
        let p = pacing(Some(8), Some(1), Intake::Quiet);
        assert_eq!(next_request(at(9), &p), Some(at(18)));
    }

    #[test]
    fn a_finished_change_gets_its_token_at_once() {
        let p = pacing(Some(0), Some(50), Intake::Quiet);
        assert_eq!(next_request(at(51), &p), Some(at(51)));
        let p = pacing(None, None, Intake::Quiet);
        assert_eq!(next_request(at(51), &p), Some(at(51)));
    }

    #[test]
    fn a_clock_set_back_does_not_postpone_tokens() {
        let p = pacing(Some(1000), Some(1000), Intake::Busy);
        assert_eq!(next_request(at(100), &p), Some(at(110)));
    }

    #[test]
    fn a_huge_interval_does_not_overflow() {
        let mut p = pacing(Some(0), Some(0), Intake::Busy);
        p.interval = Duration::MAX;
        assert_eq!(next_request(at(1), &p), None);
    }
}
