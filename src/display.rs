//! How paths are shown: losslessly in text (valid UTF-8 as is, any other
//! byte as `\xNN`), for reports, errors and logs alike.

use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Shows a path losslessly in text: valid UTF-8 as is, other bytes `\xNN`.
pub fn show_path(path: &Path) -> String {
    let mut out = String::new();
    for chunk in path.as_os_str().as_bytes().utf8_chunks() {
        out.push_str(chunk.valid());
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn non_utf8_is_escaped_losslessly() {
        let path = Path::new(OsStr::from_bytes(b"/m/a\xffb.jpg"));
        assert_eq!(show_path(path), "/m/a\\xFFb.jpg");
    }
}
