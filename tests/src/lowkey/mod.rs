//! A real lowkey-vault (an Azure Key Vault emulator, github.com/nagyesta/lowkey-vault) for the
//! azurekv backend's tests.
//!
//! The runnable jar is found by `scripts/test` (which sets [`JAR_ENV`], and [`AOT_ENV`] to an
//! ahead-of-time cache that makes the JVM start 2-3 times faster; see `docs/azurekv.md`), else
//! in `$KEYWARD_LOWKEY_DIR`, `../shared/peers/lowkey-vault` or `~/.cache/keyward/lowkey-vault`;
//! Java from [`JAVA_ENV`], else `JAVA_HOME` or a JDK under `/usr/lib/jvm` new enough for the
//! jar's major version (3.x: 17, 4.x: 21, 5.0+: 25). Tests get both through
//! [`crate::peers::require`]`(Peer::LowkeyVault)`, which fails under CI when they are missing.
//!
//! A server runs on two free 127.0.0.1 ports: HTTPS for the Key Vault API, and HTTP for its
//! fake managed-identity token endpoint. Its TLS certificate is our own (RSA, `CA:FALSE`, SAN
//! `localhost` + `127.0.0.1`; rustls refuses a self-signed certificate marked as a CA), and
//! [`LowkeyVault::ca_file`] is that certificate. Two kinds of [`LowkeyVault`]:
//! - [`LowkeyVault::shared`]: a vault of its own in the one server of the test executable,
//!   started by the first test that asks (the JVM takes seconds to start: once per test target
//!   is enough). lowkey-vault picks a vault by the Host header, port included, so each shared
//!   vault gets a port of its own, a plain TCP relay to the server: tests never see each
//!   other's keys. It cannot be stopped.
//! - [`LowkeyVault::start`]: a server of its own, for tests that stop it. Its content is
//!   exported to a file after every change and imported at start, so [`LowkeyVault::stop`] and
//!   [`LowkeyVault::start_again`] keep the keys, on the same ports
//!   ([`LowkeyVault::start_again_empty`] does not).
//!
//! Every JVM dies with the test process (`setpriv --pdeathsig`), and an own server when its
//! value is dropped.
//!
//! Keys are made and read through the Key Vault REST API with `curl` ([`LowkeyVault::rest`]):
//! lowkey-vault takes any non-empty `Authorization` header, so the tests need no Azure SDK.
//!
//! The managed-identity credential under test is the real one of `azure_identity`, and the
//! tokens are lowkey-vault's, but they pass through [`TokenShim`]: lowkey-vault answers
//! `expires_on` as a JSON number, where App Service and IMDS answer a string of epoch seconds,
//! the only form `azure_identity` 1.0 reads. The shim quotes that one number and changes
//! nothing else; tests that use it run on a shimmed token endpoint.

mod relay;
mod server;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

pub use relay::TokenShim;
pub(crate) use server::{find_jar, java_for};

use crate::{run_with_timeout, stderr_text, stdout_text, toml_string};
use relay::Forward;
use server::Server;

/// The environment variable naming the lowkey-vault jar.
pub const JAR_ENV: &str = "KEYWARD_TEST_LOWKEY_JAR";
/// The environment variable naming the `java` binary to run it with.
pub const JAVA_ENV: &str = "KEYWARD_TEST_JAVA";
/// The environment variable naming an AOT cache (`-XX:AOTCache`) made for that jar and Java.
pub const AOT_ENV: &str = "KEYWARD_TEST_LOWKEY_AOT";
/// The API version the REST helpers send.
pub const API_VERSION: &str = "7.5";

/// A vault in a running lowkey-vault: in the test executable's shared server, or in a server
/// of its own.
#[derive(Debug)]
pub struct LowkeyVault {
    server: Place,
    /// The port in the vault's URL.
    port: u16,
}

#[derive(Debug)]
enum Place {
    Own(Server),
    Shared {
        server: &'static Server,
        /// Keeps the vault's port open for as long as the value lives.
        _forward: Forward,
    },
}

impl LowkeyVault {
    /// A server of its own (for a test that stops it), started and serving; `None` if
    /// lowkey-vault is not installed.
    pub fn start() -> Option<LowkeyVault> {
        let dir = tempfile::Builder::new()
            .prefix("keyward-lowkey-")
            .tempdir()
            .expect("create a temporary directory");
        let server = Server::start(dir)?;
        let port = server.port;
        Some(LowkeyVault {
            server: Place::Own(server),
            port,
        })
    }

    /// A new, empty vault in the server this test executable shares (started by the first
    /// caller); `None` if lowkey-vault is not installed.
    pub fn shared() -> Option<LowkeyVault> {
        static SHARED: OnceLock<Server> = OnceLock::new();
        // Checked by every caller, so that each test that cannot run says so.
        crate::peers::require(crate::peers::Peer::LowkeyVault)?;
        let server = SHARED.get_or_init(|| {
            // The JVM dies with the process, but no destructor removes this directory: it is
            // named after the process, and the next run removes those of processes gone.
            let parent = std::env::temp_dir();
            remove_stale_shared_dirs(&parent);
            let dir = tempfile::Builder::new()
                .prefix(&format!("keyward-lowkey-shared-{}-", std::process::id()))
                .tempdir_in(&parent)
                .expect("create a temporary directory");
            Server::start(dir).expect("peers::require found lowkey-vault")
        });
        let forward = Forward::start(server.port);
        server.add_vault(forward.port);
        Some(LowkeyVault {
            port: forward.port,
            server: Place::Shared {
                server,
                _forward: forward,
            },
        })
    }

    fn server(&self) -> &Server {
        match &self.server {
            Place::Own(server) => server,
            Place::Shared { server, .. } => server,
        }
    }

    fn own_server(&mut self) -> &mut Server {
        match &mut self.server {
            Place::Own(server) => server,
            Place::Shared { .. } => {
                panic!("a shared vault cannot be stopped: use LowkeyVault::start()")
            }
        }
    }

    /// `https://127.0.0.1:PORT`.
    pub fn vault_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The managed-identity token endpoint (App Service style), for `IDENTITY_ENDPOINT`:
    /// lowkey-vault's, through the [`TokenShim`].
    pub fn token_endpoint(&self) -> String {
        format!(
            "http://127.0.0.1:{}/metadata/identity/oauth2/token",
            self.server().shim.port
        )
    }

    /// The server's certificate (PEM), the CA file to trust.
    pub fn ca_file(&self) -> PathBuf {
        self.server().ca_file()
    }

    /// Everything the server printed (a shared server: for every vault).
    pub fn log(&self) -> String {
        self.server().log()
    }

    /// Stops the server (SIGTERM, then SIGKILL after 15 s) and waits for it.
    ///
    /// # Panics
    ///
    /// On a [`LowkeyVault::shared`] vault.
    pub fn stop(&mut self) {
        self.own_server().stop();
    }

    /// Starts a stopped server again on the same ports, with the keys it had.
    pub fn start_again(&mut self) {
        self.own_server().start_again(false);
    }

    /// Starts a stopped server again on the same ports, without the keys it had.
    pub fn start_again_empty(&mut self) {
        self.own_server().start_again(true);
    }

    /// Whether the server runs (false between [`LowkeyVault::stop`] and a start).
    pub fn is_running(&self) -> bool {
        self.server().is_running()
    }

    /// The environment that points the managed-identity credential at this server's token
    /// endpoint (App Service style).
    pub fn identity_env(&self) -> [(&'static str, String); 2] {
        [
            ("IDENTITY_ENDPOINT", self.token_endpoint()),
            (
                "IDENTITY_HEADER",
                "keyward-test-identity-header".to_string(),
            ),
        ]
    }

    /// The `[[backend]]` table of an azurekv backend named `name` on this vault, with the
    /// managed identity credential and `extra` lines.
    pub fn backend_toml(&self, name: &str, extra: &str) -> String {
        format!(
            "[[backend]]\nname = {}\ntype = \"azurekv\"\nvault_url = {}\ncredential = \"managed_identity\"\nca_file = {}\n{extra}\n",
            toml_string(name),
            toml_string(self.vault_url()),
            toml_string(self.ca_file().to_str().expect("UTF-8")),
        )
    }

    /// `METHOD /path?api-version=...` on this vault with a JSON `body`; the status and the JSON
    /// answer.
    pub fn rest(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let separator = if path.contains('?') { '&' } else { '?' };
        let url = format!(
            "{}{path}{separator}api-version={API_VERSION}",
            self.vault_url()
        );
        curl(&self.ca_file(), method, &url, body)
    }

    /// Creates key `name` (or a new version of it) with `body` (`{"kty": "EC", "crv": "P-256",
    /// "key_ops": [...]}`); the key as the vault describes it.
    pub fn create_key(&self, name: &str, body: Value) -> Value {
        let (status, key) = self.rest("POST", &format!("/keys/{name}/create"), Some(&body));
        assert_eq!(status, 200, "create key {name}: {key}");
        key
    }

    /// Key `name` (its current version, or `version`) as the vault describes it.
    pub fn key(&self, name: &str, version: Option<&str>) -> Value {
        let (status, key) = self.rest(
            "GET",
            &format!("/keys/{name}/{}", version.unwrap_or("")),
            None,
        );
        assert_eq!(status, 200, "get key {name}: {key}");
        key
    }
}

/// `curl -X METHOD URL` trusting `ca_file`, with any bearer token and a JSON `body`; the status
/// and the JSON answer (`Null` when it is not JSON).
fn curl(ca_file: &Path, method: &str, url: &str, body: Option<&Value>) -> (u16, Value) {
    let mut command = Command::new("curl");
    // A deadline, not an assertion: the emulator makes RSA keys in Java, which took over 30 s
    // on a 2-core machine under a load of 15.
    command
        .args(["-sS", "--max-time", "120", "-X", method, "--cacert"])
        .arg(ca_file)
        .args([
            "-H",
            "Authorization: Bearer keyward-test",
            "-w",
            "\n%{http_code}",
        ]);
    if let Some(body) = body {
        command
            .args(["-H", "Content-Type: application/json", "--data-binary"])
            .arg(body.to_string());
    }
    command.arg(url);
    let output = run_with_timeout(command, None, Duration::from_secs(40));
    assert!(
        output.status.success(),
        "curl {method} {url}: {}",
        stderr_text(&output)
    );
    let text = stdout_text(&output);
    let (json, status) = text
        .trim_end()
        .rsplit_once('\n')
        .unwrap_or(("", text.trim()));
    let status: u16 = status
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("curl printed {text:?}"));
    let value = serde_json::from_str(json).unwrap_or(Value::Null);
    (status, value)
}

/// Removes `keyward-lowkey-shared-<pid>-*` directories in `parent` whose process is gone.
fn remove_stale_shared_dirs(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("keyward-lowkey-shared-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
