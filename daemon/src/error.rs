//! The daemon's errors, and the one function that turns them into gRPC statuses.

use std::time::Duration;

use keyward_plugin_api::verify::VerifyError;
use keyward_plugin_api::{BackendError, status};
use tonic::{Code, Status};

use crate::shown::{self, quoted};

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// No key with this id.
    #[error("no key {} in this agent; `keyward keys list` shows the keys it has", quoted(.key_id))]
    KeyNotFound {
        /// The id asked for.
        key_id: String,
    },
    /// No backend instance with this name.
    #[error("no backend named {} in this agent's config; the backends are: {known}", quoted(.backend))]
    BackendNotFound {
        /// The name asked for.
        backend: String,
        /// The configured names, comma-separated.
        known: String,
    },
    /// A key with this id exists already.
    #[error("a key with id {} already exists; choose another id", quoted(.key_id))]
    AlreadyExists {
        /// The id asked for.
        key_id: String,
    },
    /// The request is malformed; the message says how.
    #[error("{0}")]
    InvalidArgument(String),
    /// The caller may not do this; the message says which rule refused it.
    #[error("{0}")]
    PermissionDenied(String),
    /// The request is well-formed but the key's state does not allow it (a certificate that
    /// is not for the key or has expired); the message says what to change.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A backend failed; its message is wrapped with the key and backend.
    #[error("key {} on backend {}: {source}", quoted(.key_id), quoted(.backend))]
    Backend {
        /// The key, or the id being created.
        key_id: String,
        /// The backend instance.
        backend: String,
        /// What the backend said.
        source: BackendError,
    },
    /// A backend failed an operation on the backend itself (no key: `UnlockBackend`).
    #[error("backend {}: {source}", quoted(.backend))]
    BackendCall {
        /// The backend instance.
        backend: String,
        /// What the backend said.
        source: BackendError,
    },
    /// The backend returned a signature that does not verify; it was withheld.
    #[error(
        "key {} on backend {}: the backend returned a signature that failed verification and was withheld ({source}); check the backend's health and configuration",
        quoted(.key_id),
        quoted(.backend)
    )]
    BadSignature {
        /// The key.
        key_id: String,
        /// The backend instance.
        backend: String,
        /// Why it did not verify.
        source: VerifyError,
    },
    /// A policy's `rate_limit` or `caller_rate_limit` is exceeded; the message names the key
    /// and the limit.
    #[error("{message}")]
    RateLimited {
        /// What was exceeded and when to retry.
        message: String,
        /// When a token is back (sent as `retry-after-ms`).
        retry_after: Duration,
    },
    /// The audit log cannot be written and `fail_closed` is set; the message says whether the
    /// request reached the backend.
    #[error("{0}")]
    AuditUnavailable(String),
    /// The config was reloaded (SIGHUP) while this admin request waited for its turn; nothing
    /// was changed.
    #[error(
        "keywardd reloaded its config while this request waited; nothing was changed, send it again"
    )]
    Reloaded,
    /// A bug or unexpected state in the daemon.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Maps an error to the status a client gets. This is the only place that chooses codes; a
/// backend's failure gets the code of its kind from the table both sides of the plugin
/// protocol share ([`keyward_plugin_api::status::code_of`]). The message is bounded and escaped
/// ([`shown::message`]).
pub fn to_status(error: &AgentError) -> Status {
    let code = match error {
        AgentError::KeyNotFound { .. } | AgentError::BackendNotFound { .. } => Code::NotFound,
        AgentError::AlreadyExists { .. } => Code::AlreadyExists,
        AgentError::InvalidArgument(_) => Code::InvalidArgument,
        AgentError::PermissionDenied(_) => Code::PermissionDenied,
        AgentError::FailedPrecondition(_) => Code::FailedPrecondition,
        AgentError::Backend { source, .. } | AgentError::BackendCall { source, .. } => {
            status::code_of(source)
        }
        AgentError::RateLimited { .. } => Code::ResourceExhausted,
        AgentError::AuditUnavailable(_) => Code::Unavailable,
        AgentError::Reloaded => Code::Aborted,
        AgentError::BadSignature { .. } | AgentError::Internal(_) => Code::Internal,
    };
    // Bounded and escaped whatever went into it (a backend's message, a caller's id): it is sent
    // as `grpc-message`, and a client's header limit must not turn it into another error.
    let mut status = Status::new(code, shown::message(&error.to_string()).to_string());
    let retry_after = match error {
        AgentError::Backend { source, .. } | AgentError::BackendCall { source, .. } => {
            status::retry_after_of(source)
        }
        AgentError::RateLimited { retry_after, .. } => Some(*retry_after),
        _ => None,
    };
    if let Some(after) = retry_after {
        status::set_retry_after(&mut status, after);
    }
    status
}

impl From<AgentError> for Status {
    fn from(error: AgentError) -> Self {
        to_status(&error)
    }
}
