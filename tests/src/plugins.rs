//! Helpers for the plugin-process tests: the child processes of a daemon, plugin scripts, the
//! Python example plugin, and waiting on the daemon's log.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use keyward_sdk::{Client, SignOptions, SignatureAlgorithm};
use tonic::Code;

use crate::{TestDaemon, set_mode, toml_string};

/// The environment variable naming the venv Python (with grpcio, grpcio-tools, cryptography)
/// that runs the example plugin; `scripts/test` sets it.
pub const PYTHON_ENV: &str = "KEYWARD_TEST_PYTHON";

/// The workspace root (the parent of `tests/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `command = [python, <the example plugin script>]` as TOML.
pub fn python_command(python: &Path) -> String {
    let script = workspace_root().join("examples/plugins/python/keyward_example_plugin.py");
    assert!(script.is_file(), "{} is missing", script.display());
    command_toml(&[python, &script])
}

/// `command = [..]` as TOML.
pub fn command_toml(argv: &[&Path]) -> String {
    let items: Vec<String> = argv
        .iter()
        .map(|p| toml_string(p.to_str().expect("UTF-8 path")))
        .collect();
    format!("command = [{}]", items.join(", "))
}

/// Writes a `/bin/sh` script with `body` at `path` and gives it `mode`.
pub fn write_script(path: &Path, body: &str, mode: u32) {
    fs::write(path, format!("#!/bin/sh\n{body}\n"))
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    set_mode(path, mode);
}

/// One live (not zombie) process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    /// Its pid.
    pub pid: u32,
    /// Its command line, arguments joined by spaces.
    pub cmdline: String,
}

/// `(state, ppid)` from `/proc/<pid>/stat`, `None` when the process is gone.
fn stat(pid: u32) -> Option<(char, u32)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Whether `pid` is a running (not zombie) process.
pub fn is_alive(pid: u32) -> bool {
    matches!(stat(pid), Some((state, _)) if state != 'Z' && state != 'X')
}

/// The live child processes of `parent`.
pub fn children(parent: u32) -> Vec<Proc> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if !matches!(stat(pid), Some((state, ppid)) if ppid == parent && state != 'Z') {
            continue;
        }
        let Ok(raw) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw)
            .split('\0')
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        found.push(Proc { pid, cmdline });
    }
    found.sort_by_key(|p| p.pid);
    found
}

/// The live children of the daemon whose command line contains `needle`.
pub fn plugin_processes(daemon: &TestDaemon, needle: &str) -> Vec<Proc> {
    children(daemon.pid())
        .into_iter()
        .filter(|p| p.cmdline.contains(needle))
        .collect()
}

/// Kills (SIGKILL) every live child of a daemon when dropped, so that a plugin which does not
/// notice its daemon's death (the Python example) does not outlive a failed test. Declare it
/// after the [`TestDaemon`], so that it is dropped first.
#[derive(Debug)]
pub struct ChildReaper {
    parent: u32,
}

impl ChildReaper {
    /// Watches the children of `daemon` (as it runs now).
    pub fn new(daemon: &TestDaemon) -> Self {
        ChildReaper {
            parent: daemon.pid(),
        }
    }
}

impl Drop for ChildReaper {
    fn drop(&mut self) {
        for child in children(self.parent) {
            if let Some(pid) = rustix::process::Pid::from_raw(child.pid as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
}

/// The start of a whole config for a daemon in `dir`: `socket` and `state_dir` where the
/// default config puts them, and no backend.
pub fn config_head(dir: &Path) -> String {
    let path = |p: &str| toml_string(dir.join(p).to_str().expect("UTF-8 temp path"));
    format!(
        "socket = {}\nstate_dir = {}\n",
        path("run/agent.sock"),
        path("state")
    )
}

/// A `[[backend]]` table named `name` of `backend_type`, with `fields` (TOML lines) after it.
pub fn backend_table(name: &str, backend_type: &str, fields: &str) -> String {
    format!(
        "\n[[backend]]\nname = {}\ntype = {}\n{fields}\n",
        toml_string(name),
        toml_string(backend_type)
    )
}

/// `path = "<dir>/<sub>"` as a TOML line.
pub fn path_line(field: &str, path: &Path) -> String {
    format!(
        "{field} = {}",
        toml_string(path.to_str().expect("UTF-8 path"))
    )
}

/// A key to sign with in a test, with what it takes to verify its signatures.
#[derive(Debug, Clone)]
pub struct TestKey {
    /// Its id.
    pub id: String,
    /// Its backend instance.
    pub backend: String,
    /// The algorithm to sign with: the key's default.
    pub alg: SignatureAlgorithm,
    /// Its public key, DER.
    pub der: Vec<u8>,
}

/// What one signing call did.
#[derive(Debug)]
pub enum Outcome {
    /// It signed, and the signature verifies.
    Signed,
    /// The agent refused: its status code and message.
    Failed(Code, String),
    /// No answer within the limit.
    Hung,
    /// It signed, but the signature does not verify.
    BadSignature(String),
}

impl TestKey {
    /// Asks the daemon for `id`'s backend, default algorithm and public key.
    pub async fn fetch(client: &Client, id: &str) -> TestKey {
        let key = client
            .public_key(id)
            .await
            .unwrap_or_else(|e| panic!("public key of {id}: {e}"));
        TestKey {
            id: id.to_string(),
            backend: key.info.backend.clone(),
            alg: key
                .info
                .algorithms()
                .next()
                .expect("the key lists algorithms"),
            der: key.der,
        }
    }

    /// Signs `message` through `client` and verifies the signature with the SDK; [`Outcome::Hung`]
    /// if the agent does not answer within `limit`.
    pub async fn sign(&self, client: &Client, message: &[u8], limit: Duration) -> Outcome {
        let options = SignOptions {
            algorithm: Some(self.alg),
            ..SignOptions::default()
        };
        let call = client.sign_message(&self.id, message, &options);
        let sig = match tokio::time::timeout(limit, call).await {
            Err(_) => return Outcome::Hung,
            Ok(Err(e)) => return Outcome::Failed(e.code().unwrap_or(Code::Unknown), e.to_string()),
            Ok(Ok(sig)) => sig,
        };
        // Verified off the async workers, so that the (debug-build) verifier does not starve
        // other callers of the same runtime.
        let (der, alg, message) = (self.der.clone(), self.alg, message.to_vec());
        let verified = tokio::task::spawn_blocking(move || {
            keyward_sdk::verify_message(&der, alg, &message, &sig.bytes, sig.format)
        })
        .await
        .expect("the verifier panicked");
        match verified {
            Ok(()) => Outcome::Signed,
            Err(e) => Outcome::BadSignature(format!("{}: {e}", self.id)),
        }
    }
}
