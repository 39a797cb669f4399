//! Property tests for the path → URL mapping: every file name a directory
//! walk can produce (any bytes but `/` and NUL, non-UTF-8 included) must turn
//! into a well-formed, reversible, collision-free URL, and a real `RuleSet`
//! must map it under every prefix.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use optiwatch::config::{Config, RuleConfig};
use optiwatch::rules::encode::{relative, segment};
use optiwatch::rules::{is_temporary, RuleSet, Verdict};
use percent_encoding::percent_decode;
use proptest::prelude::*;
use proptest::sample::select;

const DIR: &str = "/srv/media";
const URL: &str = "https://example.com/m";
const ALSO: &str = "https://cdn.example.net/media";

/// The rule under test. It comes from config text rather than a
/// `RuleConfig` literal so that new (defaulted) rule settings do not break
/// this test; the fields that matter are checked.
static RULES: LazyLock<RuleSet> = LazyLock::new(|| {
    let text = format!(
        "[[rules]]\ndir = \"{DIR}\"\nurl = \"{URL}\"\nalso = [\"{ALSO}\"]\ninclude = [\"*\"]\n"
    );
    let cfg = Config::parse(&text, Path::new("/etc/optiwatch/watcher.toml"))
        .expect("the test config parses");
    let rule: &RuleConfig = &cfg.rules[0];
    assert_eq!(cfg.rules.len(), 1);
    assert_eq!(rule.dir, Path::new(DIR));
    assert_eq!(rule.url, URL);
    assert_eq!(rule.also, vec![ALSO.to_string()]);
    assert_eq!(rule.include, Some(vec!["*".to_string()]));
    assert!(rule.exclude.is_empty());
    RuleSet::new(&cfg.rules).expect("the test rule compiles")
});

/// Bytes that URL encoding or the temporary-file check treat specially.
const SPECIAL: &[u8] = b" %#?\"<>`{}\\~.-_+&=@:;,[]|^'!$()*\t\n\r\x7f\x01\x1b";

/// A piece of a file name: a few arbitrary bytes (non-UTF-8 included), a
/// special character, a Unicode character, or a plain name fragment.
fn chunk() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => proptest::collection::vec(
            any::<u8>().prop_filter("no / or NUL", |b| *b != b'/' && *b != 0),
            1..4,
        ),
        3 => select(SPECIAL).prop_map(|b| vec![b]),
        2 => any::<char>()
            .prop_filter("no / or NUL", |c| *c != '/' && *c != '\0')
            .prop_map(|c| c.to_string().into_bytes()),
        2 => "[a-zA-Z0-9._-]{1,8}".prop_map(String::into_bytes),
        1 => select(&["%20", "%25", "%2F", "%zz", ".tmp", ".jpg", "~", ".#"][..])
            .prop_map(|s| s.as_bytes().to_vec()),
    ]
}

/// One file or folder name: non-empty, no `/`, no NUL, not `.` or `..`.
fn name() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(chunk(), 1..6)
        .prop_map(|chunks| chunks.concat())
        .prop_filter("not . or ..", |s| s != b"." && s != b"..")
}

/// A relative path of 1 to 6 names.
fn rel_path() -> impl Strategy<Value = Vec<Vec<u8>>> {
    proptest::collection::vec(name(), 1..=6)
}

fn to_path(segments: &[Vec<u8>]) -> PathBuf {
    Path::new(OsStr::from_bytes(&segments.join(&b'/'))).to_path_buf()
}

/// Bytes allowed in the encoded part of a URL: printable ASCII minus space
/// and the characters browsers or Optimole would treat specially.
fn allowed(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) && !b"#?\"<>`{}\\".contains(&b)
}

/// A second path close to `segs`, where encodings are most likely to
/// collide: the encoded text of a name taken literally, two names glued
/// together, one byte changed, a name dropped, or an unrelated path.
fn neighbour(segs: Vec<Vec<u8>>) -> impl Strategy<Value = (Vec<Vec<u8>>, Vec<Vec<u8>>)> {
    let n = segs.len();
    let original = segs.clone();
    let variant = prop_oneof![
        // "a b" vs "a%20b": the escaped form written literally as a name.
        (0..n).prop_map({
            let segs = segs.clone();
            move |i| {
                let mut v = segs.clone();
                v[i] = segment(OsStr::from_bytes(&v[i])).into_bytes();
                v
            }
        }),
        // "a/b" vs "ab".
        (0..n).prop_map({
            let segs = segs.clone();
            move |i| {
                let mut v = segs.clone();
                if i + 1 < v.len() {
                    let next = v.remove(i + 1);
                    v[i].extend_from_slice(&next);
                }
                v
            }
        }),
        // One byte changed (kept away from `/` and NUL).
        (0..n, any::<prop::sample::Index>(), 1u8..=255).prop_map({
            let segs = segs.clone();
            move |(i, at, b)| {
                let mut v = segs.clone();
                let j = at.index(v[i].len());
                if b != b'/' {
                    v[i][j] = b;
                }
                if v[i] == b"." || v[i] == b".." {
                    v[i].push(b'x');
                }
                v
            }
        }),
        // A name dropped.
        (0..n).prop_map({
            let segs = segs.clone();
            move |i| {
                let mut v = segs.clone();
                if v.len() > 1 {
                    v.remove(i);
                }
                v
            }
        }),
        Just(segs.clone()),
        rel_path(),
    ];
    variant.prop_map(move |other| (original.clone(), other))
}

fn config() -> ProptestConfig {
    ProptestConfig {
        // A failure is reported with its minimal input; no regression files
        // are written into the source tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// (a) The encoded part is plain printable ASCII without anything a
    /// browser would escape, and the URL is `prefix/encoded`.
    #[test]
    fn encoded_urls_are_printable_ascii(segs in rel_path()) {
        let path = to_path(&segs);
        let encoded = relative(&path);
        prop_assert!(
            encoded.bytes().all(allowed),
            "{path:?} encoded as {encoded:?}"
        );
        prop_assert_eq!(encoded.split('/').count(), segs.len());
        let rule = RULES.get(0);
        let urls = rule.urls(&path);
        prop_assert_eq!(&urls[0], &format!("{URL}/{encoded}"));
        prop_assert!(urls[0].is_ascii() && !urls[0].contains(char::is_whitespace));
    }

    /// (b) Percent-decoding each segment gives back the exact name bytes,
    /// and each segment is what `segment` makes of that name alone.
    #[test]
    fn encoding_is_reversible(segs in rel_path()) {
        let encoded = relative(&to_path(&segs));
        let parts: Vec<&str> = encoded.split('/').collect();
        prop_assert_eq!(parts.len(), segs.len());
        for (part, seg) in parts.iter().zip(&segs) {
            let decoded: Vec<u8> = percent_decode(part.as_bytes()).collect();
            prop_assert_eq!(&decoded, seg, "segment {:?}", part);
            prop_assert_eq!(*part, segment(OsStr::from_bytes(seg)));
        }
    }

    /// (c) Distinct paths never share a URL (and equal paths always do).
    #[test]
    fn distinct_paths_get_distinct_urls(
        (a, b) in rel_path().prop_flat_map(neighbour)
    ) {
        let (pa, pb) = (to_path(&a), to_path(&b));
        let rule = RULES.get(0);
        let (ua, ub) = (rule.urls(&pa), rule.urls(&pb));
        if a == b {
            prop_assert_eq!(ua, ub);
        } else {
            for (x, y) in ua.iter().zip(&ub) {
                prop_assert_ne!(x, y, "{:?} and {:?} collide", pa, pb);
            }
        }
    }

    /// (d) Through a real `RuleSet`: every non-temporary file under the rule
    /// folder is mapped, owned with the same relative path, and gets one URL
    /// per prefix.
    #[test]
    fn rule_set_maps_every_file(segs in rel_path()) {
        let rel = to_path(&segs);
        let full = Path::new(DIR).join(&rel);
        let owner = RULES.owner(&full);
        prop_assert_eq!(owner, Some((0, rel.as_path())));
        let verdict = RULES.verdict(&full);
        if is_temporary(&rel) {
            prop_assert_eq!(verdict, Verdict::Temporary { rule: 0 });
            return Ok(());
        }
        prop_assert_eq!(verdict, Verdict::Mapped { rule: 0 }, "for {:?}", full);
        prop_assert!(RULES.get(0).wants(&rel));
        let urls = RULES.get(0).urls(&rel);
        prop_assert_eq!(urls.len(), 2);
        let encoded = relative(&rel);
        for (url, prefix) in urls.iter().zip([URL, ALSO]) {
            let head = format!("{prefix}/");
            prop_assert!(url.starts_with(&head), "{:?} under {:?}", url, prefix);
            prop_assert_eq!(&url[head.len()..], encoded.as_str());
        }
    }
}
