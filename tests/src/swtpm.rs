//! A software TPM for the `tpm` and `parsec` parts: Debian's `swtpm` with a fresh state
//! directory per test (`swtpm_setup`), serving TPM 2.0 commands on 127.0.0.1 (free ports), and
//! `tpm2-tools` run against it to look at the TPM from outside keyward.
//!
//! swtpm serves one connection at a time: while a keywardd plugin (or Parsec) holds its TPM
//! connection, a `tpm2_*` command waits. Tests read the TPM with the tools only while nothing
//! else is connected (before a daemon starts, after it stopped).

use std::ffi::OsStr;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::{COMMAND_TIMEOUT, run_with_timeout, stderr_text, stdout_text, toml_string};

/// How long swtpm may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A running swtpm with its own state directory; killed when dropped.
#[derive(Debug)]
pub struct Swtpm {
    dir: TempDir,
    port: u16,
    child: Option<Child>,
}

impl Swtpm {
    /// Creates a fresh TPM 2.0 state (`swtpm_setup --tpm2 --overwrite`: new seeds, an empty
    /// owner auth, the default lockout policy of 3 tries) and starts swtpm on it.
    pub fn new() -> Swtpm {
        let dir = tempfile::Builder::new()
            .prefix("keyward-swtpm-")
            .tempdir()
            .expect("create a temporary directory");
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).expect("create the swtpm state directory");
        let mut setup = Command::new("swtpm_setup");
        setup
            .args(["--tpm2", "--overwrite", "--tpmstate"])
            .arg(&state);
        let output = run_with_timeout(setup, None, COMMAND_TIMEOUT);
        assert!(
            output.status.success(),
            "swtpm_setup failed: {}{}",
            stdout_text(&output),
            stderr_text(&output)
        );
        let mut tpm = Swtpm {
            dir,
            port: 0,
            child: None,
        };
        tpm.start_on_free_ports();
        tpm
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The TCTI string keyward, Parsec and tpm2-tools use to reach it.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// The command port (the control port is the next one).
    pub fn port(&self) -> u16 {
        self.port
    }

    fn start_on_free_ports(&mut self) {
        // The swtpm TCTI talks to PORT and PORT+1: find two free neighbours. Another program
        // may take them between the check and swtpm's bind; then swtpm exits and we try others.
        for _ in 0..20 {
            let port = free_port_pair();
            self.port = port;
            if self.try_start().is_ok() {
                return;
            }
        }
        panic!("swtpm did not start on any free port pair");
    }

    /// Starts swtpm on its ports and state (again, after [`Swtpm::kill`]) and waits until it
    /// accepts connections.
    pub fn start(&mut self) {
        if let Err(log) = self.try_start() {
            panic!("swtpm did not start again on port {}: {log}", self.port);
        }
    }

    fn try_start(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "swtpm is running already");
        let log = self.dir.path().join("swtpm.log");
        let mut command = Command::new("swtpm");
        command
            .args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", self.state().display()))
            .arg("--server")
            .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", self.port))
            .arg("--ctrl")
            .arg(format!(
                "type=tcp,port={},bindaddr=127.0.0.1",
                self.port + 1
            ))
            .args(["--flags", "not-need-init,startup-clear", "--log"])
            .arg(format!("file={},level=1", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start swtpm: {e}"))?;
        let deadline = Instant::now() + READY_TIMEOUT;
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "swtpm exited with {status}: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                ));
            }
            // A connection that closes at once is harmless: swtpm goes back to accepting.
            if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err("it did not accept connections in time".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills swtpm (SIGKILL, as a crash would) and reaps it. Its state stays.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("swtpm is not running");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Runs a tpm2-tools command (`tpm2_getcap`, ...) against this TPM.
    pub fn tool<I, S>(&self, tool: &str, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = Command::new(tool);
        command.args(args).env("TPM2TOOLS_TCTI", self.tcti());
        run_with_timeout(command, None, COMMAND_TIMEOUT)
    }

    /// A TPM property from `tpm2_getcap properties-variable` (`TPM2_PT_LOCKOUT_COUNTER`, ...).
    /// Nothing else may be connected to the TPM (see the module documentation).
    pub fn variable_property(&self, name: &str) -> u32 {
        let output = self.tool("tpm2_getcap", ["properties-variable"]);
        assert!(
            output.status.success(),
            "tpm2_getcap properties-variable failed: {}",
            stderr_text(&output)
        );
        let text = stdout_text(&output);
        let value = text
            .lines()
            .find_map(|line| line.trim().strip_prefix(&format!("{name}:")))
            .unwrap_or_else(|| panic!("no {name} in tpm2_getcap's output:\n{text}"))
            .trim();
        let parsed = match value.strip_prefix("0x") {
            Some(hex) => u32::from_str_radix(hex, 16),
            None => value.parse(),
        };
        parsed.unwrap_or_else(|e| panic!("{name}: {value:?}: {e}"))
    }

    /// The number of failed authorizations the TPM counts now (TPM2_PT_LOCKOUT_COUNTER).
    pub fn lockout_counter(&self) -> u32 {
        self.variable_property("TPM2_PT_LOCKOUT_COUNTER")
    }

    /// A `[[backend]]` table for keyward's tpm backend on this TPM, named `name`, keys in
    /// `keys`, plus `extra` lines.
    pub fn backend_toml(&self, name: &str, keys: &Path, extra: &str) -> String {
        format!(
            "[[backend]]\nname = {}\ntype = \"tpm\"\npath = {}\ntcti = {}\n{extra}\n",
            toml_string(name),
            toml_string(keys.to_str().expect("UTF-8 temp path")),
            toml_string(self.tcti()),
        )
    }
}

impl Default for Swtpm {
    fn default() -> Self {
        Swtpm::new()
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A port `p` such that `p` and `p + 1` are free on 127.0.0.1 now.
fn free_port_pair() -> u16 {
    loop {
        let first = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = first.local_addr().expect("local address").port();
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}
