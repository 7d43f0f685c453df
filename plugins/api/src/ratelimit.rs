//! A client-side token bucket for backends that call a rate-limited service (cloud KMS quotas):
//! at most `rate` requests per second, with bursts of up to `burst` requests. Retries are
//! [`crate::retry`]'s.
//!
//! It is the generic cell rate algorithm with reservations: each request takes the next free
//! slot and sleeps until it comes, so a burst larger than the bucket queues (in arrival order)
//! instead of failing, and the service never sees more than the quota allows from this instance. A
//! request whose caller gives up still uses its slot, which errs on the safe side.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token bucket shared by every request of one backend instance.
#[derive(Debug)]
pub struct RateLimiter {
    /// The time between two requests at the steady rate.
    interval: Duration,
    /// How far ahead of the steady rate a burst may run: `interval * (burst - 1)`.
    tolerance: Duration,
    /// The theoretical arrival time of the next request (`None` before the first).
    next: Mutex<Option<Instant>>,
}

impl RateLimiter {
    /// A bucket of `burst` tokens refilled at `rate` tokens per second (both at least 1).
    pub fn new(rate: u32, burst: u32) -> Self {
        let interval = Duration::from_secs(1) / rate.max(1);
        RateLimiter {
            interval,
            tolerance: interval * (burst.max(1) - 1),
            next: Mutex::new(None),
        }
    }

    /// Takes a slot for a request made at `now`; returns how long to wait before sending it.
    pub fn reserve_at(&self, now: Instant) -> Duration {
        let mut next = self.next.lock().expect("rate limiter lock");
        let slot = next.map_or(now, |at| at.max(now));
        *next = Some(slot + self.interval);
        (slot - now).saturating_sub(self.tolerance)
    }

    /// Waits until a request may be sent.
    pub async fn acquire(&self) {
        let wait = self.reserve_at(Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_applies() {
        let limiter = RateLimiter::new(20, 20);
        let start = Instant::now();
        let waits: Vec<Duration> = (0..60).map(|_| limiter.reserve_at(start)).collect();
        assert!(waits[..20].iter().all(Duration::is_zero), "{waits:?}");
        assert_eq!(waits[20], Duration::from_millis(50));
        assert_eq!(waits[59], Duration::from_millis(2000));
        assert!(waits.windows(2).all(|w| w[0] <= w[1]), "queued in order");
    }

    #[test]
    fn an_idle_bucket_refills() {
        let limiter = RateLimiter::new(10, 2);
        let start = Instant::now();
        assert!(limiter.reserve_at(start).is_zero());
        assert!(limiter.reserve_at(start).is_zero());
        assert_eq!(limiter.reserve_at(start), Duration::from_millis(100));
        // A second later the bucket is full again: two go at once, the third waits.
        let later = start + Duration::from_secs(1);
        assert!(limiter.reserve_at(later).is_zero());
        assert!(limiter.reserve_at(later).is_zero());
        assert_eq!(limiter.reserve_at(later), Duration::from_millis(100));
    }

    #[test]
    fn a_burst_of_one_spaces_every_request() {
        let limiter = RateLimiter::new(4, 1);
        let start = Instant::now();
        let waits: Vec<u128> = (0..3)
            .map(|_| limiter.reserve_at(start).as_millis())
            .collect();
        assert_eq!(waits, [0, 250, 500]);
    }
}
