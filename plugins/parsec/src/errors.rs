//! Parsec's answers as keyward's error kinds. Each message keeps Parsec's reason (the
//! `ResponseStatus` and its text) next to what keyward was doing.

use std::time::Duration;

use keyward_plugin_api::BackendError;
use parsec_client::core::interface::requests::ResponseStatus;
use parsec_client::error::{ClientErrorKind, Error};

/// Maps a failed Parsec call. `what` says what keyward was doing ("signing with parsec key
/// \"release\""), `socket` where the service is.
pub(crate) fn to_backend_error(what: &str, socket: &str, error: &Error) -> BackendError {
    match error {
        Error::Service(status) => service_error(what, *status),
        Error::Client(ClientErrorKind::Ipc(e)) => BackendError::Unavailable {
            message: format!(
                "{what}: the Parsec service at {socket} does not answer ({e}); check that it runs (systemctl status parsec). keyward tries again on the next call"
            ),
            retry_after: Some(Duration::from_secs(1)),
        },
        Error::Client(ClientErrorKind::Interface(status)) => BackendError::Unavailable {
            message: format!(
                "{what}: the Parsec service at {socket} sent a message keyward cannot read ({status:?}: {status})"
            ),
            retry_after: Some(Duration::from_secs(1)),
        },
        Error::Client(ClientErrorKind::NotFound) => {
            BackendError::NotFound(format!("{what}: Parsec has no such key"))
        }
        Error::Client(kind) => BackendError::Internal(format!("{what}: {kind:?}")),
    }
}

fn service_error(what: &str, status: ResponseStatus) -> BackendError {
    let reason = format!("Parsec says {status:?}: {status}");
    match status {
        ResponseStatus::PsaErrorDoesNotExist => BackendError::NotFound(format!("{what}: {reason}")),
        ResponseStatus::PsaErrorNotPermitted
        | ResponseStatus::AuthenticationError
        | ResponseStatus::NotAuthenticated
        | ResponseStatus::AdminOperation => BackendError::PermissionDenied(format!(
            "{what}: {reason}. With the UnixPeerCredentials authenticator, Parsec knows keywardd by its uid: keys made by another user are not keywardd's"
        )),
        ResponseStatus::PsaErrorNotSupported
        | ResponseStatus::ProviderNotRegistered
        | ResponseStatus::ProviderDoesNotExist
        | ResponseStatus::WrongProviderId
        | ResponseStatus::OpcodeDoesNotExist
        | ResponseStatus::AuthenticatorDoesNotExist
        | ResponseStatus::AuthenticatorNotRegistered
        | ResponseStatus::DeprecatedPrimitive => {
            BackendError::Unsupported(format!("{what}: {reason}"))
        }
        ResponseStatus::PsaErrorAlreadyExists => {
            BackendError::InvalidInput(format!("{what}: {reason}; choose another name"))
        }
        ResponseStatus::PsaErrorInvalidArgument
        | ResponseStatus::PsaErrorInvalidSignature
        | ResponseStatus::PsaErrorInvalidPadding
        | ResponseStatus::PsaErrorBufferTooSmall
        | ResponseStatus::InvalidEncoding
        | ResponseStatus::BodySizeExceedsLimit => {
            BackendError::InvalidInput(format!("{what}: {reason}"))
        }
        ResponseStatus::PsaErrorCommunicationFailure
        | ResponseStatus::PsaErrorHardwareFailure
        | ResponseStatus::PsaErrorInsufficientMemory
        | ResponseStatus::PsaErrorInsufficientStorage
        | ResponseStatus::PsaErrorStorageFailure
        | ResponseStatus::PsaErrorInsufficientEntropy
        | ResponseStatus::ConnectionError
        | ResponseStatus::KeyInfoManagerError
        | ResponseStatus::PsaErrorBadState => BackendError::Unavailable {
            message: format!("{what}: {reason}; check the Parsec service and its provider"),
            retry_after: Some(Duration::from_secs(1)),
        },
        _ => BackendError::Internal(format!("{what}: {reason}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_kinds_and_keep_parsec_s_reason() {
        let cases = [
            (ResponseStatus::PsaErrorDoesNotExist, "NotFound"),
            (ResponseStatus::PsaErrorNotPermitted, "PermissionDenied"),
            (ResponseStatus::PsaErrorNotSupported, "Unsupported"),
            (ResponseStatus::PsaErrorInvalidArgument, "InvalidInput"),
            (ResponseStatus::PsaErrorCommunicationFailure, "Unavailable"),
            (ResponseStatus::PsaErrorGenericError, "Internal"),
        ];
        for (status, kind) in cases {
            let error = to_backend_error("signing", "/run/parsec.sock", &Error::Service(status));
            assert!(
                format!("{error:?}").starts_with(kind),
                "{status:?}: {error:?}"
            );
            assert!(
                error.to_string().contains(&format!("{status:?}")),
                "{error}"
            );
        }
        let down = Error::Client(ClientErrorKind::Ipc(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        let error = to_backend_error("listing", "/run/parsec.sock", &down);
        assert!(
            matches!(error, BackendError::Unavailable { .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("/run/parsec.sock"), "{error}");
    }
}
