//! Which PKCS#11 mechanism signs with each keyward algorithm, and the templates that generate
//! each key spec.
//!
//! - ECDSA: `CKM_ECDSA` over the digest the daemon computed; the token returns raw `r || s`.
//! - RSA PKCS#1 v1.5: `CKM_RSA_PKCS` over the DER DigestInfo of the digest.
//! - RSA-PSS: `CKM_RSA_PKCS_PSS` over the digest, MGF1 with the same hash, salt = hash length.
//! - Ed25519: `CKM_EDDSA` (pure) over the message.

use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::Attribute;
use keyward_plugin_api::{EcdsaFormat, HashAlgorithm, KeySpec, SignOp, SignatureAlgorithm};

use crate::keys::{OID_ED25519, OID_P256, OID_P384, OID_P521};

/// The DER DigestInfo prefix of each hash: the digest follows it.
fn digest_info_prefix(hash: HashAlgorithm) -> &'static [u8] {
    match hash {
        HashAlgorithm::Sha256 => &[
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x01, 0x05, 0x00, 0x04, 0x20,
        ],
        HashAlgorithm::Sha384 => &[
            0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x02, 0x05, 0x00, 0x04, 0x30,
        ],
        HashAlgorithm::Sha512 => &[
            0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x03, 0x05, 0x00, 0x04, 0x40,
        ],
    }
}

/// The mechanism type a signature algorithm needs, to check against the token's list.
pub(crate) fn sign_mechanism_type(algorithm: SignatureAlgorithm) -> MechanismType {
    if algorithm.is_ecdsa() {
        MechanismType::ECDSA
    } else if algorithm.is_rsa_pss() {
        MechanismType::RSA_PKCS_PSS
    } else if algorithm == SignatureAlgorithm::Ed25519 {
        MechanismType::EDDSA
    } else {
        MechanismType::RSA_PKCS
    }
}

/// What to pass to `C_Sign`: the mechanism, the data, and how an ECDSA result is encoded.
#[derive(Debug)]
pub(crate) struct SignCall {
    /// The mechanism with its parameters.
    pub mechanism: Mechanism<'static>,
    /// The bytes the token signs.
    pub data: Vec<u8>,
    /// The encoding of the result for ECDSA (always raw from `CKM_ECDSA`).
    pub ecdsa_format: EcdsaFormat,
}

/// The call that signs `op` (a digest, or the message for Ed25519).
pub(crate) fn sign_call(op: SignOp<'_>) -> SignCall {
    let prehashed = match op {
        SignOp::Ed25519 { message } => {
            return SignCall {
                mechanism: Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
                data: message.to_vec(),
                ecdsa_format: EcdsaFormat::Raw,
            };
        }
        SignOp::Prehashed(prehashed) => prehashed,
    };
    let (algorithm, hash, input) = (prehashed.algorithm(), prehashed.hash(), prehashed.digest());
    let (mechanism, data) = match hash {
        _ if algorithm.is_ecdsa() => (Mechanism::Ecdsa, input.to_vec()),
        hash if algorithm.is_rsa_pss() => {
            let (hash_alg, mgf) = match hash {
                HashAlgorithm::Sha256 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
                HashAlgorithm::Sha384 => (MechanismType::SHA384, PkcsMgfType::MGF1_SHA384),
                HashAlgorithm::Sha512 => (MechanismType::SHA512, PkcsMgfType::MGF1_SHA512),
            };
            let params = PkcsPssParams {
                hash_alg,
                mgf,
                s_len: (hash.digest_len() as u64).into(),
            };
            (Mechanism::RsaPkcsPss(params), input.to_vec())
        }
        hash => {
            let mut data = digest_info_prefix(hash).to_vec();
            data.extend_from_slice(input);
            (Mechanism::RsaPkcs, data)
        }
    };
    SignCall {
        mechanism,
        data,
        ecdsa_format: EcdsaFormat::Raw,
    }
}

/// How to generate a key pair of one spec.
#[derive(Debug)]
pub(crate) struct KeyGen {
    /// The generation mechanism.
    pub mechanism: Mechanism<'static>,
    /// Attributes of the public key template that depend on the spec.
    pub public: Vec<Attribute>,
    /// For Ed25519: another `CKA_EC_PARAMS` to try if the token refuses the OID (older tokens
    /// know the curve only by its name).
    pub alternative_params: Option<Vec<u8>>,
}

/// The generation recipe for `spec`.
pub(crate) fn key_gen(spec: KeySpec) -> KeyGen {
    let ec = |oid: &[u8]| KeyGen {
        mechanism: Mechanism::EccKeyPairGen,
        public: vec![Attribute::EcParams(oid.to_vec())],
        alternative_params: None,
    };
    match spec {
        KeySpec::EcP256 => ec(OID_P256),
        KeySpec::EcP384 => ec(OID_P384),
        KeySpec::EcP521 => ec(OID_P521),
        KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => KeyGen {
            mechanism: Mechanism::RsaPkcsKeyPairGen,
            public: vec![
                Attribute::ModulusBits(u64::from(spec.rsa_bits().unwrap_or(2048)).into()),
                Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
            ],
            alternative_params: None,
        },
        KeySpec::Ed25519 => KeyGen {
            mechanism: Mechanism::EccEdwardsKeyPairGen,
            public: vec![Attribute::EcParams(OID_ED25519.to_vec())],
            alternative_params: Some(crate::keys::NAME_ED25519.to_vec()),
        },
    }
}

/// The mechanism type that generates `spec`.
pub(crate) fn gen_mechanism_type(spec: KeySpec) -> MechanismType {
    match spec {
        KeySpec::EcP256 | KeySpec::EcP384 | KeySpec::EcP521 => MechanismType::ECC_KEY_PAIR_GEN,
        KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
            MechanismType::RSA_PKCS_KEY_PAIR_GEN
        }
        KeySpec::Ed25519 => MechanismType::ECC_EDWARDS_KEY_PAIR_GEN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_info_is_prefix_plus_digest() {
        let digest = [0xabu8; 48];
        let call =
            sign_call(SignOp::prehashed(SignatureAlgorithm::RsaPkcs1Sha384, &digest).unwrap());
        assert!(matches!(call.mechanism, Mechanism::RsaPkcs));
        assert_eq!(call.data.len(), 19 + 48);
        assert_eq!(call.data[1] as usize, call.data.len() - 2);
        assert!(call.data.ends_with(&digest));
    }

    #[test]
    fn mechanisms_by_algorithm() {
        for alg in [
            SignatureAlgorithm::EcdsaSha256,
            SignatureAlgorithm::RsaPssSha512,
            SignatureAlgorithm::Ed25519,
            SignatureAlgorithm::RsaPkcs1Sha256,
        ] {
            let data = [0u8; 64];
            let op = match alg.hash() {
                Some(hash) => SignOp::prehashed(alg, &data[..hash.digest_len()]).unwrap(),
                None => SignOp::ed25519(&data),
            };
            let call = sign_call(op);
            assert_eq!(call.mechanism.mechanism_type(), sign_mechanism_type(alg));
        }
        let op = SignOp::prehashed(SignatureAlgorithm::RsaPssSha384, &[0u8; 48]).unwrap();
        match sign_call(op).mechanism {
            Mechanism::RsaPkcsPss(p) => {
                assert_eq!(u64::from(p.s_len), 48);
                assert_eq!(p.hash_alg, MechanismType::SHA384);
            }
            other => panic!("{other:?}"),
        }
        for spec in KeySpec::ALL {
            assert_eq!(
                key_gen(spec).mechanism.mechanism_type(),
                gen_mechanism_type(spec)
            );
        }
    }
}
