//! What a PKCS#11 return value means for keyward: which codes leave a session (or a cached
//! object handle) unusable so the pool must be rebuilt, which mean the PIN was rejected, and how
//! the rest map to [`BackendError`] kinds. Messages name the `CKR_*` code, never a PIN.

use cryptoki::context::Function;
use cryptoki::error::{Error, RvError};
use keyward_plugin_api::BackendError;

/// An error inside one pool operation: either a PKCS#11 call that failed (classified by the
/// pool) or an error the operation already decided on.
#[derive(Debug)]
pub(crate) enum OpError {
    /// A PKCS#11 call failed; `what` says what keyward was doing.
    Pkcs11 {
        /// What keyward was doing ("signing with ...", "finding the key ...").
        what: String,
        /// The cryptoki error.
        error: Error,
    },
    /// A final answer.
    Backend(BackendError),
}

impl From<BackendError> for OpError {
    fn from(error: BackendError) -> Self {
        OpError::Backend(error)
    }
}

/// Wraps a cryptoki result with what keyward was doing.
pub(crate) trait Context<T> {
    /// Names the failed step.
    fn doing(self, what: impl FnOnce() -> String) -> Result<T, OpError>;
}

impl<T> Context<T> for Result<T, Error> {
    fn doing(self, what: impl FnOnce() -> String) -> Result<T, OpError> {
        self.map_err(|error| OpError::Pkcs11 {
            what: what(),
            error,
        })
    }
}

/// The return value of a failed PKCS#11 call, if it was one.
pub(crate) fn rv_of(error: &Error) -> Option<RvError> {
    match error {
        Error::Pkcs11(rv, _) => Some(*rv),
        _ => None,
    }
}

/// Whether `error` means the session, the login or a cached handle is no longer valid: the
/// session is dropped, the pool re-opened (finding the token again) and the call retried once.
pub(crate) fn is_stale(error: &Error) -> bool {
    matches!(
        rv_of(error),
        Some(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::UserNotLoggedIn
                | RvError::DeviceRemoved
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::ObjectHandleInvalid
                | RvError::KeyHandleInvalid
                | RvError::SlotIdInvalid
                | RvError::CryptokiNotInitialized
        )
    )
}

/// Whether `error` (from `C_Login`) means the token rejected the PIN. Such a login is never
/// retried automatically: real tokens lock after a few failures.
pub(crate) fn is_pin_rejected(error: &Error) -> bool {
    matches!(
        rv_of(error),
        Some(
            RvError::PinIncorrect
                | RvError::PinLocked
                | RvError::PinInvalid
                | RvError::PinLenRange
                | RvError::PinExpired
        )
    )
}

/// The `CKR_*` name of a return value (`PinIncorrect` -> `CKR_PIN_INCORRECT`).
pub(crate) fn ckr_name(rv: RvError) -> String {
    let camel = format!("{rv:?}");
    let mut name = String::from("CKR");
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

/// A short description of a cryptoki error: the `CKR_*` code and the function for PKCS#11
/// errors, cryptoki's own text otherwise.
pub(crate) fn describe(error: &Error) -> String {
    match error {
        Error::Pkcs11(rv, function) => format!("{} from {}", ckr_name(*rv), c_name(*function)),
        other => other.to_string(),
    }
}

fn c_name(function: Function) -> String {
    format!("C_{function:?}")
}

/// Maps a PKCS#11 failure that is neither stale nor a PIN rejection to a [`BackendError`].
/// `token` names the token in messages.
pub(crate) fn to_backend_error(token: &str, what: &str, error: &Error) -> BackendError {
    let detail = describe(error);
    let Some(rv) = rv_of(error) else {
        return BackendError::Internal(format!("{what} on token {token:?} failed: {detail}"));
    };
    match rv {
        RvError::MechanismInvalid
        | RvError::MechanismParamInvalid
        | RvError::FunctionNotSupported
        | RvError::KeyTypeInconsistent
        | RvError::KeySizeRange
        | RvError::CurveNotSupported
        | RvError::DomainParamsInvalid
        | RvError::TemplateInconsistent
        | RvError::AttributeValueInvalid => BackendError::Unsupported(format!(
            "{what}: token {token:?} does not support it ({detail})"
        )),
        RvError::KeyFunctionNotPermitted => BackendError::PermissionDenied(format!(
            "{what}: token {token:?} does not allow this key to sign ({detail}); check the key's CKA_SIGN attribute"
        )),
        RvError::UserPinNotInitialized | RvError::UserTypeInvalid => {
            BackendError::PermissionDenied(format!(
                "{what}: token {token:?} refused the login ({detail}); initialise the user PIN (softhsm2-util --init-token, or the vendor's tool)"
            ))
        }
        RvError::DataLenRange | RvError::DataInvalid => BackendError::InvalidInput(format!(
            "{what}: token {token:?} refused the input ({detail})"
        )),
        RvError::DeviceError
        | RvError::DeviceMemory
        | RvError::SessionCount
        | RvError::FunctionFailed
        | RvError::GeneralError
        | RvError::HostMemory
        | RvError::TokenWriteProtected => BackendError::unavailable(format!(
            "{what}: token {token:?} failed ({detail}); check the device and its driver"
        )),
        _ => BackendError::Internal(format!("{what} on token {token:?} failed: {detail}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ckr_names() {
        assert_eq!(ckr_name(RvError::PinIncorrect), "CKR_PIN_INCORRECT");
        assert_eq!(
            ckr_name(RvError::SessionHandleInvalid),
            "CKR_SESSION_HANDLE_INVALID"
        );
        let error = Error::Pkcs11(RvError::UserAlreadyLoggedIn, Function::Login);
        assert_eq!(describe(&error), "CKR_USER_ALREADY_LOGGED_IN from C_Login");
    }

    #[test]
    fn classification() {
        let stale = Error::Pkcs11(RvError::SessionHandleInvalid, Function::Sign);
        assert!(is_stale(&stale) && !is_pin_rejected(&stale));
        let pin = Error::Pkcs11(RvError::PinIncorrect, Function::Login);
        assert!(is_pin_rejected(&pin) && !is_stale(&pin));
        let mech = Error::Pkcs11(RvError::MechanismInvalid, Function::SignInit);
        assert!(matches!(
            to_backend_error("t", "signing", &mech),
            BackendError::Unsupported(_)
        ));
        assert!(!is_stale(&Error::NotSupported));
    }
}
