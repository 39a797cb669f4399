//! Arbitrary bytes as a relative path (split on `/`; NUL bytes and empty,
//! `.` and `..` names dropped, as a directory walk never yields them): the
//! encoded URL path must be printable ASCII, decode back to the exact name
//! bytes, and a fixed `RuleSet` must map the file under every prefix.

#![no_main]

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use optiwatch::config::Config;
use optiwatch::rules::encode::{relative, segment};
use optiwatch::rules::{is_temporary, RuleSet, Verdict};
use percent_encoding::percent_decode;

const DIR: &str = "/srv/media";
const PREFIXES: [&str; 2] = ["https://example.com/m", "https://cdn.example.net/media"];

static RULES: LazyLock<RuleSet> = LazyLock::new(|| {
    let text = format!(
        "[[rules]]\ndir = \"{DIR}\"\nurl = \"{}\"\nalso = [\"{}\"]\ninclude = [\"*\"]\n",
        PREFIXES[0], PREFIXES[1]
    );
    let cfg = Config::parse(&text, Path::new("/etc/optiwatch/watcher.toml")).unwrap();
    RuleSet::new(&cfg.rules).unwrap()
});

fn allowed(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) && !b"#?\"<>`{}\\".contains(&b)
}

fuzz_target!(|data: &[u8]| {
    let segments: Vec<Vec<u8>> = data
        .split(|&b| b == b'/')
        .map(|s| s.iter().copied().filter(|&b| b != 0).collect::<Vec<u8>>())
        .filter(|s| !s.is_empty() && s != b"." && s != b"..")
        .collect();
    let rel = PathBuf::from(OsStr::from_bytes(&segments.join(&b'/')));

    let encoded = relative(&rel);
    if segments.is_empty() {
        assert_eq!(encoded, "");
        return;
    }
    assert!(
        encoded.bytes().all(allowed),
        "{rel:?} encoded as {encoded:?}"
    );
    let parts: Vec<&str> = encoded.split('/').collect();
    assert_eq!(
        parts.len(),
        segments.len(),
        "{rel:?} encoded as {encoded:?}"
    );
    for (part, name) in parts.iter().zip(&segments) {
        let decoded: Vec<u8> = percent_decode(part.as_bytes()).collect();
        assert_eq!(&decoded, name, "segment {part:?} does not decode back");
        assert_eq!(*part, segment(OsStr::from_bytes(name)));
    }

    let full = Path::new(DIR).join(&rel);
    assert_eq!(RULES.owner(&full), Some((0, rel.as_path())));
    let verdict = RULES.verdict(&full);
    if is_temporary(&rel) {
        assert_eq!(verdict, Verdict::Temporary { rule: 0 });
        return;
    }
    assert_eq!(verdict, Verdict::Mapped { rule: 0 }, "for {full:?}");
    let urls = RULES.get(0).urls(&rel);
    assert_eq!(urls.len(), PREFIXES.len());
    for (url, prefix) in urls.iter().zip(PREFIXES) {
        assert_eq!(*url, format!("{prefix}/{encoded}"));
    }
});
