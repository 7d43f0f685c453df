//! A private `keywardd` for the benchmark: its own temporary directory, config, socket and keys.

use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use keyward_sdk::Client;
use tempfile::TempDir;

/// How long the daemon gets to start answering.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long it gets to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// What the private daemon serves besides its socket and state.
#[derive(Clone, Copy, Debug)]
pub enum Extra<'a> {
    /// One `local` backend named "local" with this isolation, and an ssh-agent socket
    /// (`ssh-agent.sock` next to `agent.sock`) offering these key ids unless there are none;
    /// with an audit log (`audit.log`) when the flag is set.
    Local(&'a str, &'a [String], bool),
    /// These `[[backend]]` tables, verbatim.
    Backends(&'a str),
    /// No config file: the embedded default (one `local` backend), with the XDG directories
    /// in the temporary directory.
    Embedded,
}

/// A running private daemon; stopped (and its directory removed) when dropped.
#[derive(Debug)]
pub struct PrivateDaemon {
    child: Option<Child>,
    exe: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    socket: PathBuf,
    ssh_socket: Option<PathBuf>,
    log: PathBuf,
    startup: Duration,
    // Held for its Drop, which removes the directory.
    _dir: TempDir,
}

impl PrivateDaemon {
    /// Starts `keywardd` (next to this executable) with a `local` backend in a temporary
    /// directory and an ssh-agent socket offering `ssh_keys` (none when empty), and waits
    /// until it answers.
    pub async fn start_local(
        isolation: &str,
        ssh_keys: &[String],
        audit: bool,
    ) -> Result<(PrivateDaemon, Client)> {
        Self::start_with(Extra::Local(isolation, ssh_keys, audit), &[]).await
    }

    /// Starts `keywardd` with the `local` backend (`Extra::Local`), with the given
    /// `[[backend]]` tables instead, or on its embedded default, and extra environment
    /// variables.
    pub async fn start_with(
        extra: Extra<'_>,
        env: &[(&str, &str)],
    ) -> Result<(PrivateDaemon, Client)> {
        Self::start_with_exe(None, extra, env).await
    }

    /// [`PrivateDaemon::start_with`] with another keywardd than the one next to this
    /// executable (a build with other cargo features).
    pub async fn start_with_exe(
        exe: Option<&Path>,
        extra: Extra<'_>,
        env: &[(&str, &str)],
    ) -> Result<(PrivateDaemon, Client)> {
        let exe = match exe {
            Some(exe) => exe.to_path_buf(),
            None => std::env::current_exe()
                .context("cannot find this executable")?
                .with_file_name("keywardd"),
        };
        if !exe.is_file() {
            bail!(
                "{} does not exist: build it with `cargo build --release -p keyward-daemon` (it must sit next to keyward-bench)",
                exe.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("keyward-bench-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        let root = dir.path();
        for sub in ["state", "keys", "run", "data", "config"] {
            DirBuilder::new()
                .mode(0o700)
                .create(root.join(sub))
                .with_context(|| format!("cannot create {}", root.join(sub).display()))?;
        }
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|&(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut args = Vec::new();
        let socket = if let Extra::Embedded = extra {
            // No config file: XDG_CONFIG_HOME names an empty directory, and the default key
            // directory and socket fall under the temporary directory.
            for (name, sub) in [
                ("XDG_RUNTIME_DIR", "run"),
                ("XDG_DATA_HOME", "data"),
                ("XDG_CONFIG_HOME", "config"),
                ("XDG_STATE_HOME", "state"),
            ] {
                env.push((name.to_string(), root.join(sub).display().to_string()));
            }
            root.join("run/keyward/agent.sock")
        } else {
            let config = root.join("keywardd.toml");
            let text = match extra {
                Extra::Local(isolation, ssh_keys, audit) => {
                    config_text(root, isolation, ssh_keys, audit)
                }
                Extra::Backends(tables) => format!(
                    "socket = {}\nstate_dir = {}\n\n{tables}\n",
                    toml_string(&root.join("agent.sock").display().to_string()),
                    toml_string(&root.join("state").display().to_string()),
                ),
                Extra::Embedded => unreachable!("handled above"),
            };
            std::fs::write(&config, text)
                .with_context(|| format!("cannot write {}", config.display()))?;
            args.push("--config".to_string());
            args.push(config.display().to_string());
            root.join("agent.sock")
        };
        let log = root.join("keywardd.log");
        let ssh_socket = match extra {
            Extra::Local(_, keys, _) if !keys.is_empty() => Some(root.join("ssh-agent.sock")),
            _ => None,
        };
        let mut daemon = PrivateDaemon {
            child: None,
            exe,
            args,
            env,
            socket,
            ssh_socket,
            log,
            startup: Duration::ZERO,
            _dir: dir,
        };
        let client = daemon.launch().await?;
        Ok((daemon, client))
    }

    /// Stops the daemon and starts it again with the same directory and config.
    pub async fn restart(&mut self) -> Result<Client> {
        self.stop();
        self.launch().await
    }

    /// Starts the process and waits until it answers `ListKeys`.
    async fn launch(&mut self) -> Result<Client> {
        let log_file = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("cannot open {}", self.log.display()))?;
        let started = Instant::now();
        // The daemon's own log level (its default unless the caller's environment sets
        // KEYWARD_LOG): what ships is what is measured.
        let child = Command::new(&self.exe)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("cannot start {}", self.exe.display()))?;
        self.child = Some(child);
        let client = self.wait_until_ready().await?;
        self.startup = started.elapsed();
        Ok(client)
    }

    /// The daemon's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// From spawning the process to its first answer to `ListKeys`, at the last start.
    pub fn startup(&self) -> Duration {
        self.startup
    }

    /// The socket the daemon listens on.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Its ssh-agent socket, when it has one.
    pub fn ssh_socket(&self) -> Option<&Path> {
        self.ssh_socket.as_deref()
    }

    async fn wait_until_ready(&mut self) -> Result<Client> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "keywardd exited during start-up ({status}); its log:\n{}",
                    self.log_text()
                );
            }
            // Polled often (a stat is cheap) so that the start-up time is measured closely;
            // connecting is tried once the socket exists.
            if !self.socket.exists() {
                if Instant::now() >= deadline {
                    bail!(
                        "keywardd did not create {} within {} s; its log:\n{}",
                        self.socket.display(),
                        START_TIMEOUT.as_secs(),
                        self.log_text()
                    );
                }
                tokio::time::sleep(Duration::from_micros(500)).await;
                continue;
            }
            let last_error = match Client::connect(&self.socket).await {
                Ok(client) => match client.list_keys().await {
                    Ok(_) => return Ok(client),
                    Err(error) => error,
                },
                Err(error) => error,
            };
            if Instant::now() >= deadline {
                bail!(
                    "keywardd did not answer on {} within {} s (last error: {last_error}); its log:\n{}",
                    self.socket.display(),
                    START_TIMEOUT.as_secs(),
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the daemon: SIGTERM, then SIGKILL if it has not exited after a few seconds.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = rustix::process::Pid::from_child(&child);
        if rustix::process::kill_process(pid, rustix::process::Signal::TERM).is_ok() {
            let deadline = Instant::now() + STOP_TIMEOUT;
            while Instant::now() < deadline {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for PrivateDaemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The daemon's config: socket, state and one `local` backend, all under `root`.
fn config_text(root: &Path, isolation: &str, ssh_keys: &[String], audit: bool) -> String {
    let path = |name: &str| toml_string(&root.join(name).display().to_string());
    let mut text = format!(
        "socket = {}\nstate_dir = {}\n\n[[backend]]\nname = \"local\"\ntype = \"local\"\nisolation = {}\npath = {}\n",
        path("agent.sock"),
        path("state"),
        toml_string(isolation),
        path("keys"),
    );
    if !ssh_keys.is_empty() {
        let keys: Vec<String> = ssh_keys.iter().map(|k| toml_string(k)).collect();
        text.push_str(&format!(
            "\n[ssh_agent]\nsocket = {}\nkeys = [{}]\n",
            path("ssh-agent.sock"),
            keys.join(", ")
        ));
    }
    if audit {
        text.push_str(&format!("\n[audit]\npath = {}\n", path("audit.log")));
    }
    text
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_everything_under_root() {
        let text = config_text(Path::new("/tmp/kb \"x\""), "process", &[], false);
        assert_eq!(
            text,
            "socket = \"/tmp/kb \\\"x\\\"/agent.sock\"\nstate_dir = \"/tmp/kb \\\"x\\\"/state\"\n\n\
             [[backend]]\nname = \"local\"\ntype = \"local\"\nisolation = \"process\"\npath = \"/tmp/kb \\\"x\\\"/keys\"\n"
        );
        let text = config_text(
            Path::new("/tmp/kb"),
            "none",
            &["bench-ed25519".into()],
            false,
        );
        assert!(
            text.ends_with(
                "\n[ssh_agent]\nsocket = \"/tmp/kb/ssh-agent.sock\"\nkeys = [\"bench-ed25519\"]\n"
            ),
            "{text}"
        );
        let text = config_text(Path::new("/tmp/kb"), "none", &[], true);
        assert!(
            text.ends_with("\n[audit]\npath = \"/tmp/kb/audit.log\"\n"),
            "{text}"
        );
    }
}
