//! Value types that validate themselves while the TOML is parsed.
//!
//! Checking a value inside `Deserialize` (instead of after parsing) lets the
//! `toml` crate attach the value's line and column to the error, so every bad
//! value is reported where it stands in the file.

use std::net::IpAddr;
use std::time::Duration;

use serde::de::{Deserializer, Error};
use serde::Deserialize;
use url::Url;

use super::hints;

/// A duration written the human way: `"30s"`, `"500ms"`, `"2m"`, at most
/// `MAX_SECS` seconds. Every duration key has a ceiling (see [`limits`]), so
/// no value can overflow a clock (`Instant + d`) or a counter downstream;
/// a value beyond it is an error with line and column, not a panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration<const MAX_SECS: u64>(pub Duration);

/// Ceilings of the duration keys, in seconds (documented in the README).
pub mod limits {
    pub const HOUR: u64 = 3600;
    pub const DAY: u64 = 24 * HOUR;
    pub const YEAR: u64 = 365 * DAY;
}

impl<'de, const MAX_SECS: u64> Deserialize<'de> for HumanDuration<MAX_SECS> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = d.deserialize_any(hints::DurationText)?;
        let max = Duration::from_secs(MAX_SECS);
        let value = humantime::parse_duration(text.trim()).map_err(|e| {
            D::Error::custom(format!(
                "invalid duration {text:?} ({e}): write it like \"30s\", \"500ms\" or \"2m\""
            ))
        })?;
        if value > max {
            return Err(D::Error::custom(format!(
                "duration {text:?} is too long: at most {} here",
                humantime::format_duration(max)
            )));
        }
        Ok(HumanDuration(value))
    }
}

/// The Optimole API base URL. Plain `http://` is refused unless the host is
/// loopback: the API key travels in every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiBase(pub Url);

impl<'de> Deserialize<'de> for ApiBase {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let url = Url::parse(text.trim())
            .map_err(|e| D::Error::custom(format!("base_url {text:?} is not a URL: {e}")))?;
        match url.scheme() {
            "https" => {}
            "http" if is_loopback(&url) => {}
            "http" => {
                return Err(D::Error::custom(
                    "base_url uses plain http:// to a non-loopback host, which would send the \
                     API key unencrypted: use https://",
                ))
            }
            other => {
                return Err(D::Error::custom(format!(
                    "base_url scheme {other:?} is not supported: use https://"
                )))
            }
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(D::Error::custom(
                "base_url must not carry credentials: put the key in key_env or key_file",
            ));
        }
        Ok(ApiBase(url))
    }
}

/// Whether the URL points at this machine (plain http is allowed there).
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// A public URL prefix of a rule (`url` or an `also` entry), kept without its
/// trailing slash so that joining with a relative path is a plain `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SitePrefix(pub String);

impl<'de> Deserialize<'de> for SitePrefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let url = Url::parse(text.trim()).map_err(|e| {
            D::Error::custom(format!(
                "{text:?} is not an absolute URL ({e}): write it like \"https://example.com/wp-content/uploads\""
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(D::Error::custom(format!(
                "{text:?} must be an http:// or https:// URL with a host"
            )));
        }
        // Every asset URL starts with this prefix, and Optimole receives
        // each one: a user name or password in it would go out with every
        // invalidation. The text is not echoed: it holds the password.
        if !url.username().is_empty() || url.password().is_some() {
            return Err(D::Error::custom(
                "a rule url must not contain a user name or password (user:password@): \
                 Optimole would receive it inside every asset URL; remove it",
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(D::Error::custom(format!(
                "{text:?} must not have a query (?) or fragment (#): file paths are appended to it"
            )));
        }
        // `Url` normalises the host and escapes what a browser would, which is
        // the form Optimole sees in requests.
        Ok(SitePrefix(url.as_str().trim_end_matches('/').to_string()))
    }
}

/// An include or exclude glob, checked for syntax at load time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(pub String);

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text.trim().is_empty() {
            return Err(D::Error::custom(
                "an include/exclude pattern must not be empty",
            ));
        }
        globset::Glob::new(&text)
            .map_err(|e| D::Error::custom(format!("bad include/exclude pattern {text:?}: {e}")))?;
        Ok(Pattern(text))
    }
}

/// `[api] batch_size`: Optimole accepts at most 100 assets per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSize(pub usize);

pub const MAX_BATCH: usize = 100;

impl<'de> Deserialize<'de> for BatchSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        if (1..=MAX_BATCH as i64).contains(&n) {
            Ok(BatchSize(n as usize))
        } else {
            Err(D::Error::custom(format!(
                "batch_size {n} is out of range: Optimole takes 1 to {MAX_BATCH} assets per request"
            )))
        }
    }
}

/// `[token] command`: an argv list, run without a shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Argv(pub Vec<String>);

impl<'de> Deserialize<'de> for Argv {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let argv = d.deserialize_any(hints::ArgvList)?;
        match argv.first() {
            Some(program) if !program.trim().is_empty() => Ok(Argv(argv)),
            _ => Err(D::Error::custom(
                "command must be a list whose first item is the program, e.g. [\"wp\", \"option\", \"update\", \"my_token\", \"{token}\"]",
            )),
        }
    }
}

/// `[metrics] listen`: an IP address and port, e.g. "127.0.0.1:9464".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddr(pub std::net::SocketAddr);

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.trim().parse().map(ListenAddr).map_err(|_| {
            D::Error::custom(format!(
                "listen {text:?} is not an address and port: write it like \"127.0.0.1:9464\""
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::limits::*;
    use super::*;

    fn parse<const MAX: u64>(text: &str) -> Result<Duration, String> {
        #[derive(Deserialize)]
        struct T<const M: u64> {
            d: HumanDuration<M>,
        }
        toml::from_str::<T<MAX>>(&format!("d = {text:?}"))
            .map(|t| t.d.0)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn durations_beyond_their_ceiling_are_errors_not_panics() {
        assert_eq!(parse::<DAY>("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse::<DAY>("1day"), Ok(Duration::from_secs(DAY)));
        for text in [
            "100000000000000000000y",
            "18446744073709551615s",
            "584542046091y",
            "2days",
        ] {
            let err = parse::<DAY>(text).expect_err(text);
            assert!(err.contains("line 1, column 5"), "{text}: {err}");
        }
        assert!(parse::<DAY>("2days").unwrap_err().contains("at most 1day"));
    }
}
