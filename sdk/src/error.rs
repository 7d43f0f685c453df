//! The SDK's error type.

use std::path::PathBuf;

/// What went wrong talking to the agent, or checking what it returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The agent's socket could not be reached.
    #[error(
        "cannot connect to the keyward agent at {}: {reason}; start it with `keywardd`, or point {} (or --socket) at its socket",
        socket.display(),
        crate::SOCKET_ENV
    )]
    Connect {
        /// The socket path tried.
        socket: PathBuf,
        /// Why it failed.
        reason: String,
    },
    /// The socket, its directory or the process listening on it belongs to a user the client
    /// does not trust (not the caller, not root, not `KEYWARD_AGENT_UID`): nothing was sent.
    #[error("refusing to use the agent socket {}: {reason}", socket.display())]
    UntrustedAgent {
        /// The socket path given.
        socket: PathBuf,
        /// What was found, and how to fix it.
        reason: String,
    },
    /// The agent's mutual-TLS listener could not be reached or refused the handshake.
    #[error(
        "cannot connect to the keyward agent at {url}: {reason}; check the address, that keywardd listens there ([tls] listen), and the CA certificate, client certificate and key"
    )]
    ConnectRemote {
        /// The `https://` URL tried.
        url: String,
        /// Why it failed.
        reason: String,
    },
    /// The agent answered with an error.
    #[error("{message}")]
    Agent {
        /// The gRPC status code (`NotFound`, `InvalidArgument`, `PermissionDenied`, ...).
        code: tonic::Code,
        /// The agent's message: it names the key and says what to do.
        message: String,
    },
    /// The caller passed something the SDK can tell is wrong before asking the agent.
    #[error("{0}")]
    InvalidInput(String),
    /// A signature or public key did not check out.
    #[error("{0}")]
    Verification(String),
}

impl Error {
    /// The gRPC code of an agent error, `None` for errors raised in the client.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Error::Agent { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        Error::Agent {
            code: status.code(),
            message: status.message().to_string(),
        }
    }
}
