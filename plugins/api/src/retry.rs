//! One retry policy for every backend that calls a service (Vault, AWS KMS, Azure Key Vault),
//! on the `backon` crate.
//!
//! - Only failures that say they may pass are tried again ([`Retryable::retryable`]): a
//!   refusal (bad credentials, a missing key, a sealed Vault) is answered at once.
//! - Between tries: exponential backoff from [`RetryPolicy::first_backoff`], doubling, with
//!   jitter (backon adds up to the delay itself again, so many agents that failed together do
//!   not come back together), unless the server said when to come back (`Retry-After`,
//!   [`Retryable::retry_after`]), which wins.
//! - A call never runs past its deadline ([`RetryPolicy::budget`] from its first try): a wait
//!   that would leave less than [`RetryPolicy::min_attempt`] for the next try stops the retries,
//!   and each try is told how long it has left ([`Attempt::remaining`]).
//! - The last failure comes back with how many tries were made and, when it may pass later, the
//!   wait to suggest to the caller ([`Exhausted`]), so the backend can turn it into a
//!   `BackendError::Unavailable` with a retry hint.
//!
//! The token bucket that keeps a backend inside its service's quota is [`crate::ratelimit`];
//! waiting for a slot there is queueing, not part of a call's budget.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable as _};

/// What a failed try says about trying again.
pub trait Retryable {
    /// Whether the same request may succeed if sent again (throttling, a 5xx, a dropped
    /// connection), as opposed to a refusal that will not change.
    fn retryable(&self) -> bool;

    /// How long the server asked to wait (`Retry-After`), if it said.
    fn retry_after(&self) -> Option<Duration> {
        None
    }

    /// At most this many tries for this kind of failure (the first included), when it should
    /// be fewer than the policy's (a connection that keeps failing is not worth six tries).
    fn max_attempts(&self) -> Option<u32> {
        None
    }
}

/// How one call retries: see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries per call, the first included.
    pub max_attempts: u32,
    /// The wait before the second try; it doubles for each further one (plus jitter).
    pub first_backoff: Duration,
    /// The longest single wait.
    pub max_backoff: Duration,
    /// The whole call's deadline, from its first try: tries and waits together.
    pub budget: Duration,
    /// The least time worth starting another try with.
    pub min_attempt: Duration,
}

/// One try of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// 1 for the first try.
    pub number: u32,
    /// What is left of the call's budget: bound the try's own timeout by it.
    pub remaining: Duration,
}

/// The failure a call ends with.
#[derive(Debug)]
pub struct Exhausted<E> {
    /// The last try's error.
    pub error: E,
    /// How many tries were made.
    pub attempts: u32,
    /// When the failure may pass later: how long the caller should wait before trying again
    /// (the server's `Retry-After`, else the next backoff). `None` for a refusal.
    pub retry_after: Option<Duration>,
}

impl RetryPolicy {
    /// Runs `op` until it succeeds, fails in a way that will not pass, or the policy says stop.
    /// `what` names the call in debug logs.
    pub async fn run<T, E, F, Fut>(&self, what: &str, op: F) -> Result<T, Exhausted<E>>
    where
        E: Retryable + std::fmt::Debug,
        F: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.run_with(what, op, tokio::time::sleep).await
    }

    /// [`RetryPolicy::run`] with another way to wait (the tests record the waits instead).
    async fn run_with<T, E, F, Fut, S>(
        &self,
        what: &str,
        mut op: F,
        sleeper: S,
    ) -> Result<T, Exhausted<E>>
    where
        E: Retryable + std::fmt::Debug,
        F: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        S: backon::Sleeper,
    {
        let deadline = Instant::now() + self.budget;
        // Atomics and a mutex rather than cells: the future must stay Send for async traits.
        let attempts = AtomicU32::new(0);
        // The wait the policy would have slept when it gave up: the hint for the caller.
        let stopped_with = Mutex::new(None::<Duration>);
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.first_backoff)
            .with_max_delay(self.max_backoff)
            .with_factor(2.0)
            .with_jitter()
            .with_max_times(self.max_attempts.saturating_sub(1) as usize);
        let result = (|| {
            let number = attempts.fetch_add(1, Ordering::Relaxed) + 1;
            let remaining = deadline.saturating_duration_since(Instant::now());
            op(Attempt { number, remaining })
        })
        .retry(backoff)
        .sleep(sleeper)
        .when(|error: &E| error.retryable())
        .adjust(|error: &E, next: Option<Duration>| {
            // `next` is None once the policy's tries are used up.
            let wait = next.map(|next| error.retry_after().unwrap_or(next));
            let capped = error
                .max_attempts()
                .is_some_and(|max| attempts.load(Ordering::Relaxed) >= max);
            let fits =
                wait.is_some_and(|wait| Instant::now() + wait + self.min_attempt <= deadline);
            if capped || !fits {
                *stopped_with.lock().expect("retry state") = error.retry_after().or(wait);
                return None;
            }
            wait
        })
        .notify(|error: &E, wait: Duration| {
            tracing::debug!(
                attempt = attempts.load(Ordering::Relaxed),
                "{what} failed, trying again in {wait:?}: {error:?}"
            );
        })
        .await;
        result.map_err(|error| {
            let retry_after = error.retryable().then(|| {
                let stopped = *stopped_with.lock().expect("retry state");
                stopped.unwrap_or(self.first_backoff)
            });
            Exhausted {
                error,
                attempts: attempts.load(Ordering::Relaxed),
                retry_after,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::sync::Arc;

    use super::*;

    #[derive(Debug, Clone)]
    struct Failure {
        retryable: bool,
        retry_after: Option<Duration>,
        max_attempts: Option<u32>,
    }

    impl Retryable for Failure {
        fn retryable(&self) -> bool {
            self.retryable
        }
        fn retry_after(&self) -> Option<Duration> {
            self.retry_after
        }
        fn max_attempts(&self) -> Option<u32> {
            self.max_attempts
        }
    }

    const POLICY: RetryPolicy = RetryPolicy {
        max_attempts: 4,
        first_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(2),
        budget: Duration::from_secs(10),
        min_attempt: Duration::from_millis(100),
    };

    fn busy() -> Failure {
        Failure {
            retryable: true,
            retry_after: None,
            max_attempts: None,
        }
    }

    /// Runs `POLICY` over `failures` (then success); the result, the number of tries and the
    /// waits between them (recorded, not slept).
    async fn drive(
        failures: Vec<Failure>,
    ) -> (Result<u32, Exhausted<Failure>>, u32, Vec<Duration>) {
        let waits = Arc::new(Mutex::new(Vec::new()));
        let recorded = waits.clone();
        let sleeper = move |wait: Duration| {
            recorded.lock().unwrap().push(wait);
            std::future::ready(())
        };
        let tries = Cell::new(0);
        let mut script = failures.into_iter();
        let result = POLICY
            .run_with(
                "test call",
                |attempt| {
                    tries.set(attempt.number);
                    assert!(attempt.remaining <= POLICY.budget);
                    let next = script.next();
                    async move {
                        match next {
                            Some(failure) => Err(failure),
                            None => Ok(attempt.number),
                        }
                    }
                },
                sleeper,
            )
            .await;
        let waits = waits.lock().unwrap().clone();
        (result, tries.get(), waits)
    }

    #[tokio::test]
    async fn retryable_failures_back_off_exponentially_with_jitter() {
        let (result, tries, waits) = drive(vec![busy(), busy(), busy()]).await;
        assert_eq!((result.unwrap(), tries), (4, 4));
        // 100 ms, 200 ms, 400 ms, each plus up to as much again of jitter.
        assert_eq!(waits.len(), 3);
        for (wait, base) in waits.iter().zip([100u64, 200, 400]) {
            let base = Duration::from_millis(base);
            assert!(*wait >= base && *wait <= base * 2, "{waits:?}");
        }
    }

    #[tokio::test]
    async fn refusals_are_not_retried_and_carry_no_hint() {
        let refusal = Failure {
            retryable: false,
            ..busy()
        };
        let (result, tries, waits) = drive(vec![refusal]).await;
        let exhausted = result.unwrap_err();
        assert_eq!((exhausted.attempts, exhausted.retry_after), (1, None));
        assert_eq!((tries, waits.len()), (1, 0));
    }

    #[tokio::test]
    async fn retry_after_wins_over_the_backoff() {
        let slow_down = Failure {
            retry_after: Some(Duration::from_secs(3)),
            ..busy()
        };
        let (result, _, waits) = drive(vec![slow_down]).await;
        assert_eq!(result.unwrap(), 2);
        assert_eq!(waits, [Duration::from_secs(3)]);
    }

    #[tokio::test]
    async fn the_deadline_and_the_tries_stop_retries_and_the_hint_says_when() {
        let slow_down = Failure {
            retry_after: Some(Duration::from_secs(30)),
            ..busy()
        };
        let (result, tries, waits) = drive(vec![slow_down.clone(), slow_down]).await;
        let exhausted = result.unwrap_err();
        assert_eq!(
            (tries, waits.len()),
            (1, 0),
            "a 30 s wait does not fit a 10 s budget"
        );
        assert_eq!(exhausted.retry_after, Some(Duration::from_secs(30)));

        let (result, tries, waits) = drive(vec![busy(); 10]).await;
        let exhausted = result.unwrap_err();
        assert_eq!(exhausted.attempts, POLICY.max_attempts);
        assert_eq!((tries, waits.len()), (POLICY.max_attempts, 3));
        assert!(exhausted.retry_after.is_some());
    }

    #[tokio::test]
    async fn a_failure_kind_can_cap_its_own_tries() {
        let flaky_connection = Failure {
            max_attempts: Some(2),
            ..busy()
        };
        let (result, tries, _) = drive(vec![flaky_connection; 5]).await;
        assert_eq!(result.unwrap_err().attempts, 2);
        assert_eq!(tries, 2);
    }
}
