//! `optiwatch watch`: runs the daemon ([`crate::watch`]) until SIGTERM or
//! SIGINT. A daemon's last word goes to its log (journald, log shippers),
//! not to stderr as a command's error would.

use std::path::Path;

use crate::config::Config;
use crate::exit_codes::{self, ExitCode};

pub async fn run(config_path: &Path, config: Config) -> anyhow::Result<ExitCode> {
    match crate::watch::run(config_path, config).await {
        Ok(()) => Ok(ExitCode::Success),
        Err(e) => {
            tracing::error!(
                error = format!("{e:#}"),
                "optiwatch watch stopped; what was recorded stays owed and is sent after a restart"
            );
            Ok(exit_codes::for_error(&e))
        }
    }
}
