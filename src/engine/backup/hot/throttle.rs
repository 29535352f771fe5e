//! A read-rate limit shared by every transfer of a backup (`--max-rate`): each request is given
//! a start time so that the bytes requested so far never run ahead of the rate.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Paces requests to at most `bytes_per_second` on average.
#[derive(Debug)]
pub struct RateLimiter {
    bytes_per_second: u64,
    next_start: Mutex<Option<Instant>>,
}

impl RateLimiter {
    /// A limiter of `bytes_per_second` (at least 1).
    pub fn new(bytes_per_second: u64) -> Self {
        Self {
            bytes_per_second: bytes_per_second.max(1),
            next_start: Mutex::new(None),
        }
    }

    /// The configured rate.
    pub fn rate(&self) -> u64 {
        self.bytes_per_second
    }

    /// Waits until a request of `bytes` may start.
    pub async fn acquire(&self, bytes: u64) {
        let start = {
            let mut next = self.next_start.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let start = next.map_or(now, |n| n.max(now));
            let cost = Duration::from_secs_f64(bytes as f64 / self.bytes_per_second as f64);
            *next = Some(start + cost);
            start
        };
        tokio::time::sleep_until(start).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn paces_to_the_rate() {
        let limiter = RateLimiter::new(100_000);
        let t0 = Instant::now();
        for _ in 0..5 {
            limiter.acquire(20_000).await;
        }
        // Five requests of 20 kB at 100 kB/s: the fifth starts 0.8 s after the first.
        let took = Instant::now() - t0;
        assert!(
            took >= Duration::from_millis(790) && took < Duration::from_secs(3),
            "{took:?}"
        );
    }
}
