//! The `ssh` part: keywardd's ssh-agent socket (`[ssh_agent]`) driven by OpenSSH's own tools.
//!
//! - `agent`: `ssh-add -L` lists exactly the offered keys, in order, with their ids (a key
//!   listed before it exists is offered once it does; a reload changes the list), each line
//!   the same as `keyward ssh pubkey` prints; adding, removing and locking are refused;
//!   SHA-1, oversized and unknown requests are refused; a uid the agent does not serve is
//!   turned away and audited.
//! - `signatures`: `ssh-keygen -Y sign` / `-Y verify` for Ed25519, ECDSA P-256/384/521 and RSA
//!   keys in the local backend, SoftHSM (PKCS#11) and OpenBao (Vault).
//! - `git`: `git commit -S` with `gpg.format = ssh`, `git verify-commit` with an allowed_signers
//!   file from `keyward ssh allowed-signers`; a key whose policy forbids git is refused and
//!   the refusal is in the audit log.
//! - `login`: `ssh` into a private `sshd` through the agent, with Ed25519 and RSA (both SHA-2
//!   flavours); a key whose policy denies logins cannot, and the audit log names the host key.
//!
//! Run with `scripts/test ssh`, or `cargo test -p keyward-tests --test ssh` once OpenSSH
//! (client and server) and git are installed.

mod agent;
mod git;
mod login;
mod signatures;

use std::path::{Path, PathBuf};
use std::time::Duration;

use keyward_tests::{TestDaemon, run_cli, stdout_text, toml_string, wait};
use rustix::process::{Pid, Signal, kill_process};
use serde_json::Value;

/// The ssh-agent socket of a daemon made by `DaemonBuilder` (the default: next to its
/// agent socket).
pub fn ssh_socket(daemon: &TestDaemon) -> PathBuf {
    daemon.socket().with_file_name("ssh-agent.sock")
}

/// `[ssh_agent]` offering `keys`.
pub fn ssh_table(keys: &[&str]) -> String {
    let keys: Vec<String> = keys.iter().map(toml_string).collect();
    format!("\n[ssh_agent]\nkeys = [{}]\n", keys.join(", "))
}

/// `[audit]` writing to `<dir>/audit/audit.log`, and that path.
pub fn audit_table(dir: &Path) -> (String, PathBuf) {
    let path = dir.join("audit/audit.log");
    (
        format!(
            "[audit]\npath = {}\n",
            toml_string(path.to_str().expect("UTF-8"))
        ),
        path,
    )
}

/// A `[[key]]` of the `local` backend whose file is `<name>.pem`, with a policy (TOML lines)
/// when given.
pub fn local_key(id: &str, policy: Option<&str>) -> String {
    let mut table = format!("\n[[key]]\nid = \"{id}\"\nbackend = \"local\"\nref = \"{id}\"\n");
    if let Some(policy) = policy {
        table.push_str(&format!("[key.policy]\n{policy}\n"));
    }
    table
}

/// Makes `<keys>/<id>.pem` with `openssl genpkey ARGS` (the keys directory is created 0700).
pub fn make_local_key(keys: &Path, id: &str, args: &[&str]) {
    std::fs::create_dir_all(keys).expect("create the keys directory");
    keyward_tests::set_mode(keys, 0o700);
    keyward_tests::openssl_genpkey(&keys.join(format!("{id}.pem")), args);
}

/// `openssl genpkey` arguments for each key type OpenSSH has.
pub const KEY_TYPES: [(&str, &[&str]); 5] = [
    ("ed25519", &["-algorithm", "ed25519"]),
    (
        "p256",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    ),
    (
        "p384",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
    ),
    (
        "p521",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-521"],
    ),
    (
        "rsa",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    ),
];

/// `keyward ssh pubkey --key ID`: the key's OpenSSH line.
pub fn pubkey(daemon: &TestDaemon, id: &str) -> String {
    let output = run_cli(daemon, ["ssh", "pubkey", "--key", id]);
    keyward_tests::cli::assert_ok(&output, "keyward ssh pubkey");
    stdout_text(&output).trim_end().to_string()
}

/// The policy lines that let the test's own uid sign with `purpose` (a pattern).
pub fn policy_for(purpose: &str) -> String {
    format!(
        "uids = [{}]\npurpose = {}",
        rustix::process::getuid().as_raw(),
        toml_string(purpose)
    )
}

/// The audit log's records.
pub fn audit_records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).expect("an audit record is JSON"))
        .collect()
}

/// Waits for a record of the audit log at `path` for which `matches` holds; returns it.
pub async fn audit_record(path: &Path, matches: impl Fn(&Value) -> bool) -> Value {
    wait::until_async("an audit record", Duration::from_secs(20), async || {
        let records = audit_records(path);
        records
            .iter()
            .find(|r| matches(r))
            .cloned()
            .ok_or_else(|| format!("{records:#?}"))
    })
    .await
}

/// Writes `config` over the daemon's config file, sends SIGHUP and waits for the `count`-th
/// "config reloaded" line.
pub async fn reload(daemon: &TestDaemon, config: &str, count: usize) {
    std::fs::write(daemon.config_path(), config).expect("write the new config");
    let pid = Pid::from_raw(daemon.pid() as i32).expect("daemon pid");
    kill_process(pid, Signal::HUP).expect("send SIGHUP");
    wait::for_log(daemon, &["config reloaded"], count, Duration::from_secs(20)).await;
}
