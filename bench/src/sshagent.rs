//! The OpenSSH `ssh-agent` baseline: the same key type signed through ssh-agent's own protocol
//! (draft-miller-ssh-agent) on a Unix socket, with the same concurrency, one connection per
//! client as ssh clients use. The same client drives keywardd's own ssh-agent socket
//! (`[ssh_agent]`, docs/ssh.md) with `--keyward-ssh`, so the two are compared request for
//! request.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use keyward_sdk::KeySpec;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::drive::{Budget, Op, drive, warm_up};
use crate::stats::Summary;

const SSH_AGENTC_REQUEST_IDENTITIES: u8 = 11;
const SSH_AGENT_IDENTITIES_ANSWER: u8 = 12;
const SSH_AGENTC_SIGN_REQUEST: u8 = 13;
const SSH_AGENT_SIGN_RESPONSE: u8 = 14;
/// The protocol's message limit (OpenSSH's `AGENT_MAX_LEN`).
const MAX_MESSAGE_LEN: usize = 256 * 1024;
/// Ask for rsa-sha2-256 rather than the SHA-1 `ssh-rsa` default.
const SSH_AGENT_RSA_SHA2_256: u32 = 2;

/// A private ssh-agent holding one key, stopped on drop.
#[derive(Debug)]
pub struct SshAgent {
    child: Child,
    agent: AgentKey,
    _dir: tempfile::TempDir,
}

/// One key behind an ssh-agent socket: what a sign request names.
#[derive(Debug)]
pub struct AgentKey {
    socket: PathBuf,
    key_blob: Vec<u8>,
    flags: u32,
}

/// The sign request flags for a key of `spec`: rsa-sha2-256 for RSA, none otherwise.
fn flags_for(spec: KeySpec) -> u32 {
    if spec.name().starts_with("rsa") {
        SSH_AGENT_RSA_SHA2_256
    } else {
        0
    }
}

impl SshAgent {
    /// Starts `ssh-agent -D` in a temp dir, makes a key of `spec` with ssh-keygen and adds it.
    pub fn start(spec: KeySpec) -> Result<SshAgent> {
        let (kind, bits, flags) = match spec {
            KeySpec::Ed25519 => ("ed25519", None, 0),
            KeySpec::EcP256 => ("ecdsa", Some("256"), 0),
            KeySpec::EcP384 => ("ecdsa", Some("384"), 0),
            KeySpec::EcP521 => ("ecdsa", Some("521"), 0),
            KeySpec::Rsa2048 => ("rsa", Some("2048"), SSH_AGENT_RSA_SHA2_256),
            KeySpec::Rsa3072 => ("rsa", Some("3072"), SSH_AGENT_RSA_SHA2_256),
            KeySpec::Rsa4096 => ("rsa", Some("4096"), SSH_AGENT_RSA_SHA2_256),
            _ => bail!("ssh-agent has no {} keys", spec.name()),
        };
        let dir = tempfile::Builder::new()
            .prefix("keyward-bench-ssh-")
            .tempdir()?;
        let socket = dir.path().join("ssh-agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start ssh-agent (install openssh-client)")?;
        let mut agent = SshAgent {
            child,
            agent: AgentKey {
                socket,
                key_blob: Vec::new(),
                flags,
            },
            _dir: dir,
        };
        let key = agent._dir.path().join("key");
        let mut keygen = Command::new("ssh-keygen");
        keygen.args(["-q", "-N", "", "-t", kind, "-f"]).arg(&key);
        if let Some(bits) = bits {
            keygen.args(["-b", bits]);
        }
        run(&mut keygen)?;
        wait_for(&agent.agent.socket)?;
        run(Command::new("ssh-add")
            .arg("-q")
            .arg(&key)
            .env("SSH_AUTH_SOCK", &agent.agent.socket))?;
        let public = std::fs::read_to_string(key.with_extension("pub"))?;
        let blob = public
            .split_whitespace()
            .nth(1)
            .context("ssh-keygen wrote an unexpected public key file")?;
        agent.agent.key_blob = base64_decode(blob)?;
        Ok(agent)
    }

    /// The key in the agent.
    pub fn key(&self) -> &AgentKey {
        &self.agent
    }

    /// The agent's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl AgentKey {
    /// The key whose comment is `key_id` among the identities the agent at `socket` lists
    /// (keywardd's ssh-agent socket comments each key with its id).
    pub async fn listed(socket: &Path, key_id: &str, spec: KeySpec) -> Result<AgentKey> {
        let mut stream = UnixStream::connect(socket).await.with_context(|| {
            format!(
                "cannot connect to the ssh-agent socket {}",
                socket.display()
            )
        })?;
        let answer = exchange(&mut stream, &[0, 0, 0, 1, SSH_AGENTC_REQUEST_IDENTITIES]).await?;
        let mut wire = answer
            .strip_prefix(&[SSH_AGENT_IDENTITIES_ANSWER])
            .context("the agent did not answer the identities request")?;
        let count = take_u32(&mut wire)?;
        for _ in 0..count {
            let blob = take_string(&mut wire)?;
            let comment = take_string(&mut wire)?;
            if comment == key_id.as_bytes() {
                return Ok(AgentKey {
                    socket: socket.to_path_buf(),
                    key_blob: blob.to_vec(),
                    flags: flags_for(spec),
                });
            }
        }
        bail!(
            "the ssh-agent socket {} does not offer {key_id}",
            socket.display()
        )
    }

    /// Signatures of `message` within `budget` by `clients` tasks, each on its own
    /// connection, as ssh clients use the agent.
    pub async fn measure(
        &self,
        message: &[u8],
        budget: Budget,
        clients: usize,
        warmup: usize,
    ) -> Result<Summary> {
        let request = sign_request(&self.key_blob, message, self.flags);
        let mut ops = Vec::with_capacity(clients);
        for _ in 0..clients {
            ops.push(SshSign {
                stream: UnixStream::connect(&self.socket).await?,
                request: request.clone(),
            });
        }
        if let Some(first) = ops.first_mut() {
            warm_up(first, warmup).await?;
        }
        drive(ops, budget).await
    }
}

/// One client's connection and its request.
struct SshSign {
    stream: UnixStream,
    request: Vec<u8>,
}

impl Op for SshSign {
    async fn call(&mut self) -> Result<()> {
        round_trip(&mut self.stream, &self.request).await
    }
}

impl Drop for SshAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(command: &mut Command) -> Result<()> {
    let output = command
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

fn wait_for(socket: &Path) -> Result<()> {
    for _ in 0..200 {
        if socket.exists() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    bail!("ssh-agent did not create {}", socket.display())
}

fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// A framed SSH_AGENTC_SIGN_REQUEST.
fn sign_request(key_blob: &[u8], data: &[u8], flags: u32) -> Vec<u8> {
    let mut body = vec![SSH_AGENTC_SIGN_REQUEST];
    put_string(&mut body, key_blob);
    put_string(&mut body, data);
    body.extend_from_slice(&flags.to_be_bytes());
    let mut framed = Vec::with_capacity(body.len() + 4);
    put_string(&mut framed, &body);
    framed
}

/// Sends a framed request and reads one answer (at most the protocol's 256 KiB).
async fn exchange(stream: &mut UnixStream, request: &[u8]) -> Result<Vec<u8>> {
    stream.write_all(request).await?;
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_MESSAGE_LEN {
        bail!("the agent announced a {len}-byte answer, over the protocol's limit");
    }
    let mut answer = vec![0u8; len];
    stream.read_exact(&mut answer).await?;
    Ok(answer)
}

fn take_u32(wire: &mut &[u8]) -> Result<u32> {
    let (head, rest) = wire
        .split_first_chunk::<4>()
        .context("the agent's answer is truncated")?;
    *wire = rest;
    Ok(u32::from_be_bytes(*head))
}

fn take_string<'a>(wire: &mut &'a [u8]) -> Result<&'a [u8]> {
    let len = take_u32(wire)? as usize;
    if wire.len() < len {
        bail!("the agent's answer is truncated");
    }
    let (body, rest) = wire.split_at(len);
    *wire = rest;
    Ok(body)
}

/// Sends a request and reads one answer, which must be a signature.
async fn round_trip(stream: &mut UnixStream, request: &[u8]) -> Result<()> {
    let answer = exchange(stream, request).await?;
    if answer.first() != Some(&SSH_AGENT_SIGN_RESPONSE) || answer.len() < 20 {
        bail!(
            "the ssh-agent refused to sign (answer type {:?})",
            answer.first()
        );
    }
    Ok(())
}

fn base64_decode(text: &str) -> Result<Vec<u8>> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|&c| c != b'=') {
        let value = ALPHABET
            .iter()
            .position(|&a| a == c)
            .context("bad base64 in the ssh public key")? as u32;
        acc = (acc << 6) | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_framing() {
        let request = sign_request(b"K", b"DATA", 2);
        assert_eq!(
            request,
            [
                0, 0, 0, 18, 13, 0, 0, 0, 1, b'K', 0, 0, 0, 4, b'D', b'A', b'T', b'A', 0, 0, 0, 2
            ]
        );
        assert_eq!(base64_decode("AAAAC3Nz").unwrap(), [0, 0, 0, 11, 115, 115]);
    }
}
