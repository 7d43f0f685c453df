//! A client talks only to its own agent: the checks made before anything is sent on a Unix
//! socket (the mutual-TLS path has its own, the server certificate).
//!
//! Without them, a second account on the host can create `/tmp/keyward-<uid>/` first (the
//! socket's directory when `XDG_RUNTIME_DIR` is unset: cron, sudo, some CI), listen there and
//! receive every request: `yubikey unlock` PINs, what is signed, and answer with its own keys.
//!
//! The rules (the Go SDK implements the same):
//! 1. Before connecting, the socket's directory (symlinks resolved) belongs to the caller's
//!    uid, to root or to the trusted uid, and is not writable by group or others; the socket
//!    itself is a socket owned by one of those uids.
//! 2. After connecting and before sending anything, the server's peer uid (`SO_PEERCRED`) is
//!    the caller's, root's or the trusted uid.
//! 3. The trusted uid is [`ConnectOptions::agent_uid`], else `KEYWARD_AGENT_UID` (numeric), for
//!    a system daemon running under its own user.
//! 4. Otherwise the client refuses, saying what it found and how to fix it.

use std::fmt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::Error;

/// The environment variable naming the uid of a system agent the client trusts besides itself
/// and root (e.g. `KEYWARD_AGENT_UID=$(id -u keyward)`).
pub const AGENT_UID_ENV: &str = "KEYWARD_AGENT_UID";

/// How to connect to the agent's Unix socket.
#[derive(Clone, Debug, Default)]
pub struct ConnectOptions {
    agent_uid: Option<u32>,
}

impl ConnectOptions {
    /// The defaults: trust the caller's uid and root, and the uid in `KEYWARD_AGENT_UID` if set.
    pub fn new() -> Self {
        ConnectOptions::default()
    }

    /// Also trusts `uid` to run the agent (a system daemon under its own user); takes the place
    /// of `KEYWARD_AGENT_UID`.
    pub fn agent_uid(mut self, uid: u32) -> Self {
        self.agent_uid = Some(uid);
        self
    }

    /// The uids that may own the socket and run the agent.
    pub(crate) fn owners(&self) -> Result<Owners, Error> {
        let trusted = match self.agent_uid {
            Some(uid) => Some(uid),
            None => parse_agent_uid(std::env::var_os(AGENT_UID_ENV).as_deref())?,
        };
        Ok(Owners {
            caller: rustix::process::getuid().as_raw(),
            trusted,
        })
    }
}

/// The value of `KEYWARD_AGENT_UID`: unset or empty is none, else a numeric uid.
fn parse_agent_uid(value: Option<&std::ffi::OsStr>) -> Result<Option<u32>, Error> {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    value
        .to_str()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .map(Some)
        .ok_or_else(|| {
            Error::InvalidInput(format!(
                "{AGENT_UID_ENV}={:?} is not a numeric uid; set it to the uid the agent runs as (`id -u USER`), or unset it",
                value.to_string_lossy()
            ))
        })
}

/// The uids a client trusts with its agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Owners {
    pub(crate) caller: u32,
    pub(crate) trusted: Option<u32>,
}

impl Owners {
    fn allows(&self, uid: u32) -> bool {
        uid == self.caller || uid == 0 || self.trusted == Some(uid)
    }

    /// What to do when `uid` is not trusted.
    fn advice(&self, uid: u32) -> String {
        format!(
            "another user may have created it to intercept your requests: remove it if it is not yours, set XDG_RUNTIME_DIR, or set {AGENT_UID_ENV}={uid} if that user runs your agent"
        )
    }
}

impl fmt::Display for Owners {
    /// "you (uid 1000) or root", "you (uid 1000), root or uid 1001 (KEYWARD_AGENT_UID)".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.trusted {
            Some(uid) if uid != self.caller && uid != 0 => write!(
                f,
                "you (uid {}), root or the agent's uid {uid}",
                self.caller
            ),
            _ => write!(f, "you (uid {}) or root", self.caller),
        }
    }
}

fn refuse(socket: &Path, reason: String) -> Error {
    Error::UntrustedAgent {
        socket: socket.to_path_buf(),
        reason,
    }
}

/// Rule 1: checks the socket and its directory; returns the path to connect to (symlinks
/// resolved, so that what was checked is what is connected to). A socket that does not exist
/// is the usual "cannot connect" error.
pub(crate) fn check_socket(socket: &Path, owners: &Owners) -> Result<PathBuf, Error> {
    let not_running = |reason: &str| Error::Connect {
        socket: socket.to_path_buf(),
        reason: reason.to_string(),
    };
    let resolved = match socket.canonicalize() {
        Ok(path) => path,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(not_running("no socket there (the agent is not running)"));
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(not_running(
                "permission denied: the socket's directory belongs to another user",
            ));
        }
        Err(e) => {
            return Err(not_running(&format!(
                "cannot resolve the path: {}",
                strip_os_error(&e)
            )));
        }
    };
    let dir = resolved.parent().unwrap_or(Path::new("/"));
    let dir_meta = std::fs::metadata(dir).map_err(|e| {
        not_running(&format!(
            "cannot read its directory {}: {}",
            dir.display(),
            strip_os_error(&e)
        ))
    })?;
    if !owners.allows(dir_meta.uid()) {
        return Err(refuse(
            socket,
            format!(
                "its directory {} belongs to uid {}, not to {owners}; {}",
                dir.display(),
                dir_meta.uid(),
                owners.advice(dir_meta.uid())
            ),
        ));
    }
    if dir_meta.mode() & 0o022 != 0 {
        return Err(refuse(
            socket,
            format!(
                "its directory {} can be written by {} (mode {:04o}), so another user could replace the socket; if the directory is yours run `chmod go-w {}`, else put the socket in a private directory (set XDG_RUNTIME_DIR, or start keywardd with --socket)",
                dir.display(),
                if dir_meta.mode() & 0o002 != 0 {
                    "others"
                } else {
                    "its group"
                },
                dir_meta.mode() & 0o7777,
                dir.display()
            ),
        ));
    }
    let meta = std::fs::metadata(&resolved)
        .map_err(|e| not_running(&format!("cannot read the socket: {}", strip_os_error(&e))))?;
    if !meta.file_type().is_socket() {
        return Err(refuse(
            socket,
            format!(
                "{} is not a socket; point {} (or --socket) at the agent's socket",
                resolved.display(),
                crate::SOCKET_ENV
            ),
        ));
    }
    if !owners.allows(meta.uid()) {
        return Err(refuse(
            socket,
            format!(
                "the socket belongs to uid {}, not to {owners}; {}",
                meta.uid(),
                owners.advice(meta.uid())
            ),
        ));
    }
    Ok(resolved)
}

/// Rule 2: the uid of the process listening on `stream`, checked before anything is sent.
pub(crate) fn check_peer(
    stream: &tokio::net::UnixStream,
    socket: &Path,
    owners: &Owners,
) -> Result<(), Error> {
    let uid = peer_uid(stream).map_err(|e| {
        refuse(
            socket,
            format!(
                "cannot read the peer credentials of the connection ({}), so the agent's user is unknown",
                strip_os_error(&e)
            ),
        )
    })?;
    if owners.allows(uid) {
        return Ok(());
    }
    Err(refuse(
        socket,
        format!(
            "the process listening on it runs as uid {uid}, not as {owners}; {}",
            owners.advice(uid)
        ),
    ))
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn peer_uid(stream: &tokio::net::UnixStream) -> std::io::Result<u32> {
    let cred = rustix::net::sockopt::socket_peercred(stream)?;
    Ok(cred.uid.as_raw())
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn peer_uid(stream: &tokio::net::UnixStream) -> std::io::Result<u32> {
    Ok(stream.peer_cred()?.uid())
}

fn strip_os_error(error: &std::io::Error) -> String {
    let text = error.to_string();
    match text.find(" (os error") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

#[cfg(test)]
#[path = "trust_tests.rs"]
mod tests;
