//! A **shimmed virtual PIV card** for the `yubikey` backend: `keyward-virtual-piv`
//! (tests/virtual-piv: Nitrokey's piv-authenticator on trussed's virtual platform) attached to
//! `vsmartcard-vpcd`, a reader driver of `pcscd`. The harness rewrites two commands so that the
//! `yubikey` crate accepts the card (SELECT by the 5-byte PIV RID, GET VERSION answering 5.x):
//! tests on it test keyward's PC/SC path, not a YubiKey's firmware.
//!
//! pcscd 1.9 always serves `/run/pcscd/pcscd.comm` (`PCSCLITE_CSOCK_NAME` is read by clients
//! only), so there is one pcscd per machine: a running one is used as it is (its vpcd reader
//! on port 35963, Debian's `/etc/reader.conf.d/vpcd`), else one is started in the foreground
//! and stopped with the fixture.

use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::toml_string;

/// The vpcd port of Debian's `/etc/reader.conf.d/vpcd` (reader "Virtual PCD 00 00").
pub const VPCD_PORT: u16 = 35963;
/// The applet's factory PIN.
pub const PIN: &str = "123456";
/// The applet's serial number (GET SERIAL), as `serial = ...` would name it.
pub const SERIAL: u32 = 0x0052_f743;
/// The name of the backend in the test configs.
pub const BACKEND: &str = "yk";
const PCSCD_SOCKET: &str = "/run/pcscd/pcscd.comm";
pub(crate) const VPCD_DRIVER: &str = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so";

/// pcscd (when this fixture started it) and the card process.
#[derive(Debug)]
pub struct VirtualPiv {
    pcscd: Option<Child>,
    card: Option<Child>,
    harness: PathBuf,
    state: tempfile::TempDir,
}

/// The `keyward-virtual-piv` binary: `$KEYWARD_TEST_VIRTUAL_PIV`, else where `scripts/test
/// yubikey` builds it.
pub(crate) fn harness_path() -> PathBuf {
    if let Some(path) = std::env::var_os("KEYWARD_TEST_VIRTUAL_PIV") {
        return PathBuf::from(path);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".cache/keyward/virtual-piv-target/debug/keyward-virtual-piv")
}

fn pcscd_running() -> bool {
    UnixStream::connect(PCSCD_SOCKET).is_ok()
}

impl VirtualPiv {
    /// Starts pcscd when none runs, then the card. `None` (after printing `skipped: ...`) when
    /// pcscd, vpcd or the harness binary is missing.
    pub fn start() -> Option<VirtualPiv> {
        let harness = crate::peers::require(crate::peers::Peer::VirtualPiv)?;
        let pcscd = if pcscd_running() {
            eprintln!("virtual PIV: using the running pcscd");
            None
        } else {
            let child = Command::new("/usr/sbin/pcscd")
                .arg("--foreground")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start pcscd");
            crate::wait::until("pcscd's socket", Duration::from_secs(10), || {
                pcscd_running()
                    .then_some(())
                    .ok_or_else(|| PCSCD_SOCKET.to_string())
            });
            Some(child)
        };
        crate::wait::until("vpcd to listen", Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", VPCD_PORT))
                .map(drop)
                .map_err(|e| format!("127.0.0.1:{VPCD_PORT}: {e}"))
        });
        let state = tempfile::Builder::new()
            .prefix("keyward-virtual-piv-")
            .tempdir()
            .expect("temp dir");
        let mut piv = VirtualPiv {
            pcscd,
            card: None,
            harness,
            state,
        };
        piv.insert();
        Some(piv)
    }

    /// Starts the card process (as if the card were plugged in); its storage survives.
    pub fn insert(&mut self) {
        assert!(self.card.is_none(), "the card is already in");
        let child = Command::new(&self.harness)
            .arg("--vpcd")
            .arg(format!("127.0.0.1:{VPCD_PORT}"))
            .arg("--state")
            .arg(self.state.path().join("card"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start keyward-virtual-piv");
        self.card = Some(child);
    }

    /// Stops the card process (as if the card were pulled out).
    pub fn remove(&mut self) {
        if let Some(mut child) = self.card.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The `[[backend]]` table of a `yubikey` backend named [`BACKEND`] on this card, with
    /// `extra` lines (`pin_file = ...`).
    pub fn backend_toml(&self, extra: &str) -> String {
        format!(
            "[[backend]]\nname = {}\ntype = \"yubikey\"\nserial = {SERIAL}\n{extra}\n",
            toml_string(BACKEND)
        )
    }
}

impl Drop for VirtualPiv {
    fn drop(&mut self) {
        self.remove();
        if let Some(mut pcscd) = self.pcscd.take() {
            let _ = pcscd.kill();
            let _ = pcscd.wait();
        }
    }
}
