//! OpenPGP certificates attached to keys (`KeyAdmin.AttachOpenPgpCertificate`), checked with
//! sequoia through the `pgp` backend crate. Without the `pgp` feature attaching answers
//! `UNIMPLEMENTED` and stored certificates are served as they are.

/// Checks `certificate` (binary or armored) against the key `public_key_der`: its primary key
/// or a signing subkey must be the key and, with `now_valid`, the certificate must be valid
/// now. Returns the certificate (binary) and its fingerprint; the error says what is wrong.
#[cfg(feature = "pgp")]
pub fn check(
    certificate: &[u8],
    public_key_der: &[u8],
    now_valid: bool,
) -> Result<(Vec<u8>, String), CheckError> {
    use keyward_plugin_pgp::CertificateError;
    keyward_plugin_pgp::check_certificate_for(certificate, public_key_der, now_valid).map_err(|e| {
        match e {
            CertificateError::Invalid(message) => CheckError::Invalid(message),
            CertificateError::NotValidNow(message) => CheckError::Precondition(message),
        }
    })
}

/// Without the `pgp` feature nothing can be checked.
#[cfg(not(feature = "pgp"))]
pub fn check(
    _certificate: &[u8],
    _public_key_der: &[u8],
    _now_valid: bool,
) -> Result<(Vec<u8>, String), CheckError> {
    Err(CheckError::Unsupported)
}

/// Why a certificate is refused.
#[derive(Debug)]
pub enum CheckError {
    /// Not a certificate, or not one for this key.
    Invalid(String),
    /// Expired or revoked.
    Precondition(String),
    /// This keywardd was built without OpenPGP support.
    Unsupported,
}

impl std::fmt::Display for CheckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckError::Invalid(m) | CheckError::Precondition(m) => f.write_str(m),
            CheckError::Unsupported => {
                f.write_str("this keywardd was built without OpenPGP support (cargo feature `pgp`)")
            }
        }
    }
}
