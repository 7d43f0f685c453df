//! Who is calling: the peer credentials of the Unix socket connection, checked on every call.

use tonic::Request;
use tonic::transport::server::UdsConnectInfo;

use crate::error::AgentError;

/// The identity of a caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    /// User id from SO_PEERCRED.
    pub uid: u32,
    /// Group id from SO_PEERCRED.
    pub gid: u32,
    /// Process id, when the kernel reports it.
    pub pid: Option<i32>,
}

/// Decides which uids may call: the daemon's own, and those the config allows.
#[derive(Clone, Debug)]
pub struct Authenticator {
    own_uid: u32,
    allowed: Vec<u32>,
}

impl Authenticator {
    /// Serves `own_uid` and `allowed`.
    pub fn new(own_uid: u32, allowed: Vec<u32>) -> Self {
        Authenticator { own_uid, allowed }
    }

    /// The caller of `request`, if the caller may use the agent.
    pub fn check<T>(&self, request: &Request<T>) -> Result<Caller, AgentError> {
        let cred = request
            .extensions()
            .get::<UdsConnectInfo>()
            .and_then(|info| info.peer_cred)
            .ok_or_else(|| {
                AgentError::PermissionDenied(
                    "cannot identify the caller: the connection carries no peer credentials".into(),
                )
            })?;
        let caller = Caller {
            uid: cred.uid(),
            gid: cred.gid(),
            pid: cred.pid(),
        };
        if caller.uid == self.own_uid || self.allowed.contains(&caller.uid) {
            Ok(caller)
        } else {
            tracing::warn!(uid = caller.uid, pid = ?caller.pid, "refused a caller whose uid is not allowed");
            Err(AgentError::PermissionDenied(format!(
                "permission denied: uid {} may not use this agent (it serves uid {}{}); add the uid to allow_uids in the daemon's config to allow it",
                caller.uid,
                self.own_uid,
                if self.allowed.is_empty() {
                    String::new()
                } else {
                    format!(
                        " and {}",
                        self.allowed
                            .iter()
                            .map(u32::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            )))
        }
    }
}
