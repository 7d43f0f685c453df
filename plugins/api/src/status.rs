//! The one table from error kinds to gRPC status codes, and the `retry-after-ms` hint.
//!
//! Both directions of keyward's gRPC use it: a plugin process answers the daemon with it
//! ([`crate::plugin::backend_error_to_status`]), and the daemon answers its clients with it
//! (`keyward-daemon`'s `error::to_status` maps every backend failure through [`code_of`]).
//! So a `BackendError` kind means the same status code wherever it surfaces.

use std::time::Duration;

use tonic::{Code, Status};

use crate::BackendError;

/// gRPC metadata carrying a retry hint in milliseconds (an `Unavailable` backend, an exceeded
/// rate limit).
pub const RETRY_AFTER_METADATA: &str = "retry-after-ms";

/// The status code of a backend error kind.
///
/// | kind | code |
/// | --- | --- |
/// | `NotFound` | `NOT_FOUND` |
/// | `Unsupported` | `UNIMPLEMENTED` |
/// | `InvalidInput` | `INVALID_ARGUMENT` |
/// | `PermissionDenied` | `PERMISSION_DENIED` |
/// | `FailedPrecondition` | `FAILED_PRECONDITION` |
/// | `Unavailable` | `UNAVAILABLE` (with `retry-after-ms` when known) |
/// | `Timeout` | `DEADLINE_EXCEEDED` |
/// | `Internal`, `Other` | `INTERNAL` |
pub fn code_of(error: &BackendError) -> Code {
    match error {
        BackendError::NotFound(_) => Code::NotFound,
        BackendError::Unsupported(_) => Code::Unimplemented,
        BackendError::InvalidInput(_) => Code::InvalidArgument,
        BackendError::PermissionDenied(_) => Code::PermissionDenied,
        BackendError::FailedPrecondition(_) => Code::FailedPrecondition,
        BackendError::Unavailable { .. } => Code::Unavailable,
        BackendError::Timeout(_) => Code::DeadlineExceeded,
        BackendError::Internal(_) | BackendError::Other(_) => Code::Internal,
    }
}

/// The retry hint a backend error carries, if any.
pub fn retry_after_of(error: &BackendError) -> Option<Duration> {
    match error {
        BackendError::Unavailable { retry_after, .. } => *retry_after,
        _ => None,
    }
}

/// Adds the `retry-after-ms` metadata to `status`.
pub fn set_retry_after(status: &mut Status, after: Duration) {
    if let Ok(value) = after.as_millis().to_string().parse() {
        status.metadata_mut().insert(RETRY_AFTER_METADATA, value);
    }
}

/// The `retry-after-ms` metadata of `status`, if it has a valid one.
pub fn retry_after_in(status: &Status) -> Option<Duration> {
    status
        .metadata()
        .get(RETRY_AFTER_METADATA)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_millis)
}

/// `message` as a status of the code [`code_of`] gives `error`, with its retry hint.
pub fn status_of(error: &BackendError, message: String) -> Status {
    let mut status = Status::new(code_of(error), message);
    if let Some(after) = retry_after_of(error) {
        set_retry_after(&mut status, after);
    }
    status
}
