//! Settling, the one place `[watch] debounce` takes effect: file events are
//! grouped per path, and a path is handed on only once it has been quiet
//! for the debounce time. A file still being written keeps producing
//! events, so it is never hashed half-written. Rescans and polls, which
//! meet files without events, ask [`Settler::quiet_before`] which files are
//! quiet enough to read; the pass hands the others back here.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

#[derive(Debug)]
pub struct Settler {
    quiet: Duration,
    /// Each path's latest event.
    last: HashMap<PathBuf, Instant>,
    /// Every event in arrival order; entries older than `last` says are
    /// stale and skipped. Keeps finding the next deadline O(1) amortised
    /// even with 10,000 paths pending.
    order: VecDeque<(Instant, PathBuf)>,
}

impl Settler {
    pub fn new(quiet: Duration) -> Settler {
        Settler {
            quiet,
            last: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// A file whose last change (mtime or ctime) is after this moment has
    /// not been quiet for the debounce time: a pass leaves it for the
    /// settler instead of reading it.
    pub fn quiet_before(&self, now: SystemTime) -> SystemTime {
        now.checked_sub(self.quiet)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }

    pub fn add(&mut self, path: PathBuf, now: Instant) {
        self.last.insert(path.clone(), now);
        self.order.push_back((now, path));
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }

    pub fn len(&self) -> usize {
        self.last.len()
    }

    /// Up to `n` of the paths waiting, oldest first (for `status`).
    pub fn first(&mut self, n: usize) -> Vec<PathBuf> {
        self.drop_stale();
        let mut seen = std::collections::HashSet::new();
        self.order
            .iter()
            .filter(|(at, path)| self.last.get(path) == Some(at) && seen.insert(path))
            .take(n)
            .map(|(_, path)| path.clone())
            .collect()
    }

    /// Every path waiting, quiet or not: a caller says the writing is over
    /// (a deploy's `scan`).
    pub fn take_all(&mut self) -> Vec<PathBuf> {
        self.order.clear();
        self.last.drain().map(|(path, _)| path).collect()
    }

    /// When the next path becomes quiet, if any is pending.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        self.drop_stale();
        self.order.front().map(|(at, _)| *at + self.quiet)
    }

    /// Paths quiet since `now - quiet`, each once, oldest first.
    pub fn take_settled(&mut self, now: Instant) -> Vec<PathBuf> {
        let mut settled = Vec::new();
        loop {
            self.drop_stale();
            match self.order.front() {
                Some((at, _)) if *at + self.quiet <= now => {
                    let (_, path) = self.order.pop_front().expect("front exists");
                    self.last.remove(&path);
                    settled.push(path);
                }
                _ => return settled,
            }
        }
    }

    fn drop_stale(&mut self) {
        while let Some((at, path)) = self.order.front() {
            if self.last.get(path) == Some(at) {
                return;
            }
            self.order.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_settles_only_after_its_last_event() {
        let quiet = Duration::from_millis(500);
        let mut s = Settler::new(quiet);
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        s.add("a".into(), ms(0));
        s.add("b".into(), ms(100));
        s.add("a".into(), ms(400));
        assert_eq!(s.next_deadline(), Some(ms(600)), "b is next; a was renewed");
        assert_eq!(s.take_settled(ms(599)), Vec::<PathBuf>::new());
        assert_eq!(s.take_settled(ms(600)), vec![PathBuf::from("b")]);
        assert_eq!(s.next_deadline(), Some(ms(900)));
        assert_eq!(s.take_settled(ms(2000)), vec![PathBuf::from("a")]);
        assert!(s.is_empty());
        assert_eq!(s.next_deadline(), None);
    }

    #[test]
    fn files_changed_within_the_debounce_are_not_quiet() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let s = Settler::new(Duration::from_millis(500));
        assert_eq!(s.quiet_before(now), now - Duration::from_millis(500));
        // A debounce longer than the epoch is old neither panics nor
        // lets a file through.
        let s = Settler::new(Duration::MAX);
        assert_eq!(s.quiet_before(now), SystemTime::UNIX_EPOCH);
    }
}
