//! The Optimole cache API client: one HTTP call per method, answers read
//! tolerantly (both documented JSON shapes), failures sorted into what a
//! caller can act on. Retrying lives in `retry`, batching in `flush`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::config::{is_loopback, ApiConfig};
use crate::secret::ApiKey;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use serde_json::{json, Value};

mod answer;

use answer::clip;
pub use answer::parse_retry_after;

pub const USER_AGENT: &str = concat!("optiwatch/", env!("CARGO_PKG_VERSION"));

/// Why a call failed, sorted by what the caller should do. None of them
/// settles anything: only `Ok` does.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The key or account is refused: retrying will not help; a person must
    /// fix the key or the account.
    #[error("optimole refused the API key (HTTP {status}): {message}; check that the key is a Root key of an active account")]
    Unauthorized { status: u16, message: String },
    /// The batch holds more assets than the server takes: split it.
    #[error("optimole says too many assets in one request (HTTP {status}): {message}")]
    TooManyAssets { status: u16, message: String },
    /// Worth retrying later: 429, 5xx, timeouts, connection failures, an
    /// oversized answer.
    #[error("optimole is unavailable: {message}")]
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    /// 404 or 405: no such endpoint, so `[api] base_url` is wrong. Nothing
    /// more is sent until a person fixes it.
    #[error("optimole's cache API is not where [api] base_url points: {message}; fix base_url (default {default}); everything stays owed", default = crate::config::DEFAULT_BASE_URL)]
    Misconfigured { status: u16, message: String },
    /// Any other answer that is not a clear success (400, 413, an HTML
    /// page, a 3xx, a 200 that is not JSON or says failure): the work stays
    /// owed and is tried again with backoff.
    #[error("optimole did not accept the request (HTTP {status}): {message}; it stays owed and is sent again")]
    NotAccepted {
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    /// A refusal whose message names these assets of the request: they are
    /// set aside where the user sees them; the rest is sent again.
    #[error("optimole refused {} asset(s) by name (HTTP {status}): {message}", assets.len())]
    Refused {
        status: u16,
        message: String,
        assets: Vec<String>,
    },
}

impl ApiError {
    /// Worth the same request again after a pause.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ApiError::Transient { .. } | ApiError::NotAccepted { .. }
        )
    }

    /// The server's `Retry-After`, unclamped: callers bound it.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Transient { retry_after, .. } | ApiError::NotAccepted { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }

    /// The label of [`crate::metrics::OUTCOMES`] for this failure.
    fn outcome(&self) -> usize {
        match self {
            ApiError::Transient { .. } => 1,
            ApiError::Unauthorized { .. } => 2,
            ApiError::TooManyAssets { .. } => 3,
            ApiError::Misconfigured { .. } => 4,
            ApiError::NotAccepted { .. } => 5,
            ApiError::Refused { .. } => 6,
        }
    }
}

/// The most of an answer that is read; a larger one is a transient failure
/// (Optimole's answers are a few hundred bytes).
pub const MAX_ANSWER: usize = 256 * 1024;

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
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            // A followed 301/302 turns the POST into a GET that some page
            // answers 200: a redirect must be seen, not followed.
            .redirect(reqwest::redirect::Policy::none());
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
        self.send(
            "invalidate/asset",
            Some(json!({ "assets": assets })),
            assets,
        )
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
        if crate::publish::is_valid(token) {
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
        self.send(endpoint, body, &[]).await
    }

    /// One request; `assets` are those a refusal may name.
    async fn send(
        &self,
        endpoint: &str,
        body: Option<Value>,
        assets: &[String],
    ) -> Result<Value, ApiError> {
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
        let result = self.exchange(endpoint, &url, request, assets).await;
        let outcome = result.as_ref().map_or_else(ApiError::outcome, |_| 0);
        crate::metrics::request(outcome, started.elapsed());
        result
    }

    async fn exchange(
        &self,
        endpoint: &str,
        url: &str,
        request: reqwest::RequestBuilder,
        assets: &[String],
    ) -> Result<Value, ApiError> {
        let mut response = request.send().await.map_err(|e| ApiError::Transient {
            message: format!("{endpoint}: {}", describe(&e)),
            retry_after: None,
        })?;
        let status = response.status();
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
        };
        let head = answer::Head {
            url: url.to_string(),
            retry_after: header(RETRY_AFTER).and_then(parse_retry_after),
            location: header(LOCATION).map(str::to_string),
        };
        // The client's `timeout` covers reading the body too, so an answer
        // that trickles forever ends as a timeout.
        let mut body = Vec::new();
        if response
            .content_length()
            .is_some_and(|n| u64::try_from(MAX_ANSWER).is_ok_and(|max| n > max))
        {
            return Err(answer::oversized(status, &head, MAX_ANSWER));
        }
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) if body.len().saturating_add(chunk.len()) > MAX_ANSWER => {
                    return Err(answer::oversized(status, &head, MAX_ANSWER));
                }
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(e) => {
                    return Err(ApiError::Transient {
                        message: format!("{endpoint}: reading the answer: {}", describe(&e)),
                        retry_after: head.retry_after,
                    })
                }
            }
        }
        let body = self.key.redact(body);
        answer::judge(status, &head, &body, assets)
    }
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
