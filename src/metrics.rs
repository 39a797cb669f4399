//! Visibility for `watch`: process-wide counters, and (with `[metrics]
//! listen`) an HTTP endpoint serving them in Prometheus text format at
//! `/metrics`, plus `/healthz`, which turns unhealthy (503) once assets have
//! been owed, or an accepted invalidation has waited for a published token
//! (its "uncovered age"), for longer than `[metrics] max_owed_age`.
//!
//! Counters are plain atomics in one static, so counting costs an atomic add
//! wherever it happens and nothing when nobody scrapes.

pub mod accounts;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

/// Upper bounds (seconds) of the API latency histogram.
const BUCKETS: [f64; 9] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// API request outcomes, in the order of [`Metrics::requests`].
/// Index 0 is success; the others follow `ApiError`'s variants.
pub const OUTCOMES: [&str; 7] = [
    "ok",
    "transient",
    "unauthorized",
    "too_many",
    "misconfigured",
    "not_accepted",
    "refused",
];

#[derive(Debug, Default)]
pub struct Metrics {
    pub events: AtomicU64,
    pub hashed: AtomicU64,
    pub invalidated: AtomicU64,
    pub owed: AtomicI64,
    /// Unix seconds when the oldest owed asset became owed; 0: none owed.
    pub oldest_owed_at: AtomicI64,
    /// Assets Optimole refused by name (the refused list).
    pub refused: AtomicI64,
    /// Unix milliseconds of the oldest accepted invalidation no published
    /// token covers yet; 0: none.
    pub oldest_uncovered_ms: AtomicI64,
    pub requests: [AtomicU64; OUTCOMES.len()],
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_micros: AtomicU64,
    pub tokens: AtomicU64,
    pub rescans: AtomicU64,
    pub last_success: AtomicI64,
}

pub static METRICS: Metrics = Metrics {
    events: AtomicU64::new(0),
    hashed: AtomicU64::new(0),
    invalidated: AtomicU64::new(0),
    owed: AtomicI64::new(0),
    oldest_owed_at: AtomicI64::new(0),
    refused: AtomicI64::new(0),
    oldest_uncovered_ms: AtomicI64::new(0),
    requests: [const { AtomicU64::new(0) }; OUTCOMES.len()],
    latency_buckets: [const { AtomicU64::new(0) }; BUCKETS.len()],
    latency_count: AtomicU64::new(0),
    latency_micros: AtomicU64::new(0),
    tokens: AtomicU64::new(0),
    rescans: AtomicU64::new(0),
    last_success: AtomicI64::new(0),
};

/// Adds `n` to a counter. Takes `usize` (what callers count with) so no
/// caller casts; a count beyond u64 saturates, and the atomic add wraps
/// rather than panics.
pub fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
}

/// Counts one API request by outcome (an index into [`OUTCOMES`]).
pub fn request(outcome: usize, took: Duration) {
    add(&METRICS.requests[outcome], 1);
    let secs = took.as_secs_f64();
    for (bound, bucket) in BUCKETS.iter().zip(&METRICS.latency_buckets) {
        if secs <= *bound {
            add(bucket, 1);
        }
    }
    add(&METRICS.latency_count, 1);
    let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
    METRICS.latency_micros.fetch_add(micros, Ordering::Relaxed);
    if outcome == 0 {
        METRICS.last_success.store(unix_now(), Ordering::Relaxed);
    }
}

/// Records what the store owes now.
pub fn owed(count: usize, oldest_at: Option<i64>) {
    METRICS.owed.store(count as i64, Ordering::Relaxed);
    METRICS
        .oldest_owed_at
        .store(oldest_at.unwrap_or(0), Ordering::Relaxed);
}

/// Records how many assets the refused list holds.
pub fn refused(count: usize) {
    let count = i64::try_from(count).unwrap_or(i64::MAX);
    METRICS.refused.store(count, Ordering::Relaxed);
}

/// Records the oldest accepted invalidation not yet covered by a token.
pub fn uncovered(oldest: Option<SystemTime>) {
    let ms = oldest
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| {
            i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1)
        });
    METRICS.oldest_uncovered_ms.store(ms, Ordering::Relaxed);
}

/// How long the oldest uncovered invalidation has waited; `None`: none.
pub fn uncovered_age() -> Option<Duration> {
    let ms = METRICS.oldest_uncovered_ms.load(Ordering::Relaxed);
    let since = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).ok().filter(|m| *m > 0)?);
    Some(SystemTime::now().duration_since(since).unwrap_or_default())
}

/// An age for logs: `1.5s`, or `-` for none.
pub fn age_text(age: Option<Duration>) -> String {
    age.map_or_else(|| "-".into(), |a| format!("{:.1}s", a.as_secs_f64()))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The Prometheus text exposition of every metric.
pub fn render() -> String {
    let m = &METRICS;
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    metric(
        "optiwatch_events_total",
        "counter",
        "File events seen.",
        get(&m.events).to_string(),
    );
    metric(
        "optiwatch_files_hashed_total",
        "counter",
        "Files hashed.",
        get(&m.hashed).to_string(),
    );
    metric(
        "optiwatch_assets_invalidated_total",
        "counter",
        "Assets Optimole accepted.",
        get(&m.invalidated).to_string(),
    );
    metric(
        "optiwatch_assets_owed",
        "gauge",
        "Assets recorded and not yet accepted.",
        m.owed.load(Ordering::Relaxed).to_string(),
    );
    metric(
        "optiwatch_assets_refused",
        "gauge",
        "Assets Optimole refused by name, kept until re-sent (invalidate --refused).",
        m.refused.load(Ordering::Relaxed).to_string(),
    );
    metric(
        "optiwatch_uncovered_age_seconds",
        "gauge",
        "Time since the oldest accepted invalidation not yet covered by a published token (0: none).",
        format!("{:.3}", uncovered_age().unwrap_or_default().as_secs_f64()),
    );
    metric(
        "optiwatch_tokens_requested_total",
        "counter",
        "Cache tokens received.",
        get(&m.tokens).to_string(),
    );
    metric(
        "optiwatch_rescans_total",
        "counter",
        "Reconcile scans after start-up (overflows, errors).",
        get(&m.rescans).to_string(),
    );
    metric(
        "optiwatch_last_success_timestamp_seconds",
        "gauge",
        "Unix time of the last request Optimole accepted.",
        m.last_success.load(Ordering::Relaxed).to_string(),
    );
    let _ = writeln!(out, "# HELP optiwatch_api_requests_total API requests by outcome.\n# TYPE optiwatch_api_requests_total counter");
    for (outcome, counter) in OUTCOMES.iter().zip(&m.requests) {
        let _ = writeln!(
            out,
            "optiwatch_api_requests_total{{outcome=\"{outcome}\"}} {}",
            get(counter)
        );
    }
    let name = "optiwatch_api_request_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} API request latency.\n# TYPE {name} histogram"
    );
    for (bound, bucket) in BUCKETS.iter().zip(&m.latency_buckets) {
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", get(bucket));
    }
    let count = get(&m.latency_count);
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum {}", get(&m.latency_micros) as f64 / 1e6);
    let _ = writeln!(out, "{name}_count {count}");
    accounts::render(&mut out);
    out
}

/// `/healthz`: 200 unless assets have been owed, or an accepted
/// invalidation has waited for its token, longer than `max_age`.
pub fn health(max_age: Duration) -> (StatusCode, String) {
    let oldest = METRICS.oldest_owed_at.load(Ordering::Relaxed);
    let owed = METRICS.owed.load(Ordering::Relaxed);
    let age = if oldest > 0 { unix_now() - oldest } else { 0 };
    if owed > 0 && age > max_age.as_secs() as i64 {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "unhealthy: {owed} asset(s) owed for {age}s (limit {}s)\n",
                max_age.as_secs()
            ),
        );
    }
    let uncovered = uncovered_age();
    if uncovered.is_some_and(|a| a > max_age) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "unhealthy: accepted invalidations wait for a published cache token for {} (limit {}s)\n",
                age_text(uncovered),
                max_age.as_secs()
            ),
        );
    }
    (
        StatusCode::OK,
        format!(
            "ok: {owed} asset(s) owed, uncovered age {}\n",
            age_text(uncovered)
        ),
    )
}

/// Serves `/metrics` and `/healthz` until the future is dropped.
pub async fn serve(listener: tokio::net::TcpListener, max_age: Duration) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/metrics", get(|| async { render() }))
        .route("/healthz", get(move || async move { health(max_age) }));
    axum::serve(listener, app).await?;
    Ok(())
}

/// Binds the listen address now, so a bad one fails start-up (or a reload)
/// with a clear message.
pub async fn bind(listen: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen} ([metrics] listen): {e}"))
}
