//! Signature verification on the client side, with the RustCrypto crates.
//!
//! The agent verifies every signature before it returns it (with OpenSSL); checking it here
//! again, with a different implementation, means a client does not have to trust the agent's
//! word for it. `keyward verify` uses this.

use ecdsa::signature::hazmat::PrehashVerifier;
use sha2::{Digest, Sha256, Sha384, Sha512};
use spki::der::Decode;
use spki::{DecodePublicKey, ObjectIdentifier, SubjectPublicKeyInfoRef};

use crate::{Error, SignatureAlgorithm, SignatureFormat};

/// ECDSA verification over a prehash for one curve crate (p256, p384); a macro because the
/// generic version needs a wall of RustCrypto trait bounds.
macro_rules! verify_ecdsa_with {
    ($curve:ident, $spki:expr, $digest:expr, $signature:expr, $der:expr) => {{
        let key =
            $curve::ecdsa::VerifyingKey::from_public_key_der($spki).map_err(|e| bad_key(&e))?;
        let signature = if $der {
            $curve::ecdsa::Signature::from_der($signature).map_err(|_| invalid())?
        } else {
            $curve::ecdsa::Signature::from_slice($signature).map_err(|_| invalid())?
        };
        key.verify_prehash($digest, &signature)
            .map_err(|_| invalid())
    }};
}

const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_P521: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");

/// Hashes `message` with the hash of `algorithm` (an error for Ed25519, which has none).
pub fn digest(algorithm: SignatureAlgorithm, message: &[u8]) -> Result<Vec<u8>, Error> {
    use SignatureAlgorithm::*;
    Ok(match algorithm {
        EcdsaSha256 | RsaPssSha256 | RsaPkcs1Sha256 => Sha256::digest(message).to_vec(),
        EcdsaSha384 | RsaPssSha384 | RsaPkcs1Sha384 => Sha384::digest(message).to_vec(),
        EcdsaSha512 | RsaPssSha512 | RsaPkcs1Sha512 => Sha512::digest(message).to_vec(),
        Ed25519 => {
            return Err(Error::InvalidInput(
                "ed25519 signs the message itself; there is no digest to compute".into(),
            ));
        }
        Unspecified => {
            return Err(Error::InvalidInput("no signature algorithm given".into()));
        }
    })
}

/// Verifies `signature` over `message` with the public key `spki_der` (DER
/// SubjectPublicKeyInfo). `format` tells how an ECDSA signature is encoded.
pub fn verify_message(
    spki_der: &[u8],
    algorithm: SignatureAlgorithm,
    message: &[u8],
    signature: &[u8],
    format: SignatureFormat,
) -> Result<(), Error> {
    if algorithm == SignatureAlgorithm::Ed25519 {
        let key =
            ed25519_dalek::VerifyingKey::from_public_key_der(spki_der).map_err(|e| bad_key(&e))?;
        let signature = ed25519_dalek::Signature::from_slice(signature).map_err(|_| invalid())?;
        return key
            .verify_strict(message, &signature)
            .map_err(|_| invalid());
    }
    verify_digest(
        spki_der,
        algorithm,
        &digest(algorithm, message)?,
        signature,
        format,
    )
}

/// Verifies `signature` over a digest computed with the algorithm's hash (RSA and ECDSA).
/// RSA-PSS signatures must use a salt as long as the hash.
pub fn verify_digest(
    spki_der: &[u8],
    algorithm: SignatureAlgorithm,
    digest: &[u8],
    signature: &[u8],
    format: SignatureFormat,
) -> Result<(), Error> {
    use SignatureAlgorithm::*;
    let spki = SubjectPublicKeyInfoRef::from_der(spki_der).map_err(|e| bad_key(&e))?;
    let key_oid = spki.algorithm.oid;
    match algorithm {
        EcdsaSha256 | EcdsaSha384 | EcdsaSha512 => {
            if key_oid != OID_EC_PUBLIC_KEY {
                return Err(mismatch(algorithm));
            }
            let curve: ObjectIdentifier =
                spki.algorithm.parameters_oid().map_err(|e| bad_key(&e))?;
            let der = matches!(format, SignatureFormat::Der | SignatureFormat::Unspecified);
            match curve {
                OID_P256 => verify_ecdsa_with!(p256, spki_der, digest, signature, der),
                OID_P384 => verify_ecdsa_with!(p384, spki_der, digest, signature, der),
                OID_P521 => verify_p521(spki_der, digest, signature, der),
                other => Err(Error::Verification(format!(
                    "unsupported elliptic curve {other}"
                ))),
            }
        }
        RsaPssSha256 | RsaPssSha384 | RsaPssSha512 | RsaPkcs1Sha256 | RsaPkcs1Sha384
        | RsaPkcs1Sha512 => {
            if key_oid != OID_RSA_ENCRYPTION {
                return Err(mismatch(algorithm));
            }
            let key = rsa::RsaPublicKey::from_public_key_der(spki_der).map_err(|e| bad_key(&e))?;
            verify_rsa(key, algorithm, digest, signature)
        }
        Ed25519 => Err(Error::InvalidInput(
            "ed25519 signs the message, not a digest: use verify_message".into(),
        )),
        Unspecified => Err(Error::InvalidInput("no signature algorithm given".into())),
    }
}

fn verify_p521(spki_der: &[u8], digest: &[u8], signature: &[u8], der: bool) -> Result<(), Error> {
    let key = p521::PublicKey::from_public_key_der(spki_der).map_err(|e| bad_key(&e))?;
    let key = p521::ecdsa::VerifyingKey::from_affine(*key.as_affine()).map_err(|e| bad_key(&e))?;
    let signature = if der {
        p521::ecdsa::Signature::from_der(signature).map_err(|_| invalid())?
    } else {
        p521::ecdsa::Signature::from_slice(signature).map_err(|_| invalid())?
    };
    // RustCrypto refuses a prehash shorter than half the field (33 bytes for P-521), so a
    // SHA-256 digest is left-padded to the field size: the same integer (bits2int) that
    // OpenSSL and FIPS 186 use, since the digest is shorter than the group order.
    let mut padded = [0u8; 66];
    let prehash = if digest.len() < padded.len() / 2 {
        padded[66 - digest.len()..].copy_from_slice(digest);
        &padded[..]
    } else {
        digest
    };
    key.verify_prehash(prehash, &signature)
        .map_err(|_| invalid())
}

fn verify_rsa(
    key: rsa::RsaPublicKey,
    algorithm: SignatureAlgorithm,
    digest: &[u8],
    signature: &[u8],
) -> Result<(), Error> {
    use SignatureAlgorithm::*;
    let hash_len = match algorithm {
        RsaPssSha256 | RsaPkcs1Sha256 => 32,
        RsaPssSha384 | RsaPkcs1Sha384 => 48,
        RsaPssSha512 | RsaPkcs1Sha512 => 64,
        _ => return Err(mismatch(algorithm)),
    };
    if digest.len() != hash_len {
        return Err(Error::InvalidInput(format!(
            "{} needs a {hash_len}-byte digest, got {} bytes",
            algorithm.name(),
            digest.len()
        )));
    }
    // PSS is checked with the salt length fixed to the hash length, the agent's contract.
    let result = match algorithm {
        RsaPssSha256 => key.verify(rsa::Pss::new_with_salt::<Sha256>(32), digest, signature),
        RsaPssSha384 => key.verify(rsa::Pss::new_with_salt::<Sha384>(48), digest, signature),
        RsaPssSha512 => key.verify(rsa::Pss::new_with_salt::<Sha512>(64), digest, signature),
        RsaPkcs1Sha256 => key.verify(rsa::Pkcs1v15Sign::new::<Sha256>(), digest, signature),
        RsaPkcs1Sha384 => key.verify(rsa::Pkcs1v15Sign::new::<Sha384>(), digest, signature),
        _ => key.verify(rsa::Pkcs1v15Sign::new::<Sha512>(), digest, signature),
    };
    result.map_err(|_| invalid())
}

fn bad_key(error: &dyn std::fmt::Display) -> Error {
    Error::Verification(format!("unusable public key: {error}"))
}

fn mismatch(algorithm: SignatureAlgorithm) -> Error {
    Error::Verification(format!(
        "algorithm {} does not fit this public key",
        algorithm.name()
    ))
}

fn invalid() -> Error {
    Error::Verification("the signature does not verify against the public key".into())
}
