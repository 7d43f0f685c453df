//! Token buckets for the `rate_limit` and `caller_rate_limit` of a key's policy.
//!
//! A bucket holds up to `burst` tokens and gains `per_second` tokens a second; a request takes
//! one. A request is admitted only when the key's bucket and the caller's bucket both have a
//! token, and then takes one from each, so a refused request costs nothing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `{ per_second = N, burst = M }`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// Tokens added per second (> 0).
    pub per_second: f64,
    /// Most tokens held (>= 1); a full bucket admits this many requests at once.
    pub burst: u32,
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} per second, burst {}", self.per_second, self.burst)
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Self {
        Bucket {
            tokens: f64::from(rate.burst),
            updated: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_second).min(f64::from(rate.burst));
        self.updated = now;
    }

    /// How long until a token is there (zero when one is).
    fn wait(&self, rate: Rate) -> Duration {
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / rate.per_second)
        }
    }
}

/// Which limit refused a request, and when to retry.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Exceeded {
    /// The key's `rate_limit`.
    Key {
        /// The limit.
        rate: Rate,
        /// When a token is back.
        retry_after: Duration,
    },
    /// The caller's `caller_rate_limit`.
    Caller {
        /// The limit.
        rate: Rate,
        /// When a token is back.
        retry_after: Duration,
    },
}

/// Callers are forgotten once this many are tracked and their buckets are full again.
const MAX_TRACKED_CALLERS: usize = 4096;

#[derive(Debug, Default)]
struct State {
    key: Option<Bucket>,
    callers: HashMap<String, Bucket>,
}

/// The buckets of one key: one for the key, one per caller.
#[derive(Debug)]
pub struct Limiter {
    key_rate: Option<Rate>,
    caller_rate: Option<Rate>,
    state: Mutex<State>,
}

impl Limiter {
    /// Buckets for these limits (either may be absent).
    pub fn new(key_rate: Option<Rate>, caller_rate: Option<Rate>) -> Self {
        Limiter {
            key_rate,
            caller_rate,
            state: Mutex::new(State::default()),
        }
    }

    /// Takes a token for `caller` (and for the key) at `now`, or says which limit refuses.
    pub fn admit(&self, caller: &str, now: Instant) -> Result<(), Exceeded> {
        if self.key_rate.is_none() && self.caller_rate.is_none() {
            return Ok(());
        }
        let mut state = self.state.lock().expect("rate limiter lock");
        if let Some(rate) = self.caller_rate
            && state.callers.len() >= MAX_TRACKED_CALLERS
            && !state.callers.contains_key(caller)
        {
            state.callers.retain(|_, bucket| {
                bucket.refill(rate, now);
                bucket.tokens < f64::from(rate.burst)
            });
        }
        let mut key_bucket = self.key_rate.map(|rate| {
            let mut bucket = state.key.unwrap_or_else(|| Bucket::full(rate, now));
            bucket.refill(rate, now);
            (rate, bucket)
        });
        let mut caller_bucket = self.caller_rate.map(|rate| {
            let mut bucket = state
                .callers
                .get(caller)
                .copied()
                .unwrap_or_else(|| Bucket::full(rate, now));
            bucket.refill(rate, now);
            (rate, bucket)
        });
        let refused = match (&caller_bucket, &key_bucket) {
            (Some((rate, bucket)), _) if bucket.tokens < 1.0 => Some(Exceeded::Caller {
                rate: *rate,
                retry_after: bucket.wait(*rate),
            }),
            (_, Some((rate, bucket))) if bucket.tokens < 1.0 => Some(Exceeded::Key {
                rate: *rate,
                retry_after: bucket.wait(*rate),
            }),
            _ => None,
        };
        if refused.is_none() {
            for (_, bucket) in key_bucket.iter_mut().chain(caller_bucket.iter_mut()) {
                bucket.tokens -= 1.0;
            }
        }
        // Refilled buckets are stored either way, so the clock does not count twice.
        if let Some((_, bucket)) = key_bucket {
            state.key = Some(bucket);
        }
        if let Some((_, bucket)) = caller_bucket {
            state.callers.insert(caller.to_string(), bucket);
        }
        match refused {
            Some(exceeded) => Err(exceeded),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_PER_SECOND: Rate = Rate {
        per_second: 2.0,
        burst: 3,
    };

    #[test]
    fn a_burst_then_the_rate() {
        let limiter = Limiter::new(Some(TWO_PER_SECOND), None);
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.admit("a", start), Ok(()));
        }
        let Err(Exceeded::Key { retry_after, .. }) = limiter.admit("b", start) else {
            panic!("the fourth request in the same instant was admitted");
        };
        assert_eq!(retry_after, Duration::from_millis(500));
        // Half a second later one token is back, and only one.
        let later = start + Duration::from_millis(500);
        assert_eq!(limiter.admit("a", later), Ok(()));
        assert!(limiter.admit("a", later).is_err());
    }

    #[test]
    fn callers_have_their_own_buckets_and_refusals_cost_nothing() {
        let limiter = Limiter::new(
            Some(Rate {
                per_second: 1.0,
                burst: 3,
            }),
            Some(Rate {
                per_second: 1.0,
                burst: 1,
            }),
        );
        let now = Instant::now();
        assert_eq!(limiter.admit("uid:1", now), Ok(()));
        // uid 1 is out of tokens; its refusal does not take the key's token.
        assert!(matches!(
            limiter.admit("uid:1", now),
            Err(Exceeded::Caller { .. })
        ));
        assert_eq!(limiter.admit("uid:2", now), Ok(()));
        assert_eq!(limiter.admit("uid:3", now), Ok(()));
        assert!(matches!(
            limiter.admit("uid:4", now),
            Err(Exceeded::Key { .. })
        ));
    }

    #[test]
    fn idle_callers_are_forgotten_when_many_are_tracked() {
        let rate = Rate {
            per_second: 1000.0,
            burst: 1,
        };
        let limiter = Limiter::new(None, Some(rate));
        let now = Instant::now();
        for i in 0..MAX_TRACKED_CALLERS {
            assert_eq!(limiter.admit(&format!("uid:{i}"), now), Ok(()));
        }
        let later = now + Duration::from_secs(1);
        assert_eq!(limiter.admit("uid:new", later), Ok(()));
        let tracked = limiter.state.lock().unwrap().callers.len();
        assert_eq!(tracked, 1, "full buckets were not pruned");
    }
}
