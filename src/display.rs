//! How paths are shown and compared: losslessly in text (valid UTF-8 as
//! is, any other byte as `\xNN`) for reports, errors and logs alike, and
//! one normal form, so the same folder is always the same key: the config's
//! paths, the paths named on the command line and the ones rules match.

use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use anyhow::Context;

/// `path` made absolute against `base` (an absolute one stays where it
/// points), without `.` components and trailing slashes. `..` is kept and
/// nothing is looked up: the file may not exist, and through a symlink
/// `..` means another folder than the text says.
pub fn normalize(base: &Path, path: impl AsRef<Path>) -> PathBuf {
    base.join(path)
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

/// [`normalize`] against the current directory: a path named on the
/// command line.
pub fn from_cwd(path: impl AsRef<Path>) -> anyhow::Result<PathBuf> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    Ok(normalize(&cwd, path))
}

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

/// `text` fit for one line of a text report: control characters (a
/// newline or an escape sequence in a file name) as `\xNN`, like the
/// bytes [`show_path`] cannot show, so one entry stays one line.
pub fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c.is_control() {
            true => {
                let mut buf = [0; 4];
                for byte in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "\\x{byte:02X}");
                }
            }
            false => out.push(c),
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn normal_paths_drop_dots_and_trailing_slashes_only() {
        let base = Path::new("/etc/optiwatch");
        assert_eq!(
            normalize(base, "./media/"),
            Path::new("/etc/optiwatch/media")
        );
        assert_eq!(normalize(base, "/srv/./m"), Path::new("/srv/m"));
        assert_eq!(normalize(base, "../m"), Path::new("/etc/optiwatch/../m"));
    }

    #[test]
    fn non_utf8_is_escaped_losslessly() {
        let path = Path::new(OsStr::from_bytes(b"/m/a\xffb.jpg"));
        assert_eq!(show_path(path), "/m/a\\xFFb.jpg");
    }

    #[test]
    fn control_characters_are_escaped_for_one_line() {
        assert_eq!(one_line("/m/a.jpg"), "/m/a.jpg");
        assert_eq!(one_line("/m/a\n\u{1b}[2J.jpg"), "/m/a\\x0A\\x1B[2J.jpg");
        assert_eq!(one_line("/m/\u{85}x"), "/m/\\xC2\\x85x");
    }
}
