//! [`TestDaemon`]: a real `keywardd` in a temporary directory.

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use keyward_sdk::Client;
use rustix::process::{Pid, Signal, kill_process};
use tempfile::TempDir;

use crate::{binary, run_with_timeout, set_mode, toml_string};

/// How long the daemon may take to accept connections: it waits up to 15 s for its plugins
/// to start first, and a busy two-core machine is slower still. A deadline, not a delay.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the daemon may take to exit after SIGTERM: it finishes the requests in flight
/// first (three RSA-4096 generations took over 20 s under load here).
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);

/// Everything needed to start `keywardd` again in the same directory.
#[derive(Debug, Clone)]
struct Launch {
    program: PathBuf,
    dir: PathBuf,
    config_path: PathBuf,
    log_path: PathBuf,
    socket: PathBuf,
    env: Vec<(String, Option<String>)>,
    args: Vec<OsString>,
}

impl Launch {
    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command
            .arg("--config")
            .arg(&self.config_path)
            .args(&self.args)
            .env("KEYWARD_LOG", "debug")
            .env("RUST_BACKTRACE", "1")
            .env("XDG_RUNTIME_DIR", self.dir.join("xdg-runtime"))
            .env("XDG_DATA_HOME", self.dir.join("xdg-data"))
            .env("XDG_CONFIG_HOME", self.dir.join("xdg-config"))
            .env_remove("KEYWARD_SOCK");
        for (name, value) in &self.env {
            match value {
                Some(value) => command.env(name, value),
                None => command.env_remove(name),
            };
        }
        command
    }

    fn spawn(&self) -> Child {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open the daemon log");
        let mut command = self.command();
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup the log file"))
            .stderr(log);
        command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"))
    }

    fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.log_path).unwrap_or_default()).into_owned()
    }
}

/// A `keywardd` that exited (or never became ready) when it was expected to serve.
#[derive(Debug)]
pub struct StartFailure {
    /// Its exit status; `None` if it was still running (and was killed) at the deadline.
    pub status: Option<ExitStatus>,
    /// Everything it wrote to stdout and stderr.
    pub log: String,
}

/// Sets up a daemon's directory and configuration before starting it.
///
/// The default configuration is `socket = <dir>/run/agent.sock`, `state_dir = <dir>/state`,
/// then the [`DaemonBuilder::top_level`] text, then a `[[backend]]` named `local` of type
/// `local` with `path = <dir>/keys`, then the [`DaemonBuilder::extra_toml`] text (which can
/// add fields to that backend or further tables).
#[derive(Debug)]
pub struct DaemonBuilder {
    dir: TempDir,
    top_level: String,
    extra_toml: String,
    full_config: Option<String>,
    env: Vec<(String, Option<String>)>,
    args: Vec<OsString>,
    program: Option<PathBuf>,
}

impl Default for DaemonBuilder {
    fn default() -> Self {
        DaemonBuilder::new()
    }
}

impl DaemonBuilder {
    /// A fresh temporary directory (mode 0755, so other users can traverse it).
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("keyward-test-")
            .tempdir()
            .expect("create a temporary directory");
        set_mode(dir.path(), 0o755);
        DaemonBuilder {
            dir,
            top_level: String::new(),
            extra_toml: String::new(),
            full_config: None,
            env: Vec::new(),
            args: Vec::new(),
            program: None,
        }
    }

    /// Runs this `keywardd` executable instead of the workspace's (e.g. one built with other
    /// cargo features, from [`crate::peers::Peer::KeywarddPkcs11InProcess`]).
    pub fn program(mut self, program: PathBuf) -> Self {
        self.program = Some(program);
        self
    }

    /// The directory the daemon will run in (exists already; prepare files here).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// TOML placed at the top level of the default configuration (`allow_uids = [..]`).
    pub fn top_level(mut self, toml: &str) -> Self {
        self.top_level.push_str(toml);
        self.top_level.push('\n');
        self
    }

    /// TOML appended after the `local` backend's `path` line.
    pub fn extra_toml(mut self, toml: &str) -> Self {
        self.extra_toml.push_str(toml);
        self.extra_toml.push('\n');
        self
    }

    /// Replaces the whole configuration file.
    pub fn config(mut self, toml: &str) -> Self {
        self.full_config = Some(toml.to_string());
        self
    }

    /// Sets an environment variable for the daemon.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_string(), Some(value.to_string())));
        self
    }

    /// Adds a command-line argument after `--config FILE`.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// The configuration file's text as it will be written.
    pub fn config_text(&self) -> String {
        if let Some(config) = &self.full_config {
            return config.clone();
        }
        let dir = self.dir.path();
        let path = |p: &str| toml_string(dir.join(p).to_str().expect("UTF-8 temp path"));
        format!(
            "socket = {}\nstate_dir = {}\n{}\n[[backend]]\nname = \"local\"\ntype = \"local\"\npath = {}\n{}",
            path("run/agent.sock"),
            path("state"),
            self.top_level,
            path("keys"),
            self.extra_toml
        )
    }

    /// The socket the daemon will listen on: `--socket`, else the config's `socket`, else the
    /// default under `$XDG_RUNTIME_DIR`.
    fn socket(&self, config: &str) -> PathBuf {
        if let Some(i) = self.args.iter().position(|a| a == "--socket")
            && let Some(path) = self.args.get(i + 1)
        {
            return PathBuf::from(path);
        }
        let configured = config
            .parse::<toml::Table>()
            .ok()
            .and_then(|t| t.get("socket").and_then(|s| s.as_str().map(PathBuf::from)));
        configured.unwrap_or_else(|| {
            self.dir
                .path()
                .join("xdg-runtime")
                .join("keyward")
                .join("agent.sock")
        })
    }

    fn prepare(self) -> (TempDir, Launch) {
        let config = self.config_text();
        let dir = self.dir.path().to_path_buf();
        let config_path = dir.join("keywardd.toml");
        fs::write(&config_path, &config).expect("write keywardd.toml");
        for sub in ["xdg-runtime", "xdg-data", "xdg-config"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).expect("create XDG directory");
            set_mode(&path, 0o700);
        }
        let socket = self.socket(&config);
        let launch = Launch {
            program: self.program.unwrap_or_else(|| binary("keywardd")),
            socket,
            log_path: dir.join("keywardd.log"),
            config_path,
            dir,
            env: self.env,
            args: self.args,
        };
        (self.dir, launch)
    }

    /// Starts the daemon and waits until its socket accepts connections; panics with the
    /// daemon's output if it does not.
    pub async fn start(self) -> TestDaemon {
        match self.try_start().await {
            Ok(daemon) => daemon,
            Err(failure) => panic!(
                "keywardd did not become ready (exit status {:?}); its output:\n{}",
                failure.status, failure.log
            ),
        }
    }

    /// Starts the daemon; `Err` if it exits before it accepts connections.
    pub async fn try_start(self) -> Result<TestDaemon, StartFailure> {
        let (dir, launch) = self.prepare();
        let mut daemon = TestDaemon {
            dir,
            launch,
            child: None,
        };
        daemon.spawn_and_wait().await?;
        Ok(daemon)
    }

    /// Runs the daemon expecting it to exit by itself within `timeout` (a config error, a
    /// socket in use); panics if it is still running then. Its output is captured.
    pub fn run_to_exit(self, timeout: Duration) -> Output {
        let (_dir, launch) = self.prepare();
        run_with_timeout(launch.command(), None, timeout)
    }
}

/// A running `keywardd`, killed when dropped.
#[derive(Debug)]
pub struct TestDaemon {
    dir: TempDir,
    launch: Launch,
    child: Option<Child>,
}

impl TestDaemon {
    /// Starts a daemon with the default configuration plus `extra_toml` appended.
    pub async fn start(extra_toml: &str) -> TestDaemon {
        DaemonBuilder::new().extra_toml(extra_toml).start().await
    }

    /// Starts a daemon with `config` as its whole configuration file.
    pub async fn start_with_config(config: &str) -> TestDaemon {
        DaemonBuilder::new().config(config).start().await
    }

    /// A builder, for environment variables, arguments and files prepared before the start.
    pub fn builder() -> DaemonBuilder {
        DaemonBuilder::new()
    }

    /// The daemon's temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `<dir>/keys`, the `local` backend's key directory in the default configuration.
    pub fn keys_dir(&self) -> PathBuf {
        self.dir().join("keys")
    }

    /// The socket it listens on.
    pub fn socket(&self) -> &Path {
        &self.launch.socket
    }

    /// The configuration file.
    pub fn config_path(&self) -> &Path {
        &self.launch.config_path
    }

    /// Everything the daemon wrote to stdout and stderr, across restarts.
    pub fn log(&self) -> String {
        self.launch.log()
    }

    /// The daemon's process id (panics when it is not running).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the daemon is not running").id()
    }

    /// A new SDK client connected to the daemon.
    pub async fn client(&self) -> Client {
        Client::connect(self.socket())
            .await
            .unwrap_or_else(|e| panic!("connect to keywardd: {e}\nits log:\n{}", self.log()))
    }

    /// Sets an environment variable for the next (re)start.
    pub fn set_env(&mut self, name: &str, value: &str) {
        self.launch.env.retain(|(n, _)| n != name);
        self.launch
            .env
            .push((name.to_string(), Some(value.to_string())));
    }

    /// Removes an environment variable for the next (re)start.
    pub fn remove_env(&mut self, name: &str) {
        self.launch.env.retain(|(n, _)| n != name);
        self.launch.env.push((name.to_string(), None));
    }

    /// Sends SIGTERM and waits for the daemon to exit; returns its exit status.
    pub async fn terminate(&mut self) -> ExitStatus {
        self.terminate_with(Signal::TERM).await
    }

    /// Sends `signal` and waits for the daemon to exit; returns its exit status.
    pub async fn terminate_with(&mut self, signal: Signal) -> ExitStatus {
        let mut child = self.child.take().expect("the daemon is not running");
        kill_process(Pid::from_child(&child), signal).expect("signal keywardd");
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("wait for keywardd") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "keywardd did not exit within {EXIT_TIMEOUT:?} of {signal:?}; its log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the daemon (it must exit 0) and starts it again with the same directory and
    /// configuration.
    pub async fn restart(&mut self) {
        if let Err(failure) = self.try_restart().await {
            panic!(
                "keywardd did not come back after a restart (exit status {:?}); its log:\n{}",
                failure.status, failure.log
            );
        }
    }

    /// Like [`TestDaemon::restart`], returning the failure when it does not become ready.
    pub async fn try_restart(&mut self) -> Result<(), StartFailure> {
        if self.child.is_some() {
            let status = self.terminate().await;
            assert!(
                status.success(),
                "keywardd exited with {status} on SIGTERM; its log:\n{}",
                self.log()
            );
        }
        self.spawn_and_wait().await
    }

    async fn spawn_and_wait(&mut self) -> Result<(), StartFailure> {
        let mut child = self.launch.spawn();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("wait for keywardd") {
                return Err(StartFailure {
                    status: Some(status),
                    log: self.log(),
                });
            }
            // Ready means serving: the kernel accepts connections on the socket as soon as it is
            // bound, before the daemon binds its other listeners (mTLS) and serves. A health
            // check is answered by the server itself, without asking any backend.
            let attempt = serving(self.socket());
            if let Ok(true) = tokio::time::timeout(Duration::from_secs(2), attempt).await {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(StartFailure {
                    status: None,
                    log: self.log(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Whether the daemon at `socket` answers a gRPC health check (whatever its answer).
async fn serving(socket: &Path) -> bool {
    let Ok(channel) = crate::uds_channel(socket).await else {
        return false;
    };
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let request = tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    };
    match health.check(request).await {
        Ok(_) => true,
        Err(status) => {
            status.code() != tonic::Code::Unavailable && status.code() != tonic::Code::Unknown
        }
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
