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
}
