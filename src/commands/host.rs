//! `invalidate --domain`: Optimole's domain endpoint takes a bare host name
//! (`example.com`). What people paste is often a URL; a scheme and a lone
//! trailing `/` are dropped with a note, anything else that is not a host
//! (a path, a port, `user:pass@`, spaces) is refused before any request.

use crate::exit_codes::UsageError;

/// The bare host in `text`, and a note when something was dropped.
pub fn bare_host(text: &str) -> Result<(String, Option<String>), UsageError> {
    let refuse = |why: &str| {
        UsageError(format!(
            "--domain {text:?}: {why}; give the bare host name, e.g. --domain example.com"
        ))
    };
    let mut host = text;
    let mut dropped = Vec::new();
    for scheme in ["https://", "http://"] {
        // Schemes are case-insensitive (`HTTPS://` is pasted too).
        let rest = host
            .get(..scheme.len())
            .filter(|head| head.eq_ignore_ascii_case(scheme))
            .and_then(|_| host.get(scheme.len()..));
        if let Some(rest) = rest {
            host = rest;
            dropped.push(scheme);
        }
    }
    if host.contains("://") {
        return Err(refuse("only an http:// or https:// scheme can be dropped"));
    }
    if let Some(rest) = host.strip_suffix('/') {
        host = rest;
        dropped.push("the trailing /");
    }
    if host.is_empty() {
        return Err(refuse("no host name"));
    }
    if host.chars().any(char::is_whitespace) {
        return Err(refuse("a host name has no spaces"));
    }
    if host.contains('@') {
        // Not quoted: the text may hold a password.
        return Err(UsageError(
            "--domain: a user name or password (user:pass@) is not part of a host name; \
             give the bare host name, e.g. --domain example.com"
                .into(),
        ));
    }
    if host.contains(':') {
        return Err(refuse(
            "a port (or an IPv6 address) is not part of a host name: Optimole keys domains by name",
        ));
    }
    if host.contains(['/', '?', '#']) {
        return Err(refuse(
            "a path, query or fragment invalidates nothing more: the whole domain is invalidated",
        ));
    }
    let bad = |label: &str| {
        label.is_empty()
            || label.starts_with('-')
            || label.ends_with('-')
            || !label.chars().all(|c| c.is_alphanumeric() || c == '-')
    };
    if host.split('.').any(bad) {
        return Err(refuse(
            "a host name is labels of letters, digits and '-' joined by dots",
        ));
    }
    let note = (!dropped.is_empty()).then(|| {
        format!(
            "--domain {text:?}: dropped {} and invalidating the domain {host}",
            dropped.join(" and ")
        )
    });
    Ok((host.to_string(), note))
}

#[cfg(test)]
mod tests {
    use super::bare_host;

    #[test]
    fn a_bare_host_passes_untouched() {
        for host in [
            "example.com",
            "www.example.co.uk",
            "café.example",
            "localhost",
        ] {
            assert_eq!(bare_host(host).unwrap(), (host.to_string(), None));
        }
    }

    #[test]
    fn a_scheme_and_a_trailing_slash_are_dropped_with_a_note() {
        for text in [
            "https://example.com",
            "http://example.com",
            "https://example.com/",
            "example.com/",
        ] {
            let (host, note) = bare_host(text).unwrap();
            assert_eq!(host, "example.com", "{text}");
            let note = note.expect("a note");
            assert!(
                note.contains("dropped") && note.contains("example.com"),
                "{note}"
            );
        }
    }

    #[test]
    fn anything_else_is_refused_naming_the_flag_and_the_fix() {
        for (text, why) in [
            ("https://user:s3cret@example.com", "user name or password"),
            ("example.com:8080", "port"),
            ("https://example.com/wp-content/uploads", "path"),
            ("example.com//", "path"),
            ("example.com?x=1", "query"),
            ("exa mple.com", "spaces"),
            (" example.com", "spaces"),
            ("", "no host"),
            ("https://", "no host"),
            ("ftp://example.com", "scheme"),
            ("[::1]", "IPv6"),
            ("example..com", "labels"),
            ("-example.com", "labels"),
            ("exa_mple.com", "labels"),
        ] {
            let err = bare_host(text).unwrap_err().0;
            assert!(err.contains(why), "{text:?}: {err}");
            assert!(err.contains("--domain example.com"), "{err}");
            assert!(!err.contains("s3cret"), "a password is never echoed: {err}");
        }
    }
}
