//! OpenSSH's own tools against keywardd's ssh-agent socket: `ssh-add`, `ssh-keygen -Y`, git
//! and `ssh` into a private `sshd` ([`Sshd`]), each with a private `HOME` so that nothing of
//! the user's `~/.ssh` or git config takes part; and [`raw`], a protocol client for what the
//! tools never send (SHA-1 requests, oversized messages).

use std::ffi::OsStr;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::peers::{Peer, require};
use crate::{COMMAND_TIMEOUT, run_with_timeout, stderr_text, stdout_text};

/// The OpenSSH tools and git with `SSH_AUTH_SOCK` set to an agent socket.
#[derive(Debug)]
pub struct OpenSsh {
    home: TempDir,
    socket: PathBuf,
}

impl OpenSsh {
    /// The tools for the agent at `socket`; `None` (after `skipped: ...`) when OpenSSH or git
    /// is missing.
    pub fn new(socket: &Path) -> Option<OpenSsh> {
        require(Peer::OpenSsh)?;
        let home = tempfile::Builder::new()
            .prefix("keyward-ssh-home-")
            .tempdir()
            .expect("create a home directory");
        Some(OpenSsh {
            home,
            socket: socket.to_path_buf(),
        })
    }

    /// The private home directory (files the tests write go here).
    pub fn dir(&self) -> &Path {
        self.home.path()
    }

    /// The agent socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `program` with `HOME` (git, ssh-keygen) in the private directory and `SSH_AUTH_SOCK`
    /// set; the user's git configuration is not read.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command
            .current_dir(self.dir())
            .env("HOME", self.dir())
            .env("SSH_AUTH_SOCK", &self.socket)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env_remove("GIT_CONFIG_GLOBAL")
            .env_remove("SSH_ASKPASS")
            .stdin(Stdio::null());
        command
    }

    /// Runs `program ARGS` and returns what it did.
    pub fn run<I, S>(&self, program: &str, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = self.command(program);
        command.args(args);
        run_with_timeout(command, None, COMMAND_TIMEOUT)
    }

    /// Runs `program ARGS`, panics with its output unless it succeeds; returns stdout.
    pub fn ok<I, S>(&self, program: &str, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let output = self.run(program, args);
        assert!(
            output.status.success(),
            "{program} failed ({}): {}{}",
            output.status,
            stdout_text(&output),
            stderr_text(&output)
        );
        stdout_text(&output)
    }

    /// `ssh-add -L`: the agent's public key lines (none when it says it has no identities).
    pub fn list(&self) -> Vec<String> {
        let output = self.run("ssh-add", ["-L"]);
        let out = stdout_text(&output);
        if !output.status.success() {
            assert!(
                out.contains("The agent has no identities"),
                "ssh-add -L failed: {out}{}",
                stderr_text(&output)
            );
            return Vec::new();
        }
        out.lines().map(str::to_string).collect()
    }

    /// `ssh-keygen -Y sign -n NAMESPACE -f PUBKEY FILE` with the key (an OpenSSH public key
    /// line) in the agent; the signature is [`signature_of`]`(FILE)`.
    pub fn sign(&self, public_key: &str, namespace: &str, file: &Path) -> Output {
        let key_file = self.dir().join("signing-key.pub");
        std::fs::write(&key_file, format!("{public_key}\n")).expect("write the public key");
        let _ = std::fs::remove_file(signature_of(file));
        self.run(
            "ssh-keygen",
            [
                OsStr::new("-Y"),
                OsStr::new("sign"),
                OsStr::new("-n"),
                OsStr::new(namespace),
                OsStr::new("-f"),
                key_file.as_os_str(),
                file.as_os_str(),
            ],
        )
    }

    /// `ssh-keygen -Y verify`: `signature` over `file` by `principal` in `namespace`, with an
    /// allowed_signers file holding `allowed` (lines).
    pub fn verify(
        &self,
        allowed: &str,
        principal: &str,
        namespace: &str,
        file: &Path,
        signature: &Path,
    ) -> Output {
        let signers = self.dir().join("allowed_signers");
        std::fs::write(&signers, allowed).expect("write allowed_signers");
        let mut command = self.command("ssh-keygen");
        command
            .args(["-Y", "verify", "-f"])
            .arg(&signers)
            .args(["-I", principal, "-n", namespace, "-s"])
            .arg(signature);
        let signed = std::fs::read(file).expect("read the signed file");
        run_with_timeout(command, Some(&signed), COMMAND_TIMEOUT)
    }
}

/// Where `ssh-keygen -Y sign` writes the signature of `file`: `FILE.sig`.
pub fn signature_of(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_os_string();
    name.push(".sig");
    PathBuf::from(name)
}

/// A private `sshd` (Debian's openssh-server) on 127.0.0.1 and a free port, with its own host
/// key and `authorized_keys`, stopped on drop. It runs as root with `StrictModes yes`,
/// `UsePAM no`, public keys only, root allowed in by key only (`prohibit-password`), no
/// forwarding and no TTY, and every login runs `ForceCommand` (it prints
/// [`Sshd::GREETING`]) whatever the client asks.
#[derive(Debug)]
pub struct Sshd {
    child: Child,
    dir: TempDir,
    port: u16,
    host_key: String,
}

impl Sshd {
    /// What a login prints.
    pub const GREETING: &'static str = "keyward-login-ok";

    /// Starts sshd letting in the OpenSSH public key lines `authorized`; `None` (after
    /// `skipped: ...`) when it cannot run here (not root, no sshd).
    pub fn start(authorized: &[&str]) -> Option<Sshd> {
        let sshd = require(Peer::OpenSsh)?;
        if !rustix::process::geteuid().is_root() {
            crate::peers::missing(
                "the sshd login test runs sshd as root",
                "run the ssh part as root (CI does)",
            );
            return None;
        }
        // StrictModes checks every directory from authorized_keys up to the home directory (or
        // /): none may be writable by others, so not under /tmp.
        let base = PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
            .join(".cache/keyward");
        std::fs::create_dir_all(&base).expect("create ~/.cache/keyward");
        let dir = tempfile::Builder::new()
            .prefix("sshd-")
            .tempdir_in(&base)
            .expect("create the sshd directory");
        // Privilege separation needs its empty directory (Debian's service makes it).
        std::fs::create_dir_all("/run/sshd").expect("create /run/sshd");
        let host_key = dir.path().join("host_key");
        let keygen = Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "keyward-test-host",
                "-f",
            ])
            .arg(&host_key)
            .output()
            .expect("run ssh-keygen");
        assert!(keygen.status.success(), "{}", stderr_text(&keygen));
        let host_public =
            std::fs::read_to_string(host_key.with_extension("pub")).expect("the host public key");
        let authorized_keys = dir.path().join("authorized_keys");
        std::fs::write(&authorized_keys, authorized.join("\n") + "\n")
            .expect("write authorized_keys");
        let port = free_port();
        let config = dir.path().join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress 127.0.0.1:{port}\nHostKey {host}\nPidFile none\nAuthorizedKeysFile {keys}\n\
                 StrictModes yes\nUsePAM no\nPermitRootLogin prohibit-password\nAllowUsers root\n\
                 PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PermitTTY no\nX11Forwarding no\nAllowTcpForwarding no\nAllowAgentForwarding no\n\
                 ForceCommand echo {greeting}\nLogLevel VERBOSE\n",
                host = host_key.display(),
                keys = authorized_keys.display(),
                greeting = Self::GREETING,
            ),
        )
        .expect("write sshd_config");
        let log = std::fs::File::create(dir.path().join("sshd.log")).expect("create the sshd log");
        let child = Command::new(&sshd)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sshd");
        let mut sshd = Sshd {
            child,
            dir,
            port,
            host_key: host_public.trim().to_string(),
        };
        let listening = format!("Server listening on 127.0.0.1 port {port}");
        crate::wait::until("sshd to listen", Duration::from_secs(20), || {
            if let Ok(Some(status)) = sshd.child.try_wait() {
                panic!("sshd exited ({status}): {}", sshd.log());
            }
            if sshd.log().contains(&listening) {
                Ok(())
            } else {
                Err(sshd.log())
            }
        });
        Some(sshd)
    }

    /// sshd's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// The SHA-256 fingerprint of the host key (`SHA256:...`), as ssh-keygen prints it.
    pub fn host_key_fingerprint(&self) -> String {
        let out = Command::new("ssh-keygen")
            .args(["-l", "-E", "sha256", "-f"])
            .arg(self.dir.path().join("host_key.pub"))
            .output()
            .expect("run ssh-keygen -l");
        stdout_text(&out)
            .split_whitespace()
            .nth(1)
            .expect("a fingerprint")
            .to_string()
    }

    /// `ssh root@127.0.0.1 -p PORT` through the agent of `tools` only (no key files), checking
    /// the host key, with `options` (`-o` values) added.
    pub fn login(&self, tools: &OpenSsh, options: &[&str]) -> Output {
        let known_hosts = tools.dir().join("known_hosts");
        std::fs::write(
            &known_hosts,
            format!("[127.0.0.1]:{} {}\n", self.port, self.host_key),
        )
        .expect("write known_hosts");
        let mut command = tools.command("ssh");
        command.args(["-F", "/dev/null", "-p", &self.port.to_string()]);
        let socket = format!("IdentityAgent={}", tools.socket().display());
        let known = format!("UserKnownHostsFile={}", known_hosts.display());
        let no_files = format!("IdentityFile={}", tools.dir().join("no-such-key").display());
        for option in [
            socket.as_str(),
            "IdentitiesOnly=no",
            &no_files,
            &known,
            "GlobalKnownHostsFile=/dev/null",
            "StrictHostKeyChecking=yes",
            "BatchMode=yes",
            "PreferredAuthentications=publickey",
            "ConnectTimeout=20",
        ]
        .into_iter()
        .chain(options.iter().copied())
        {
            command.args(["-o", option]);
        }
        command.args(["root@127.0.0.1", "true"]);
        run_with_timeout(command, None, COMMAND_TIMEOUT)
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// The agent protocol by hand, for requests the tools never make.
pub mod raw {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::path::Path;
    use std::time::Duration;

    /// `SSH_AGENTC_SIGN_REQUEST`.
    pub const SIGN_REQUEST: u8 = 13;
    /// `SSH_AGENT_FAILURE`.
    pub const FAILURE: u8 = 5;
    /// `SSH_AGENT_SIGN_RESPONSE`.
    pub const SIGN_RESPONSE: u8 = 14;

    /// Appends an SSH `string`.
    pub fn string(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(bytes);
    }

    /// The body of a sign request.
    pub fn sign_request(key_blob: &[u8], data: &[u8], flags: u32) -> Vec<u8> {
        let mut body = vec![SIGN_REQUEST];
        string(&mut body, key_blob);
        string(&mut body, data);
        body.extend_from_slice(&flags.to_be_bytes());
        body
    }

    /// A connection to the agent.
    #[derive(Debug)]
    pub struct Connection(UnixStream);

    impl Connection {
        /// Connects to `socket`.
        pub fn open(socket: &Path) -> Connection {
            let stream = UnixStream::connect(socket).expect("connect to the ssh-agent socket");
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .expect("set a read timeout");
            Connection(stream)
        }

        /// Sends `length` as the frame's length followed by `body`, then reads the answer's
        /// body; `None` when the agent closed the connection instead.
        pub fn exchange_framed(&mut self, length: u32, body: &[u8]) -> Option<Vec<u8>> {
            let mut frame = length.to_be_bytes().to_vec();
            frame.extend_from_slice(body);
            // The agent may close before reading everything (an oversized frame).
            let _ = self.0.write_all(&frame);
            let mut len = [0u8; 4];
            self.0.read_exact(&mut len).ok()?;
            let mut answer = vec![0u8; u32::from_be_bytes(len) as usize];
            self.0.read_exact(&mut answer).ok()?;
            Some(answer)
        }

        /// Sends one message and reads the answer (`None`: the connection was closed).
        pub fn exchange(&mut self, body: &[u8]) -> Option<Vec<u8>> {
            self.exchange_framed(body.len() as u32, body)
        }
    }
}
