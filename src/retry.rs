//! Retrying transient API failures: exponential backoff with jitter, never
//! sooner than the server's `Retry-After`, within a time budget. Fatal
//! answers are returned at once: repeating them would only hammer the API.

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
            Err(err) if err.is_transient() => err,
            Err(err) => return Err(err),
        };
        failures += 1;
        // Full jitter in [backoff/2, backoff], so many clients that failed
        // together do not come back together.
        let jittered = backoff.mul_f64(0.5 + fastrand::f64() / 2.0);
        let wait = jittered.max(err.retry_after().unwrap_or_default());
        if started.elapsed() + wait > policy.budget {
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
        backoff = (backoff * 2).min(policy.max_delay);
    }
}
