//! The scan progress bar: files walked, files hashed and hashing speed, on
//! stderr, only when stderr is a terminal (never in logs, pipes or with
//! `--json`). Walker threads report through atomics; indicatif redraws at
//! its own pace, so reporting costs no more than an atomic add per file.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
    hashed: AtomicU64,
    bytes: AtomicU64,
    started: Instant,
}

impl Progress {
    /// A bar on stderr, or `None` when stderr is not a terminal.
    pub fn on_terminal() -> Option<Progress> {
        use std::io::IsTerminal;
        if !std::io::stderr().is_terminal() {
            return None;
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {pos} files walked, {msg} [{elapsed}]")
                .expect("the template is valid"),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        Some(Progress {
            bar,
            hashed: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            started: Instant::now(),
        })
    }

    pub fn walked(&self) {
        self.bar.inc(1);
    }

    pub fn hashed(&self, bytes: u64) {
        let files = self.hashed.fetch_add(1, Ordering::Relaxed) + 1;
        let total = self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if files % 64 == 1 {
            let secs = self.started.elapsed().as_secs_f64().max(0.001);
            self.bar.set_message(format!(
                "{files} hashed, {:.1} MiB/s",
                total as f64 / secs / (1 << 20) as f64
            ));
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
