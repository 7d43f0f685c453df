//! PSA key attributes, algorithms and public keys in keyward's terms.

use keyward_plugin_api::{BackendError, HashAlgorithm, KeySpec, SignatureAlgorithm};
use openssl::bn::BigNumContext;
use openssl::ec::{EcGroup, EcKey, EcPoint};
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use parsec_client::core::interface::operations::psa_algorithm::{
    Algorithm, AsymmetricSignature, Hash, SignHash,
};
use parsec_client::core::interface::operations::psa_key_attributes::{
    Attributes, EccFamily, Lifetime, Policy, Type, UsageFlags,
};
use parsec_client::core::interface::requests::ProviderId;

/// The spec of a key, from its PSA attributes; `None` for what keyward does not sign with.
pub(crate) fn spec_of(attributes: &Attributes) -> Option<KeySpec> {
    match (attributes.key_type, attributes.bits) {
        (
            Type::EccKeyPair {
                curve_family: EccFamily::SecpR1,
            },
            256,
        ) => Some(KeySpec::EcP256),
        (
            Type::EccKeyPair {
                curve_family: EccFamily::SecpR1,
            },
            384,
        ) => Some(KeySpec::EcP384),
        (
            Type::EccKeyPair {
                curve_family: EccFamily::SecpR1,
            },
            521,
        ) => Some(KeySpec::EcP521),
        (Type::RsaKeyPair, 2048) => Some(KeySpec::Rsa2048),
        (Type::RsaKeyPair, 3072) => Some(KeySpec::Rsa3072),
        (Type::RsaKeyPair, 4096) => Some(KeySpec::Rsa4096),
        _ => None,
    }
}

fn psa_hash(hash: HashAlgorithm) -> Hash {
    match hash {
        HashAlgorithm::Sha256 => Hash::Sha256,
        HashAlgorithm::Sha384 => Hash::Sha384,
        HashAlgorithm::Sha512 => Hash::Sha512,
    }
}

/// The PSA algorithm of a keyward algorithm (`None` for Ed25519, which PSA 1.0 lacks).
pub(crate) fn to_psa(algorithm: SignatureAlgorithm) -> Option<AsymmetricSignature> {
    let hash_alg = SignHash::Specific(psa_hash(algorithm.hash()?));
    Some(if algorithm.is_ecdsa() {
        AsymmetricSignature::Ecdsa { hash_alg }
    } else if algorithm.is_rsa_pss() {
        AsymmetricSignature::RsaPss { hash_alg }
    } else {
        AsymmetricSignature::RsaPkcs1v15Sign { hash_alg }
    })
}

/// Whether `provider` can sign with `algorithm` at all. Parsec 1.5 signs RSA-PSS with neither
/// its TPM provider (which signs ECDSA and RSA PKCS#1 v1.5 only) nor its PKCS#11 provider
/// (which wraps every RSA hash in a PKCS#1 DigestInfo and so refuses PSS with
/// PsaErrorNotSupported), whatever a key's policy permits.
pub(crate) fn provider_signs(provider: ProviderId, algorithm: SignatureAlgorithm) -> bool {
    !(matches!(provider, ProviderId::Tpm | ProviderId::Pkcs11) && algorithm.is_rsa_pss())
}

/// The algorithms a key signs with: those of its spec its PSA policy permits (and its provider
/// can do), the spec's default first when it is among them. An error says why a key cannot
/// sign through keyward.
pub(crate) fn algorithms_of(
    spec: KeySpec,
    attributes: &Attributes,
    provider: ProviderId,
) -> Result<Vec<SignatureAlgorithm>, String> {
    if !attributes.policy.usage_flags.sign_hash() {
        return Err("its policy does not allow sign_hash".into());
    }
    let allowed: Vec<SignatureAlgorithm> = spec
        .algorithms()
        .iter()
        .copied()
        .filter(|a| {
            to_psa(*a)
                .is_some_and(|psa| attributes.is_alg_permitted(Algorithm::AsymmetricSignature(psa)))
                && provider_signs(provider, *a)
        })
        .collect();
    if allowed.is_empty() {
        return Err(format!(
            "its policy permits {:?}, none of the algorithms keyward signs with",
            attributes.policy.permitted_algorithms
        ));
    }
    Ok(allowed)
}

/// The SubjectPublicKeyInfo (DER) of a key from what PSA export gives: the uncompressed point
/// for ECC, an RSAPublicKey (PKCS#1 DER) for RSA.
pub(crate) fn spki(spec: KeySpec, exported: &[u8]) -> Result<Vec<u8>, String> {
    let result = if spec.ecdsa_field_len().is_some() {
        let nid = match spec {
            KeySpec::EcP256 => Nid::X9_62_PRIME256V1,
            KeySpec::EcP384 => Nid::SECP384R1,
            _ => Nid::SECP521R1,
        };
        (|| {
            let group = EcGroup::from_curve_name(nid)?;
            let mut ctx = BigNumContext::new()?;
            let point = EcPoint::from_bytes(&group, exported, &mut ctx)?;
            let key = EcKey::from_public_key(&group, &point)?;
            key.check_key()?;
            PKey::from_ec_key(key)?.public_key_to_der()
        })()
    } else {
        (|| PKey::from_rsa(Rsa::public_key_from_der_pkcs1(exported)?)?.public_key_to_der())()
    };
    result.map_err(|e| format!("the exported public key does not parse as {spec} ({e})"))
}

/// The attributes of a new key: persistent, usable to sign (and verify) hashes, with a policy
/// that permits `algorithm` when given, else: ECDSA with any hash (the spec's default hash on
/// the TPM provider, which takes one hash per key); RSA-PSS with the default hash where the
/// provider signs PSS, else RSA PKCS#1 v1.5 (with any hash, or the default one on the TPM
/// provider).
pub(crate) fn new_key_attributes(
    spec: KeySpec,
    provider: ProviderId,
    algorithm: Option<SignatureAlgorithm>,
) -> Result<Attributes, BackendError> {
    let (key_type, bits) = match spec {
        KeySpec::EcP256 => (ecc(), 256),
        KeySpec::EcP384 => (ecc(), 384),
        KeySpec::EcP521 => (ecc(), 521),
        KeySpec::Rsa2048 => (Type::RsaKeyPair, 2048),
        KeySpec::Rsa3072 => (Type::RsaKeyPair, 3072),
        KeySpec::Rsa4096 => (Type::RsaKeyPair, 4096),
        KeySpec::Ed25519 => {
            return Err(BackendError::Unsupported(
                "Parsec (PSA Crypto 1.0) has no Ed25519 keys; use ec-p256 or rsa-2048".into(),
            ));
        }
    };
    let permitted = match algorithm {
        Some(algorithm) => {
            if !spec.supports(algorithm) {
                return Err(BackendError::InvalidInput(format!(
                    "option algorithm={algorithm}: a {spec} key cannot sign with it"
                )));
            }
            if !provider_signs(provider, algorithm) {
                return Err(BackendError::Unsupported(format!(
                    "option algorithm={algorithm}: Parsec's {} provider does not sign with RSA-PSS; use rsa-pkcs1-*",
                    crate::settings::provider_name(provider)
                )));
            }
            to_psa(algorithm)
                .ok_or_else(|| BackendError::Unsupported(format!("Parsec has no {algorithm}")))?
        }
        None => {
            let default = spec.default_algorithm();
            let hash = psa_hash(default.hash().unwrap_or(HashAlgorithm::Sha256));
            // The TPM provider makes a TPM key whose scheme names the hash: one hash per key.
            // PKCS#11 fixes the hash of PSS in the mechanism: a PSS policy needs one.
            let one_hash = provider == ProviderId::Tpm;
            let hash_alg = if one_hash || (!default.is_ecdsa() && provider_signs(provider, default))
            {
                SignHash::Specific(hash)
            } else {
                SignHash::Any
            };
            if default.is_ecdsa() {
                AsymmetricSignature::Ecdsa { hash_alg }
            } else if provider_signs(provider, default) {
                AsymmetricSignature::RsaPss { hash_alg }
            } else {
                AsymmetricSignature::RsaPkcs1v15Sign { hash_alg }
            }
        }
    };
    let mut usage_flags = UsageFlags::default();
    usage_flags.set_sign_hash().set_verify_hash();
    Ok(Attributes {
        lifetime: Lifetime::Persistent,
        key_type,
        bits,
        policy: Policy {
            usage_flags,
            permitted_algorithms: Algorithm::AsymmetricSignature(permitted),
        },
    })
}

fn ecc() -> Type {
    Type::EccKeyPair {
        curve_family: EccFamily::SecpR1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_become_algorithm_lists() {
        use SignatureAlgorithm::*;
        let tpm_rsa = new_key_attributes(KeySpec::Rsa2048, ProviderId::Tpm, None).unwrap();
        assert_eq!(spec_of(&tpm_rsa), Some(KeySpec::Rsa2048));
        assert_eq!(
            algorithms_of(KeySpec::Rsa2048, &tpm_rsa, ProviderId::Tpm).unwrap(),
            vec![RsaPkcs1Sha256]
        );
        let p11_rsa = new_key_attributes(KeySpec::Rsa3072, ProviderId::Pkcs11, None).unwrap();
        assert_eq!(
            algorithms_of(KeySpec::Rsa3072, &p11_rsa, ProviderId::Pkcs11).unwrap(),
            vec![RsaPkcs1Sha256, RsaPkcs1Sha384, RsaPkcs1Sha512]
        );
        let mbed_rsa = new_key_attributes(KeySpec::Rsa3072, ProviderId::MbedCrypto, None).unwrap();
        assert_eq!(
            algorithms_of(KeySpec::Rsa3072, &mbed_rsa, ProviderId::MbedCrypto).unwrap(),
            vec![RsaPssSha384]
        );
        assert!(
            new_key_attributes(KeySpec::Rsa2048, ProviderId::Pkcs11, Some(RsaPssSha256)).is_err()
        );
        let p11_ec = new_key_attributes(KeySpec::EcP384, ProviderId::Pkcs11, None).unwrap();
        assert_eq!(
            algorithms_of(KeySpec::EcP384, &p11_ec, ProviderId::Pkcs11).unwrap(),
            KeySpec::EcP384.algorithms()
        );
        let tpm_ec = new_key_attributes(KeySpec::EcP384, ProviderId::Tpm, None).unwrap();
        assert_eq!(
            algorithms_of(KeySpec::EcP384, &tpm_ec, ProviderId::Tpm).unwrap(),
            vec![EcdsaSha384]
        );
        let chosen =
            new_key_attributes(KeySpec::Rsa2048, ProviderId::Pkcs11, Some(RsaPkcs1Sha512)).unwrap();
        assert_eq!(
            algorithms_of(KeySpec::Rsa2048, &chosen, ProviderId::Pkcs11).unwrap(),
            vec![RsaPkcs1Sha512]
        );
        assert!(new_key_attributes(KeySpec::Rsa2048, ProviderId::Tpm, Some(RsaPssSha256)).is_err());
        assert!(new_key_attributes(KeySpec::EcP256, ProviderId::Tpm, Some(RsaPssSha256)).is_err());
        assert!(new_key_attributes(KeySpec::Ed25519, ProviderId::Tpm, None).is_err());
    }

    #[test]
    fn public_keys_become_spki() {
        let key =
            EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap();
        let mut ctx = BigNumContext::new().unwrap();
        let point = key
            .public_key()
            .to_bytes(
                key.group(),
                openssl::ec::PointConversionForm::UNCOMPRESSED,
                &mut ctx,
            )
            .unwrap();
        let der = spki(KeySpec::EcP256, &point).unwrap();
        assert_eq!(
            der,
            PKey::from_ec_key(key).unwrap().public_key_to_der().unwrap()
        );
        let rsa = Rsa::generate(2048).unwrap();
        let der = spki(KeySpec::Rsa2048, &rsa.public_key_to_der_pkcs1().unwrap()).unwrap();
        assert_eq!(
            der,
            PKey::from_rsa(rsa).unwrap().public_key_to_der().unwrap()
        );
        assert!(spki(KeySpec::EcP256, b"\x04garbage").is_err());
    }
}
