//! Times as operators see them: RFC 3339 in UTC to the second
//! (`2026-11-29T16:43:36Z`), in text and in every `--json` object. The store
//! keeps Unix seconds; this is the one place that turns them into text.
//! A stored value out of the printable range (before 1970, after 9999) is
//! clamped, never a panic: the store is input like any file.

use std::time::{Duration, UNIX_EPOCH};

/// 9999-12-31T23:59:59Z, the last second RFC 3339 can write.
const LAST: u64 = 253_402_300_799;

/// Unix seconds as RFC 3339.
pub fn from_secs(secs: i64) -> String {
    let secs = u64::try_from(secs).unwrap_or(0).min(LAST);
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// `#[serde(serialize_with)]` for a Unix-seconds field shown as RFC 3339.
pub fn serialize<S: serde::Serializer>(secs: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&from_secs(*secs))
}

/// The same for an optional field (`null` stays `null`).
pub fn serialize_opt<S: serde::Serializer>(secs: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match secs {
        Some(secs) => s.serialize_str(&from_secs(*secs)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_print_as_utc_and_out_of_range_values_clamp() {
        assert_eq!(from_secs(0), "1970-01-01T00:00:00Z");
        assert_eq!(from_secs(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(from_secs(-5), "1970-01-01T00:00:00Z");
        assert_eq!(from_secs(i64::MAX), "9999-12-31T23:59:59Z");
    }
}
