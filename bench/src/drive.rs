//! The load generator every series shares: N concurrent clients, each with its own state (a
//! connection, a request), for a fixed number of requests or a fixed time. Failed requests are
//! counted, not timed; a series where every request failed is an error.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use tokio::task::JoinSet;

use crate::stats::Summary;

/// How long a series runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Budget {
    /// This many requests in all, split evenly across the clients.
    Count(usize),
    /// Every client sends requests until this much time has passed.
    Time(Duration),
}

impl Budget {
    /// `--duration` when given (seconds), else `--count`.
    pub fn new(count: usize, duration: Option<f64>) -> Budget {
        match duration {
            Some(seconds) => Budget::Time(Duration::from_secs_f64(seconds)),
            None => Budget::Count(count),
        }
    }

    /// Words for progress messages.
    pub fn describe(self) -> String {
        match self {
            Budget::Count(n) => format!("{n} signatures"),
            Budget::Time(d) => format!("{:.1} s of signatures", d.as_secs_f64()),
        }
    }
}

/// One client's request, repeated.
pub trait Op: Send + 'static {
    /// Sends one request and waits for its answer.
    fn call(&mut self) -> impl Future<Output = Result<()>> + Send;
}

/// `n` unmeasured requests; the first failure stops the warm-up and is returned.
pub async fn warm_up<O: Op>(op: &mut O, n: usize) -> Result<()> {
    for _ in 0..n {
        op.call().await?;
    }
    Ok(())
}

/// Runs one client per element of `ops` concurrently within `budget`.
pub async fn drive<O: Op>(ops: Vec<O>, budget: Budget) -> Result<Summary> {
    let clients = ops.len().max(1);
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for (task, mut op) in ops.into_iter().enumerate() {
        tasks.spawn(async move {
            let (n, deadline) = match budget {
                Budget::Count(count) => {
                    (count / clients + usize::from(task < count % clients), None)
                }
                Budget::Time(duration) => (usize::MAX, Some(start + duration)),
            };
            let mut latencies: Vec<Duration> = Vec::with_capacity(n.min(1 << 20));
            let (mut errors, mut first_error) = (0usize, None);
            for _ in 0..n {
                let t0 = Instant::now();
                if deadline.is_some_and(|d| t0 >= d) {
                    break;
                }
                match op.call().await {
                    Ok(()) => latencies.push(t0.elapsed()),
                    Err(error) => {
                        errors += 1;
                        first_error.get_or_insert(error);
                    }
                }
            }
            (latencies, errors, first_error)
        });
    }
    let (mut latencies, mut errors, mut first_error) = (Vec::new(), 0, None);
    while let Some(result) = tasks.join_next().await {
        let (mut l, e, f) = result?;
        latencies.append(&mut l);
        errors += e;
        if first_error.is_none() {
            first_error = f;
        }
    }
    let wall = start.elapsed();
    if let Some(error) = first_error {
        if latencies.is_empty() {
            return Err(error.context("every request of the series failed"));
        }
        eprintln!("  {errors} request(s) failed; the first: {error:#}");
    }
    if latencies.is_empty() {
        return Err(anyhow!("the series made no request"));
    }
    Ok(Summary::new(latencies, wall).with_errors(errors))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Every {
        n: usize,
        fail_every: usize,
    }

    impl Op for Every {
        async fn call(&mut self) -> Result<()> {
            self.n += 1;
            if self.fail_every != 0 && self.n.is_multiple_of(self.fail_every) {
                anyhow::bail!("planned failure");
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn counts_successes_and_errors() {
        let ops = (0..3)
            .map(|_| Every {
                n: 0,
                fail_every: 5,
            })
            .collect();
        let summary = drive(ops, Budget::Count(30)).await.unwrap();
        assert_eq!(summary.count + summary.errors, 30);
        assert_eq!(summary.errors, 6);

        let ops = vec![Every {
            n: 0,
            fail_every: 1,
        }];
        assert!(drive(ops, Budget::Count(3)).await.is_err());

        let ops = vec![Every {
            n: 0,
            fail_every: 0,
        }];
        let summary = drive(ops, Budget::Time(Duration::from_millis(20)))
            .await
            .unwrap();
        assert!(summary.count > 0 && summary.errors == 0);
    }
}
