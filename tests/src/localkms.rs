//! A real local-kms server (github.com/nsmithuk/local-kms) for the awskms backend's tests.
//!
//! The binary comes from the Go module proxy (`scripts/test awskms` installs it into
//! `~/.cache/keyward/bin` and sets [`LOCAL_KMS_ENV`]). [`LocalKms::start`] runs it with an empty
//! environment, its data in a temporary directory, region [`REGION`] and account [`ACCOUNT`],
//! on a port the kernel picks; [`LocalKms::stop`] and [`LocalKms::start_again`] stop it by its
//! own pid and start it again on the same port with the same data, so keys survive;
//! [`LocalKms::pause`] freezes it (SIGSTOP) to play a peer that hangs. It is stopped when the
//! value is dropped.
//!
//! local-kms listens on every interface (its listen address is `":" + PORT`, with no way to
//! give a host), so it runs only for the test and every request goes to 127.0.0.1.
//!
//! Test keys are made through local-kms's JSON API ([`LocalKms::call`], `X-Amz-Target:
//! TrentService.<Action>`), spoken over a plain TCP socket, so the tests need no AWS SDK.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rustix::process::{Pid, Signal, kill_process};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::{DaemonBuilder, toml_string};

/// The environment variable naming the `local-kms` binary.
pub const LOCAL_KMS_ENV: &str = "KEYWARD_TEST_LOCAL_KMS";
/// The region local-kms serves.
pub const REGION: &str = "eu-west-1";
/// The account id local-kms puts in ARNs.
pub const ACCOUNT: &str = "111122223333";
/// How long the server may take to answer after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running local-kms, stopped when dropped.
#[derive(Debug)]
pub struct LocalKms {
    bin: PathBuf,
    dir: TempDir,
    /// 0 until the first start has told which port it took.
    port: u16,
    child: Option<Child>,
}

impl LocalKms {
    /// Starts a fresh server; `None` if local-kms is not installed.
    pub fn start() -> Option<LocalKms> {
        let bin = crate::peers::require(crate::peers::Peer::LocalKms)?;
        let dir = tempfile::Builder::new()
            .prefix("keyward-local-kms-")
            .tempdir()
            .expect("create a temporary directory");
        let mut kms = LocalKms {
            bin,
            dir,
            port: 0,
            child: None,
        };
        kms.spawn();
        Some(kms)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("local-kms.log")
    }

    /// Everything the server wrote, across restarts.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(self.log_path()).unwrap_or_default()).into_owned()
    }

    fn spawn(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the local-kms log");
        let logged_before = self.log().len();
        let mut command = Command::new(&self.bin);
        command
            .env_clear()
            .env("PORT", self.port.to_string())
            .env("KMS_REGION", REGION)
            .env("KMS_ACCOUNT_ID", ACCOUNT)
            .env("KMS_DATA_PATH", self.dir.path().join("data"))
            .env("KMS_SEED_PATH", self.dir.path().join("no-seed.yaml"))
            .env("HOME", self.dir.path())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup the log"))
            .stderr(log);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("the server is running");
            if let Some(status) = child.try_wait().expect("wait for local-kms") {
                panic!(
                    "local-kms exited with {status} before it answered; its log:\n{}",
                    self.log()
                );
            }
            if self.port == 0 {
                self.port = started_port(&self.log()[logged_before..]).unwrap_or(0);
            }
            if self.port != 0 && self.try_call("ListKeys", &json!({})).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "local-kms did not answer within {START_TIMEOUT:?}; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// Stops the server (SIGTERM to its pid, then SIGKILL if it lingers); the data stays.
    pub fn stop(&mut self) {
        let Some(child) = self.child.take() else {
            return;
        };
        crate::process::terminate(child, Duration::from_secs(10));
        let deadline = Instant::now() + Duration::from_secs(10);
        // The port must be closed before the caller counts on it.
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
            assert!(Instant::now() < deadline, "port {} stays open", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Freezes the server (SIGSTOP): it keeps its port and accepts connections, but answers
    /// nothing, like a peer that hangs. [`LocalKms::resume`] thaws it.
    pub fn pause(&self) {
        self.signal(Signal::STOP);
    }

    /// Thaws a server frozen by [`LocalKms::pause`] (SIGCONT).
    pub fn resume(&self) {
        self.signal(Signal::CONT);
    }

    fn signal(&self, signal: Signal) {
        let child = self.child.as_ref().expect("local-kms is running");
        kill_process(Pid::from_child(child), signal).expect("signal local-kms");
    }

    /// Starts the server again on the same port with the same data.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "local-kms is still running");
        self.spawn();
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A `[[backend]]` table of type `awskms` named `name` for this server, then `extra`.
    pub fn backend_toml(&self, name: &str, extra: &str) -> String {
        format!(
            "[[backend]]\nname = {}\ntype = \"awskms\"\nregion = \"{REGION}\"\nendpoint = {}\n{extra}\n",
            toml_string(name),
            toml_string(self.endpoint())
        )
    }

    /// The ARN of key `key_id`.
    pub fn key_arn(&self, key_id: &str) -> String {
        format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/{key_id}")
    }

    /// Calls `TrentService.<action>`; `Err("<__type>: <message>")` for an error answer.
    pub fn try_call(&self, action: &str, body: &Value) -> Result<Value, String> {
        let (status, answer) = post(self.port, action, body).map_err(|e| e.to_string())?;
        if status == 200 {
            return Ok(answer);
        }
        Err(format!(
            "HTTP {status} {}: {}",
            answer["__type"].as_str().unwrap_or("?"),
            answer["message"]
                .as_str()
                .or(answer["Message"].as_str())
                .unwrap_or("")
        ))
    }

    /// Calls `TrentService.<action>`; panics on an error answer.
    pub fn call(&self, action: &str, body: &Value) -> Value {
        self.try_call(action, body)
            .unwrap_or_else(|e| panic!("local-kms {action} {body}: {e}"))
    }

    /// Creates a key of `key_spec` (`ECC_NIST_P256`, `RSA_2048`, ...) for `usage`; its key id.
    pub fn create_key(&self, key_spec: &str, usage: &str) -> String {
        let answer = self.call(
            "CreateKey",
            &json!({"KeySpec": key_spec, "KeyUsage": usage, "Description": "keyward test"}),
        );
        answer["KeyMetadata"]["KeyId"]
            .as_str()
            .expect("CreateKey gives a key id")
            .to_string()
    }

    /// Creates a `SIGN_VERIFY` key of `key_spec`; its key id.
    pub fn create_signing_key(&self, key_spec: &str) -> String {
        self.create_key(key_spec, "SIGN_VERIFY")
    }

    /// Creates `alias` (`alias/<name>`) for `key_id`.
    pub fn create_alias(&self, alias: &str, key_id: &str) {
        self.call(
            "CreateAlias",
            &json!({"AliasName": alias, "TargetKeyId": key_id}),
        );
    }

    /// Points `alias` at `key_id`.
    pub fn update_alias(&self, alias: &str, key_id: &str) {
        self.call(
            "UpdateAlias",
            &json!({"AliasName": alias, "TargetKeyId": key_id}),
        );
    }

    /// Disables (`false`) or enables (`true`) a key.
    pub fn set_enabled(&self, key_id: &str, enabled: bool) {
        let action = if enabled { "EnableKey" } else { "DisableKey" };
        self.call(action, &json!({"KeyId": key_id}));
    }

    /// The DER SubjectPublicKeyInfo of a key, as local-kms gives it.
    pub fn public_key_der(&self, key: &str) -> Vec<u8> {
        let answer = self.call("GetPublicKey", &json!({"KeyId": key}));
        STANDARD
            .decode(answer["PublicKey"].as_str().expect("a public key"))
            .expect("base64 public key")
    }

    /// What local-kms says about a key.
    pub fn describe(&self, key: &str) -> Value {
        self.call("DescribeKey", &json!({"KeyId": key}))["KeyMetadata"].clone()
    }
}

impl Drop for LocalKms {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The environment every daemon that talks to local-kms gets: static test credentials, and no
/// way to reach a real AWS configuration (shared files that do not exist, no instance
/// metadata). The variables are listed in [`AWS_ENV_NAMES`] for `env = [...]` of plugins.
pub fn isolated_aws_env(builder: DaemonBuilder) -> DaemonBuilder {
    let missing = |name: &str| {
        builder
            .dir()
            .join(name)
            .to_str()
            .expect("UTF-8")
            .to_string()
    };
    let (config, credentials) = (missing("no-aws-config"), missing("no-aws-credentials"));
    builder
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_SESSION_TOKEN", "")
        .env("AWS_CONFIG_FILE", &config)
        .env("AWS_SHARED_CREDENTIALS_FILE", &credentials)
        .env("AWS_EC2_METADATA_DISABLED", "true")
}

/// The variables [`isolated_aws_env`] sets, for a plugin's `env` list.
pub const AWS_ENV_NAMES: [&str; 6] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_EC2_METADATA_DISABLED",
];

/// The port of a `Local KMS started on 0.0.0.0:PORT` log line.
fn started_port(log: &str) -> Option<u16> {
    let line = log.lines().find(|l| l.contains("Local KMS started on"))?;
    let digits: String = line
        .rsplit(':')
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok().filter(|p| *p != 0)
}

/// One JSON request to local-kms over HTTP/1.1; the status and the JSON answer.
fn post(port: u16, action: &str, body: &Value) -> std::io::Result<(u16, Value)> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = body.to_string();
    write!(
        stream,
        "POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-amz-json-1.1\r\n\
         X-Amz-Target: TrentService.{action}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let bad = |what: &str| std::io::Error::other(format!("local-kms answered {what}"));
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("without a header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("without a status"))?;
    let mut payload = raw[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        payload = dechunk(&payload).ok_or_else(|| bad("a broken chunked body"))?;
    }
    let value = if payload.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&payload).map_err(|e| bad(&format!("non-JSON: {e}")))?
    };
    Ok((status, value))
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let end = body.windows(2).position(|w| w == b"\r\n")?;
        let size =
            usize::from_str_radix(std::str::from_utf8(&body[..end]).ok()?.trim(), 16).ok()?;
        body = &body[end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}
