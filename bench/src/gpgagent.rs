//! The GnuPG `gpg-agent` baseline: the same key type signed by gpg-agent over its Assuan
//! socket, with the same concurrency, one connection per client, as `gpg --sign` talks to it.
//!
//! The agent runs in a temporary `GNUPGHOME` (`gpg-agent --daemon --no-detach`, so it is our
//! child and is stopped by its pid); the key is made by `gpg --quick-gen-key` with an empty
//! passphrase (an unprotected key: no pinentry is involved). Each signature sends
//! `SIGKEY <keygrip>`, `SETHASH <algo> <hex digest>` and `PKSIGN` in one write (Assuan
//! answers in order) and reads the three answers, the signature as a `D` line.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use keyward_sdk::KeySpec;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use crate::drive::{Budget, Op, drive, warm_up};
use crate::stats::Summary;

/// A private gpg-agent holding one unprotected key, stopped on drop.
#[derive(Debug)]
pub struct GpgAgent {
    /// The process we started; gpg-agent 2.2 forks even with `--no-detach`, so the agent
    /// itself is `pid`, asked with `GETINFO pid`.
    child: Child,
    pid: u32,
    socket: PathBuf,
    keygrip: String,
    /// libgcrypt's number of the hash (8 SHA-256, 9 SHA-384, 10 SHA-512).
    hash_algo: u8,
    _dir: tempfile::TempDir,
}

impl GpgAgent {
    /// Starts gpg-agent in a temporary home and makes a key of `spec` in it.
    pub fn start(spec: KeySpec) -> Result<GpgAgent> {
        let (algo, hash_algo) = match spec {
            KeySpec::Ed25519 => ("ed25519", 8),
            KeySpec::EcP256 => ("nistp256", 8),
            KeySpec::EcP384 => ("nistp384", 9),
            KeySpec::EcP521 => ("nistp521", 10),
            KeySpec::Rsa2048 => ("rsa2048", 8),
            KeySpec::Rsa3072 => ("rsa3072", 8),
            KeySpec::Rsa4096 => ("rsa4096", 8),
            _ => bail!("gpg-agent has no {} keys", spec.name()),
        };
        let dir = tempfile::Builder::new()
            .prefix("keyward-bench-gpg-")
            .tempdir()?;
        let home = dir.path().to_path_buf();
        let child = Command::new("gpg-agent")
            .arg("--homedir")
            .arg(&home)
            .args(["--daemon", "--no-detach", "--disable-scdaemon"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start gpg-agent (install gnupg)")?;
        let mut agent = GpgAgent {
            child,
            pid: 0,
            socket: PathBuf::new(),
            keygrip: String::new(),
            hash_algo,
            _dir: dir,
        };
        let socket = output(
            Command::new("gpgconf")
                .arg("--homedir")
                .arg(&home)
                .args(["--list-dirs", "agent-socket"]),
        )?;
        agent.socket = PathBuf::from(socket.trim());
        for _ in 0..500 {
            if agent.socket.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        agent.pid = agent_pid(&agent.socket)
            .with_context(|| format!("gpg-agent does not answer on {}", agent.socket.display()))?;
        output(
            Command::new("gpg")
                .arg("--homedir")
                .arg(&home)
                .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
                .args([
                    "--quick-gen-key",
                    "keyward-bench <bench@keyward.invalid>",
                    algo,
                ])
                .args(["sign", "never"]),
        )?;
        let listing = output(Command::new("gpg").arg("--homedir").arg(&home).args([
            "--batch",
            "--with-keygrip",
            "--with-colons",
            "-K",
        ]))?;
        agent.keygrip = listing
            .lines()
            .find_map(|line| line.strip_prefix("grp:"))
            .and_then(|rest| rest.split(':').find(|f| !f.is_empty()))
            .context("gpg listed no keygrip")?
            .to_string();
        Ok(agent)
    }

    /// The agent's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Signatures of `digest` within `budget` by `clients` tasks, each on its own connection.
    pub async fn measure(
        &self,
        digest: &[u8],
        budget: Budget,
        clients: usize,
        warmup: usize,
    ) -> Result<Summary> {
        let request = format!(
            "SIGKEY {}\nSETHASH {} {}\nPKSIGN\n",
            self.keygrip,
            self.hash_algo,
            hex_upper(digest)
        )
        .into_bytes();
        let mut ops = Vec::with_capacity(clients);
        for _ in 0..clients {
            let stream = UnixStream::connect(&self.socket)
                .await
                .with_context(|| format!("cannot connect to {}", self.socket.display()))?;
            let (read, write) = stream.into_split();
            let mut op = GpgSign {
                reader: BufReader::new(read),
                writer: write,
                request: request.clone(),
                line: Vec::with_capacity(1024),
            };
            op.read_line().await?;
            if !op.line.starts_with(b"OK") {
                bail!(
                    "gpg-agent greeted with {:?}",
                    String::from_utf8_lossy(&op.line)
                );
            }
            ops.push(op);
        }
        if let Some(first) = ops.first_mut() {
            warm_up(first, warmup).await?;
        }
        drive(ops, budget).await
    }
}

impl Drop for GpgAgent {
    fn drop(&mut self) {
        if self.pid != 0
            && let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The agent's pid, from `GETINFO pid` over its socket.
fn agent_pid(socket: &std::path::Path) -> Result<u32> {
    use std::io::{BufRead as _, Write as _};
    let stream = std::os::unix::net::UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = std::io::BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    (&stream).write_all(b"GETINFO pid\n")?;
    let mut pid = None;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            bail!("gpg-agent closed the connection");
        }
        if let Some(value) = line.strip_prefix("D ") {
            pid = value.trim().parse().ok();
        } else if line.starts_with("OK") || line.starts_with("ERR") {
            break;
        }
    }
    pid.context("gpg-agent did not tell its pid")
}

/// One client's connection.
struct GpgSign {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    request: Vec<u8>,
    line: Vec<u8>,
}

impl GpgSign {
    async fn read_line(&mut self) -> Result<()> {
        self.line.clear();
        if self.reader.read_until(b'\n', &mut self.line).await? == 0 {
            bail!("gpg-agent closed the connection");
        }
        Ok(())
    }
}

impl Op for GpgSign {
    async fn call(&mut self) -> Result<()> {
        self.writer.write_all(&self.request).await?;
        let (mut answers, mut signed) = (0, false);
        while answers < 3 {
            self.read_line().await?;
            if self.line.starts_with(b"D ") {
                signed = true;
            } else if self.line.starts_with(b"OK") {
                answers += 1;
            } else if self.line.starts_with(b"ERR") || self.line.starts_with(b"INQUIRE") {
                bail!(
                    "gpg-agent answered {}",
                    String::from_utf8_lossy(&self.line).trim_end()
                );
            }
        }
        if !signed {
            bail!("gpg-agent sent no signature");
        }
        Ok(())
    }
}

fn output(command: &mut Command) -> Result<String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_upper_case() {
        assert_eq!(hex_upper(&[0x0a, 0xff]), "0AFF");
    }
}
