//! The TPM side of keys: the storage root key's template, the templates of keys keyward
//! creates, a public area turned into a SubjectPublicKeyInfo, and a [`Prehashed`] operation
//! turned into a TPM2_Sign scheme and back into signature bytes.

use keyward_plugin_api::{
    BackendError, EcdsaFormat, HashAlgorithm, KeySpec, Prehashed, SignatureAlgorithm,
};
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use tss_esapi::attributes::{ObjectAttributes, ObjectAttributesBuilder};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::structures::{
    EccParameter, EccPoint, EccScheme, HashScheme, KeyDerivationFunctionScheme, Public,
    PublicBuilder, PublicEccParametersBuilder, PublicKeyRsa, PublicRsaParametersBuilder,
    RsaExponent, RsaScheme, Signature as TpmSignature, SignatureScheme, SymmetricDefinitionObject,
};

/// The storage root key of the owner hierarchy, as the TCG "TPM v2.0 Provisioning Guidance"
/// (7.5.1) defines it: ECC NIST P-256 with AES-128-CFB, restricted decryption, `noDA`, an
/// empty auth value and a zeroed unique field. The same template on the same TPM always yields
/// the same key, so it is created on demand and never stored.
pub(crate) fn storage_root_template() -> Result<Public, BackendError> {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_no_da(true)
        .with_restricted(true)
        .with_decrypt(true)
        .build()
        .map_err(internal)?;
    let parameters = PublicEccParametersBuilder::new_restricted_decryption_key(
        SymmetricDefinitionObject::AES_128_CFB,
        EccCurve::NistP256,
    )
    .build()
    .map_err(internal)?;
    let zero = EccParameter::try_from(vec![0u8; 32]).map_err(internal)?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_ecc_parameters(parameters)
        .with_ecc_unique_identifier(EccPoint::new(zero.clone(), zero))
        .build()
        .map_err(internal)
}

/// The template of a signing key keyward creates: generated inside the TPM, never duplicable
/// (`fixedTPM`, `fixedParent`), usable with its auth value (`userWithAuth`), signing only, no
/// fixed scheme (each TPM2_Sign names its own: ECDSA with any hash, RSASSA or RSA-PSS). A key
/// without a PIN is `noDA`: there is nothing to guess, so its use never counts toward the
/// TPM's dictionary-attack lockout.
pub(crate) fn key_template(spec: KeySpec, has_pin: bool) -> Result<Public, BackendError> {
    let attributes = signing_attributes(has_pin)?;
    let builder = PublicBuilder::new()
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes);
    let builder = match spec {
        KeySpec::EcP256 | KeySpec::EcP384 => {
            let curve = if spec == KeySpec::EcP256 {
                EccCurve::NistP256
            } else {
                EccCurve::NistP384
            };
            let parameters = ecc_signing_parameters(curve)?;
            builder
                .with_public_algorithm(PublicAlgorithm::Ecc)
                .with_ecc_parameters(parameters)
                .with_ecc_unique_identifier(EccPoint::default())
        }
        KeySpec::Rsa2048 | KeySpec::Rsa3072 => {
            let bits = if spec == KeySpec::Rsa2048 {
                RsaKeyBits::Rsa2048
            } else {
                RsaKeyBits::Rsa3072
            };
            let parameters = PublicRsaParametersBuilder::new_unrestricted_signing_key(
                RsaScheme::Null,
                bits,
                RsaExponent::default(),
            )
            .build()
            .map_err(internal)?;
            builder
                .with_public_algorithm(PublicAlgorithm::Rsa)
                .with_rsa_parameters(parameters)
                .with_rsa_unique_identifier(PublicKeyRsa::default())
        }
        other => {
            return Err(BackendError::Unsupported(format!(
                "the tpm backend creates ec-p256, ec-p384, rsa-2048 and rsa-3072 keys, not {other}"
            )));
        }
    };
    builder.build().map_err(internal)
}

/// ECC parameters of a signing key without a fixed scheme. tss-esapi's builder refuses scheme
/// null when told the key signs, though the TPM takes it (TPM 2.0 Part 2, 12.2.3.6: TPM2_Sign
/// then names the scheme); the key's `sign` attribute is what the TPM looks at, and it is set
/// in [`signing_attributes`].
pub(crate) fn ecc_signing_parameters(
    curve: EccCurve,
) -> Result<tss_esapi::structures::PublicEccParameters, BackendError> {
    PublicEccParametersBuilder::new()
        .with_ecc_scheme(EccScheme::Null)
        .with_curve(curve)
        .with_key_derivation_function_scheme(KeyDerivationFunctionScheme::Null)
        .with_is_signing_key(false)
        .with_is_decryption_key(false)
        .with_restricted(false)
        .build()
        .map_err(internal)
}

fn signing_attributes(has_pin: bool) -> Result<ObjectAttributes, BackendError> {
    ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_sign_encrypt(true)
        .with_no_da(!has_pin)
        .build()
        .map_err(internal)
}

/// A key's spec and SubjectPublicKeyInfo (DER) from its public area. Refuses what is not an
/// unrestricted signing key of a spec keyward knows.
pub(crate) fn describe_public(public: &Public) -> Result<(KeySpec, Vec<u8>), String> {
    let attributes = public.object_attributes();
    if !attributes.sign_encrypt() || attributes.restricted() || attributes.decrypt() {
        return Err(
            "not a signing key (it must have `sign` and neither `restricted` nor `decrypt`)".into(),
        );
    }
    match public {
        Public::Ecc {
            parameters, unique, ..
        } => {
            let (spec, nid) = match parameters.ecc_curve() {
                EccCurve::NistP256 => (KeySpec::EcP256, Nid::X9_62_PRIME256V1),
                EccCurve::NistP384 => (KeySpec::EcP384, Nid::SECP384R1),
                EccCurve::NistP521 => (KeySpec::EcP521, Nid::SECP521R1),
                other => {
                    return Err(format!(
                        "an ECC key on {other:?}, which keyward does not use"
                    ));
                }
            };
            if parameters.ecc_scheme() != EccScheme::Null {
                return Err(format!(
                    "its scheme is fixed to {:?}: keyward uses keys whose TPM2_Sign names the scheme (created with scheme null)",
                    parameters.ecc_scheme()
                ));
            }
            let der = (|| {
                let group = EcGroup::from_curve_name(nid)?;
                let x = BigNum::from_slice(unique.x().value())?;
                let y = BigNum::from_slice(unique.y().value())?;
                let key = EcKey::from_public_key_affine_coordinates(&group, &x, &y)?;
                PKey::from_ec_key(key)?.public_key_to_der()
            })()
            .map_err(|e| format!("its public point is not valid ({e})"))?;
            Ok((spec, der))
        }
        Public::Rsa {
            parameters, unique, ..
        } => {
            let spec = match parameters.key_bits() {
                RsaKeyBits::Rsa2048 => KeySpec::Rsa2048,
                RsaKeyBits::Rsa3072 => KeySpec::Rsa3072,
                RsaKeyBits::Rsa4096 => KeySpec::Rsa4096,
                other => {
                    return Err(format!(
                        "an RSA key of {other:?}, which keyward does not use"
                    ));
                }
            };
            if parameters.rsa_scheme() != RsaScheme::Null {
                return Err(format!(
                    "its scheme is fixed to {:?}: keyward uses keys whose TPM2_Sign names the scheme (created with scheme null)",
                    parameters.rsa_scheme()
                ));
            }
            // An exponent of 0 in a TPM public area means the default, 65537.
            let exponent = match parameters.exponent().value() {
                0 => 65537,
                e => e,
            };
            let der = (|| {
                let n = BigNum::from_slice(unique.value())?;
                let e = BigNum::from_u32(exponent)?;
                PKey::from_rsa(Rsa::from_public_components(n, e)?)?.public_key_to_der()
            })()
            .map_err(|e| format!("its modulus is not valid ({e})"))?;
            Ok((spec, der))
        }
        _ => Err("not an ECC or RSA key".into()),
    }
}

/// What TPM2_Sign is given for `op` on a key of `spec`: the digest to sign and the scheme.
///
/// ECDSA signs the leftmost bits of the digest, as many as the curve's order has (FIPS 186-5
/// 6.4.1): SHA-384 or SHA-512 on P-256 is ECDSA over the first 32 bytes. The TPM insists that
/// a digest is as long as the scheme's hash, so a longer digest is cut to the curve's size and
/// signed as a digest of that length. The signature is the same, and a TPM without SHA-512
/// still signs for `ecdsa-sha512`.
pub(crate) fn sign_input<'a>(
    spec: KeySpec,
    op: &Prehashed<'a>,
) -> Result<(&'a [u8], SignatureScheme), BackendError> {
    let digest = op.digest();
    let algorithm = op.algorithm();
    if algorithm.is_ecdsa() {
        let field = spec
            .ecdsa_field_len()
            .ok_or_else(|| mismatch(spec, algorithm))?;
        let digest = &digest[..digest.len().min(field)];
        let hash = match digest.len() {
            32 => HashingAlgorithm::Sha256,
            48 => HashingAlgorithm::Sha384,
            64 => HashingAlgorithm::Sha512,
            _ => return Err(mismatch(spec, algorithm)),
        };
        return Ok((
            digest,
            SignatureScheme::EcDsa {
                hash_scheme: HashScheme::new(hash),
            },
        ));
    }
    if spec.rsa_bits().is_none() {
        return Err(mismatch(spec, algorithm));
    }
    let hash_scheme = HashScheme::new(match op.hash() {
        HashAlgorithm::Sha256 => HashingAlgorithm::Sha256,
        HashAlgorithm::Sha384 => HashingAlgorithm::Sha384,
        HashAlgorithm::Sha512 => HashingAlgorithm::Sha512,
    });
    let scheme = if algorithm.is_rsa_pss() {
        SignatureScheme::RsaPss { hash_scheme }
    } else {
        SignatureScheme::RsaSsa { hash_scheme }
    };
    Ok((digest, scheme))
}

fn mismatch(spec: KeySpec, algorithm: SignatureAlgorithm) -> BackendError {
    BackendError::InvalidInput(format!("a {spec} key cannot sign with {algorithm}"))
}

/// The bytes of a TPM signature: raw `r || s` (each padded to the curve's size) for ECDSA, the
/// signature block for RSA.
pub(crate) fn signature_bytes(
    spec: KeySpec,
    signature: TpmSignature,
) -> Result<(Vec<u8>, EcdsaFormat), BackendError> {
    match signature {
        TpmSignature::EcDsa(ecc) => {
            let field = spec.ecdsa_field_len().ok_or_else(|| {
                BackendError::Internal(format!(
                    "the TPM returned an ECDSA signature for a {spec} key"
                ))
            })?;
            let mut raw = Vec::with_capacity(2 * field);
            for part in [ecc.signature_r().value(), ecc.signature_s().value()] {
                let part = strip_leading_zeros(part);
                if part.len() > field {
                    return Err(BackendError::Internal(
                        "the TPM returned an ECDSA signature component longer than the curve"
                            .into(),
                    ));
                }
                raw.resize(raw.len() + field - part.len(), 0);
                raw.extend_from_slice(part);
            }
            Ok((raw, EcdsaFormat::Raw))
        }
        TpmSignature::RsaSsa(rsa) | TpmSignature::RsaPss(rsa) => {
            Ok((rsa.signature().value().to_vec(), EcdsaFormat::Der))
        }
        other => Err(BackendError::Internal(format!(
            "the TPM returned an unexpected signature type ({other:?})"
        ))),
    }
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

fn internal(error: tss_esapi::Error) -> BackendError {
    BackendError::Internal(format!("cannot build a TPM template: {error}"))
}

#[cfg(test)]
mod tests {
    use keyward_plugin_api::SignOp;

    use super::*;

    #[test]
    fn long_ecdsa_digests_are_cut_to_the_curve() {
        let d64 = [9u8; 64];
        let op = SignOp::prehashed(SignatureAlgorithm::EcdsaSha512, &d64).unwrap();
        let SignOp::Prehashed(p) = op else { panic!() };
        let (digest, scheme) = sign_input(KeySpec::EcP256, &p).unwrap();
        assert_eq!(digest.len(), 32);
        assert!(
            matches!(scheme, SignatureScheme::EcDsa { hash_scheme } if hash_scheme.hashing_algorithm() == HashingAlgorithm::Sha256)
        );
        let (digest, _) = sign_input(KeySpec::EcP384, &p).unwrap();
        assert_eq!(digest.len(), 48);
        let d32 = [1u8; 32];
        let SignOp::Prehashed(p) =
            SignOp::prehashed(SignatureAlgorithm::EcdsaSha256, &d32).unwrap()
        else {
            panic!()
        };
        let (digest, _) = sign_input(KeySpec::EcP384, &p).unwrap();
        assert_eq!(digest.len(), 32);
        let SignOp::Prehashed(p) =
            SignOp::prehashed(SignatureAlgorithm::RsaPssSha256, &d32).unwrap()
        else {
            panic!()
        };
        assert!(matches!(
            sign_input(KeySpec::Rsa2048, &p).unwrap().1,
            SignatureScheme::RsaPss { .. }
        ));
        assert!(sign_input(KeySpec::EcP256, &p).is_err());
    }

    #[test]
    fn templates() {
        for spec in [
            KeySpec::EcP256,
            KeySpec::EcP384,
            KeySpec::Rsa2048,
            KeySpec::Rsa3072,
        ] {
            let public = key_template(spec, true).unwrap();
            assert!(!public.object_attributes().no_da());
            assert!(public.object_attributes().sign_encrypt());
            assert!(
                key_template(spec, false)
                    .unwrap()
                    .object_attributes()
                    .no_da()
            );
        }
        assert!(matches!(
            key_template(KeySpec::Ed25519, false),
            Err(BackendError::Unsupported(_))
        ));
        assert!(
            storage_root_template()
                .unwrap()
                .object_attributes()
                .restricted()
        );
    }
}
