//! The Optimole API key: where it is read from, and a type that cannot leak
//! it. The key is held only as a header value marked sensitive (so HTTP
//! debug logs redact it) and its `Debug` prints no part of it. There is no
//! command-line flag for it on purpose: process arguments are world-readable.

use std::os::unix::fs::PermissionsExt;

use reqwest::header::HeaderValue;

use crate::config::KeySource;
use crate::exit_codes::UsageError;

/// A ready `Authorization` header value, `Bearer <key>`.
#[derive(Clone)]
pub struct ApiKey {
    header: HeaderValue,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl ApiKey {
    /// Builds the key from its text. Errors never contain the text.
    pub fn new(key: &str) -> Result<ApiKey, UsageError> {
        let key = key.trim();
        if key.is_empty() {
            return Err(UsageError("the API key is empty".into()));
        }
        let mut header = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
            UsageError("the API key contains characters that cannot go into an HTTP header".into())
        })?;
        header.set_sensitive(true);
        Ok(ApiKey { header })
    }

    /// Reads the key from where the config says.
    pub fn load(source: &KeySource) -> Result<ApiKey, UsageError> {
        match source {
            KeySource::Env(var) => {
                let value = std::env::var(var).map_err(|_| {
                    UsageError(format!(
                        "environment variable {var} is not set: export your Optimole Root API key in it, \
                         or set [api] key_file in the config"
                    ))
                })?;
                ApiKey::new(&value)
                    .map_err(|e| UsageError(format!("{e} (from environment variable {var})")))
            }
            KeySource::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    UsageError(format!(
                        "cannot read the API key file {} ([api] key_file): {e}",
                        path.display()
                    ))
                })?;
                if let Ok(meta) = std::fs::metadata(path) {
                    if meta.permissions().mode() & 0o077 != 0 {
                        tracing::warn!(
                            path = %path.display(),
                            "API key file is readable by other users: run chmod 600 on it"
                        );
                    }
                }
                ApiKey::new(&text)
                    .map_err(|e| UsageError(format!("{e} (from key file {})", path.display())))
            }
        }
    }

    pub(crate) fn header(&self) -> HeaderValue {
        self.header.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_key() {
        let key = ApiKey::new("opt_supersecret").unwrap();
        let shown = format!("{key:?} {:?}", key.header());
        assert!(!shown.contains("supersecret"), "{shown}");
    }
}
