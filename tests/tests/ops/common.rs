//! Helpers of the `ops` modules: the repository's scripts, `systemd-socket-activate` with a
//! notification socket the test reads, SoftHSM with the docs' PKCS#11 example.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use keyward_tests::softhsm::{self, SoftHsm};
use keyward_tests::{peers, stderr_text, stdout_text};

/// How long a started keywardd gets to say what the test waits for.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The repository's root (scripts/, dist/, examples/).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The directory of the built workspace binaries (keywardd, keyward, the plugins).
pub fn bin_dir() -> PathBuf {
    keyward_tests::binary("keywardd")
        .parent()
        .expect("keywardd has a directory")
        .to_path_buf()
}

/// Whether `program` is on PATH; says `skipped:` (or fails under CI) when it is not.
pub fn have(program: &str, how: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        peers::missing(&format!("{program} is not installed"), how);
    }
    found
}

/// Runs a command to completion; panics with its output unless it succeeded.
pub fn ok(mut command: Command, what: &str) -> Output {
    let output = keyward_tests::run_with_timeout(
        {
            command.stdin(Stdio::null());
            command
        },
        None,
        Duration::from_secs(600),
    );
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        stdout_text(&output),
        stderr_text(&output)
    );
    output
}

/// Signs `text` with `key` through the agent on `socket` using the `keyward` at `cli`, fetches
/// the key's public key the same way (files in `dir`), and checks the signature with openssl.
pub fn sign_and_verify(cli: &Path, socket: &Path, dir: &Path, key: &str, text: &[u8]) {
    let message = dir.join("message.txt");
    std::fs::write(&message, text).unwrap();
    let signature = dir.join("message.sig");
    let public = dir.join(format!("{key}.pem"));
    for args in [
        ["sign", "--key", key, "--input", message.to_str().unwrap()].as_slice(),
        &["pubkey", "--key", key],
    ] {
        let output = if args[0] == "sign" {
            &signature
        } else {
            &public
        };
        let mut command = Command::new(cli);
        command
            .arg("--socket")
            .arg(socket)
            .args(args)
            .arg("--output")
            .arg(output)
            .env_remove("KEYWARD_SOCK");
        ok(command, &format!("{} {args:?}", cli.display()));
    }
    assert_openssl_verifies(&public, &message, &signature);
}

/// Checks `signature` (DER ECDSA or RSA over SHA-256) of `message` with `openssl dgst
/// -verify` and the PEM public key `public`: the independent verifier of every ops test.
pub fn assert_openssl_verifies(public: &Path, message: &Path, signature: &Path) {
    let output = keyward_tests::openssl([
        "dgst",
        "-sha256",
        "-verify",
        public.to_str().unwrap(),
        "-signature",
        signature.to_str().unwrap(),
        message.to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "openssl: {}{}",
        stdout_text(&output),
        stderr_text(&output)
    );
}

/// The `[[backend]]`/`[[key]]` part of examples/config/pkcs11-softhsm.toml, as the docs give
/// it (token `keyward`, key `release`, PIN from `HSM_PIN`), and a SoftHSM with that token and
/// key (EC P-256, label `release`, id 01).
pub fn softhsm_from_docs() -> (SoftHsm, String) {
    let hsm = SoftHsm::new();
    hsm.init_token("keyward", softhsm::SO_PIN, softhsm::PIN);
    hsm.keypairgen("keyward", softhsm::PIN, "EC:prime256v1", "release", "01");
    let example = std::fs::read_to_string(repo().join("examples/config/pkcs11-softhsm.toml"))
        .expect("read examples/config/pkcs11-softhsm.toml");
    (hsm, example)
}

/// `systemd-socket-activate` listening on `sockets` for `program args`, with a notification
/// socket the test reads (`NOTIFY_SOCKET`) and `env` passed on (it passes nothing else).
#[derive(Debug)]
pub struct Activated {
    child: Option<Child>,
    notify: UnixDatagram,
    /// The notifications received so far, one message per entry.
    pub messages: Vec<String>,
    log: PathBuf,
}

impl Activated {
    /// Starts `systemd-socket-activate`; returns once every socket file exists (it binds them
    /// before waiting for the first connection).
    pub fn start(
        dir: &Path,
        sockets: &[&Path],
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Activated {
        let notify_path = dir.join("notify.sock");
        let notify = UnixDatagram::bind(&notify_path).expect("bind the notification socket");
        let log = dir.join("keywardd.log");
        let mut command = Command::new("systemd-socket-activate");
        for socket in sockets {
            command.arg("-l").arg(socket);
        }
        command.arg(format!("--setenv=NOTIFY_SOCKET={}", notify_path.display()));
        for (name, value) in env {
            command.arg(format!("--setenv={name}={value}"));
        }
        command
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("create the log file"));
        let child = command.spawn().expect("run systemd-socket-activate");
        let activated = Activated {
            child: Some(child),
            notify,
            messages: Vec::new(),
            log,
        };
        keyward_tests::wait::until("the activation sockets", DEADLINE, || {
            match sockets.iter().find(|s| !s.exists()) {
                None => Ok(()),
                Some(s) => Err(format!(
                    "{} not there yet; log: {}",
                    s.display(),
                    activated.log()
                )),
            }
        });
        activated
    }

    /// The pid (systemd-socket-activate's, which becomes keywardd's when it execs).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The program the pid runs now (`/proc/PID/comm`).
    pub fn comm(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/comm", self.pid()))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// stderr of systemd-socket-activate and keywardd.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Messages received since the last call, without waiting.
    pub fn pending(&mut self) -> Vec<String> {
        self.notify.set_nonblocking(true).expect("nonblocking");
        let mut fresh = Vec::new();
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = self.notify.recv(&mut buf) {
            fresh.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        self.messages.extend(fresh.iter().cloned());
        fresh
    }

    /// Waits for a message with the line `line` (e.g. `READY=1`) after those already read;
    /// returns that message.
    pub fn wait_for(&mut self, line: &str) -> String {
        let started = Instant::now();
        self.notify
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        self.notify.set_nonblocking(false).expect("blocking");
        let mut buf = vec![0u8; 4096];
        loop {
            if let Ok(n) = self.notify.recv(&mut buf) {
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.messages.push(message.clone());
                if message.lines().any(|l| l == line) {
                    return message;
                }
            }
            assert!(
                started.elapsed() < DEADLINE,
                "no {line} within {DEADLINE:?}; notifications: {:?}; log:\n{}",
                self.messages,
                self.log()
            );
        }
    }

    /// Sends `signal` to the pid.
    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.pid() as i32).expect("a pid");
        rustix::process::kill_process(pid, signal).expect("signal keywardd");
    }

    /// Waits for the process to exit; its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let child = self.child.as_mut().expect("running");
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                self.child = None;
                return status.code();
            }
            assert!(
                started.elapsed() < DEADLINE,
                "still running after {DEADLINE:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Activated {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            keyward_tests::terminate(child, Duration::from_secs(35));
        }
    }
}
