//! Checks on a key's public key: a well-formed SubjectPublicKeyInfo of the kind the key claims.

use std::collections::BTreeSet;

use keyward_sdk::{KeySpec, SignatureAlgorithm as Alg};
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;
use spki::der::Decode;
use spki::{ObjectIdentifier, SubjectPublicKeyInfoRef};

use super::{Subject, expected_algorithms, path_str};
use crate::{openssl, stderr_text};

const OID_EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_P521: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");
/// The public key parses, is of the kind the key claims, and the listing agrees.
pub(super) async fn check_public_key(s: &mut Subject<'_>) {
    let info = s.public_key.info.clone();
    s.check(info.key_id == s.key_id, || {
        format!("GetPublicKey describes key {:?}", info.key_id)
    });
    s.check(s.spec != KeySpec::Unspecified, || {
        format!("key spec is unspecified ({})", info.key_spec)
    });
    let listed: Vec<Alg> = info.algorithms().collect();
    s.check(listed.len() == info.algorithms.len(), || {
        format!("algorithms hold unknown values: {:?}", info.algorithms)
    });
    let spec = s.spec;
    let expected = s.expected.clone();
    s.check(
        expected
            .iter()
            .all(|a| expected_algorithms(spec).contains(a)),
        || {
            format!(
                "the test expects {expected:?}, not all of which a {} key can do",
                spec.name()
            )
        },
    );
    let expected = &expected[..];
    let as_set = |algs: &[Alg]| algs.iter().map(|a| a.name()).collect::<BTreeSet<_>>();
    s.check(as_set(&listed) == as_set(expected), || {
        format!(
            "a {} key lists {listed:?}, expected {expected:?}",
            spec.name()
        )
    });
    s.check(listed.first() == expected.first(), || {
        format!(
            "default algorithm {:?}, expected {:?}",
            listed.first(),
            expected.first()
        )
    });

    let der = s.public_key.der.clone();
    if let Err(e) = spki_matches(&der, s.spec) {
        s.fail(format!("public key DER: {e}"));
    }
    let pem_body: String = s
        .public_key
        .pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let pem_der = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, pem_body);
    s.check(
        s.public_key.pem.starts_with("-----BEGIN PUBLIC KEY-----") && pem_der.ok() == Some(der),
        || "public key PEM is not the PEM form of the DER".to_string(),
    );
    let output = openssl(["pkey", "-pubin", "-noout", "-in", path_str(&s.pem_path)]);
    s.check(output.status.success(), || {
        format!("openssl rejects the PEM: {}", stderr_text(&output))
    });

    match s.client.list_keys().await {
        Ok(keys) => match keys.iter().find(|k| k.key_id == s.key_id) {
            Some(listed) => s.check(*listed == info, || {
                format!("ListKeys says {listed:?}, GetPublicKey says {info:?}")
            }),
            None => s.fail("not in ListKeys".into()),
        },
        Err(e) => s.fail(format!("ListKeys failed: {e}")),
    }
}

/// Checks that `der` is a SubjectPublicKeyInfo of a `spec` key.
pub(super) fn spki_matches(der: &[u8], spec: KeySpec) -> Result<(), String> {
    let spki = SubjectPublicKeyInfoRef::from_der(der).map_err(|e| e.to_string())?;
    let key_bytes = spki.subject_public_key.raw_bytes();
    let oid = spki.algorithm.oid;
    match spec {
        KeySpec::EcP256 | KeySpec::EcP384 | KeySpec::EcP521 => {
            let (curve, field) = match spec {
                KeySpec::EcP256 => (OID_P256, 32),
                KeySpec::EcP384 => (OID_P384, 48),
                _ => (OID_P521, 66),
            };
            let params = spki.algorithm.parameters_oid().map_err(|e| e.to_string())?;
            if oid != OID_EC || params != curve {
                return Err(format!(
                    "algorithm {oid} / {params}, expected {OID_EC} / {curve}"
                ));
            }
            if key_bytes.len() != 1 + 2 * field || key_bytes[0] != 4 {
                return Err(format!(
                    "not an uncompressed point: {} bytes",
                    key_bytes.len()
                ));
            }
        }
        KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
            let bits = match spec {
                KeySpec::Rsa2048 => 2048,
                KeySpec::Rsa3072 => 3072,
                _ => 4096,
            };
            if oid != OID_RSA {
                return Err(format!("algorithm {oid}, expected rsaEncryption"));
            }
            let key = rsa::RsaPublicKey::from_public_key_der(der).map_err(|e| e.to_string())?;
            if key.n().bits() != bits {
                return Err(format!("{}-bit modulus, expected {bits}", key.n().bits()));
            }
        }
        KeySpec::Ed25519 => {
            if oid != OID_ED25519 || key_bytes.len() != 32 {
                return Err(format!("algorithm {oid} with {} bytes", key_bytes.len()));
            }
        }
        KeySpec::Unspecified => return Err("no key spec to compare with".into()),
    }
    Ok(())
}
