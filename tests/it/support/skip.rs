//! Tests that need what a machine may not offer (namespaces, root, a
//! tool) ask here first; where it is missing they print why and pass
//! without running, instead of failing for the machine's sake. (CI runs
//! as root with everything installed, so there they all run.)

use std::path::Path;
use std::process::{Command, Stdio};

/// Something a test needs from the machine.
#[derive(Debug, Clone, Copy)]
pub enum Need {
    /// Unprivileged user and mount namespaces (`unshare -Urm`), to mount
    /// a small tmpfs or lower a limit for one process only.
    Namespaces,
    /// Root: to mount, or to run the binary as another user.
    Root,
    /// A program on `PATH`.
    Program(&'static str),
    /// A file, e.g. a package's.
    File(&'static str),
}

impl Need {
    /// Why the test cannot run here, if it cannot.
    fn missing(self) -> Option<String> {
        match self {
            Need::Namespaces => {
                let ok = Command::new("unshare")
                    .args(["-Urm", "true"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                (!ok).then(|| "`unshare -Urm` does not work here (no user namespaces)".into())
            }
            // SAFETY: geteuid(2) only returns a number.
            Need::Root => (unsafe { libc::geteuid() } != 0).then(|| "it needs root".into()),
            Need::Program(name) => {
                let found = std::env::var_os("PATH").is_some_and(|path| {
                    std::env::split_paths(&path).any(|dir| dir.join(name).is_file())
                });
                (!found).then(|| format!("{name} is not installed"))
            }
            Need::File(path) => (!Path::new(path).exists()).then(|| format!("{path} is missing")),
        }
    }
}

/// True, after printing why, when this machine lacks one of `needs`: the
/// test should return at once.
pub fn lacks(needs: &[Need]) -> bool {
    let Some(why) = needs.iter().find_map(|n| n.missing()) else {
        return false;
    };
    let test = std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_string();
    eprintln!("skipped {test}: {why}");
    true
}
