//! Where an account's API key comes from: `key_env`, `key_file` or
//! `key_credential` of `[api]` or a `[[rules]]` table, at most one of them,
//! each checked where it stands in the file (a variable name that the
//! environment cannot hold, a credential name that is a path).

use std::path::Path;

use super::{locate, KeySource};
use crate::display::normalize;

/// `key_env`, `key_file` or `key_credential` of one table (`[api]` or a
/// `[[rules]]`): at most one of them.
pub(super) fn key_source(
    text: &str,
    base: &Path,
    table: &str,
    [env, file, credential]: [Option<toml::Spanned<String>>; 3],
) -> Result<Option<KeySource>, String> {
    let set: Vec<(&str, &toml::Spanned<String>)> = [
        ("key_env", &env),
        ("key_file", &file),
        ("key_credential", &credential),
    ]
    .into_iter()
    .filter_map(|(name, value)| value.as_ref().map(|v| (name, v)))
    .collect();
    if let [(first, _), (second, value), ..] = set[..] {
        return Err(format!(
            "{}: {table}.{first} and {table}.{second} are both set: keep one",
            locate(text, value.span().start)
        ));
    }
    let bad = |value: &toml::Spanned<String>, why: &str| {
        Err(format!("{}: {why}", locate(text, value.span().start)))
    };
    if let Some(env) = env {
        let name = env.get_ref();
        if name.is_empty() || name.contains(['=', '\0']) {
            return bad(
                &env,
                &format!("{table}.key_env {name:?} is not an environment variable name"),
            );
        }
        return Ok(Some(KeySource::Env(env.into_inner())));
    }
    if let Some(file) = file {
        return Ok(Some(KeySource::File(normalize(base, file.get_ref()))));
    }
    if let Some(credential) = credential {
        let name = credential.get_ref();
        if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
            return bad(
                &credential,
                &format!(
                    "{table}.key_credential {name:?} is not a credential name: use the name \
                     given in LoadCredential=NAME:FILE (no `/`)"
                ),
            );
        }
        return Ok(Some(KeySource::Credential(credential.into_inner())));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, KeySource};

    #[test]
    fn a_key_comes_from_one_source_with_a_valid_name() {
        let parse = |api: &str| {
            let text = format!("[api]\n{api}\n[[rules]]\ndir = \"m\"\nurl = \"https://a.com\"\n");
            Config::parse(&text, Path::new("/c/w.toml"))
        };
        let cfg = parse("key_credential = \"optimole-key\"").unwrap();
        assert_eq!(cfg.api.key, KeySource::Credential("optimole-key".into()));
        assert_eq!(cfg.api.key.id(), "credential:optimole-key");
        let err = parse("key_env = \"K\"\nkey_credential = \"k\"").unwrap_err();
        assert!(
            err.contains("line 3, column 18") && err.contains("both set"),
            "{err}"
        );
        for bad in [
            "key_credential = \"../key\"",
            "key_credential = \"\"",
            "key_env = \"A=B\"",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.starts_with("line 2, column "), "{bad}: {err}");
        }
    }
}
