//! The ssh-agent socket: OpenSSH's agent protocol (draft-miller-ssh-agent) in front of the
//! signing core, so that `ssh`, `ssh-add`, `ssh-keygen -Y` and git sign with keyward's keys.
//!
//! It is a second front-end beside the gRPC API, with the same caller checks (SO_PEERCRED:
//! the daemon's uid and `allow_uids`), policies, rate limits and audit records: a signature
//! goes through [`SigningCore::sign`] like a gRPC `Sign`, with the audit event `ssh` and a
//! purpose the socket derives from the data ([`sign`]). It offers exactly the keys of
//! `[ssh_agent] keys`, in that order ([`keys`]); requests that would put keys into the agent
//! or take them out, and `lock`, are refused ([`session`]).
//!
//! The messages are ssh-agent-lib's; framing is tokio-util's length-delimited codec, bounded
//! to the protocol's 256 KiB before anything is allocated. Each request runs on the
//! generation of the config that is current when it arrives ([`Current`]): a reload changes
//! the keys offered, the policies and the allowed uids; the socket path is restart-only.

mod config;
pub mod keys;
pub mod session;
pub mod sign;

use std::sync::{Arc, RwLock};

use tokio::net::UnixListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

pub use config::SshAgentConfig;

use crate::auth::Authenticator;
use crate::server::{SocketGuard, bind_socket};
use crate::signing::SigningCore;

/// The longest message accepted, as OpenSSH's agent (`AGENT_MAX_LEN`, 256 KiB).
pub const MAX_MESSAGE_LEN: usize = 256 * 1024;
/// Connections served at once; more are closed at once, with a log line.
pub const MAX_CONNECTIONS: usize = 512;

/// What one generation of the config serves on the socket.
#[derive(Clone, Debug)]
pub struct Offer {
    /// The signing core (registry, policies, audit).
    pub core: SigningCore,
    /// Who may use the agent.
    pub auth: Arc<Authenticator>,
    /// `[ssh_agent] keys`, in order.
    pub keys: Arc<[String]>,
}

/// The offer of the running generation; a reload replaces it, and each request takes the
/// one current when it arrives.
#[derive(Clone, Debug)]
pub struct Current(Arc<RwLock<Offer>>);

impl Current {
    /// Serves `offer` until [`Current::replace`].
    pub fn new(offer: Offer) -> Self {
        Current(Arc::new(RwLock::new(offer)))
    }

    /// Serves `offer` from the next request on.
    pub fn replace(&self, offer: Offer) {
        *self.0.write().expect("ssh-agent offer lock") = offer;
    }

    /// The current offer.
    pub fn get(&self) -> Offer {
        self.0.read().expect("ssh-agent offer lock").clone()
    }
}

/// Creates the socket with the same hardening as the agent socket (directory created 0700 —
/// 0711 with `allow_uids` — and owned by us, lock file, stale socket replaced, mode 0600 —
/// 0666 with `allow_uids` — set without following a symlink). The one place the listener is
/// made, so that an inherited (socket-activated) descriptor can be taken here.
pub fn bind(
    config: &SshAgentConfig,
    open_to_others: bool,
) -> Result<(UnixListener, SocketGuard), String> {
    bind_socket(
        &config.socket,
        config.socket_is_default,
        open_to_others,
        "the [ssh_agent] socket",
    )
}

/// Serves connections on `listener` until `stop` turns true; then waits for the requests in
/// progress (each connection ends after the request it is answering).
pub async fn serve(listener: UnixListener, current: Current, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stop| *stop) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and friends: keep serving the connections there are.
                tracing::warn!("ssh-agent: cannot accept a connection: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!("ssh-agent: {MAX_CONNECTIONS} connections are open; closing a new one");
            continue;
        };
        let (current, stop) = (current.clone(), stop.clone());
        connections.spawn(async move {
            session::serve_connection(stream, current, stop).await;
            drop(slot);
        });
    }
    while connections.join_next().await.is_some() {}
}
