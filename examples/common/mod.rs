//! Shared by the examples (demo and benchmarks): the fake Optimole API and
//! a way to get the real `optiwatch` binary.

#![allow(dead_code)]

#[path = "../../tests/it/support/fake_api.rs"]
pub mod fake_api;

use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds the real binary with the cargo that runs the example (in release
/// mode when the example itself is optimised), so examples exercise exactly
/// what a user installs.
pub fn build_optiwatch() -> Result<PathBuf, Box<dyn std::error::Error>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .args(["build", "--quiet", "--bin", "optiwatch"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if !cfg!(debug_assertions) {
        build.arg("--release");
    }
    if !build.status()?.success() {
        return Err("cargo build --bin optiwatch failed".into());
    }
    // target/<profile>/examples/<name> -> target/<profile>/optiwatch
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("cannot locate the target folder")?;
    Ok(dir.join("optiwatch"))
}
