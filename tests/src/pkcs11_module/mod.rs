//! The PKCS#11 module (`libkeyward_pkcs11.so`) and its real consumers: OpenSC's `pkcs11-tool`,
//! OpenSSL's pkcs11 engine (libp11), `osslsigncode` and Java's SunPKCS11 (`keytool`,
//! `jarsigner`). Commands run against one agent socket ([`consumer`]); an agent with keys in
//! the local backend and SoftHSM ([`Agent`]); a small valid PE file for Authenticode.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::{COMMAND_TIMEOUT, binary, run_with_timeout};

mod agent;
mod inprocess;
mod pe;

pub use agent::{
    Agent, HSM_KEYS, LIBP11_KEYS, LOCAL_KEYS, assert_ok, key_with_policy, openssl_verify,
    stranger_ca,
};
pub use inprocess::{in_child, run_in_child, signing_checks};
pub use pe::tiny_pe;

/// The module's file name, next to the workspace binaries.
pub const MODULE_FILE: &str = "libkeyward_pkcs11.so";
/// The engine OpenSSL loads for `-engine pkcs11` (Debian `libengine-pkcs11-openssl`).
pub const ENGINE: &str = "/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so";
/// The token label in RFC 7512 URIs.
pub const TOKEN: &str = "keyward";

/// The module built by `cargo build -p keyward-pkcs11`; panics with that command when missing.
pub fn module_path() -> PathBuf {
    let keywardd = binary("keywardd");
    let module = keywardd.with_file_name(MODULE_FILE);
    assert!(
        module.is_file(),
        "{} does not exist: build it first: cargo build -p keyward-pkcs11",
        module.display()
    );
    module
}

/// The absolute path of `program` found on `PATH`, symlinks resolved (what `/proc/<pid>/exe`
/// shows for it).
pub fn executable(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .and_then(|found| found.canonicalize().ok())
}

/// Whether every tool in `tools` is on `PATH` (and the engine, when `engine`); when not, the
/// test skips through [`crate::peers::missing`] (which fails it under `CI=true`).
pub fn available(tools: &[&str], engine: bool) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|tool| executable(tool).is_none())
        .chain((engine && !Path::new(ENGINE).is_file()).then_some(ENGINE))
        .collect();
    if missing.is_empty() {
        return true;
    }
    crate::peers::missing(
        &format!("{} not installed", missing.join(", ")),
        "`scripts/test pkcs11-module` installs them (Debian opensc, libengine-pkcs11-openssl, \
         osslsigncode, openjdk-17-jdk-headless)",
    );
    false
}

/// `program` with the agent at `socket` (`KEYWARD_SOCK`) and none of the module's other
/// settings inherited from the test's environment.
pub fn consumer(program: impl AsRef<OsStr>, socket: &Path) -> Command {
    let mut command = Command::new(program);
    command
        .env("KEYWARD_SOCK", socket)
        .env_remove("KEYWARD_PKCS11_KEYS")
        .env_remove("KEYWARD_PKCS11_LOG")
        .env_remove("PKCS11_MODULE_PATH");
    command
}

/// Runs `command` (no stdin) with the usual deadline.
pub fn run(command: Command) -> Output {
    run_with_timeout(command, None, COMMAND_TIMEOUT)
}

/// Runs `pkcs11-tool --module <module> ARGS` against the agent at `socket`.
pub fn pkcs11_tool<I, S>(socket: &Path, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = consumer("pkcs11-tool", socket);
    command.arg("--module").arg(module_path()).args(args);
    run(command)
}

/// `CKA_ID` of a key: its id's bytes, in hex as `pkcs11-tool --id` takes it.
pub fn hex_id(key_id: &str) -> String {
    key_id.bytes().map(|b| format!("{b:02x}")).collect()
}

/// An RFC 7512 URI for `key_id`'s object of `kind` (`private`, `public`, `cert`).
pub fn uri(key_id: &str, kind: &str) -> String {
    format!("pkcs11:token={TOKEN};object={key_id};type={kind}")
}

/// A SunPKCS11 configuration file for the module, written in `dir`.
pub fn sunpkcs11_config(dir: &Path) -> PathBuf {
    let path = dir.join("sunpkcs11.cfg");
    let text = format!(
        "name = keyward\nlibrary = {}\nslotListIndex = 0\n",
        module_path().display()
    );
    std::fs::write(&path, text).expect("write the SunPKCS11 configuration");
    path
}

/// Waits until a line of the audit log at `path` satisfies `found`; returns it, or panics
/// with the log after `timeout`.
pub async fn wait_for_audit_record(
    path: &Path,
    found: impl Fn(&serde_json::Value) -> bool,
    timeout: Duration,
) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let hit = text
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find(|record| found(record));
        if let Some(record) = hit {
            return record;
        }
        assert!(
            Instant::now() < deadline,
            "no such record in the audit log within {timeout:?}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
