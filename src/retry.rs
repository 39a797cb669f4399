//! Retrying transient API failures: exponential backoff with jitter, never
//! sooner than the server's `Retry-After` (clamped to what is left of the
//! budget, so an absurd value can neither overflow a clock nor stall a run),
//! within a time budget. Fatal answers are returned at once: repeating them
//! would only hammer the API.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::api::ApiError;

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Give up once the next try would start after this much time.
    pub budget: Duration,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// One try, no retry: for callers that pace retries themselves.
    pub fn once() -> RetryPolicy {
        RetryPolicy::bounded(Duration::ZERO)
    }

    /// For one-shot commands: give up after `budget`.
    pub fn bounded(budget: Duration) -> RetryPolicy {
        RetryPolicy {
            budget,
            first_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

/// Runs `op` until it succeeds, fails fatally or the budget is spent.
pub async fn retry<T, F, Fut>(policy: RetryPolicy, what: &str, mut op: F) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
{
    let started = Instant::now();
    let mut backoff = policy.first_delay;
    let mut failures = 0u32;
    loop {
        let err = match op().await {
            Ok(value) => {
                if failures > 0 {
                    tracing::info!(what, failures, "succeeded after retrying");
                }
                return Ok(value);
            }
            Err(err) if err.is_retryable() => err,
            Err(err) => return Err(err),
        };
        failures = failures.saturating_add(1);
        // Full jitter in [backoff/2, backoff], so many clients that failed
        // together do not come back together.
        let jittered = backoff.mul_f64(0.5 + fastrand::f64() / 2.0);
        let left = policy.budget.saturating_sub(started.elapsed());
        let wait = pause(jittered, err.retry_after(), left);
        if wait > left {
            // The caller reports the error; saying it here too would double it.
            tracing::debug!(what, failures, error = %err, "giving up for now; the work stays owed");
            return Err(err);
        }
        if failures == 1 {
            tracing::warn!(what, error = %err, retry_in = ?wait, "transient failure, retrying");
        } else {
            tracing::debug!(what, failures, error = %err, retry_in = ?wait, "still failing");
        }
        tokio::time::sleep(wait).await;
        backoff = backoff.saturating_mul(2).min(policy.max_delay);
    }
}

/// The pause before the next try: the backoff, or the server's
/// `Retry-After` when longer, but never more of it than `left` (a
/// `Retry-After` of `u64::MAX` seconds or a date in year 9999 must not
/// silence a run beyond its budget).
pub fn pause(backoff: Duration, retry_after: Option<Duration>, left: Duration) -> Duration {
    backoff.max(retry_after.unwrap_or_default().min(left))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn retry_after_is_honoured_but_clamped_to_the_budget_left() {
        assert_eq!(pause(S(1), Some(S(5)), S(60)), S(5));
        assert_eq!(pause(S(1), None, S(60)), S(1));
        assert_eq!(pause(S(1), Some(S(u64::MAX)), S(30)), S(30));
        assert_eq!(pause(S(1), Some(Duration::MAX), Duration::ZERO), S(1));
    }

    #[tokio::test]
    async fn an_absurd_retry_after_ends_with_the_budget() {
        let policy = RetryPolicy {
            budget: Duration::from_millis(300),
            first_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(10),
        };
        let started = Instant::now();
        let mut tries = 0;
        let result: Result<(), ApiError> = retry(policy, "test", || {
            tries += 1;
            async {
                Err(ApiError::Transient {
                    message: "slow down".into(),
                    retry_after: Some(Duration::from_secs(u64::MAX)),
                })
            }
        })
        .await;
        assert!(result.is_err());
        assert!(tries >= 2, "retried at the end of the budget");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
