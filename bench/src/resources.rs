//! What a server process costs during a run: CPU time (user + system) and resident memory,
//! read from `/proc` for the process and its descendants (a daemon's plugin processes).
//!
//! Before a run [`Watch::start`] resets each process's peak RSS (`VmHWM`, by writing `5` to
//! `/proc/<pid>/clear_refs`; best effort: when the kernel refuses, the peak is the process's
//! lifetime peak) and samples the CPU times; [`Watch::finish`] samples again.

use std::fs;
use std::time::Duration;

/// One reading of a process tree.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    /// utime + stime of every process in the tree.
    pub cpu: Duration,
    /// Sum of `VmRSS`, KiB.
    pub rss_kib: u64,
    /// Sum of `VmHWM` (each process's peak), KiB.
    pub hwm_kib: u64,
    /// Processes in the tree.
    pub processes: usize,
}

/// The cost of one run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Usage {
    /// CPU time the tree spent during the run, ms.
    pub cpu_ms: f64,
    /// `cpu_ms` per successful request, µs.
    pub cpu_us_per_op: f64,
    /// Peak resident memory during the run (sum over the tree), MiB.
    pub peak_rss_mib: f64,
    /// Resident memory at the end, MiB.
    pub rss_mib: f64,
    /// Processes measured (the server and its plugin processes).
    pub processes: usize,
}

/// A process tree being measured.
#[derive(Debug)]
pub struct Watch {
    pid: u32,
    before: Sample,
}

impl Watch {
    /// Resets the peaks and takes the first reading; `None` when the process is gone.
    pub fn start(pid: u32) -> Option<Watch> {
        for pid in tree(pid) {
            // Refused for processes that are not ours or not dumpable without privileges.
            let _ = fs::write(format!("/proc/{pid}/clear_refs"), "5");
        }
        Some(Watch {
            pid,
            before: sample(pid)?,
        })
    }

    /// The second reading; `ops` successful requests were served in between.
    pub fn finish(self, ops: usize) -> Option<Usage> {
        let after = sample(self.pid)?;
        let cpu_ms = after.cpu.saturating_sub(self.before.cpu).as_secs_f64() * 1e3;
        Some(Usage {
            cpu_ms,
            cpu_us_per_op: if ops == 0 {
                0.0
            } else {
                cpu_ms * 1e3 / ops as f64
            },
            peak_rss_mib: after.hwm_kib as f64 / 1024.0,
            rss_mib: after.rss_kib as f64 / 1024.0,
            processes: after.processes,
        })
    }
}

/// CPU time and memory of `pid` and its descendants; `None` when `pid` is gone.
pub fn sample(pid: u32) -> Option<Sample> {
    let pids = tree(pid);
    if pids.is_empty() {
        return None;
    }
    let ticks = rustix::param::clock_ticks_per_second().max(1);
    let mut total = Sample::default();
    for pid in pids {
        let Some(stat) = fs::read_to_string(format!("/proc/{pid}/stat")).ok() else {
            continue;
        };
        let Some((utime, stime)) = cpu_ticks(&stat) else {
            continue;
        };
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        total.cpu += Duration::from_secs_f64((utime + stime) as f64 / ticks as f64);
        total.rss_kib += status_kib(&status, "VmRSS:").unwrap_or(0);
        total.hwm_kib += status_kib(&status, "VmHWM:").unwrap_or(0);
        total.processes += 1;
    }
    Some(total)
}

/// `pid` and every process descended from it (its plugin processes), `pid` first; empty when
/// `pid` does not exist.
pub fn tree(pid: u32) -> Vec<u32> {
    if fs::metadata(format!("/proc/{pid}")).is_err() {
        return Vec::new();
    }
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if let Some(ppid) = fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|s| parent_pid(&s))
        {
            parents.push((child, ppid));
        }
    }
    let mut out = vec![pid];
    let mut next = 0;
    while next < out.len() {
        let parent = out[next];
        out.extend(
            parents
                .iter()
                .filter(|&&(_, ppid)| ppid == parent)
                .map(|&(child, _)| child),
        );
        next += 1;
    }
    out
}

/// The fields after the command name of a `/proc/<pid>/stat` line (the name may hold spaces
/// and parentheses, so split at the last `)`).
fn fields(stat: &str) -> Option<Vec<&str>> {
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().collect())
}

fn parent_pid(stat: &str) -> Option<u32> {
    fields(stat)?.get(1)?.parse().ok()
}

/// utime and stime (fields 14 and 15 of proc(5)), in clock ticks.
fn cpu_ticks(stat: &str) -> Option<(u64, u64)> {
    let fields = fields(stat)?;
    Some((fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?))
}

/// A `Name:   1234 kB` line of `/proc/<pid>/status`.
fn status_kib(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(name))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_and_status() {
        let stat = "42 (key ward) d) S 7 42 42 0 -1 4194560 100 0 0 0 25 13 0 0 20 0 9 0 1 2 3";
        assert_eq!(parent_pid(stat), Some(7));
        assert_eq!(cpu_ticks(stat), Some((25, 13)));
        let status = "Name:\tkeywardd\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(status_kib(status, "VmHWM:"), Some(20480));
        assert_eq!(status_kib(status, "VmRSS:"), Some(10240));
    }

    #[test]
    fn measures_this_process() {
        let pid = std::process::id();
        let watch = Watch::start(pid).unwrap();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = std::hint::black_box(x.wrapping_add(i));
        }
        let usage = watch.finish(1).unwrap();
        assert!(usage.rss_mib > 0.0 && usage.peak_rss_mib >= usage.rss_mib * 0.5);
        assert!(usage.processes >= 1);
        assert_eq!(tree(u32::MAX - 1), Vec::<u32>::new());
    }
}
