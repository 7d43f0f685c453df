//! SoftHSM2 for the PKCS#11 tests: a private token directory and `softhsm2.conf` per test,
//! tokens made with `softhsm2-util`, keys made and inspected with OpenSC's `pkcs11-tool`, and a
//! keywardd configuration with one `pkcs11` backend named `hsm`.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

use crate::{COMMAND_TIMEOUT, DaemonBuilder, run_with_timeout, stderr_text, toml_string};

/// The SoftHSM2 module as Debian installs it.
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// The SO PIN of every test token.
pub const SO_PIN: &str = "12345678";
/// The user PIN of every test token unless a test says otherwise.
pub const PIN: &str = "1234";
/// The environment variable the daemon reads the PIN from in [`SoftHsm::daemon`].
pub const PIN_ENV: &str = "HSM_PIN";
/// The backend name in [`SoftHsm::daemon`].
pub const BACKEND: &str = "hsm";

/// A SoftHSM2 installation of its own: `<dir>/softhsm2.conf` with tokens in `<dir>/tokens`.
#[derive(Debug)]
pub struct SoftHsm {
    dir: TempDir,
    conf: PathBuf,
}

impl SoftHsm {
    /// A new, empty SoftHSM2 directory and configuration.
    pub fn new() -> SoftHsm {
        let dir = tempfile::Builder::new()
            .prefix("keyward-softhsm-")
            .tempdir()
            .expect("create a temporary directory");
        let tokens = dir.path().join("tokens");
        fs::create_dir_all(&tokens).expect("create the token directory");
        let conf = dir.path().join("softhsm2.conf");
        fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .expect("write softhsm2.conf");
        SoftHsm { dir, conf }
    }

    /// The directory holding the configuration and the tokens.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The `softhsm2.conf` to pass as `SOFTHSM2_CONF`.
    pub fn conf(&self) -> &Path {
        &self.conf
    }

    fn run<I, S>(&self, program: &str, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = Command::new(program);
        command.args(args).env("SOFTHSM2_CONF", &self.conf);
        run_with_timeout(command, None, COMMAND_TIMEOUT)
    }

    /// Runs `softhsm2-util ARGS` with this installation's configuration.
    pub fn util<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run("softhsm2-util", args)
    }

    /// Runs `pkcs11-tool --module <SoftHSM2> ARGS` with this installation's configuration.
    pub fn pkcs11_tool<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut all: Vec<std::ffi::OsString> = vec!["--module".into(), MODULE.into()];
        all.extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self.run("pkcs11-tool", all)
    }

    /// Initialises a token in the free slot; returns the slot id SoftHSM assigned it.
    pub fn init_token(&self, label: &str, so_pin: &str, pin: &str) -> u64 {
        let output = self.util([
            "--init-token",
            "--free",
            "--label",
            label,
            "--so-pin",
            so_pin,
            "--pin",
            pin,
        ]);
        let text = ok_text(&output, "softhsm2-util --init-token");
        text.split_whitespace()
            .last()
            .and_then(|slot| slot.trim_end_matches('.').parse().ok())
            .unwrap_or_else(|| panic!("no slot id in softhsm2-util's answer: {text}"))
    }

    /// Re-initialises the token in `slot` (all its objects are destroyed).
    pub fn reinit_token(&self, slot: u64, label: &str, so_pin: &str, pin: &str) {
        let slot = slot.to_string();
        let output = self.util([
            "--init-token",
            "--slot",
            &slot,
            "--label",
            label,
            "--so-pin",
            so_pin,
            "--pin",
            pin,
        ]);
        ok_text(&output, "softhsm2-util --init-token --slot");
    }

    /// Deletes the token labelled `label` (its files are removed).
    pub fn delete_token(&self, label: &str) {
        let output = self.util(["--delete-token", "--token", label]);
        ok_text(&output, "softhsm2-util --delete-token");
    }

    /// Makes a key pair on the token with `pkcs11-tool --keypairgen --key-type KEY_TYPE`
    /// (`EC:prime256v1`, `rsa:2048`, `EC:edwards25519`, ...).
    pub fn keypairgen(&self, token: &str, pin: &str, key_type: &str, label: &str, id: &str) {
        let output = self.pkcs11_tool([
            "--token-label",
            token,
            "--login",
            "--pin",
            pin,
            "--keypairgen",
            "--key-type",
            key_type,
            "--label",
            label,
            "--id",
            id,
        ]);
        ok_text(&output, &format!("pkcs11-tool --keypairgen {key_type}"));
    }

    /// `pkcs11-tool --list-objects --type privkey` as the user, as text.
    pub fn private_objects(&self, token: &str, pin: &str) -> String {
        let output = self.pkcs11_tool([
            "--token-label",
            token,
            "--login",
            "--pin",
            pin,
            "--list-objects",
            "--type",
            "privkey",
        ]);
        ok_text(&output, "pkcs11-tool --list-objects")
    }

    /// The `[[backend]]` table of a `pkcs11` backend named [`BACKEND`] on `token`, its PIN in
    /// [`PIN_ENV`], with `extra` lines appended (`isolation = "none"`, `sessions = 2`).
    pub fn backend_toml(&self, token: &str, extra: &str) -> String {
        self.backend_toml_with_pin(token, &format!("pin_env = \"{PIN_ENV}\""), extra)
    }

    /// Like [`SoftHsm::backend_toml`] with `pin_line` (`pin_file = "..."`) as the PIN setting.
    pub fn backend_toml_with_pin(&self, token: &str, pin_line: &str, extra: &str) -> String {
        format!(
            "[[backend]]\nname = \"{BACKEND}\"\ntype = \"pkcs11\"\nmodule = {}\ntoken_label = {}\n{pin_line}\nenv = [\"SOFTHSM2_CONF\"]\n{extra}\n",
            toml_string(MODULE),
            toml_string(token),
        )
    }

    /// A daemon builder whose whole config is a socket, a state directory and `tables`
    /// (usually [`SoftHsm::backend_toml`] and `[[key]]` tables), started with `SOFTHSM2_CONF`
    /// and `HSM_PIN = pin`.
    pub fn daemon(&self, tables: &str, pin: &str) -> DaemonBuilder {
        let builder = DaemonBuilder::new();
        let dir = builder.dir().to_path_buf();
        let path = |p: &str| toml_string(dir.join(p).to_str().expect("UTF-8 temp path"));
        let config = format!(
            "socket = {}\nstate_dir = {}\n\n{tables}",
            path("run/agent.sock"),
            path("state")
        );
        builder
            .config(&config)
            .env(
                "SOFTHSM2_CONF",
                self.conf.to_str().expect("UTF-8 temp path"),
            )
            .env(PIN_ENV, pin)
    }
}

impl Default for SoftHsm {
    fn default() -> Self {
        SoftHsm::new()
    }
}

/// The stdout of a tool that must have succeeded; panics with its stderr otherwise.
fn ok_text(output: &Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        stderr_text(output)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The pids and command names of the direct children of `pid`.
pub fn children(pid: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "<pid> (<comm>) <state> <ppid> ...": comm may hold spaces, so split at the last ')'.
        let Some((head, tail)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head.split_once('(').map_or("", |(_, c)| c).to_string();
        let ppid = tail.split_whitespace().nth(1).and_then(|p| p.parse().ok());
        if ppid == Some(pid) {
            out.push((child, comm));
        }
    }
    out
}
