//! Percent-encoding of file paths into URL paths, the way a browser requests
//! them: each path segment is encoded separately, raw bytes in, ASCII out.
//!
//! Working on bytes (not `str`) means non-UTF-8 file names are encoded
//! faithfully instead of being replaced or making anything panic, and the
//! encoding is reversible: decoding gives back the exact file name.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use percent_encoding::{percent_encode, AsciiSet, CONTROLS};

/// The WHATWG URL "path percent-encode set" (what browsers escape in a
/// path), plus `%` because a literal `%` in a file name is data, not an
/// escape, and `\` which browsers would turn into `/`. Everything outside
/// ASCII is always escaped by `percent_encode`.
pub const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'%')
    .add(b'\\');

/// Encodes one file or folder name.
pub fn segment(name: &OsStr) -> String {
    percent_encode(name.as_bytes(), SEGMENT).to_string()
}

/// Encodes a relative path as `seg/seg/seg`. Only normal components count;
/// `.` and `..` never come out of a directory walk.
pub fn relative(rel: &Path) -> String {
    let mut out = String::with_capacity(rel.as_os_str().len() + 8);
    for component in rel.components() {
        if let Component::Normal(name) = component {
            if !out.is_empty() {
                out.push('/');
            }
            out.push_str(&segment(name));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;

    #[test]
    fn encodes_like_a_browser() {
        let cases = [
            ("café ü.jpg", "caf%C3%A9%20%C3%BC.jpg"),
            ("a b#c?.png", "a%20b%23c%3F.png"),
            ("100%.png", "100%25.png"),
            ("(1)+x,y=z&w@v~.jpg", "(1)+x,y=z&w@v~.jpg"),
            ("2024/05/photo.jpg", "2024/05/photo.jpg"),
        ];
        for (path, want) in cases {
            assert_eq!(relative(Path::new(path)), want, "for {path:?}");
        }
    }

    #[test]
    fn non_utf8_bytes_are_escaped_not_replaced() {
        let name = OsString::from_vec(vec![b'a', 0xff, 0xfe, b'.', b'j', b'p', b'g']);
        assert_eq!(segment(&name), "a%FF%FE.jpg");
    }
}
