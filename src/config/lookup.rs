//! Where the config file is found when a command does not name one:
//! `--config FILE`, then `$OPTIWATCH_CONFIG` (read here: set but empty
//! counts as not set, as shells leave it), then `./watcher.toml`, then
//! `/etc/optiwatch/watcher.toml`. The first two are taken as given (a
//! missing named file is an error of its own); the last two are tried in
//! order, and when neither exists the error names every place tried.

use std::path::{Path, PathBuf};

use crate::exit_codes::UsageError;

/// The variable naming the config when `--config` does not.
pub const ENV: &str = "OPTIWATCH_CONFIG";
/// The config in the working directory.
pub const LOCAL_CONFIG: &str = "watcher.toml";
/// The system-wide config, tried after the working directory's.
pub const SYSTEM_CONFIG: &str = "/etc/optiwatch/watcher.toml";

/// The config file to load: `named` (from `--config` or
/// `$OPTIWATCH_CONFIG`) as is, else the first of `./watcher.toml` and
/// `/etc/optiwatch/watcher.toml` that exists.
pub fn locate(named: Option<&Path>) -> Result<PathBuf, UsageError> {
    if let Some(path) = named {
        return Ok(path.to_path_buf());
    }
    if let Some(path) = std::env::var_os(ENV).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let tried = [Path::new(LOCAL_CONFIG), Path::new(SYSTEM_CONFIG)];
    // Anything there counts, a broken link too: loading it then says what
    // is wrong, instead of a silent fall back to the system's config.
    if let Some(found) = tried.iter().find(|p| p.symlink_metadata().is_ok()) {
        return Ok(found.to_path_buf());
    }
    Err(UsageError(format!(
        "no config file: tried --config (not given), $OPTIWATCH_CONFIG (not set), \
         ./{LOCAL_CONFIG} and {SYSTEM_CONFIG}; write one with `optiwatch init [DIR]` \
         or pass --config FILE"
    )))
}

/// Where `--config`'s default would be looked up, for a start-up step that
/// must not fail (the key's environment variable is taken out early).
pub fn best_guess(named: Option<&Path>) -> PathBuf {
    locate(named).unwrap_or_else(|_| PathBuf::from(LOCAL_CONFIG))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_config_is_taken_as_given() {
        let named = Path::new("/nowhere/x.toml");
        assert_eq!(locate(Some(named)).unwrap(), named);
    }

    #[test]
    fn the_error_names_every_place_tried_and_init() {
        // The test's working directory is the crate root, which has no
        // watcher.toml (only watcher.example.toml).
        if Path::new(LOCAL_CONFIG).exists() || Path::new(SYSTEM_CONFIG).exists() {
            eprintln!("skipped: a watcher.toml exists here or in /etc/optiwatch");
            return;
        }
        let err = locate(None).unwrap_err().0;
        for place in [
            "--config",
            "$OPTIWATCH_CONFIG",
            "./watcher.toml",
            SYSTEM_CONFIG,
            "optiwatch init",
        ] {
            assert!(err.contains(place), "{place} missing from: {err}");
        }
    }
}
