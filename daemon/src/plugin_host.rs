//! The plugin host: runs a backend as a child process, supervises it, and presents it to the
//! rest of the daemon as an ordinary [`Backend`].
//!
//! States of one plugin (see ARCHITECTURE.md, "Plugins"):
//!
//! ```text
//!   Starting --handshake ok--> Running --exit / failed health check / call overran its deadline--> Down
//!      ^                                                                                          |
//!      +----------------------------- after a jittered exponential backoff -----------------------+
//! ```
//!
//! While a plugin is not Running its keys answer `UNAVAILABLE` with a retry hint. Every call has
//! a deadline; a plugin that overruns it is killed and restarted, so the daemon never hangs on a
//! plugin. A plugin's stderr goes to the daemon's log, prefixed with the backend name.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::future::Future;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use keyward_plugin_api::plugin::{
    ENV_NAME, ENV_PROTOCOL, ENV_SOCKET, HANDSHAKE_LINE, RemoteBackend,
};
use keyward_plugin_api::{
    Backend, BackendError, Deletion, Health, KeyDescription, KeySpec, SignOp, Signature,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{Notify, watch};

pub use crate::plugin_exec::check_executable;

/// Everything needed to start one plugin process.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// The backend instance name.
    pub name: String,
    /// The backend type as configured (`local`, `external`, ...).
    pub backend_type: String,
    /// The executable, already checked by [`check_executable`].
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// The complete environment of the child.
    pub env: Vec<(OsString, OsString)>,
    /// The backend settings, as the JSON written to the child's stdin.
    pub settings_json: Vec<u8>,
    /// A private (0700) directory for the plugin's socket.
    pub socket_dir: PathBuf,
    /// Deadline of each call.
    pub call_timeout: Duration,
    /// Deadline for the handshake.
    pub startup_timeout: Duration,
    /// Interval between health checks.
    pub health_interval: Duration,
}

#[derive(Debug, Clone)]
enum State {
    /// Launching; `after` is why the previous run ended, if there was one.
    Starting {
        after: Option<String>,
    },
    Running(RemoteBackend),
    Down {
        reason: String,
        retry_at: Instant,
    },
}

#[derive(Debug)]
struct Shared {
    spec: LaunchSpec,
    state: Mutex<State>,
    /// Wakes the supervisor to kill a plugin that overran a deadline.
    kill: Notify,
    /// Signals that the daemon is stopping.
    stop: watch::Receiver<bool>,
    /// The last lines of the plugin's stderr, for error messages.
    stderr_tail: Mutex<VecDeque<String>>,
    /// Launches after the first (`keyward status`, the metrics endpoint).
    restarts: AtomicU32,
    /// The running process's pid.
    pid: Mutex<Option<u32>>,
}

/// Where a plugin process is in its life, for `keyward status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Launching (`Some(why the previous run ended)` after a restart).
    Starting(Option<String>),
    /// Answering.
    Running,
    /// Down, restarting after a backoff: why.
    Down(String),
}

/// A plugin process as `keyward status` shows it.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Its phase.
    pub phase: Phase,
    /// Launches after the first.
    pub restarts: u32,
    /// The running process's pid.
    pub pid: Option<u32>,
}

/// A backend running in a supervised child process.
#[derive(Debug, Clone)]
pub struct PluginBackend {
    shared: Arc<Shared>,
}

impl PluginBackend {
    /// Starts the supervisor of a plugin; the first launch happens in the background. Completes
    /// `stop` to stop it.
    pub fn spawn(
        spec: LaunchSpec,
        stop: watch::Receiver<bool>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let shared = Arc::new(Shared {
            spec,
            state: Mutex::new(State::Starting { after: None }),
            kill: Notify::new(),
            stop,
            stderr_tail: Mutex::new(VecDeque::new()),
            restarts: AtomicU32::new(0),
            pid: Mutex::new(None),
        });
        let task = tokio::spawn(supervise(shared.clone()));
        (PluginBackend { shared }, task)
    }

    /// Waits until the plugin is Running or Down (not Starting), at most `limit`.
    pub async fn wait_started(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if !matches!(
                *self.shared.state.lock().expect("plugin state"),
                State::Starting { .. }
            ) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn name(&self) -> &str {
        &self.shared.spec.name
    }

    /// Its phase, restarts and pid now.
    pub fn snapshot(&self) -> Snapshot {
        let phase = match &*self.shared.state.lock().expect("plugin state") {
            State::Starting { after } => Phase::Starting(after.clone()),
            State::Running(_) => Phase::Running,
            State::Down { reason, .. } => Phase::Down(reason.clone()),
        };
        Snapshot {
            phase,
            restarts: self.shared.restarts.load(Ordering::Relaxed),
            pid: *self.shared.pid.lock().expect("plugin pid"),
        }
    }

    /// Runs `call` against the live plugin with the call deadline.
    async fn call<T, F, Fut>(&self, call: F) -> Result<T, BackendError>
    where
        F: FnOnce(RemoteBackend) -> Fut,
        Fut: Future<Output = Result<T, BackendError>>,
    {
        let remote = self.remote()?;
        let timeout = self.shared.spec.call_timeout;
        match tokio::time::timeout(timeout, call(remote.clone())).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(self.classify(error, &remote).await),
            Err(_) => {
                tracing::error!(plugin = %self.name(), "a call overran its {timeout:?} deadline; restarting the plugin");
                self.shared.kill.notify_one();
                Err(BackendError::Timeout(format!(
                    "plugin {:?} did not answer within {:.1}s; it is being restarted (raise `timeout` on the backend if the device is slow)",
                    self.name(),
                    timeout.as_secs_f64()
                )))
            }
        }
    }

    fn remote(&self) -> Result<RemoteBackend, BackendError> {
        match &*self.shared.state.lock().expect("plugin state") {
            State::Running(remote) => Ok(remote.clone()),
            State::Starting { after } => Err(BackendError::Unavailable {
                message: match after {
                    Some(reason) => format!(
                        "plugin {:?} is restarting (it was down: {reason}); try again in a moment",
                        self.name()
                    ),
                    None => format!(
                        "plugin {:?} is starting; try again in a moment",
                        self.name()
                    ),
                },
                retry_after: Some(Duration::from_millis(200)),
            }),
            State::Down { reason, retry_at } => {
                let wait = retry_at.saturating_duration_since(Instant::now());
                Err(BackendError::Unavailable {
                    message: format!(
                        "plugin {:?} is down ({reason}); it restarts in {:.1}s",
                        self.name(),
                        wait.as_secs_f64()
                    ),
                    retry_after: Some(wait.max(Duration::from_millis(100))),
                })
            }
        }
    }

    /// Application errors pass through; a transport failure (the plugin died mid-call) becomes
    /// `Unavailable`.
    async fn classify(&self, error: BackendError, remote: &RemoteBackend) -> BackendError {
        let application = matches!(
            error,
            BackendError::NotFound(_)
                | BackendError::Unsupported(_)
                | BackendError::InvalidInput(_)
                | BackendError::PermissionDenied(_)
                | BackendError::FailedPrecondition(_)
        );
        if application {
            return error;
        }
        let alive = matches!(
            tokio::time::timeout(Duration::from_millis(500), remote.ping()).await,
            Ok(Ok(()))
        );
        if alive {
            error
        } else {
            BackendError::Unavailable {
                message: format!(
                    "plugin {:?} failed during the call ({error}); it is being restarted",
                    self.name()
                ),
                retry_after: Some(Duration::from_millis(500)),
            }
        }
    }
}

#[async_trait]
impl Backend for PluginBackend {
    fn backend_type(&self) -> &str {
        &self.shared.spec.backend_type
    }

    async fn list_keys(&self) -> Result<Vec<KeyDescription>, BackendError> {
        self.call(|remote| async move { remote.list_keys().await })
            .await
    }

    async fn describe_key(&self, reference: &str) -> Result<KeyDescription, BackendError> {
        self.call(|remote| async move { remote.describe_key(reference).await })
            .await
    }

    async fn canonical_reference(&self, reference: &str) -> Result<Option<String>, BackendError> {
        self.call(|remote| async move { remote.canonical_reference(reference).await })
            .await
    }

    async fn sign(&self, reference: &str, op: SignOp<'_>) -> Result<Signature, BackendError> {
        self.call(|remote| async move { remote.sign(reference, op).await })
            .await
    }

    async fn generate_key(
        &self,
        name: &str,
        spec: KeySpec,
    ) -> Result<KeyDescription, BackendError> {
        self.call(|remote| async move { remote.generate_key(name, spec).await })
            .await
    }

    async fn generate_key_with(
        &self,
        name: &str,
        spec: KeySpec,
        options: &std::collections::BTreeMap<String, String>,
    ) -> Result<KeyDescription, BackendError> {
        self.call(|remote| async move { remote.generate_key_with(name, spec, options).await })
            .await
    }

    async fn unlock(
        &self,
        secret: keyward_plugin_api::Secret,
        ttl: Option<Duration>,
    ) -> Result<(), BackendError> {
        self.call(|remote| async move { remote.unlock(secret, ttl).await })
            .await
    }

    async fn delete_key(&self, reference: &str) -> Result<Deletion, BackendError> {
        self.call(|remote| async move { remote.delete_key(reference).await })
            .await
    }

    async fn health(&self) -> Result<Health, BackendError> {
        self.call(|remote| async move { remote.health().await })
            .await
    }
}

/// Restart delay after `failures` consecutive failures: 100 ms doubling to 30 s, +-50% jitter.
fn backoff(failures: u32) -> Duration {
    let base = 100u64
        .saturating_mul(1 << failures.saturating_sub(1).min(9))
        .min(30_000);
    let jitter = (random_u64() % (base + 1)) as i64 - (base / 2) as i64;
    Duration::from_millis((base as i64 + jitter).max(50) as u64)
}

fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    // Jitter only needs to differ between processes and restarts.
    if openssl::rand::rand_bytes(&mut bytes).is_err() {
        return std::process::id() as u64;
    }
    u64::from_le_bytes(bytes)
}

async fn supervise(shared: Arc<Shared>) {
    let name = shared.spec.name.clone();
    let mut stop = shared.stop.clone();
    let mut failures = 0u32;
    let mut generation = 0u64;
    loop {
        if *stop.borrow() {
            return;
        }
        generation += 1;
        if generation > 1 {
            shared.restarts.fetch_add(1, Ordering::Relaxed);
            crate::metrics::plugin_restart(&name);
        }
        {
            let mut state = shared.state.lock().expect("plugin state");
            let after = match &*state {
                State::Down { reason, .. } => Some(reason.clone()),
                _ => None,
            };
            *state = State::Starting { after };
        }
        let started = Instant::now();
        let reason = match launch(&shared, generation).await {
            Ok((mut child, remote)) => {
                tracing::info!(plugin = %name, pid = child.id(), "plugin ready");
                *shared.pid.lock().expect("plugin pid") = child.id();
                *shared.state.lock().expect("plugin state") = State::Running(remote.clone());
                let reason = tokio::select! {
                    status = child.wait() => match status {
                        Ok(status) => format!("it exited ({status})"),
                        Err(e) => format!("waiting for it failed: {e}"),
                    },
                    reason = health_check(&remote, shared.spec.health_interval, shared.spec.call_timeout) => {
                        let _ = child.start_kill();
                        let _ = child.wait().await;
                        reason
                    }
                    () = shared.kill.notified() => {
                        let _ = child.start_kill();
                        let _ = child.wait().await;
                        "it overran a call deadline and was killed".to_string()
                    }
                    () = stopped(&mut stop) => {
                        stop_child(&name, &mut child).await;
                        return;
                    }
                };
                // A plugin that ran for a while before failing starts its backoff afresh.
                if started.elapsed() > Duration::from_secs(10) {
                    failures = 0;
                }
                reason
            }
            Err(reason) => reason,
        };
        *shared.pid.lock().expect("plugin pid") = None;
        failures = failures.saturating_add(1);
        let delay = backoff(failures);
        tracing::error!(plugin = %name, "plugin down: {reason}; restarting in {delay:?}");
        *shared.state.lock().expect("plugin state") = State::Down {
            reason,
            retry_at: Instant::now() + delay,
        };
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stopped(&mut stop) => return,
        }
    }
}

/// Completes when the daemon is stopping.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send; drop it here, not across an await.
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}

/// Completes with a reason when the plugin stops answering its health check.
async fn health_check(remote: &RemoteBackend, interval: Duration, timeout: Duration) -> String {
    loop {
        tokio::time::sleep(interval).await;
        match tokio::time::timeout(timeout, remote.ping()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return format!("its health check failed: {e}"),
            Err(_) => {
                return format!(
                    "its health check got no answer within {:.1}s",
                    timeout.as_secs_f64()
                );
            }
        }
    }
}

async fn stop_child(name: &str, child: &mut Child) {
    if let Some(pid) = child
        .id()
        .and_then(|id| rustix::process::Pid::from_raw(id as i32))
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    if tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .is_err()
    {
        tracing::warn!(plugin = %name, "plugin ignored SIGTERM for 5s; killing it");
        let _ = child.kill().await;
    }
    tracing::info!(plugin = %name, "plugin stopped");
}

/// Starts the process, feeds it its settings, waits for the handshake and connects.
async fn launch(shared: &Arc<Shared>, generation: u64) -> Result<(Child, RemoteBackend), String> {
    let spec = &shared.spec;
    // The checks of start-up, again: the file or a directory above it may have changed since.
    if let Err(why) = check_executable(&spec.program) {
        tracing::error!(plugin = %spec.name, program = %spec.program.display(), "refusing to start the plugin: {why}");
        return Err(format!(
            "its executable is refused: {why}; the backend stays down until that is fixed"
        ));
    }
    // Error messages quote this launch's stderr only.
    shared.stderr_tail.lock().expect("stderr tail").clear();
    let socket = spec
        .socket_dir
        .join(format!("{}-{generation}.sock", spec.name));
    let _ = std::fs::remove_file(&socket);
    let mut child = Command::new(&spec.program)
        .args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .env(ENV_SOCKET, &socket)
        .env(ENV_NAME, &spec.name)
        .env(ENV_PROTOCOL, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", spec.program.display()))?;

    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(forward_stderr(shared.clone(), stderr));
    }
    if let Some(mut stdin) = child.stdin.take() {
        // A plugin that exits before reading its settings shows up below as an early exit.
        let _ = stdin.write_all(&spec.settings_json).await;
        drop(stdin);
    }
    let stdout = child
        .stdout
        .take()
        .ok_or("the plugin's stdout is not captured")?;
    let mut lines = BufReader::new(stdout).lines();
    let handshake = tokio::select! {
        line = tokio::time::timeout(spec.startup_timeout, lines.next_line()) => line,
        status = child.wait() => {
            // Give the stderr forwarder a moment to collect the plugin's last words.
            tokio::time::sleep(Duration::from_millis(50)).await;
            return Err(format!(
                "it exited ({}) before its handshake{}",
                status.map_or_else(|e| e.to_string(), |s| s.to_string()),
                stderr_hint(shared)
            ));
        }
    };
    let line = match handshake {
        Err(_) => {
            let _ = child.start_kill();
            return Err(format!(
                "it printed no handshake within {:.1}s{}",
                spec.startup_timeout.as_secs_f64(),
                stderr_hint(shared)
            ));
        }
        Ok(Ok(Some(line))) => line,
        Ok(Ok(None)) | Ok(Err(_)) => {
            // Closed stdout usually means the process is exiting: report how it ended.
            let status = tokio::time::timeout(Duration::from_millis(500), child.wait()).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            return Err(match status {
                Ok(Ok(status)) => format!(
                    "it exited ({status}) before its handshake{}",
                    stderr_hint(shared)
                ),
                _ => {
                    let _ = child.start_kill();
                    format!(
                        "it closed its stdout without a handshake{}",
                        stderr_hint(shared)
                    )
                }
            });
        }
    };
    if line.trim_end() != HANDSHAKE_LINE {
        let _ = child.start_kill();
        let shown: String = line.chars().take(80).collect();
        return Err(format!(
            "it printed {shown:?} instead of the handshake {HANDSHAKE_LINE:?}; is {} a keyward plugin?",
            spec.program.display()
        ));
    }
    // Anything a plugin prints later on stdout is noise; keep the pipe drained.
    let name = spec.name.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::debug!(plugin = %name, "stdout: {line}");
        }
    });
    match tokio::time::timeout(spec.startup_timeout, RemoteBackend::connect(&socket)).await {
        Ok(Ok(remote)) => Ok((child, remote)),
        Ok(Err(e)) => {
            let _ = child.start_kill();
            Err(format!("connecting to it failed: {e}"))
        }
        Err(_) => {
            let _ = child.start_kill();
            Err("it accepted no connection after its handshake".to_string())
        }
    }
}

async fn forward_stderr(shared: Arc<Shared>, stderr: tokio::process::ChildStderr) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(plugin = %shared.spec.name, "{line}");
        let mut tail = shared.stderr_tail.lock().expect("stderr tail");
        if tail.len() == 5 {
            tail.pop_front();
        }
        tail.push_back(line.chars().take(300).collect());
    }
}

fn stderr_hint(shared: &Shared) -> String {
    let tail = shared.stderr_tail.lock().expect("stderr tail");
    if tail.is_empty() {
        String::new()
    } else {
        format!(
            "; its stderr said: {}",
            tail.iter().cloned().collect::<Vec<_>>().join(" | ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        for failures in 1..20 {
            let delay = backoff(failures);
            let base = 100u64
                .saturating_mul(1 << (failures - 1).min(9))
                .min(30_000);
            assert!(
                delay >= Duration::from_millis((base / 2).max(50)),
                "{failures}: {delay:?}"
            );
            assert!(
                delay <= Duration::from_millis(base + base / 2 + 1),
                "{failures}: {delay:?}"
            );
        }
        assert!(backoff(30) <= Duration::from_secs(45));
    }
}
