//! The one shape of every `--json` output: a single object on stdout whose
//! first field is `"version": 1`, then the command's own fields. Within a
//! version fields may be added, never removed or renamed; anything else
//! raises the version (README, "JSON output").

use serde::Serialize;

/// The schema version every `--json` object carries.
pub const VERSION: u32 = 1;

#[derive(Serialize)]
struct Envelope<'a, T> {
    version: u32,
    #[serde(flatten)]
    body: &'a T,
}

/// `body` (a struct: its fields follow `version`) as one line of JSON.
pub fn to_string<T: Serialize>(body: &T) -> anyhow::Result<String> {
    Ok(serde_json::to_string(&Envelope {
        version: VERSION,
        body,
    })?)
}

/// Prints `body` in its envelope on stdout.
pub fn print<T: Serialize>(body: &T) -> anyhow::Result<()> {
    println!("{}", to_string(body)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[derive(serde::Serialize)]
    struct Body {
        b: u8,
        a: Vec<u8>,
    }

    #[test]
    fn version_comes_first_and_fields_keep_their_order() {
        let text = super::to_string(&Body { b: 1, a: vec![2] }).unwrap();
        assert_eq!(text, r#"{"version":1,"b":1,"a":[2]}"#);
    }
}
