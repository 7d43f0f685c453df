//! A real Parsec service (parsec-service 1.5.0 built from crates.io by `scripts/test parsec`)
//! for the `parsec` part: its TPM provider on a software TPM and its PKCS#11 provider on a
//! SoftHSM2 token, the Unix peer-credentials authenticator, its socket and key mappings in a
//! temporary directory; configured, started, stopped and started again by the test.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::softhsm::{self, SoftHsm};
use crate::swtpm::Swtpm;
use crate::toml_string;

/// The environment variable `scripts/test` sets to the `parsec` binary.
pub const PARSEC_ENV: &str = "KEYWARD_TEST_PARSEC";
/// The SoftHSM2 token the PKCS#11 provider uses.
pub const TOKEN: &str = "parsec";
/// How long Parsec may take to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// A running Parsec service and its peers; stopped when dropped.
#[derive(Debug)]
pub struct Parsec {
    binary: PathBuf,
    dir: TempDir,
    hsm: SoftHsm,
    tpm: Swtpm,
    child: Option<Child>,
    starts: usize,
}

impl Parsec {
    /// A new swtpm and SoftHSM token, a Parsec configuration for both, and the service started
    /// (ready when it logs "Parsec is ready").
    pub fn start(binary: &Path) -> Parsec {
        let dir = tempfile::Builder::new()
            .prefix("keyward-parsec-")
            .tempdir()
            .expect("create a temporary directory");
        let tpm = Swtpm::new();
        let hsm = SoftHsm::new();
        let slot = hsm.init_token(TOKEN, softhsm::SO_PIN, softhsm::PIN);
        let config = format!(
            r#"[core_settings]
# Tests run as root on CI; Parsec refuses that unless told.
allow_root = {allow_root}
log_level = "info"
log_error_details = true

[listener]
listener_type = "DomainSocket"
timeout = 1000
socket_path = {socket}

[authenticator]
auth_type = "UnixPeerCredentials"

[[key_manager]]
name = "on-disk"
manager_type = "OnDisk"
store_path = {mappings}

[[provider]]
name = "tpm-provider"
provider_type = "Tpm"
key_info_manager = "on-disk"
tcti = {tcti}
owner_hierarchy_auth = ""

[[provider]]
name = "pkcs11-provider"
provider_type = "Pkcs11"
key_info_manager = "on-disk"
library_path = {module}
slot_number = {slot}
user_pin = {pin}
"#,
            allow_root = rustix::process::getuid().is_root(),
            socket = toml_string(dir.path().join("parsec.sock").to_str().expect("UTF-8 path")),
            mappings = toml_string(dir.path().join("mappings").to_str().expect("UTF-8 path")),
            tcti = toml_string(tpm.tcti()),
            module = toml_string(softhsm::MODULE),
            pin = toml_string(softhsm::PIN),
        );
        fs::write(dir.path().join("config.toml"), config).expect("write the Parsec config");
        let mut parsec = Parsec {
            binary: binary.to_path_buf(),
            dir,
            hsm,
            tpm,
            child: None,
            starts: 0,
        };
        parsec.start_again();
        parsec
    }

    /// The service's socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("parsec.sock")
    }

    /// The software TPM behind the TPM provider.
    pub fn tpm(&self) -> &Swtpm {
        &self.tpm
    }

    /// The SoftHSM2 installation behind the PKCS#11 provider.
    pub fn hsm(&self) -> &SoftHsm {
        &self.hsm
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("parsec-{}.log", self.starts))
    }

    /// Everything the current (or last) Parsec process wrote.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts the service (again) on the same configuration, keys and peers, and waits for
    /// "Parsec is ready".
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "Parsec is running already");
        self.starts += 1;
        let log = fs::File::create(self.log_path()).expect("create the Parsec log");
        let mut child = Command::new(&self.binary)
            .arg("--config")
            .arg(self.dir.path().join("config.toml"))
            .current_dir(self.dir.path())
            .env("SOFTHSM2_CONF", self.hsm.conf())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup the log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if self.log().contains("Parsec is ready") && self.socket().exists() {
                self.child = Some(child);
                return;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("Parsec exited with {status}:\n{}", self.log());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "Parsec was not ready within {READY_TIMEOUT:?}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the service (SIGTERM, then SIGKILL) and waits for it to exit.
    pub fn stop(&mut self) {
        let child = self.child.take().expect("Parsec is not running");
        crate::process::terminate(child, Duration::from_secs(10));
    }

    /// A `[[backend]]` table for keyward's parsec backend named `name` on this service's
    /// `provider` (`tpm`, `pkcs11`).
    pub fn backend_toml(&self, name: &str, provider: &str) -> String {
        format!(
            "[[backend]]\nname = {}\ntype = \"parsec\"\nsocket = {}\nprovider = {}\n",
            toml_string(name),
            toml_string(self.socket().to_str().expect("UTF-8 path")),
            toml_string(provider),
        )
    }
}

impl Drop for Parsec {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            crate::process::terminate(child, Duration::from_secs(5));
        }
    }
}
