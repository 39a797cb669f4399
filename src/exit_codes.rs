//! The process exit codes optiwatch promises to scripts, cron jobs and deploy
//! hooks. They are part of the interface: the README documents them and the
//! integration tests check them.

/// Why the process ended. Converted to a numeric code only in `main`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// Everything that was asked for was done.
    Success,
    /// A runtime failure (API, network, disk, token publishing). Whatever is
    /// still owed to Optimole is kept in the state store for the next run.
    Failure,
    /// Bad command line or configuration: nothing was attempted.
    Usage,
}

impl ExitCode {
    pub fn code(self) -> i32 {
        match self {
            ExitCode::Success => 0,
            ExitCode::Failure => 1,
            ExitCode::Usage => 2,
        }
    }
}

/// Marks an error as the user's to fix in the config or the command line, so
/// the CLI exits with [`ExitCode::Usage`] instead of [`ExitCode::Failure`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Picks the exit code for an error that reached the top of a command.
pub fn for_error(err: &anyhow::Error) -> ExitCode {
    if err.chain().any(|cause| cause.is::<UsageError>()) {
        ExitCode::Usage
    } else {
        ExitCode::Failure
    }
}
