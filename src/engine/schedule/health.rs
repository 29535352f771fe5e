//! Whether the daemon can reach its repository, for `/healthz`, and the back-off between
//! attempts while it cannot.
//!
//! The daemon never exits on a repository, S3 or vSphere error: it logs each one, waits
//! (doubling from one second up to a cap), and tries again. `/healthz` turns unhealthy only
//! once the repository has been unreachable for longer than a threshold, so a short outage
//! does not page anyone while a lasting one does.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The repository's reachability as the daemon last saw it.
#[derive(Debug)]
pub struct Health {
    threshold: Duration,
    /// Since when every look at the repository failed, and the last error.
    failing: Mutex<Option<(Instant, String)>>,
}

impl Default for Health {
    fn default() -> Self {
        Self::new(Duration::from_secs(300))
    }
}

impl Health {
    /// Unhealthy after `threshold` of failures in a row.
    pub fn new(threshold: Duration) -> Self {
        Self {
            threshold,
            failing: Mutex::new(None),
        }
    }

    /// The repository answered.
    pub fn repository_ok(&self) {
        *self.failing.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The repository could not be reached (`error` says why; it must hold no secret).
    pub fn repository_failed(&self, error: &str) {
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        let since = failing.as_ref().map_or_else(Instant::now, |(t, _)| *t);
        *failing = Some((since, error.to_string()));
    }

    /// Whether the repository is reachable now (the last look succeeded).
    pub fn repository_up(&self) -> bool {
        self.failing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
    }

    /// `Ok` while healthy, else what `/healthz` says.
    pub fn check(&self) -> Result<(), String> {
        match &*self.failing.lock().unwrap_or_else(|p| p.into_inner()) {
            Some((since, error)) if since.elapsed() > self.threshold => Err(format!(
                "the repository has been unreachable for {} s: {error}",
                since.elapsed().as_secs()
            )),
            _ => Ok(()),
        }
    }
}

/// Waits between attempts: doubling from `min` to `max`, back to `min` after a success.
#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// A back-off from `min` to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            next: min,
        }
    }

    /// The wait after one more failure.
    pub fn failure(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    /// A success: the next failure waits `min` again.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unhealthy_only_after_the_threshold() {
        let h = Health::new(Duration::from_millis(50));
        assert!(h.check().is_ok() && h.repository_up());
        h.repository_failed("connection refused");
        assert!(!h.repository_up());
        assert!(h.check().is_ok(), "not yet");
        std::thread::sleep(Duration::from_millis(60));
        h.repository_failed("connection refused again");
        let e = h.check().unwrap_err();
        assert!(e.contains("again"), "{e}");
        h.repository_ok();
        assert!(h.check().is_ok());
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        let waits: Vec<u64> = (0..5).map(|_| b.failure().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 5, 5]);
        b.reset();
        assert_eq!(b.failure(), Duration::from_secs(1));
    }
}
