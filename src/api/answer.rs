//! What one HTTP answer from Optimole means: accepted, or which kind of
//! failure. Only an answer that positively says success may settle
//! anything (see `shared/optimole-cache-api.md`): a 2xx on the URL asked,
//! a JSON object, and no sign of failure in it. Everything else keeps the
//! work owed; the [`ApiError`] variant tells the caller whether to retry,
//! stop, fix the config or set named assets aside.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use super::ApiError;

/// The parts of an answer read before its body.
#[derive(Debug, Clone, Default)]
pub(super) struct Head {
    /// The URL asked (never holds the key): named in configuration errors.
    pub url: String,
    pub retry_after: Option<Duration>,
    /// Where a 3xx answer points.
    pub location: Option<String>,
}

/// Judges a complete answer. `assets` are the assets the request named (for
/// a refusal that names some of them); empty for other endpoints.
pub(super) fn judge(
    status: StatusCode,
    head: &Head,
    body: &[u8],
    assets: &[String],
) -> Result<Value, ApiError> {
    // Only an object is an answer: `true`, `"ok"` or `[]` say nothing.
    let answer: Option<Value> = serde_json::from_slice::<Value>(body)
        .ok()
        .filter(Value::is_object);
    if let Some(answer) = answer.as_ref().filter(|_| status.is_success()) {
        if !says_failure(answer) {
            return Ok(answer.clone());
        }
    }
    let text = String::from_utf8_lossy(body);
    let message = match answer.as_ref().and_then(message_of) {
        Some(message) => message,
        None if answer.is_some() && status.is_success() => {
            format!("the answer says failure: {}", clip(text.trim()))
        }
        None if status.is_success() => {
            format!("the answer is not a JSON object: {}", or_empty(&text))
        }
        None if text.trim().is_empty() => status.canonical_reason().unwrap_or("").to_string(),
        None => clip(text.trim()),
    };
    let err = classify(status, message, head);
    if let ApiError::NotAccepted {
        status, message, ..
    } = &err
    {
        let named = answer
            .as_ref()
            .filter(|_| may_name_assets(*status))
            .map(|a| named_assets(a, assets))
            .unwrap_or_default();
        if !named.is_empty() {
            return Err(ApiError::Refused {
                status: *status,
                message: message.clone(),
                assets: named,
            });
        }
    }
    Err(err)
}

/// An answer whose body was larger than the client reads: never accepted.
/// A refused key or a wrong URL is still recognised by its status alone.
pub(super) fn oversized(status: StatusCode, head: &Head, limit: usize) -> ApiError {
    let message = format!(
        "the answer is larger than {} KiB and was not read",
        limit / 1024
    );
    match classify(status, message.clone(), head) {
        err @ (ApiError::Unauthorized { .. } | ApiError::Misconfigured { .. }) => err,
        _ => ApiError::Transient {
            message: format!("HTTP {}: {message}", status.as_u16()),
            retry_after: head.retry_after,
        },
    }
}

/// Sorts a failed answer by status and Optimole's documented messages.
pub(super) fn classify(status: StatusCode, message: String, head: &Head) -> ApiError {
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
    } else if matches!(code, 404 | 405) {
        ApiError::Misconfigured {
            status: code,
            message: format!("{} answered HTTP {code} ({message})", head.url),
        }
    } else if code == 429 || code == 408 || status.is_server_error() {
        ApiError::Transient {
            message: format!("HTTP {code}: {message}"),
            retry_after: head.retry_after,
        }
    } else if status.is_redirection() {
        // reqwest follows no redirect (a followed 301/302 turns the POST
        // into a GET that some page "accepts"): Optimole's API never
        // redirects, so this is not Optimole answering.
        let to = head.location.as_deref().unwrap_or("nowhere");
        ApiError::NotAccepted {
            status: code,
            message: format!(
                "{} redirects to {}: optimole's API does not redirect; check [api] base_url",
                head.url,
                clip(to)
            ),
            retry_after: head.retry_after,
        }
    } else {
        ApiError::NotAccepted {
            status: code,
            message,
            retry_after: head.retry_after,
        }
    }
}

/// Whether a JSON answer says failure in any documented shape.
fn says_failure(answer: &Value) -> bool {
    if answer
        .get("success")
        .is_some_and(|s| s != &Value::Bool(true))
    {
        return true;
    }
    let error = answer.get("error").is_some_and(|e| match e {
        Value::Null | Value::Bool(false) => false,
        Value::String(s) => !s.is_empty(),
        _ => true,
    });
    error || answer.get("code").is_some_and(|c| !success_code(c))
}

/// `code` in Optimole's older shape: an HTTP-like number or a word.
fn success_code(code: &Value) -> bool {
    let number = match code {
        Value::Number(n) => n.as_u64(),
        Value::String(s) if s.eq_ignore_ascii_case("success") || s.eq_ignore_ascii_case("ok") => {
            return true
        }
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    number.is_some_and(|n| (200..300).contains(&n))
}

/// The human message in either documented error shape:
/// `{"code": .., "error": ".."}`, `{"success": false, "data": ..}` or a
/// `message` field.
pub(super) fn message_of(answer: &Value) -> Option<String> {
    message_text(answer).map(clip)
}

fn message_text(answer: &Value) -> Option<&str> {
    ["error", "message", "data", "code"]
        .iter()
        .filter_map(|k| answer.get(*k))
        .find_map(|v| match v {
            Value::String(s) if !s.is_empty() => Some(s.as_str()),
            Value::Object(o) => o.get("message").and_then(Value::as_str),
            _ => None,
        })
}

/// Refusals that can be about the content of the request. 401/403 (key),
/// 404/405 (URL), 408/429 (load) and 413 (size) are about something else.
fn may_name_assets(status: u16) -> bool {
    (400..500).contains(&status) && !matches!(status, 401 | 403 | 404 | 405 | 408 | 413 | 429)
}

/// The assets of the request that the answer's message names, each as a
/// whole word: `…/a.jpg` is not named by a message about `…/a.jpg.webp`.
/// Only the message is searched, never an echo of the request elsewhere in
/// the answer.
fn named_assets(answer: &Value, assets: &[String]) -> Vec<String> {
    let Some(text) = message_text(answer) else {
        return Vec::new();
    };
    let mut named: Vec<String> = Vec::new();
    for asset in assets {
        if !asset.is_empty() && names(text, asset) && !named.contains(asset) {
            named.push(asset.clone());
        }
    }
    named
}

fn names(text: &str, asset: &str) -> bool {
    let word = |c: char| c.is_alphanumeric() || "/%-_~?#&=+@".contains(c);
    // `at` and `at + asset.len()` bound a match, so both are char
    // boundaries: the slices below cannot panic.
    text.match_indices(asset).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let mut after = text[at + asset.len()..].chars();
        let next = after.next();
        let glued = match next {
            // "a.jpg." ends a sentence; "a.jpg.webp" is another file.
            Some('.' | ',' | ':' | ';') => after.next().is_some_and(word),
            Some(c) => word(c),
            None => false,
        };
        !before.is_some_and(|c| word(c) || c == '.') && !glued
    })
}

/// `Retry-After` as seconds or an HTTP date. Any value is returned as
/// given (up to `u64::MAX` seconds, or a date thousands of years ahead):
/// callers clamp it to their own limits before adding it to a clock.
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

fn or_empty(text: &str) -> String {
    match text.trim() {
        "" => "(empty)".to_string(),
        text => clip(text),
    }
}

pub(super) fn clip(text: &str) -> String {
    const MAX: usize = 300;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ASSET: &str = "https://example.com/uploads/a.jpg";

    fn head() -> Head {
        Head {
            url: "http://127.0.0.1:9/api/invalidate/asset".into(),
            ..Head::default()
        }
    }

    fn judged(status: u16, body: &str) -> Result<Value, ApiError> {
        let assets = [
            ASSET.to_string(),
            "https://example.com/uploads/b.jpg".into(),
        ];
        judge(
            StatusCode::from_u16(status).unwrap(),
            &head(),
            body.as_bytes(),
            &assets,
        )
    }

    #[test]
    fn only_a_json_answer_that_says_success_is_accepted() {
        assert!(judged(200, r#"{"success": true, "data": {}}"#).is_ok());
        assert!(judged(200, r#"{"code": 200, "data": {"token": "x"}}"#).is_ok());
        assert!(judged(200, r#"{"code": "success"}"#).is_ok());
        assert!(judged(201, r#"{"data": {}}"#).is_ok());
        for body in [
            r#"{"success": false}"#,
            r#"{"success": "false"}"#,
            r#"{"success": true, "error": "half of it failed"}"#,
            r#"{"code": "invalid_request", "data": {}}"#,
            r#"{"code": 500}"#,
            "<html><body>Welcome</body></html>",
            "",
            "true",
            r#"["ok"]"#,
        ] {
            let err = judged(200, body).expect_err(body);
            assert!(
                matches!(err, ApiError::NotAccepted { .. }),
                "{body}: {err:?}"
            );
            assert!(err.is_retryable(), "{body}");
        }
    }

    #[test]
    fn statuses_sort_into_what_a_caller_does() {
        let kind = |status: u16, body: &str| match judged(status, body).unwrap_err() {
            ApiError::Unauthorized { .. } => "fatal",
            ApiError::TooManyAssets { .. } => "split",
            ApiError::Transient { .. } => "transient",
            ApiError::Misconfigured { .. } => "config",
            ApiError::NotAccepted { .. } => "not accepted",
            ApiError::Refused { .. } => "refused",
        };
        assert_eq!(kind(400, r#"{"error": "User not found"}"#), "fatal");
        assert_eq!(
            kind(200, r#"{"success": false, "data": "User not active"}"#),
            "fatal"
        );
        assert_eq!(kind(401, ""), "fatal");
        assert_eq!(
            kind(400, r#"{"error": "Too many assets to invalidate"}"#),
            "split"
        );
        assert_eq!(kind(404, r#"{"error": "Not found"}"#), "config");
        assert_eq!(kind(405, "<html>Method Not Allowed</html>"), "config");
        assert_eq!(kind(503, "busy"), "transient");
        assert_eq!(
            kind(500, "<html><h1>Internal Server Error</h1></html>"),
            "transient"
        );
        assert_eq!(kind(429, ""), "transient");
        assert_eq!(kind(408, ""), "transient");
        assert_eq!(kind(400, r#"{"error": "bad request"}"#), "not accepted");
        assert_eq!(
            kind(413, "<html>Request Entity Too Large</html>"),
            "not accepted"
        );
        assert_eq!(kind(422, r#"{"error": "Invalid asset"}"#), "not accepted");
        assert_eq!(kind(301, ""), "not accepted");
        assert_eq!(kind(302, ""), "not accepted");
    }

    #[test]
    fn configuration_errors_and_redirects_name_the_url() {
        let url = head().url;
        let err = judged(404, r#"{"error": "Not found"}"#).unwrap_err();
        assert!(err.to_string().contains(&url), "{err}");
        assert!(err.to_string().contains("base_url"), "{err}");
        let moved = Head {
            location: Some("https://elsewhere.example/".into()),
            ..head()
        };
        let err = judge(StatusCode::MOVED_PERMANENTLY, &moved, b"", &[]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&url) && text.contains("base_url"), "{text}");
        assert!(text.contains("https://elsewhere.example/"), "{text}");
    }

    #[test]
    fn only_a_content_refusal_that_names_an_asset_refuses_it() {
        let named = |status: u16, body: &str| match judged(status, body) {
            Err(ApiError::Refused { assets, .. }) => assets,
            _ => Vec::new(),
        };
        let message = format!(r#"{{"success": false, "error": "Invalid asset: {ASSET}"}}"#);
        assert_eq!(named(422, &message), vec![ASSET.to_string()]);
        assert_eq!(named(400, &message), vec![ASSET.to_string()]);
        // Not about the content, or not a refusal at all.
        for status in [200, 404, 413, 429, 500, 301] {
            assert!(named(status, &message).is_empty(), "{status}");
        }
        // Named only as part of another name, or only outside the message.
        let longer = format!(r#"{{"error": "Invalid asset: {ASSET}.webp"}}"#);
        assert!(named(422, &longer).is_empty());
        let echo = format!(r#"{{"error": "bad request", "request": ["{ASSET}"]}}"#);
        assert!(named(422, &echo).is_empty());
        // HTML pages name nothing, even when they echo the URL.
        assert!(named(422, &format!("<p>Invalid asset {ASSET}</p>")).is_empty());
    }

    #[test]
    fn names_are_whole_words() {
        assert!(names(&format!("Invalid asset {ASSET}."), ASSET));
        assert!(names(&format!("\"{ASSET}\", \"x\""), ASSET));
        assert!(names(&format!("({ASSET})"), ASSET));
        assert!(!names(&format!("{ASSET}x"), ASSET));
        assert!(!names(&format!("{ASSET}/b"), ASSET));
        assert!(!names(&format!("{ASSET}.webp"), ASSET));
        assert!(!names(&format!("x{ASSET}"), ASSET));
        let hash = "0123456789abcdef0123456789abcdef";
        assert!(names(&format!("unknown asset {hash}"), hash));
        assert!(!names(&format!("unknown asset {hash}0"), hash));
    }

    #[test]
    fn an_oversized_answer_is_never_accepted() {
        let big = oversized(StatusCode::OK, &head(), 256 * 1024);
        assert!(matches!(big, ApiError::Transient { .. }), "{big:?}");
        let gone = oversized(StatusCode::NOT_FOUND, &head(), 256 * 1024);
        assert!(matches!(gone, ApiError::Misconfigured { .. }), "{gone:?}");
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("18446744073709551615"),
            Some(Duration::from_secs(u64::MAX))
        );
        let far = parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT").unwrap();
        assert!(far > Duration::from_secs(7000 * 365 * 86400));
        assert!(parse_retry_after("soon").is_none());
        assert!(parse_retry_after("99999999999999999999999").is_none());
    }

    #[test]
    fn message_is_found_in_both_shapes() {
        let old = json!({"code": "user_not_found", "error": "User not found"});
        let v2 = json!({"success": false, "data": "User not active"});
        assert_eq!(message_of(&old).as_deref(), Some("User not found"));
        assert_eq!(message_of(&v2).as_deref(), Some("User not active"));
    }
}
