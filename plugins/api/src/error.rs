//! The error kinds a backend reports. The daemon maps them to gRPC status codes in one place.

use std::time::Duration;

/// What went wrong in a backend, by kind. Messages are lowercase, name what failed and say what
/// to do; they never contain key material, PINs or passphrases.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The key (or another named object) does not exist in the backend.
    #[error("{0}")]
    NotFound(String),
    /// The backend cannot do this (an optional operation, a key type it does not support).
    #[error("{0}")]
    Unsupported(String),
    /// The request is malformed for this backend (a bad name, a wrong digest length).
    #[error("{0}")]
    InvalidInput(String),
    /// The backend refused: wrong PIN, missing permission, key disabled for signing.
    #[error("{0}")]
    PermissionDenied(String),
    /// The request is fine but the object's state does not allow it yet (a Vault transit key
    /// whose `deletion_allowed` is off); the message says what to change first.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The backend is down or busy; the same call may work later.
    #[error("{message}")]
    Unavailable {
        /// What is unavailable and what to check.
        message: String,
        /// When to try again, if the backend said.
        retry_after: Option<Duration>,
    },
    /// The backend did not answer within the deadline.
    #[error("{0}")]
    Timeout(String),
    /// A bug or an unexpected state in the backend.
    #[error("{0}")]
    Internal(String),
    /// Any other error, kept with its source.
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

impl BackendError {
    /// An [`BackendError::Unavailable`] without a retry hint.
    pub fn unavailable(message: impl Into<String>) -> Self {
        BackendError::Unavailable {
            message: message.into(),
            retry_after: None,
        }
    }
}
