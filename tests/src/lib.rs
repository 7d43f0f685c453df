//! End-to-end test harness for keyward.
//!
//! [`TestDaemon`] runs a real `keywardd` in a temporary directory; [`run_cli`] runs the real
//! `keyward` binary against it; [`conformance`] checks every key of a backend against the
//! signing contract, verifying each signature with the `openssl` CLI and with the SDK's
//! RustCrypto verifier. The binaries must be built first (`cargo build --workspace --bins`).
//!
//! The tests themselves are one test target per `scripts/test` part, `tests/tests/<part>/`.
//! A test gets every peer it needs (SoftHSM, OpenBao, local-kms, lowkey-vault, notation, ...)
//! through [`peers::require`], which skips locally and fails under `CI=true`, and waits for
//! what it asserts on through [`wait`], never with a fixed sleep.

pub mod cli;
pub mod conformance;
pub mod cosign;
mod daemon;
pub mod localkms;
pub mod lowkey;
pub mod notation;
pub mod openbao;
pub mod parsec;
pub mod peers;
pub mod pkcs11_module;
pub mod pki;
pub mod plugins;
mod process;
pub mod softhsm;
pub mod ssh;
pub mod swtpm;
pub mod timestamping;
pub mod tsa;
pub mod users;
pub mod virtual_piv;
pub mod wait;

use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use tonic::transport::{Channel, Endpoint, Uri};

pub use daemon::{DaemonBuilder, StartFailure, TestDaemon};
pub use process::{run_with_timeout, stderr_text, stdout_text};

/// How long a CLI or `openssl` run may take before the test gives up on it.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// The path of a workspace binary (`keywardd`, `keyward`), next to the test executable's
/// `deps` directory.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable lives in <target>/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} does not exist: build the binaries first: cargo build --workspace --bins",
        path.display()
    );
    path
}

/// A `keyward` command pointed at `socket` with `--socket`, with `RUST_BACKTRACE=1` so that a
/// panic would show, and without `KEYWARD_SOCK`.
pub fn cli_command(socket: &Path) -> Command {
    let mut command = Command::new(binary("keyward"));
    command
        .arg("--socket")
        .arg(socket)
        .env_remove("KEYWARD_SOCK")
        .env("RUST_BACKTRACE", "1");
    command
}

/// Runs `keyward --socket <daemon's socket> ARGS` and returns what it did.
pub fn run_cli<I, S>(daemon: &TestDaemon, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_cli_at(daemon.socket(), args, None)
}

/// Like [`run_cli`], with `stdin` fed to the CLI.
pub fn run_cli_with_stdin<I, S>(daemon: &TestDaemon, args: I, stdin: &[u8]) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_cli_at(daemon.socket(), args, Some(stdin))
}

/// Runs `keyward --socket SOCKET ARGS` (stdin empty unless given).
pub fn run_cli_at<I, S>(socket: &Path, args: I, stdin: Option<&[u8]>) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = cli_command(socket);
    command.args(args);
    run_with_timeout(command, stdin, COMMAND_TIMEOUT)
}

/// Runs `openssl ARGS`.
pub fn openssl<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new("openssl");
    command.args(args);
    run_with_timeout(command, None, COMMAND_TIMEOUT)
}

/// A gRPC channel to the agent's Unix socket, for calls the SDK does not make (health, raw
/// requests the SDK would refuse to build).
pub async fn uds_channel(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    let path = socket.to_path_buf();
    Endpoint::from_static("http://keyward.invalid")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
}

/// `len` bytes from the kernel's random generator.
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    bytes
}

/// A TOML basic string holding `value`, quoted and escaped.
pub fn toml_string(value: impl AsRef<str>) -> String {
    toml::Value::String(value.as_ref().to_string()).to_string()
}

/// The permission bits (`0o777`) of `path`, following symlinks.
pub fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Sets the permission bits of `path`.
pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// Creates a private key with `openssl genpkey ARGS -out PATH` and makes it mode 0600.
pub fn openssl_genpkey(path: &Path, args: &[&str]) {
    let mut all: Vec<&OsStr> = vec![OsStr::new("genpkey")];
    all.extend(args.iter().map(OsStr::new));
    all.extend([OsStr::new("-out"), path.as_os_str()]);
    let output = openssl(&all);
    assert!(
        output.status.success(),
        "openssl genpkey failed: {}",
        stderr_text(&output)
    );
    set_mode(path, 0o600);
}

/// Whether `text` holds `word` on its own, not inside a longer run of letters and digits: for
/// short secrets such as a PIN `1234`, which a timestamp (`08:27:54.281234Z`), a slot number or
/// a serial can hold by chance, while a leak (`pin=1234`, `"1234"`) still shows.
pub fn contains_word(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}
