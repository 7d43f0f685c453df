//! Conversions between the plugin protocol's messages and this crate's types.

use keyward_proto::plugin::v1 as wire;
use keyward_proto::v1 as api;
use tonic::{Code, Status};

use crate::status::{retry_after_in, status_of};
use crate::{BackendError, EcdsaFormat, KeyDescription, KeySpec, SignatureAlgorithm};

/// A plugin's error status as the backend error it stands for (the inverse of
/// [`backend_error_to_status`]; codes a plugin should not send fall into the nearest kind).
pub fn status_to_backend_error(status: &Status) -> BackendError {
    let message = status.message().to_string();
    match status.code() {
        Code::NotFound => BackendError::NotFound(message),
        Code::Unimplemented => BackendError::Unsupported(message),
        Code::InvalidArgument | Code::OutOfRange | Code::AlreadyExists => {
            BackendError::InvalidInput(message)
        }
        Code::PermissionDenied | Code::Unauthenticated => BackendError::PermissionDenied(message),
        Code::Unavailable | Code::ResourceExhausted | Code::Aborted => BackendError::Unavailable {
            message,
            retry_after: retry_after_in(status),
        },
        Code::DeadlineExceeded | Code::Cancelled => BackendError::Timeout(message),
        _ => BackendError::Internal(message),
    }
}

/// A backend error as the status a plugin answers with: the code from the one table
/// ([`crate::status::code_of`]) and the retry hint.
pub fn backend_error_to_status(error: &BackendError) -> Status {
    status_of(error, error.to_string())
}

pub(crate) fn spec_from_wire(spec: i32) -> Result<KeySpec, BackendError> {
    api::KeySpec::try_from(spec)
        .ok()
        .and_then(|s| KeySpec::try_from(s).ok())
        .ok_or_else(|| {
            BackendError::Internal(format!("the plugin sent an unknown key spec {spec}"))
        })
}

pub(crate) fn algorithm_from_wire(algorithm: i32) -> Result<SignatureAlgorithm, BackendError> {
    api::SignatureAlgorithm::try_from(algorithm)
        .ok()
        .and_then(|a| SignatureAlgorithm::try_from(a).ok())
        .ok_or_else(|| {
            BackendError::InvalidInput(format!("unknown signature algorithm {algorithm}"))
        })
}

pub(crate) fn description_to_wire(key: KeyDescription) -> wire::KeyDescription {
    wire::KeyDescription {
        reference: key.reference,
        spec: api::KeySpec::from(key.spec) as i32,
        public_key_der: key.public_key_der,
        version: key.version.unwrap_or_default(),
        openpgp_certificate: key.openpgp_certificate.unwrap_or_default(),
        attributes: key.attributes.into_iter().collect(),
        algorithms: key
            .algorithms
            .into_iter()
            .map(|a| api::SignatureAlgorithm::from(a) as i32)
            .collect(),
    }
}

pub(crate) fn description_from_wire(
    key: wire::KeyDescription,
) -> Result<KeyDescription, BackendError> {
    let spec = spec_from_wire(key.spec)?;
    let mut algorithms = Vec::with_capacity(key.algorithms.len());
    for number in key.algorithms {
        let algorithm = algorithm_from_wire(number).map_err(|_| {
            BackendError::Internal(format!(
                "the plugin lists an unknown algorithm {number} for key {:?}",
                key.reference
            ))
        })?;
        if !spec.supports(algorithm) {
            return Err(BackendError::Internal(format!(
                "the plugin says {spec} key {:?} signs with {algorithm}, which a {spec} key cannot",
                key.reference
            )));
        }
        algorithms.push(algorithm);
    }
    Ok(KeyDescription {
        spec,
        reference: key.reference,
        public_key_der: key.public_key_der,
        version: Some(key.version).filter(|v| !v.is_empty()),
        openpgp_certificate: Some(key.openpgp_certificate).filter(|c| !c.is_empty()),
        attributes: key.attributes.into_iter().collect(),
        algorithms,
    })
}

pub(crate) fn format_to_wire(format: EcdsaFormat) -> wire::EcdsaFormat {
    match format {
        EcdsaFormat::Der => wire::EcdsaFormat::Der,
        EcdsaFormat::Raw => wire::EcdsaFormat::Raw,
    }
}

pub(crate) fn format_from_wire(format: i32) -> EcdsaFormat {
    match wire::EcdsaFormat::try_from(format) {
        Ok(wire::EcdsaFormat::Raw) => EcdsaFormat::Raw,
        _ => EcdsaFormat::Der,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn errors_survive_the_round_trip() {
        let cases = [
            BackendError::NotFound("no key".into()),
            BackendError::Unsupported("no".into()),
            BackendError::InvalidInput("bad".into()),
            BackendError::PermissionDenied("pin".into()),
            BackendError::Unavailable {
                message: "down".into(),
                retry_after: Some(Duration::from_millis(1500)),
            },
            BackendError::Timeout("slow".into()),
            BackendError::Internal("bug".into()),
        ];
        for error in cases {
            let back = status_to_backend_error(&backend_error_to_status(&error));
            assert_eq!(format!("{error:?}"), format!("{back:?}"));
        }
    }
}
