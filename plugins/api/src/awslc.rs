//! ECDSA and Ed25519 on aws-lc-rs, for keys held in this process and for checking signatures.
//!
//! Measured against the OpenSSL 3.0 path it replaces (BENCHMARKS.md, "What changed for #17"):
//! aws-lc-rs signs and verifies P-256 and Ed25519 several times faster, mostly because
//! OpenSSL 3 sets up provider contexts and locks on every call. OpenSSL still reads the key
//! files (encrypted PKCS#8 included) and does RSA; a key reaches aws-lc-rs as plain PKCS#8 DER
//! in memory, zeroized as soon as aws-lc-rs has parsed it.
//!
//! Only the combinations aws-lc-rs offers are here (it signs P-256 with SHA-256 only, P-384
//! with SHA-384 only); every other one returns `None` and the caller takes the OpenSSL path.

use aws_lc_rs::digest::{self, Digest};
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, ParsedPublicKey};
use openssl::pkey::{PKey, Private};
use zeroize::Zeroizing;

use crate::{HashAlgorithm, KeySpec, SignOp};

/// A private key as aws-lc-rs key pairs: one per hash it can sign with.
pub struct AwsLcSigner {
    inner: Signer,
}

enum Signer {
    /// Indexed by [`hash_index`]; `None` where aws-lc-rs has no signing algorithm.
    Ecdsa([Option<EcdsaKeyPair>; 3]),
    Ed25519(Ed25519KeyPair),
}

impl std::fmt::Debug for AwsLcSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AwsLcSigner(<redacted>)")
    }
}

fn hash_index(hash: HashAlgorithm) -> usize {
    match hash {
        HashAlgorithm::Sha256 => 0,
        HashAlgorithm::Sha384 => 1,
        HashAlgorithm::Sha512 => 2,
    }
}

fn digest_algorithm(hash: HashAlgorithm) -> &'static digest::Algorithm {
    match hash {
        HashAlgorithm::Sha256 => &digest::SHA256,
        HashAlgorithm::Sha384 => &digest::SHA384,
        HashAlgorithm::Sha512 => &digest::SHA512,
    }
}

const HASHES: [HashAlgorithm; 3] = [
    HashAlgorithm::Sha256,
    HashAlgorithm::Sha384,
    HashAlgorithm::Sha512,
];

fn signing_algorithm(
    spec: KeySpec,
    hash: HashAlgorithm,
) -> Option<&'static signature::EcdsaSigningAlgorithm> {
    use HashAlgorithm::*;
    Some(match (spec, hash) {
        (KeySpec::EcP256, Sha256) => &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        (KeySpec::EcP384, Sha384) => &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
        (KeySpec::EcP521, Sha256) => &signature::ECDSA_P521_SHA256_ASN1_SIGNING,
        (KeySpec::EcP521, Sha384) => &signature::ECDSA_P521_SHA384_ASN1_SIGNING,
        (KeySpec::EcP521, Sha512) => &signature::ECDSA_P521_SHA512_ASN1_SIGNING,
        _ => return None,
    })
}

fn verification_algorithm(
    spec: KeySpec,
    hash: HashAlgorithm,
) -> Option<&'static signature::EcdsaVerificationAlgorithm> {
    use HashAlgorithm::*;
    Some(match (spec, hash) {
        (KeySpec::EcP256, Sha256) => &signature::ECDSA_P256_SHA256_ASN1,
        (KeySpec::EcP256, Sha384) => &signature::ECDSA_P256_SHA384_ASN1,
        (KeySpec::EcP256, Sha512) => &signature::ECDSA_P256_SHA512_ASN1,
        (KeySpec::EcP384, Sha256) => &signature::ECDSA_P384_SHA256_ASN1,
        (KeySpec::EcP384, Sha384) => &signature::ECDSA_P384_SHA384_ASN1,
        (KeySpec::EcP384, Sha512) => &signature::ECDSA_P384_SHA512_ASN1,
        (KeySpec::EcP521, Sha256) => &signature::ECDSA_P521_SHA256_ASN1,
        (KeySpec::EcP521, Sha384) => &signature::ECDSA_P521_SHA384_ASN1,
        (KeySpec::EcP521, Sha512) => &signature::ECDSA_P521_SHA512_ASN1,
        _ => return None,
    })
}

impl AwsLcSigner {
    /// The key `private` (of `spec`, already read and decrypted by OpenSSL) as aws-lc-rs key
    /// pairs; `None` for RSA, or when aws-lc-rs does not take the key (then OpenSSL signs).
    pub fn from_pkey(spec: KeySpec, private: &PKey<Private>) -> Option<AwsLcSigner> {
        let pkcs8 = Zeroizing::new(private.private_key_to_pkcs8().ok()?);
        let inner = match spec {
            KeySpec::EcP256 | KeySpec::EcP384 | KeySpec::EcP521 => {
                let pair = |hash| {
                    signing_algorithm(spec, hash)
                        .and_then(|alg| EcdsaKeyPair::from_pkcs8(alg, &pkcs8).ok())
                };
                let pairs = HASHES.map(pair);
                if pairs.iter().all(Option::is_none) {
                    return None;
                }
                Signer::Ecdsa(pairs)
            }
            KeySpec::Ed25519 => {
                Signer::Ed25519(Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8).ok()?)
            }
            _ => return None,
        };
        // The public key must be the one OpenSSL reads from the file.
        let public = private.public_key_to_der().ok()?;
        let ours = match &inner {
            Signer::Ecdsa(pairs) => pairs
                .iter()
                .flatten()
                .next()?
                .public_key()
                .as_ref()
                .to_vec(),
            Signer::Ed25519(pair) => pair.public_key().as_ref().to_vec(),
        };
        if !public.ends_with(&ours) {
            return None;
        }
        Some(AwsLcSigner { inner })
    }

    /// Signs `op` (ECDSA comes out DER-encoded); `None` when aws-lc-rs has no algorithm for it
    /// (OpenSSL signs then), `Some(Err(..))` when signing failed.
    pub fn sign(&self, op: SignOp<'_>) -> Option<Result<Vec<u8>, String>> {
        let failed = |_| format!("{} signing failed (aws-lc)", op.algorithm());
        match (&self.inner, op) {
            (Signer::Ed25519(pair), SignOp::Ed25519 { message }) => {
                Some(Ok(pair.sign(message).as_ref().to_vec()))
            }
            (Signer::Ecdsa(pairs), SignOp::Prehashed(prehashed)) if op.algorithm().is_ecdsa() => {
                let pair = pairs[hash_index(prehashed.hash())].as_ref()?;
                let digest = Digest::import_less_safe(
                    prehashed.digest(),
                    digest_algorithm(prehashed.hash()),
                );
                Some(
                    digest
                        .and_then(|digest| pair.sign_digest(&digest))
                        .map(|signature| signature.as_ref().to_vec())
                        .map_err(failed),
                )
            }
            _ => None,
        }
    }
}

/// A public key parsed by aws-lc-rs for verifying: an EC key per hash, or an Ed25519 key.
#[derive(Clone)]
pub struct AwsLcVerifier {
    inner: Verifier,
}

#[derive(Clone)]
enum Verifier {
    Ecdsa([Option<ParsedPublicKey>; 3]),
    Ed25519(ParsedPublicKey),
}

impl std::fmt::Debug for AwsLcVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AwsLcVerifier")
    }
}

impl AwsLcVerifier {
    /// `public` is the uncompressed EC point (`04 || X || Y`) of an EC key of `spec`, or the 32
    /// bytes of an Ed25519 key; `None` for RSA or a key aws-lc-rs refuses.
    pub fn new(spec: KeySpec, public: &[u8]) -> Option<AwsLcVerifier> {
        let inner = match spec {
            KeySpec::EcP256 | KeySpec::EcP384 | KeySpec::EcP521 => {
                let parsed = HASHES.map(|hash| {
                    verification_algorithm(spec, hash)
                        .and_then(|alg| ParsedPublicKey::new(alg, public).ok())
                });
                if parsed.iter().any(Option::is_none) {
                    return None;
                }
                Verifier::Ecdsa(parsed)
            }
            KeySpec::Ed25519 => {
                Verifier::Ed25519(ParsedPublicKey::new(&signature::ED25519, public).ok()?)
            }
            _ => return None,
        };
        Some(AwsLcVerifier { inner })
    }

    /// Whether `signature` (DER for ECDSA) is a valid signature over `op`; `None` when this key
    /// cannot check `op` (an algorithm of another key type).
    pub fn verify(&self, op: SignOp<'_>, signature: &[u8]) -> Option<bool> {
        match (&self.inner, op) {
            (Verifier::Ed25519(key), SignOp::Ed25519 { message }) => {
                Some(key.verify_sig(message, signature).is_ok())
            }
            (Verifier::Ecdsa(keys), SignOp::Prehashed(prehashed)) if op.algorithm().is_ecdsa() => {
                let key = keys[hash_index(prehashed.hash())].as_ref()?;
                let digest = Digest::import_less_safe(
                    prehashed.digest(),
                    digest_algorithm(prehashed.hash()),
                )
                .ok()?;
                Some(key.verify_digest_sig(&digest, signature).is_ok())
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use openssl::ec::{EcGroup, EcKey};
    use openssl::ecdsa::EcdsaSig;
    use openssl::nid::Nid;
    use openssl::sign::Verifier as OpenSslVerifier;

    use super::*;
    use crate::SignatureAlgorithm;

    fn ec_key(nid: Nid) -> PKey<Private> {
        PKey::from_ec_key(EcKey::generate(&EcGroup::from_curve_name(nid).unwrap()).unwrap())
            .unwrap()
    }

    #[test]
    fn ecdsa_signatures_verify_with_openssl_and_unsupported_pairs_fall_back() {
        for (spec, nid, algorithm, len) in [
            (
                KeySpec::EcP256,
                Nid::X9_62_PRIME256V1,
                SignatureAlgorithm::EcdsaSha256,
                32,
            ),
            (
                KeySpec::EcP384,
                Nid::SECP384R1,
                SignatureAlgorithm::EcdsaSha384,
                48,
            ),
            (
                KeySpec::EcP521,
                Nid::SECP521R1,
                SignatureAlgorithm::EcdsaSha512,
                64,
            ),
        ] {
            let key = ec_key(nid);
            let signer = AwsLcSigner::from_pkey(spec, &key).expect("aws-lc takes the key");
            let digest = vec![3u8; len];
            let op = SignOp::prehashed(algorithm, &digest).unwrap();
            let der = signer.sign(op).expect("supported").expect("signed");
            // OpenSSL, an independent implementation, accepts it.
            let sig = EcdsaSig::from_der(&der).unwrap();
            assert!(
                sig.verify(&digest, &key.ec_key().unwrap()).unwrap(),
                "{spec}"
            );
            // And so does the aws-lc verifier, but not for another digest.
            let mut ctx = openssl::bn::BigNumContext::new().unwrap();
            let ec = key.ec_key().unwrap();
            let point = ec
                .public_key()
                .to_bytes(
                    ec.group(),
                    openssl::ec::PointConversionForm::UNCOMPRESSED,
                    &mut ctx,
                )
                .unwrap();
            let verifier = AwsLcVerifier::new(spec, &point).unwrap();
            assert_eq!(verifier.verify(op, &der), Some(true));
            let other = vec![4u8; len];
            let other = SignOp::prehashed(algorithm, &other).unwrap();
            assert_eq!(verifier.verify(other, &der), Some(false));
        }
        // aws-lc-rs signs P-256 with SHA-256 only: SHA-384 is left to OpenSSL.
        let signer =
            AwsLcSigner::from_pkey(KeySpec::EcP256, &ec_key(Nid::X9_62_PRIME256V1)).unwrap();
        let digest = [1u8; 48];
        let op = SignOp::prehashed(SignatureAlgorithm::EcdsaSha384, &digest).unwrap();
        assert!(signer.sign(op).is_none());
    }

    #[test]
    fn ed25519_signatures_verify_with_openssl() {
        let key = PKey::generate_ed25519().unwrap();
        let signer = AwsLcSigner::from_pkey(KeySpec::Ed25519, &key).unwrap();
        let signature = signer
            .sign(SignOp::ed25519(b"message"))
            .expect("supported")
            .expect("signed");
        let mut check = OpenSslVerifier::new_without_digest(&key).unwrap();
        assert!(check.verify_oneshot(&signature, b"message").unwrap());
        let verifier =
            AwsLcVerifier::new(KeySpec::Ed25519, &key.raw_public_key().unwrap()).unwrap();
        assert_eq!(
            verifier.verify(SignOp::ed25519(b"message"), &signature),
            Some(true)
        );
        assert_eq!(
            verifier.verify(SignOp::ed25519(b"massage"), &signature),
            Some(false)
        );
        // RSA is not aws-lc's here.
        let rsa = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
        assert!(AwsLcSigner::from_pkey(KeySpec::Rsa2048, &rsa).is_none());
    }
}
