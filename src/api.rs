//! The Optimole cache API client: one HTTP call per method, answers read
//! tolerantly (both documented JSON shapes), failures sorted into what a
//! caller can act on. Retrying lives in `retry`, batching in `flush`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::config::{is_loopback, ApiConfig};
use crate::secret::ApiKey;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use serde_json::{json, Value};

pub const USER_AGENT: &str = concat!("optiwatch/", env!("CARGO_PKG_VERSION"));

/// Why a call failed, sorted by what the caller should do.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The key or account is refused: retrying will not help; a person must
    /// fix the key or the account.
    #[error("optimole refused the API key (HTTP {status}): {message}; check that the key is a Root key of an active account")]
    Unauthorized { status: u16, message: String },
    /// The batch holds more assets than the server takes: split it.
    #[error("optimole says too many assets in one request (HTTP {status}): {message}")]
    TooManyAssets { status: u16, message: String },
    /// Worth retrying later: 429, 5xx, timeouts, connection failures.
    #[error("optimole is unavailable: {message}")]
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    /// The request was refused for another reason (bad base_url, bad body):
    /// retrying the same request will not help.
    #[error("optimole rejected the request (HTTP {status}): {message}")]
    Rejected { status: u16, message: String },
}

impl ApiError {
    pub fn is_transient(&self) -> bool {
        matches!(self, ApiError::Transient { .. })
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Transient { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: ApiKey,
    /// Every HTTP request sent, retries included: what `--json` reports.
    requests: AtomicU32,
}

impl Client {
    pub fn new(cfg: &ApiConfig, key: ApiKey) -> anyhow::Result<Client> {
        let mut builder = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)));
        if is_loopback(&cfg.base_url) {
            // A proxy from the environment must not capture local traffic.
            builder = builder.no_proxy();
        }
        Ok(Client {
            http: builder.build()?,
            base: cfg.base_url.as_str().trim_end_matches('/').to_string(),
            key,
            requests: AtomicU32::new(0),
        })
    }

    pub fn requests(&self) -> u32 {
        self.requests.load(Ordering::Relaxed)
    }

    /// `POST /invalidate/asset`: at most the server's limit of assets.
    pub async fn invalidate_assets(&self, assets: &[String]) -> Result<(), ApiError> {
        self.post("invalidate/asset", Some(json!({ "assets": assets })))
            .await
            .map(drop)
    }

    /// `POST /invalidate/domain`: every cached image of one origin domain.
    pub async fn invalidate_domain(&self, domain: &str) -> Result<(), ApiError> {
        self.post("invalidate/domain", Some(json!({ "domain": domain })))
            .await
            .map(drop)
    }

    /// `POST /invalidate/all`: every cached image of the account.
    pub async fn invalidate_all(&self) -> Result<(), ApiError> {
        self.post("invalidate/all", None).await.map(drop)
    }

    /// `POST /token`: a fresh cache token.
    pub async fn token(&self) -> Result<String, ApiError> {
        let answer = self.post("token", None).await?;
        let token = answer
            .pointer("/data/token")
            .or_else(|| answer.get("data").filter(|d| d.is_string()))
            .or_else(|| answer.get("token"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        // The token ends up in files, argv and image URLs.
        if crate::token::is_valid(token) {
            crate::metrics::add(&crate::metrics::METRICS.tokens, 1);
            Ok(token.to_string())
        } else {
            Err(ApiError::Transient {
                message: format!(
                    "the token answer holds no usable token: {}",
                    clip(&answer.to_string())
                ),
                retry_after: None,
            })
        }
    }

    async fn post(&self, endpoint: &str, body: Option<Value>) -> Result<Value, ApiError> {
        let url = format!("{}/{endpoint}", self.base);
        let mut request = self
            .http
            .post(&url)
            .header(AUTHORIZATION, self.key.header());
        request = match body {
            Some(body) => request
                .header(CONTENT_TYPE, "application/json")
                .body(body.to_string()),
            None => request.header(CONTENT_TYPE, "application/json"),
        };
        self.requests.fetch_add(1, Ordering::Relaxed);
        let started = std::time::Instant::now();
        let result = self.exchange(endpoint, request).await;
        let outcome = match &result {
            Ok(_) => 0,
            Err(ApiError::Transient { .. }) => 1,
            Err(ApiError::Unauthorized { .. }) => 2,
            Err(ApiError::TooManyAssets { .. }) => 3,
            Err(ApiError::Rejected { .. }) => 4,
        };
        crate::metrics::request(outcome, started.elapsed());
        result
    }

    async fn exchange(
        &self,
        endpoint: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<Value, ApiError> {
        let response = request.send().await.map_err(|e| ApiError::Transient {
            message: format!("{endpoint}: {}", describe(&e)),
            retry_after: None,
        })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let text = response.text().await.map_err(|e| ApiError::Transient {
            message: format!("{endpoint}: reading the answer: {}", describe(&e)),
            retry_after: None,
        })?;
        let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let refused = answer.get("success") == Some(&Value::Bool(false));
        if status.is_success() && !refused {
            return Ok(answer);
        }
        let message = message_of(&answer).unwrap_or_else(|| {
            if text.trim().is_empty() {
                status
                    .canonical_reason()
                    .unwrap_or("no message")
                    .to_string()
            } else {
                clip(text.trim())
            }
        });
        Err(classify(status, message, retry_after))
    }
}

/// Sorts a refusal by status and Optimole's documented messages.
fn classify(status: StatusCode, message: String, retry_after: Option<Duration>) -> ApiError {
    let code = status.as_u16();
    let lower = message.to_ascii_lowercase();
    if lower.contains("too many assets") {
        ApiError::TooManyAssets {
            status: code,
            message,
        }
    } else if lower.contains("user not found")
        || lower.contains("user not active")
        || matches!(code, 401 | 403)
    {
        ApiError::Unauthorized {
            status: code,
            message,
        }
    } else if code == 429 || code == 408 || status.is_server_error() {
        ApiError::Transient {
            message: format!("HTTP {code}: {message}"),
            retry_after,
        }
    } else {
        ApiError::Rejected {
            status: code,
            message,
        }
    }
}

/// The human message in either documented error shape:
/// `{"code": .., "error": ".."}`, `{"success": false, "data": ..}` or a
/// `message` field.
fn message_of(answer: &Value) -> Option<String> {
    ["error", "message", "data", "code"]
        .iter()
        .filter_map(|k| answer.get(*k))
        .find_map(|v| match v {
            Value::String(s) if !s.is_empty() => Some(clip(s)),
            Value::Object(o) => o.get("message").and_then(Value::as_str).map(clip),
            _ => None,
        })
}

/// `Retry-After` as seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = humantime::parse_rfc3339_weak(value)
        .ok()
        .or_else(|| httpdate(value))?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// IMF-fixdate, e.g. `Wed, 21 Oct 2015 07:28:00 GMT`.
fn httpdate(value: &str) -> Option<std::time::SystemTime> {
    let parts: Vec<&str> = value.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = months.iter().position(|m| m == month)? + 1;
    let text = format!("{year}-{month:02}-{:0>2}T{time}Z", day);
    humantime::parse_rfc3339(&text).ok()
}

fn describe(e: &reqwest::Error) -> String {
    // reqwest's Display names the URL (which never holds the key); add the
    // innermost cause, which says what actually went wrong.
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if std::error::Error::source(cause).is_none() {
            text = format!("{text}: {cause}");
        }
        source = cause.source();
    }
    text
}

fn clip(text: &str) -> String {
    const MAX: usize = 300;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert!(parse_retry_after("soon").is_none());
    }

    #[test]
    fn documented_messages_are_fatal_or_splittable() {
        let c = |s: u16, m: &str| classify(StatusCode::from_u16(s).unwrap(), m.into(), None);
        assert!(matches!(
            c(400, "User not found"),
            ApiError::Unauthorized { .. }
        ));
        assert!(matches!(
            c(200, "User not active"),
            ApiError::Unauthorized { .. }
        ));
        assert!(matches!(
            c(400, "Too many assets to invalidate"),
            ApiError::TooManyAssets { .. }
        ));
        assert!(c(503, "busy").is_transient());
        assert!(c(429, "slow down").is_transient());
        assert!(matches!(c(404, "no route"), ApiError::Rejected { .. }));
    }

    #[test]
    fn message_is_found_in_both_shapes() {
        let old = serde_json::json!({"code": "user_not_found", "error": "User not found"});
        let v2 = serde_json::json!({"success": false, "data": "User not active"});
        assert_eq!(message_of(&old).as_deref(), Some("User not found"));
        assert_eq!(message_of(&v2).as_deref(), Some("User not active"));
    }
}
