//! ECDSA signature encodings: DER (`ECDSA-Sig-Value`, X.509, OpenSSL, cosign) and fixed-length
//! `r || s` (IEEE P1363: JOSE, COSE, Notation), with the RustCrypto curve crates, which also
//! reject values that are no valid signature for the curve.
//!
//! The agent converts for you when you ask for a [`crate::SignatureFormat`]; these are for
//! signatures that come from elsewhere. `sdk/testdata/vectors.json` has the shared cases.

use crate::{Error, KeySpec};

fn not_ecdsa(spec: KeySpec) -> Error {
    Error::InvalidInput(format!(
        "{} is not an ECDSA key spec (ec-p256, ec-p384, ec-p521)",
        spec.name()
    ))
}

fn malformed(what: &str, spec: KeySpec) -> Error {
    Error::InvalidInput(format!(
        "not a valid {what} {} ECDSA signature",
        spec.name()
    ))
}

/// DER `ECDSA-Sig-Value` -> `r || s`, each half the curve's field length.
pub fn ecdsa_der_to_raw(spec: KeySpec, der: &[u8]) -> Result<Vec<u8>, Error> {
    let bad = || malformed("DER", spec);
    Ok(match spec {
        KeySpec::EcP256 => p256::ecdsa::Signature::from_der(der)
            .map_err(|_| bad())?
            .to_bytes()
            .to_vec(),
        KeySpec::EcP384 => p384::ecdsa::Signature::from_der(der)
            .map_err(|_| bad())?
            .to_bytes()
            .to_vec(),
        KeySpec::EcP521 => p521::ecdsa::Signature::from_der(der)
            .map_err(|_| bad())?
            .to_bytes()
            .to_vec(),
        other => return Err(not_ecdsa(other)),
    })
}

/// `r || s` -> DER `ECDSA-Sig-Value`.
pub fn ecdsa_raw_to_der(spec: KeySpec, raw: &[u8]) -> Result<Vec<u8>, Error> {
    let bad = || malformed("raw r||s", spec);
    Ok(match spec {
        KeySpec::EcP256 => p256::ecdsa::Signature::from_slice(raw)
            .map_err(|_| bad())?
            .to_der()
            .as_bytes()
            .to_vec(),
        KeySpec::EcP384 => p384::ecdsa::Signature::from_slice(raw)
            .map_err(|_| bad())?
            .to_der()
            .as_bytes()
            .to_vec(),
        KeySpec::EcP521 => p521::ecdsa::Signature::from_slice(raw)
            .map_err(|_| bad())?
            .to_der()
            .as_bytes()
            .to_vec(),
        other => return Err(not_ecdsa(other)),
    })
}
