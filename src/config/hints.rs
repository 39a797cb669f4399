//! What to write instead, for the config mistakes people actually make: a
//! top-level key placed after a `[table]` (TOML then reads it as a key of
//! that table), a key of a table written at the top, a token command written
//! as one string, and a duration written as a bare number.
//!
//! The parser's own message (with line, column and the offending line) is
//! kept; a hint is added below it, or replaces a message that only says what
//! type the parser wanted.

use std::fmt;

use serde::de::{Error, SeqAccess, Visitor};

/// Keys that belong at the top of the file, before any table.
const TOP_LEVEL: &[&str] = &["state", "invalidate_new"];

/// Keys of each table, for a key written at the top by mistake.
const TABLE_KEYS: &[(&str, &[&str])] = &[
    (
        "[api]",
        &[
            "base_url",
            "key_env",
            "key_file",
            "key_credential",
            "batch_size",
            "timeout",
            "retry_for",
            "domain_threshold",
        ],
    ),
    (
        "[[rules]]",
        &[
            "dir",
            "url",
            "also",
            "include",
            "exclude",
            "follow_symlinks",
        ],
    ),
    ("[token]", &["file", "command", "command_timeout"]),
    (
        "[watch]",
        &[
            "debounce",
            "token_interval",
            "poll",
            "poll_interval",
            "event_queue",
            "max_backoff",
        ],
    ),
    ("[metrics]", &["listen", "max_owed_age"]),
];

/// The parser's error, with a hint on what to write when the mistake is a
/// known one.
pub(super) fn explain(text: &str, err: &toml::de::Error) -> String {
    let message = err.to_string();
    match misplaced_key(text, err) {
        Some(hint) => format!("{}\nhint: {hint}", message.trim_end()),
        None => message,
    }
}

fn misplaced_key(text: &str, err: &toml::de::Error) -> Option<String> {
    let rest = err.message().strip_prefix("unknown field `")?;
    let field = rest.split('`').next()?;
    let at = err.span()?.start;
    let headers = table_headers(text);
    let enclosing = headers.iter().rev().find(|(offset, _, _)| *offset < at);
    if TOP_LEVEL.contains(&field) {
        let (first_line, first) = headers
            .first()
            .map(|(_, line, header)| (*line, header.as_str()))?;
        let under = enclosing.map_or(String::new(), |(_, line, header)| {
            format!(" (it stands under {header}, line {line})")
        });
        return Some(format!(
            "`{field}` is a top-level key{under}: top-level keys such as `{field}` must \
             come before the first [table]; move the `{field} = ...` line above \
             {first} on line {first_line}"
        ));
    }
    if enclosing.is_none() {
        let (table, _) = TABLE_KEYS.iter().find(|(_, keys)| keys.contains(&field))?;
        return Some(format!(
            "`{field}` is a key of the {table} table: move it below the {table} line"
        ));
    }
    None
}

/// Every table header line: (byte offset, 1-based line, header text).
fn table_headers(text: &str) -> Vec<(usize, usize, String)> {
    let mut offset = 0;
    let mut headers = Vec::new();
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            // `[api] # comment` names the table as `[api]`.
            let header = trimmed.split('#').next().unwrap_or(trimmed).trim_end();
            headers.push((offset, index + 1, header.to_string()));
        }
        offset += line.len();
    }
    headers
}

/// Reads a duration's text, and answers a bare number with the string to
/// write instead (`debounce = 500` → `"500ms"`).
pub(super) struct DurationText;

impl<'de> Visitor<'de> for DurationText {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a duration string such as \"500ms\", \"30s\" or \"2m\"")
    }

    fn visit_str<E: Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_i64<E: Error>(self, v: i64) -> Result<String, E> {
        Err(bare_number(v))
    }

    fn visit_u64<E: Error>(self, v: u64) -> Result<String, E> {
        Err(bare_number(v))
    }

    fn visit_f64<E: Error>(self, v: f64) -> Result<String, E> {
        if !(0.0..1e9).contains(&v) {
            return Err(bare_number(v));
        }
        // humantime takes no fractions: 2.5 (seconds, most likely) is "2500ms".
        let ms = (v * 1000.0).round();
        Err(E::custom(format!(
            "a duration needs a unit and quotes, and no fraction: write \"{ms}ms\" \
             for {v} seconds"
        )))
    }
}

fn bare_number<E: Error>(n: impl fmt::Display) -> E {
    E::custom(format!(
        "a duration needs a unit and quotes: write \"{n}ms\" for milliseconds or \
         \"{n}s\" for seconds, not {n}"
    ))
}

/// Reads a command's argv list, and answers a single string with the list
/// to write instead (the command runs without a shell).
pub(super) struct ArgvList;

impl<'de> Visitor<'de> for ArgvList {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of strings: the program and its arguments")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
        let mut argv = Vec::new();
        while let Some(item) = seq.next_element::<String>()? {
            argv.push(item);
        }
        Ok(argv)
    }

    fn visit_str<E: Error>(self, v: &str) -> Result<Vec<String>, E> {
        Err(E::custom(format!(
            "command must be a list (it runs without a shell): write it as \
             command = {}",
            as_list(v)
        )))
    }
}

/// The list a command string most likely meant: its words, or, when it
/// uses shell syntax, the string handed to `sh -c`.
fn as_list(command: &str) -> String {
    const SHELL: &[char] = &[
        '|', '&', ';', '<', '>', '(', ')', '$', '`', '\\', '"', '\'', '*', '?', '~', '#', '\n',
    ];
    let items: Vec<&str> = if command.contains(SHELL) {
        vec!["sh", "-c", command.trim()]
    } else {
        command.split_whitespace().collect()
    };
    let quoted: Vec<String> = items
        .iter()
        // A JSON string is a valid TOML basic string.
        .map(|item| serde_json::to_string(item).unwrap_or_default())
        .collect();
    format!("[{}]", quoted.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_string_becomes_its_words_or_sh_c() {
        assert_eq!(
            as_list("wp option update t {token}"),
            r#"["wp", "option", "update", "t", "{token}"]"#
        );
        assert_eq!(
            as_list("wp rocket clean && echo \"ok\""),
            r#"["sh", "-c", "wp rocket clean && echo \"ok\""]"#
        );
    }

    #[test]
    fn a_table_key_at_the_top_names_its_table() {
        let text = "batch_size = 5\n[[rules]]\ndir = \"m\"\nurl = \"https://a.com\"\n";
        let err =
            crate::config::Config::parse(text, std::path::Path::new("/c/w.toml")).unwrap_err();
        assert!(
            err.contains("line 1, column 1")
                && err.contains("`batch_size` is a key of the [api] table"),
            "{err}"
        );
    }

    #[test]
    fn headers_are_found_with_their_lines() {
        let text = "state = \"a\"\n[api] # x\nk = 1\n  [[rules]]\n";
        let headers: Vec<(usize, String)> = table_headers(text)
            .into_iter()
            .map(|(_, line, h)| (line, h))
            .collect();
        assert_eq!(
            headers,
            vec![(2, "[api]".to_string()), (4, "[[rules]]".to_string())]
        );
    }
}
