//! The daemon's errors, and the one function that turns them into gRPC statuses.

use std::time::Duration;

use keyward_plugin_api::verify::VerifyError;
use keyward_plugin_api::{BackendError, status};
use tonic::{Code, Status};

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// No key with this id.
    #[error("no key {key_id:?} in this agent; `keyward keys list` shows the keys it has")]
    KeyNotFound {
        /// The id asked for.
        key_id: String,
    },
    /// No backend instance with this name.
    #[error("no backend named {backend:?} in this agent's config; the backends are: {known}")]
    BackendNotFound {
        /// The name asked for.
        backend: String,
        /// The configured names, comma-separated.
        known: String,
    },
    /// A key with this id exists already.
    #[error("a key with id {key_id:?} already exists; choose another id")]
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
    #[error("key {key_id:?} on backend {backend:?}: {source}")]
    Backend {
        /// The key, or the id being created.
        key_id: String,
        /// The backend instance.
        backend: String,
        /// What the backend said.
        source: BackendError,
    },
    /// A backend failed an operation on the backend itself (no key: `UnlockBackend`).
    #[error("backend {backend:?}: {source}")]
    BackendCall {
        /// The backend instance.
        backend: String,
        /// What the backend said.
        source: BackendError,
    },
    /// The backend returned a signature that does not verify; it was withheld.
    #[error(
        "key {key_id:?} on backend {backend:?}: the backend returned a signature that failed verification and was withheld ({source}); check the backend's health and configuration"
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
/// protocol share ([`keyward_plugin_api::status::code_of`]).
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
    let mut status = Status::new(code, error.to_string());
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
