//! Process hardening at start-up, before any backend reads a secret:
//!
//! - `prctl(PR_SET_DUMPABLE, 0)`: no core dumps, and processes of the same uid can no longer
//!   ptrace the daemon or read its `/proc/<pid>/mem`, `environ`, `fd` (the kernel then owns
//!   those files as root);
//! - `RLIMIT_CORE` = 0 (soft and hard): no core file even if something resets the flag, and
//!   plugin processes inherit the limit;
//! - `mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)`: keys, PINs and passphrases are never
//!   written to swap. `MCL_ONFAULT` locks pages as they are touched instead of populating every
//!   mapping (thread stacks, allocator arenas) up front. Locking is skipped, with one warning,
//!   when `RLIMIT_MEMLOCK` is finite and the daemon lacks `CAP_IPC_LOCK`: with `MCL_FUTURE`,
//!   allocations past the limit would fail later, in the middle of a request.
//!
//! Not hardening but done at the same time: the soft `RLIMIT_NOFILE` is raised to the hard
//! limit, so that a flood of idle client connections cannot make `accept` fail for everyone
//! at the usual soft limit of 1024.
//!
//! The umask (077) is set in `main`.

use rustix::mm::{MlockAllFlags, mlockall};
use rustix::process::{
    DumpableBehavior, Resource, Rlimit, getrlimit, set_dumpable_behavior, setrlimit,
};

/// What each step did.
#[derive(Debug)]
pub struct Hardening {
    /// `PR_SET_DUMPABLE` 0.
    pub not_dumpable: Result<(), String>,
    /// `RLIMIT_CORE` 0.
    pub no_core: Result<(), String>,
    /// `mlockall`, or why memory is not locked.
    pub memory_locked: Result<(), String>,
    /// The soft `RLIMIT_NOFILE` after raising it to the hard limit.
    pub open_files: Result<u64, String>,
}

impl Hardening {
    /// Applies every step.
    pub fn apply() -> Self {
        Hardening {
            not_dumpable: set_dumpable_behavior(DumpableBehavior::NotDumpable)
                .map_err(|e| format!("prctl(PR_SET_DUMPABLE, 0) failed: {e}")),
            no_core: setrlimit(
                Resource::Core,
                Rlimit {
                    current: Some(0),
                    maximum: Some(0),
                },
            )
            .map_err(|e| format!("setrlimit(RLIMIT_CORE, 0) failed: {e}")),
            memory_locked: lock_memory(),
            open_files: raise_open_files(),
        }
    }

    /// Logs the outcome: one warning per step that did not work.
    pub fn log(&self) {
        for (step, result) in [
            ("not dumpable", &self.not_dumpable),
            ("no core files", &self.no_core),
        ] {
            if let Err(e) = result {
                tracing::warn!("hardening step \"{step}\" failed: {e}");
            }
        }
        match &self.open_files {
            Ok(limit) => tracing::debug!(limit, "open file limit"),
            Err(e) => tracing::warn!("cannot raise the open file limit: {e}"),
        }
        match &self.memory_locked {
            Ok(()) => tracing::debug!("memory locked (mlockall); secrets stay out of swap"),
            Err(why) => tracing::warn!("memory is not locked: {why}"),
        }
    }
}

fn raise_open_files() -> Result<u64, String> {
    let limit = getrlimit(Resource::Nofile);
    // RLIM_INFINITY is not accepted for NOFILE; 1 << 20 is the kernel's default nr_open.
    let hard = limit.maximum.unwrap_or(1 << 20).min(1 << 20);
    if limit.current.is_some_and(|soft| soft >= hard) {
        return Ok(limit.current.unwrap_or(hard));
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(hard),
            maximum: limit.maximum,
        },
    )
    .map_err(|e| format!("setrlimit(RLIMIT_NOFILE, {hard}) failed: {e}"))?;
    Ok(hard)
}

fn lock_memory() -> Result<(), String> {
    let limit = getrlimit(Resource::Memlock).current;
    let can_exceed = rustix::thread::capabilities(None)
        .map(|caps| {
            caps.effective
                .contains(rustix::thread::CapabilitySet::IPC_LOCK)
        })
        .unwrap_or(false);
    if let Some(limit) = limit
        && !can_exceed
    {
        return Err(format!(
            "RLIMIT_MEMLOCK is {limit} bytes and keywardd lacks CAP_IPC_LOCK, so locking all of its memory would make allocations fail once the limit is reached; secrets may be swapped out. Raise the limit (LimitMEMLOCK=infinity in a systemd unit, or `ulimit -l unlimited`) or use encrypted swap"
        ));
    }
    let flags = MlockAllFlags::CURRENT | MlockAllFlags::FUTURE;
    match mlockall(flags | MlockAllFlags::ONFAULT) {
        Ok(()) => Ok(()),
        // Kernels before 4.4 have no MCL_ONFAULT.
        Err(rustix::io::Errno::INVAL) => {
            mlockall(flags).map_err(|e| format!("mlockall failed: {e}; secrets may be swapped out"))
        }
        Err(e) => Err(format!("mlockall failed: {e}; secrets may be swapped out")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs in a child process (the test binary re-executed) so the test runner itself stays
    /// dumpable: checks each step through the kernel's own view.
    #[test]
    fn every_step_takes_effect() {
        if std::env::var_os("KEYWARD_HARDENING_CHILD").is_some() {
            let report = Hardening::apply();
            assert_eq!(report.not_dumpable, Ok(()));
            assert_eq!(report.no_core, Ok(()));
            assert_eq!(
                rustix::process::dumpable_behavior().unwrap(),
                DumpableBehavior::NotDumpable
            );
            let core = getrlimit(Resource::Core);
            assert_eq!((core.current, core.maximum), (Some(0), Some(0)));
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let locked_kb: u64 = status
                .lines()
                .find_map(|l| l.strip_prefix("VmLck:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .expect("VmLck in /proc/self/status");
            match &report.memory_locked {
                Ok(()) => assert!(locked_kb > 0, "mlockall succeeded but VmLck is 0"),
                Err(why) => {
                    assert_eq!(locked_kb, 0);
                    assert!(why.contains("RLIMIT_MEMLOCK") || why.contains("mlockall"));
                }
            }
            return;
        }
        let exe = std::env::current_exe().unwrap();
        let output = std::process::Command::new(exe)
            .args([
                "--exact",
                "hardening::tests::every_step_takes_effect",
                "--nocapture",
            ])
            .env("KEYWARD_HARDENING_CHILD", "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("1 passed"),
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
