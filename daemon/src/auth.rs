//! Who is calling: the peer credentials of the Unix socket connection (or, on the mutual-TLS
//! listener, the client certificate); who may use the agent, and who may manage keys.
//!
//! The decisions are made once per request, by the caller layer in front of the services
//! ([`crate::grpc::layer`]), which puts the typed [`Caller`] (and for `KeyAdmin` the
//! [`AdminVerdict`]) into the request; handlers take them from there.

use std::fmt;

use tonic::codegen::http::Extensions;
use tonic::transport::server::UdsConnectInfo;

use crate::error::AgentError;

/// A caller on the Unix socket, from SO_PEERCRED (taken by the kernel at connect time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalCaller {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Process id, when the kernel reports it (0 or absent across pid namespaces).
    pub pid: Option<i32>,
}

/// A caller on the mutual-TLS listener, known by its client certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteCaller {
    /// The certificate's identities, the primary one first: the SPIFFE ID (a `spiffe://` URI
    /// SAN) when there is one, then `CN=<subject common name>`, other URI SANs as
    /// `URI:<uri>` and `DNS:<name>` SANs.
    pub identities: Vec<String>,
    /// The peer's address.
    pub address: Option<std::net::SocketAddr>,
}

impl RemoteCaller {
    /// The primary identity (`"?"` for a certificate with none).
    pub fn primary(&self) -> &str {
        self.identities.first().map_or("?", String::as_str)
    }

    /// `"spiffe://x" (also "CN=y")`, for messages.
    pub fn describe(&self) -> String {
        match self.identities.split_first() {
            None => "(none: the certificate has no CN, URI or DNS name)".into(),
            Some((first, [])) => format!("{first:?}"),
            Some((first, rest)) => {
                let rest: Vec<String> = rest.iter().map(|r| format!("{r:?}")).collect();
                format!("{first:?} (also {})", rest.join(", "))
            }
        }
    }
}

/// The identity of a caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// On the Unix socket.
    Local(LocalCaller),
    /// On the mutual-TLS listener.
    Remote(RemoteCaller),
}

impl Caller {
    /// The local caller's credentials, `None` for remote callers.
    pub fn local(&self) -> Option<&LocalCaller> {
        match self {
            Caller::Local(local) => Some(local),
            Caller::Remote(_) => None,
        }
    }

    /// The key of the caller's `caller_rate_limit` bucket: `uid:<n>` or `mtls:<identity>`.
    pub fn bucket_key(&self) -> String {
        match self {
            Caller::Local(local) => format!("uid:{}", local.uid),
            Caller::Remote(remote) => format!("mtls:{}", remote.primary()),
        }
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::Local(local) => write!(f, "uid {}", local.uid),
            Caller::Remote(remote) => write!(f, "mTLS identity {:?}", remote.primary()),
        }
    }
}

/// Decides which uids may call (the daemon's own, and those the config allows) and which may
/// manage keys (the daemon's own and `admin_uids`).
#[derive(Clone, Debug)]
pub struct Authenticator {
    own_uid: u32,
    allowed: Vec<u32>,
    admins: Vec<u32>,
}

impl Authenticator {
    /// Serves `own_uid` and `allowed`; `own_uid` and `admins` may use `KeyAdmin`.
    pub fn new(own_uid: u32, allowed: Vec<u32>, admins: Vec<u32>) -> Self {
        Authenticator {
            own_uid,
            allowed,
            admins,
        }
    }

    /// Who sent the request whose connection information is in `extensions`, whether or not
    /// they may use the agent (for the audit log of a refusal). An error for a TLS connection
    /// without a client certificate; `None` when the connection says nothing.
    pub fn identify(&self, extensions: &Extensions) -> Option<Result<Caller, AgentError>> {
        if let Some(remote) = crate::tls::remote_caller(extensions) {
            return Some(remote.map(Caller::Remote));
        }
        let cred = extensions
            .get::<UdsConnectInfo>()
            .and_then(|info| info.peer_cred)?;
        Some(Ok(Caller::Local(LocalCaller {
            uid: cred.uid(),
            gid: cred.gid(),
            pid: cred.pid(),
        })))
    }

    /// Whether `caller` may use the agent at all. A remote caller passed the TLS handshake with
    /// a certificate from client_ca; what it may do is up to the policies.
    pub fn allow(&self, caller: &Caller) -> Result<(), AgentError> {
        let Caller::Local(local) = caller else {
            return Ok(());
        };
        if local.uid == self.own_uid || self.allowed.contains(&local.uid) {
            return Ok(());
        }
        tracing::warn!(uid = local.uid, pid = ?local.pid, "refused a caller whose uid is not allowed");
        Err(AgentError::PermissionDenied(format!(
            "permission denied: uid {} may not use this agent (it serves uid {}{}); add the uid to allow_uids in the daemon's config to allow it",
            local.uid,
            self.own_uid,
            if self.allowed.is_empty() {
                String::new()
            } else {
                format!(" and {}", join(&self.allowed))
            }
        )))
    }

    /// Whether `caller` (already allowed) may manage keys: only the daemon's uid and
    /// `admin_uids`; remote callers never may.
    pub fn admin(&self, caller: &Caller) -> AdminVerdict {
        match caller {
            Caller::Local(local)
                if local.uid == self.own_uid || self.admins.contains(&local.uid) =>
            {
                Ok(AdminCaller(caller.clone()))
            }
            Caller::Local(local) => Err(format!(
                "permission denied: uid {} may not manage keys (KeyAdmin is limited to uid {}{}); add the uid to admin_uids in the daemon's config to allow it",
                local.uid,
                self.own_uid,
                if self.admins.is_empty() {
                    String::new()
                } else {
                    format!(" and admin_uids {}", join(&self.admins))
                }
            )),
            Caller::Remote(remote) => Err(format!(
                "permission denied: KeyAdmin is not available to remote (mTLS) callers ({} asked); manage keys on the daemon's host",
                remote.describe()
            )),
        }
    }
}

/// A caller that may manage keys; only [`Authenticator::admin`] makes one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminCaller(Caller);

impl AdminCaller {
    /// The caller.
    pub fn caller(&self) -> &Caller {
        &self.0
    }
}

/// The caller layer's decision on a `KeyAdmin` request: the admin, or why not (a
/// `PERMISSION_DENIED` message; the handler records the refusal in the audit log with what the
/// request asked for).
pub type AdminVerdict = Result<AdminCaller, String>;

fn join(uids: &[u32]) -> String {
    uids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
