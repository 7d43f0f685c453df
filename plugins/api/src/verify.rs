//! Checks a signature against a DER SubjectPublicKeyInfo.
//!
//! The daemon runs this on every signature a backend returns before it reaches a client, so a
//! faulty HSM, a nonce bug or a wrong RSA-PSS salt is caught in the agent, not by a verifier
//! downstream. It also tells what kind of key an SPKI holds ([`key_spec_of_spki`]).

use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::PointConversionForm;
use openssl::ecdsa::EcdsaSig;
use openssl::md::{Md, MdRef};
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Public};
use openssl::pkey_ctx::PkeyCtx;
use openssl::rsa::Padding;
use openssl::sign::{RsaPssSaltlen, Verifier};

use crate::awslc::AwsLcVerifier;
use crate::encoding::ecdsa_raw_to_der;
use crate::{EcdsaFormat, HashAlgorithm, KeySpec, SignOp, SignatureAlgorithm};

/// Why a signature did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The public key could not be parsed or is of a kind keyward does not handle.
    #[error("unusable public key: {0}")]
    BadPublicKey(String),
    /// The algorithm does not fit the public key.
    #[error("algorithm {algorithm} does not fit a {spec} key")]
    AlgorithmMismatch {
        /// The algorithm asked for.
        algorithm: SignatureAlgorithm,
        /// The key's spec.
        spec: KeySpec,
    },
    /// An RSA-PSS signature that verifies only with a salt length other than the hash length.
    #[error(
        "the RSA-PSS signature uses a salt length other than the hash length ({0} bytes); keyward requires salt length = hash length"
    )]
    WrongPssSaltLength(usize),
    /// The signature does not match the public key and input.
    #[error("the signature does not verify against the key's public key")]
    Invalid,
}

/// What kind of key a DER SubjectPublicKeyInfo holds.
pub fn key_spec_of_spki(spki_der: &[u8]) -> Result<KeySpec, VerifyError> {
    let key = PKey::public_key_from_der(spki_der)
        .map_err(|_| VerifyError::BadPublicKey("not a DER SubjectPublicKeyInfo".into()))?;
    key_spec_of(&key)
}

fn key_spec_of(key: &PKey<Public>) -> Result<KeySpec, VerifyError> {
    match key.id() {
        Id::EC => {
            let ec = key
                .ec_key()
                .map_err(|e| VerifyError::BadPublicKey(e.to_string()))?;
            match ec.group().curve_name() {
                Some(Nid::X9_62_PRIME256V1) => Ok(KeySpec::EcP256),
                Some(Nid::SECP384R1) => Ok(KeySpec::EcP384),
                Some(Nid::SECP521R1) => Ok(KeySpec::EcP521),
                other => Err(VerifyError::BadPublicKey(format!(
                    "unsupported elliptic curve {other:?}; keyward supports P-256, P-384 and P-521"
                ))),
            }
        }
        Id::RSA => match key.bits() {
            2048 => Ok(KeySpec::Rsa2048),
            3072 => Ok(KeySpec::Rsa3072),
            4096 => Ok(KeySpec::Rsa4096),
            bits => Err(VerifyError::BadPublicKey(format!(
                "unsupported RSA key size {bits}; keyward supports 2048, 3072 and 4096 bits"
            ))),
        },
        Id::ED25519 => Ok(KeySpec::Ed25519),
        other => Err(VerifyError::BadPublicKey(format!(
            "unsupported key type {other:?}"
        ))),
    }
}

/// The public key in PEM (`-----BEGIN PUBLIC KEY-----`) form.
pub fn spki_der_to_pem(spki_der: &[u8]) -> Result<String, VerifyError> {
    PKey::public_key_from_der(spki_der)
        .map_err(|_| VerifyError::BadPublicKey("not a DER SubjectPublicKeyInfo".into()))?;
    Ok(crate::pemfile::encode(crate::pemfile::PUBLIC_KEY, spki_der))
}

/// The uncompressed EC point (`04 || X || Y`) of an EC public key, for backends that must compare
/// points (PKCS#11 `CKA_EC_POINT`).
pub fn ec_point_of_spki(spki_der: &[u8]) -> Result<Vec<u8>, VerifyError> {
    let key = PKey::public_key_from_der(spki_der)
        .map_err(|_| VerifyError::BadPublicKey("not a DER SubjectPublicKeyInfo".into()))?;
    let ec = key
        .ec_key()
        .map_err(|_| VerifyError::BadPublicKey("not an EC key".into()))?;
    let mut ctx = BigNumContext::new().map_err(|e| VerifyError::BadPublicKey(e.to_string()))?;
    ec.public_key()
        .to_bytes(ec.group(), PointConversionForm::UNCOMPRESSED, &mut ctx)
        .map_err(|e| VerifyError::BadPublicKey(e.to_string()))
}

/// A public key parsed once and kept for verifying many signatures (the daemon keeps one per
/// key, so the signing hot path does not parse the SPKI again).
///
/// ECDSA and Ed25519 are checked with aws-lc-rs ([`crate::awslc`], several times faster than
/// OpenSSL 3.0, whose per-call provider set-up costs more than the verification), on a key
/// parsed once; an Ed25519 key that ed25519-dalek calls weak (small order) is checked with
/// dalek's strict verification instead. RSA goes through an OpenSSL EVP context; an ECDSA
/// combination aws-lc-rs lacks through OpenSSL's ECDSA primitive on a kept `EC_KEY`.
#[derive(Clone)]
pub struct PublicKeyVerifier {
    key: PKey<Public>,
    spec: KeySpec,
    ec: Option<openssl::ec::EcKey<Public>>,
    ed25519: Option<ed25519_dalek::VerifyingKey>,
    fast: Option<AwsLcVerifier>,
}

impl std::fmt::Debug for PublicKeyVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKeyVerifier")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl PublicKeyVerifier {
    /// Parses a DER SubjectPublicKeyInfo of a kind keyward handles.
    pub fn from_spki(spki_der: &[u8]) -> Result<Self, VerifyError> {
        let key = PKey::public_key_from_der(spki_der)
            .map_err(|_| VerifyError::BadPublicKey("not a DER SubjectPublicKeyInfo".into()))?;
        let spec = key_spec_of(&key)?;
        let ec = key.ec_key().ok();
        let mut fast = None;
        let ed25519 = if spec == KeySpec::Ed25519 {
            let raw = key
                .raw_public_key()
                .map_err(|e| VerifyError::BadPublicKey(e.to_string()))?;
            let bytes: [u8; 32] = raw
                .try_into()
                .map_err(|_| VerifyError::BadPublicKey("an Ed25519 key is 32 bytes".into()))?;
            let dalek = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
                .map_err(|e| VerifyError::BadPublicKey(e.to_string()))?;
            if !dalek.is_weak() {
                fast = AwsLcVerifier::new(spec, &bytes);
            }
            Some(dalek)
        } else {
            if let Some(ec) = &ec {
                let mut ctx =
                    BigNumContext::new().map_err(|e| VerifyError::BadPublicKey(e.to_string()))?;
                let point = ec
                    .public_key()
                    .to_bytes(ec.group(), PointConversionForm::UNCOMPRESSED, &mut ctx)
                    .map_err(|e| VerifyError::BadPublicKey(e.to_string()))?;
                fast = AwsLcVerifier::new(spec, &point);
            }
            None
        };
        Ok(PublicKeyVerifier {
            key,
            spec,
            ec,
            ed25519,
            fast,
        })
    }

    /// The key's spec.
    pub fn spec(&self) -> KeySpec {
        self.spec
    }

    /// Verifies `signature` over `op` (a digest, or the message for Ed25519).
    ///
    /// ECDSA signatures may be in either encoding (`ecdsa_format`); RSA-PSS must use a salt as
    /// long as the hash. When a PSS signature verifies only with another salt length, the
    /// error says so.
    pub fn verify(
        &self,
        op: SignOp<'_>,
        signature: &[u8],
        ecdsa_format: EcdsaFormat,
    ) -> Result<(), VerifyError> {
        let (key, spec, algorithm) = (&self.key, self.spec, op.algorithm());
        if !spec.supports(algorithm) {
            return Err(VerifyError::AlgorithmMismatch { algorithm, spec });
        }
        if let Some(fast) = &self.fast {
            let checked = match (op, ecdsa_format) {
                (SignOp::Prehashed(_), EcdsaFormat::Raw) if algorithm.is_ecdsa() => {
                    let half = spec.ecdsa_field_len().unwrap_or(0);
                    if signature.len() != 2 * half {
                        return Err(VerifyError::Invalid);
                    }
                    let der = ecdsa_raw_to_der(signature).map_err(|_| VerifyError::Invalid)?;
                    fast.verify(op, &der)
                }
                _ => fast.verify(op, signature),
            };
            match checked {
                Some(true) => return Ok(()),
                Some(false) => return Err(VerifyError::Invalid),
                None => {}
            }
        }
        let prehashed = match op {
            SignOp::Ed25519 { message } => return self.verify_ed25519(message, signature),
            SignOp::Prehashed(prehashed) => prehashed,
        };
        let (hash, digest) = (prehashed.hash(), prehashed.digest());
        if algorithm.is_ecdsa() {
            return self.verify_ecdsa(digest, signature, ecdsa_format);
        }
        let md = message_digest(hash);
        let pss = algorithm.is_rsa_pss();
        let result = verify_pkey(key, digest, signature, |ctx| {
            ctx.set_signature_md(md)?;
            if pss {
                ctx.set_rsa_padding(Padding::PKCS1_PSS)?;
                ctx.set_rsa_mgf1_md(md)?;
                ctx.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)?;
            } else {
                ctx.set_rsa_padding(Padding::PKCS1)?;
            }
            Ok(())
        });
        if result.is_err() && pss {
            // Tell a wrong salt length (OpenBao's and local-kms's default is the maximum) apart
            // from a plainly bad signature: it is a configuration problem with a specific fix.
            let auto = verify_pkey(key, digest, signature, |ctx| {
                ctx.set_signature_md(md)?;
                ctx.set_rsa_padding(Padding::PKCS1_PSS)?;
                ctx.set_rsa_mgf1_md(md)?;
                ctx.set_rsa_pss_saltlen(RsaPssSaltlen::custom(-2))
            });
            if auto.is_ok() {
                return Err(VerifyError::WrongPssSaltLength(hash.digest_len()));
            }
        }
        result
    }
}

impl PublicKeyVerifier {
    fn verify_ed25519(&self, message: &[u8], signature: &[u8]) -> Result<(), VerifyError> {
        if let Some(key) = &self.ed25519 {
            let signature = ed25519_dalek::Signature::from_slice(signature)
                .map_err(|_| VerifyError::Invalid)?;
            return key
                .verify_strict(message, &signature)
                .map_err(|_| VerifyError::Invalid);
        }
        let mut verifier =
            Verifier::new_without_digest(&self.key).map_err(|_| VerifyError::Invalid)?;
        match verifier.verify_oneshot(signature, message) {
            Ok(true) => Ok(()),
            _ => Err(VerifyError::Invalid),
        }
    }

    fn verify_ecdsa(
        &self,
        digest: &[u8],
        signature: &[u8],
        format: EcdsaFormat,
    ) -> Result<(), VerifyError> {
        let sig = match format {
            EcdsaFormat::Der => EcdsaSig::from_der(signature).map_err(|_| VerifyError::Invalid)?,
            EcdsaFormat::Raw => {
                let half = self.spec.ecdsa_field_len().unwrap_or(0);
                if signature.len() != 2 * half {
                    return Err(VerifyError::Invalid);
                }
                let (r, s) = signature.split_at(half);
                let r = BigNum::from_slice(r).map_err(|_| VerifyError::Invalid)?;
                let s = BigNum::from_slice(s).map_err(|_| VerifyError::Invalid)?;
                EcdsaSig::from_private_components(r, s).map_err(|_| VerifyError::Invalid)?
            }
        };
        let Some(ec) = &self.ec else {
            return Err(VerifyError::Invalid);
        };
        match sig.verify(digest, ec) {
            Ok(true) => Ok(()),
            _ => Err(VerifyError::Invalid),
        }
    }
}

/// Verifies `signature` over `op` with the public key `spki_der`; see
/// [`PublicKeyVerifier::verify`].
pub fn verify_signature(
    spki_der: &[u8],
    op: SignOp<'_>,
    signature: &[u8],
    ecdsa_format: EcdsaFormat,
) -> Result<(), VerifyError> {
    PublicKeyVerifier::from_spki(spki_der)?.verify(op, signature, ecdsa_format)
}

fn verify_pkey(
    key: &PKey<Public>,
    digest: &[u8],
    signature: &[u8],
    configure: impl FnOnce(&mut PkeyCtx<Public>) -> Result<(), openssl::error::ErrorStack>,
) -> Result<(), VerifyError> {
    let mut ctx = PkeyCtx::new(key).map_err(|_| VerifyError::Invalid)?;
    ctx.verify_init().map_err(|_| VerifyError::Invalid)?;
    configure(&mut ctx).map_err(|_| VerifyError::Invalid)?;
    match ctx.verify(digest, signature) {
        Ok(true) => Ok(()),
        _ => Err(VerifyError::Invalid),
    }
}

/// The OpenSSL digest for a hash.
pub fn message_digest(hash: HashAlgorithm) -> &'static MdRef {
    match hash {
        HashAlgorithm::Sha256 => Md::sha256(),
        HashAlgorithm::Sha384 => Md::sha384(),
        HashAlgorithm::Sha512 => Md::sha512(),
    }
}

#[cfg(test)]
mod tests {
    use openssl::ec::{EcGroup, EcKey};
    use openssl::pkey::Private;
    use openssl::rsa::Rsa;
    use openssl::sign::Signer;

    use super::*;
    use crate::encoding::ecdsa_der_to_raw;

    fn spki(key: &PKey<Private>) -> Vec<u8> {
        key.public_key_to_der().unwrap()
    }

    #[test]
    fn ecdsa_in_both_encodings_and_tampering() {
        let group = EcGroup::from_curve_name(Nid::SECP384R1).unwrap();
        let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
        let verifier = PublicKeyVerifier::from_spki(&spki(&key)).unwrap();
        let digest = [7u8; 48];
        let der = EcdsaSig::sign(&digest, &key.ec_key().unwrap())
            .unwrap()
            .to_der()
            .unwrap();
        let raw = ecdsa_der_to_raw(&der, 48).unwrap();
        let op = SignOp::prehashed(SignatureAlgorithm::EcdsaSha384, &digest).unwrap();
        verifier.verify(op, &der, EcdsaFormat::Der).unwrap();
        verifier.verify(op, &raw, EcdsaFormat::Raw).unwrap();
        let mut bad = raw.clone();
        bad[10] ^= 1;
        assert_eq!(
            verifier.verify(op, &bad, EcdsaFormat::Raw),
            Err(VerifyError::Invalid)
        );
        assert_eq!(
            verifier.verify(op, &raw, EcdsaFormat::Der),
            Err(VerifyError::Invalid)
        );
        let other = [8u8; 48];
        assert_eq!(
            verifier.verify(
                SignOp::prehashed(SignatureAlgorithm::EcdsaSha384, &other).unwrap(),
                &der,
                EcdsaFormat::Der
            ),
            Err(VerifyError::Invalid)
        );
        assert!(matches!(
            verifier.verify(SignOp::ed25519(b"x"), &der, EcdsaFormat::Der),
            Err(VerifyError::AlgorithmMismatch { .. })
        ));
    }

    #[test]
    fn ed25519_and_tampering() {
        let key = PKey::generate_ed25519().unwrap();
        let verifier = PublicKeyVerifier::from_spki(&spki(&key)).unwrap();
        let signature = Signer::new_without_digest(&key)
            .unwrap()
            .sign_oneshot_to_vec(b"message")
            .unwrap();
        verifier
            .verify(SignOp::ed25519(b"message"), &signature, EcdsaFormat::Der)
            .unwrap();
        assert_eq!(
            verifier.verify(SignOp::ed25519(b"massage"), &signature, EcdsaFormat::Der),
            Err(VerifyError::Invalid)
        );
        let ecdsa = SignOp::prehashed(SignatureAlgorithm::EcdsaSha256, &[0; 32]).unwrap();
        assert!(matches!(
            verifier.verify(ecdsa, &signature, EcdsaFormat::Der),
            Err(VerifyError::AlgorithmMismatch { .. })
        ));
    }

    #[test]
    fn rsa_pss_salt_length_is_named() {
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let verifier = PublicKeyVerifier::from_spki(&spki(&key)).unwrap();
        let digest = [9u8; 32];
        let sign = |salt: RsaPssSaltlen| {
            let mut ctx = PkeyCtx::new(&key).unwrap();
            ctx.sign_init().unwrap();
            ctx.set_signature_md(Md::sha256()).unwrap();
            ctx.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
            ctx.set_rsa_mgf1_md(Md::sha256()).unwrap();
            ctx.set_rsa_pss_saltlen(salt).unwrap();
            let mut out = Vec::new();
            ctx.sign_to_vec(&digest, &mut out).unwrap();
            out
        };
        let op = SignOp::prehashed(SignatureAlgorithm::RsaPssSha256, &digest).unwrap();
        verifier
            .verify(op, &sign(RsaPssSaltlen::DIGEST_LENGTH), EcdsaFormat::Der)
            .unwrap();
        assert_eq!(
            verifier.verify(op, &sign(RsaPssSaltlen::MAXIMUM_LENGTH), EcdsaFormat::Der),
            Err(VerifyError::WrongPssSaltLength(32))
        );
        let mut bad = sign(RsaPssSaltlen::DIGEST_LENGTH);
        bad[0] ^= 0x40;
        assert_eq!(
            verifier.verify(op, &bad, EcdsaFormat::Der),
            Err(VerifyError::Invalid)
        );
    }
}
