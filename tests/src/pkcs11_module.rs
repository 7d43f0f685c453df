//! The PKCS#11 module (`libkeyward_pkcs11.so`) and its real consumers: OpenSC's `pkcs11-tool`,
//! OpenSSL's pkcs11 engine (libp11), `osslsigncode` and Java's SunPKCS11 (`keytool`,
//! `jarsigner`). Commands run against one agent socket; a small valid PE file for Authenticode.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::{COMMAND_TIMEOUT, binary, run_with_timeout};

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

/// Whether every tool in `tools` is on `PATH` (and the engine, when `engine`); when not, says
/// so on stderr with `skipped: ` (the caller returns; CI turns a skip into a failure).
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
    eprintln!(
        "skipped: {} not installed (scripts/test pkcs11-module installs them)",
        missing.join(", ")
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

/// A minimal valid PE32 executable (one `.text` section holding `ret`), for Authenticode:
/// DOS header, `PE\0\0`, COFF header, optional header with 16 empty data directories, one
/// section header, headers and section each padded to the 0x200 file alignment.
pub fn tiny_pe() -> Vec<u8> {
    fn u16le(out: &mut Vec<u8>, v: u16) {
        out.extend(v.to_le_bytes());
    }
    fn u32le(out: &mut Vec<u8>, v: u32) {
        out.extend(v.to_le_bytes());
    }
    let mut pe = vec![0u8; 0x40];
    pe[..2].copy_from_slice(b"MZ");
    pe[0x3c..0x40].copy_from_slice(&0x40u32.to_le_bytes()); // e_lfanew
    pe.extend(b"PE\0\0");
    // COFF: i386, 1 section, no symbols, 224-byte optional header, executable + 32-bit.
    for v in [0x14c, 1] {
        u16le(&mut pe, v);
    }
    for v in [0, 0, 0] {
        u32le(&mut pe, v);
    }
    u16le(&mut pe, 224);
    u16le(&mut pe, 0x0102);
    // Optional header (PE32).
    u16le(&mut pe, 0x10b);
    pe.extend([14, 0]); // linker version
    // code size, initialized, uninitialized, entry point, base of code, base of data, image
    // base, section alignment, file alignment
    for v in [
        0x200, 0, 0, 0x1000, 0x1000, 0x1000, 0x40_0000, 0x1000, 0x200,
    ] {
        u32le(&mut pe, v);
    }
    for v in [6, 0, 0, 0, 6, 0] {
        u16le(&mut pe, v); // OS, image and subsystem versions
    }
    // Win32 version, image size, headers size, checksum
    for v in [0, 0x2000, 0x200, 0] {
        u32le(&mut pe, v);
    }
    u16le(&mut pe, 3); // console subsystem
    u16le(&mut pe, 0x8140); // NX compatible, dynamic base, terminal server aware
    // stack reserve/commit, heap reserve/commit, loader flags, 16 data directories
    for v in [0x10_0000, 0x1000, 0x10_0000, 0x1000, 0, 16] {
        u32le(&mut pe, v);
    }
    pe.extend([0u8; 16 * 8]);
    // Section header: .text, virtual size 1 at 0x1000, 0x200 raw bytes at 0x200, code|exec|read.
    pe.extend(b".text\0\0\0");
    for v in [1, 0x1000, 0x200, 0x200, 0, 0] {
        u32le(&mut pe, v);
    }
    u16le(&mut pe, 0);
    u16le(&mut pe, 0);
    u32le(&mut pe, 0x6000_0020);
    pe.resize(0x200, 0);
    pe.push(0xc3); // ret
    pe.resize(0x400, 0);
    pe
}
