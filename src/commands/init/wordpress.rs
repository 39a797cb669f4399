//! What `optiwatch init` knows about WordPress: recognising an install from
//! its root or its uploads folder, asking WP-CLI for the site URL, and
//! installing the must-use plugin that hands the token to the Optimole
//! plugin (`examples/wordpress/optiwatch-token.php`, built in).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::display::show_path;

/// The must-use plugin, as shipped in examples/wordpress/.
pub const MU_PLUGIN: &str = include_str!("../../../examples/wordpress/optiwatch-token.php");
/// Its file name in `wp-content/mu-plugins/`.
pub const MU_PLUGIN_NAME: &str = "optiwatch-token.php";
/// The token file the plugin reads by default (`WP_CONTENT_DIR/optiwatch-token`).
pub const TOKEN_NAME: &str = "optiwatch-token";
/// WP-CLI gets this long to answer before init gives up on it.
const WP_CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// A WordPress install found at or above the folder init was pointed at.
#[derive(Debug)]
pub struct WordPress {
    /// The folder holding wp-config.php.
    pub root: PathBuf,
}

impl WordPress {
    /// `dir` is a WordPress root (holds wp-config.php) or the uploads
    /// folder `<root>/wp-content/uploads` of one.
    pub fn find(dir: &Path) -> Option<WordPress> {
        let is_root = |d: &Path| d.join("wp-config.php").is_file();
        if is_root(dir) {
            return Some(WordPress { root: dir.into() });
        }
        let content = dir
            .parent()
            .filter(|_| dir.ends_with("wp-content/uploads"))?;
        let root = content.parent()?;
        is_root(root).then(|| WordPress { root: root.into() })
    }

    pub fn content(&self) -> PathBuf {
        self.root.join("wp-content")
    }

    pub fn uploads(&self) -> PathBuf {
        self.content().join("uploads")
    }

    /// The site's `home` option through WP-CLI, or why it could not be had.
    /// Runs `wp` without a shell, stdin closed; as root WP-CLI needs
    /// `--allow-root`, and plugins and themes are skipped so only
    /// wp-config.php and WordPress itself load.
    pub fn home_url(&self) -> Result<String, String> {
        let mut path_arg = std::ffi::OsString::from("--path=");
        path_arg.push(&self.root);
        let mut cmd = Command::new("wp");
        cmd.args(["option", "get", "home", "--skip-plugins", "--skip-themes"])
            .arg(path_arg)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            cmd.arg("--allow-root");
        }
        let mut child = cmd.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => "WP-CLI (`wp`) is not on PATH".to_string(),
            _ => format!("cannot run WP-CLI (`wp`): {e}"),
        })?;
        // Both pipes are read while `wp` runs: one filled with PHP notices
        // would otherwise stop it until the timeout, blamed on WP-CLI.
        let out = drain(child.stdout.take(), Keep::Tail);
        let err = drain(child.stderr.take(), Keep::Head);
        let started = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if started.elapsed() < WP_CLI_TIMEOUT => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "`wp option get home` did not answer within {WP_CLI_TIMEOUT:?}"
                    ));
                }
                Err(e) => return Err(format!("cannot wait for `wp`: {e}")),
            }
        };
        // A process `wp` left behind may hold the pipes: not waited for.
        let collect = |rx: std::sync::mpsc::Receiver<String>| {
            rx.recv_timeout(Duration::from_secs(2)).unwrap_or_default()
        };
        let (out, err) = (collect(out), collect(err));
        if !status.success() {
            let first = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            return Err(format!("`wp option get home` failed ({status}): {first}"));
        }
        // PHP prints notices and deprecations on stdout under WP-CLI: the
        // option is the last line.
        let home = out
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("");
        if home.is_empty() {
            return Err("`wp option get home` printed nothing".into());
        }
        Ok(home.to_string())
    }

    /// Copies the must-use plugin into `wp-content/mu-plugins/`; an
    /// existing, different file there is left alone. Returns what was done.
    pub fn install_mu_plugin(&self) -> anyhow::Result<String> {
        let dir = self.content().join("mu-plugins");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", show_path(&dir)))?;
        let dest = dir.join(MU_PLUGIN_NAME);
        match std::fs::read(&dest) {
            Ok(old) if old == MU_PLUGIN.as_bytes() => {
                return Ok(format!("{} is installed already", show_path(&dest)))
            }
            Ok(_) => {
                return Ok(format!(
                    "{} exists and differs from this optiwatch's plugin: left as it is \
                     (remove it and run init again to replace it)",
                    show_path(&dest)
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", show_path(&dest))),
        }
        std::fs::write(&dest, MU_PLUGIN)
            .with_context(|| format!("cannot write {}", show_path(&dest)))?;
        Ok(format!(
            "installed the must-use plugin {}",
            show_path(&dest)
        ))
    }
}

/// Which 64 KiB of a pipe [`drain`] keeps.
#[derive(Clone, Copy)]
enum Keep {
    /// The first (errors: the first line says why).
    Head,
    /// The last (the answer follows any notices).
    Tail,
}

/// Reads `pipe` to its end on a thread, keeping 64 KiB of it as text
/// (sent when the pipe closes).
fn drain(
    pipe: Option<impl Read + Send + 'static>,
    keep: Keep,
) -> std::sync::mpsc::Receiver<String> {
    const KEPT: usize = 64 * 1024;
    let (tx, rx) = std::sync::mpsc::channel();
    if let Some(mut pipe) = pipe {
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            let mut chunk = [0u8; 8192];
            loop {
                match pipe.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => {
                        kept.extend_from_slice(&chunk[..n]);
                        if kept.len() > KEPT {
                            match keep {
                                Keep::Head => kept.truncate(KEPT),
                                Keep::Tail => {
                                    kept.drain(..kept.len() - KEPT);
                                }
                            }
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = tx.send(String::from_utf8_lossy(&kept).into_owned());
        });
    }
    rx
}
