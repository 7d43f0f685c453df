//! OpenPGP certificates attached to keys (`KeyAdmin.AttachOpenPgpCertificate`), checked by the
//! pgp plugin's executable (`keyward-plugin-pgp --check-openpgp-cert`, found like every plugin),
//! so that keywardd links no OpenPGP implementation. Without that executable, attaching answers
//! `UNIMPLEMENTED` naming it, and certificates already stored are served as they are.

use std::path::PathBuf;

use keyward_plugin_api::plugin::openpgp::{
    CHECK_OPENPGP_ARG, CertificateAnswer, CertificateCheck, CertificateProblem,
    MAX_CERTIFICATE_BYTES,
};

use crate::plugin_check::{ONE_SHOT_DEADLINE, run_one_shot};
use crate::plugin_dir;

/// Why a certificate is refused, or could not be checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckError {
    /// Not a certificate, or not one for this key.
    Invalid(String),
    /// Expired or revoked.
    Precondition(String),
    /// The checker is not installed (the message names it and where it was looked for).
    NoChecker(String),
    /// The checker failed (crashed, overran its deadline, answered nonsense).
    Failed(String),
}

impl std::fmt::Display for CheckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckError::Invalid(m)
            | CheckError::Precondition(m)
            | CheckError::NoChecker(m)
            | CheckError::Failed(m) => f.write_str(m),
        }
    }
}

/// Checks `certificate` (binary or armored) against the key `public_key_der`: its primary key
/// or a signing subkey must be the key and, with `now_valid`, the certificate must be valid
/// now. Returns the certificate (binary) and its fingerprint.
pub async fn check(
    plugin_dirs: &[PathBuf],
    certificate: &[u8],
    public_key_der: &[u8],
    now_valid: bool,
) -> Result<(Vec<u8>, String), CheckError> {
    if certificate.len() > MAX_CERTIFICATE_BYTES {
        return Err(CheckError::Invalid(format!(
            "the certificate is {} bytes; at most {MAX_CERTIFICATE_BYTES} are accepted",
            certificate.len()
        )));
    }
    let program = plugin_dir::find("pgp", plugin_dirs).map_err(|e| {
        CheckError::NoChecker(format!(
            "OpenPGP certificates are checked by the pgp plugin: {e}"
        ))
    })?;
    let request = CertificateCheck {
        certificate: certificate.to_vec(),
        public_key_der: public_key_der.to_vec(),
        now_valid,
    };
    let input = serde_json::to_vec(&request)
        .map_err(|e| CheckError::Failed(format!("cannot encode the request: {e}")))?;
    let output = run_one_shot(
        &program,
        &[CHECK_OPENPGP_ARG.to_string()],
        &input,
        ONE_SHOT_DEADLINE,
    )
    .await
    .map_err(CheckError::Failed)?;
    let answer = CertificateAnswer::parse(&output.stdout).ok_or_else(|| {
        CheckError::Failed(format!(
            "{} {CHECK_OPENPGP_ARG} gave no answer (it exited {}{}); is it the keyward-plugin-pgp of this keywardd?",
            program.display(),
            output.status,
            if output.stderr_tail.is_empty() {
                String::new()
            } else {
                format!(": {}", output.stderr_tail)
            }
        ))
    })?;
    match answer.problem {
        None => Ok((answer.certificate, answer.fingerprint)),
        Some(CertificateProblem::Invalid) => Err(CheckError::Invalid(answer.message)),
        Some(CertificateProblem::NotValidNow) => Err(CheckError::Precondition(answer.message)),
    }
}
