//! Waiting for what a test asserts on, with a deadline: the one place for it.
//!
//! A file, a log line, a socket or a process state that something else produces is never read
//! once right after a start or an action (it may not be there yet), and never after a fixed
//! sleep (too short on a loaded machine, too long everywhere else): the test polls for it
//! until it is there or the deadline passes, and then fails saying what it waited for and
//! what it saw last.

use std::time::{Duration, Instant};

use crate::TestDaemon;

/// How often a condition is checked again.
const INTERVAL: Duration = Duration::from_millis(20);

/// Calls `check` until it returns `Ok`, for at most `limit`; panics after that with `what` and
/// the last `Err` (what `check` saw: a log, a listing, an error).
pub fn until<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match check() {
            Ok(value) => return value,
            Err(seen) if Instant::now() > deadline => {
                panic!("timed out after {limit:?} waiting for {what}; last seen:\n{seen}")
            }
            Err(_) => std::thread::sleep(INTERVAL),
        }
    }
}

/// [`until`] for async tests, with an async check (`async || ...`, which may make calls):
/// sleeps without blocking the runtime between checks.
pub async fn until_async<T>(
    what: &str,
    limit: Duration,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(seen) if Instant::now() > deadline => {
                panic!("timed out after {limit:?} waiting for {what}; last seen:\n{seen}")
            }
            Err(_) => tokio::time::sleep(INTERVAL).await,
        }
    }
}

/// Calls `check` until it returns `Some`, for at most `limit`; `None` when it never did (for a
/// test that asserts with its own message, or that something does *not* happen in time).
pub async fn poll<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(INTERVAL).await;
    }
}

/// The daemon's log lines that contain every one of `needles`.
pub fn log_lines(daemon: &TestDaemon, needles: &[&str]) -> Vec<String> {
    daemon
        .log()
        .lines()
        .filter(|line| needles.iter().all(|n| line.contains(n)))
        .map(str::to_string)
        .collect()
}

/// Waits up to `limit` until at least `count` lines of the daemon's log contain all `needles`
/// (plugin output and background work reach the log asynchronously); returns those lines, or
/// panics with the log.
pub async fn for_log(
    daemon: &TestDaemon,
    needles: &[&str],
    count: usize,
    limit: Duration,
) -> Vec<String> {
    until_async(
        &format!("{count} log line(s) with {needles:?}"),
        limit,
        async || {
            let lines = log_lines(daemon, needles);
            if lines.len() >= count {
                Ok(lines)
            } else {
                Err(daemon.log())
            }
        },
    )
    .await
}
