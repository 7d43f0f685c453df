//! The body of `POST /v1/<mount>/sign/<name>` and the signature in its answer.
//!
//! - RSA and ECDSA sign the digest keyward computed: `prehashed: true` with the matching
//!   `hash_algorithm`. RSA-PSS always sends `salt_length: "hash"` (Vault's default is the
//!   longest salt, which JOSE, Notation and keyward's own verifier reject). ECDSA asks for DER.
//! - Ed25519 signs the message itself and is never sent a digest: Vault would sign the digest
//!   bytes as if they were the message.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use keyward_plugin_api::{BackendError, HashAlgorithm, KeySpec, SignOp};
use serde_json::{Map, Value, json};

/// The JSON body that signs `op` with a key of `spec`, at `version` if given. The shape of `op`
/// is checked by its type; whether its algorithm fits the key is checked here, against the
/// key's spec as Vault reported it.
pub fn sign_body(
    spec: KeySpec,
    op: SignOp<'_>,
    version: Option<u32>,
) -> Result<Value, BackendError> {
    let algorithm = op.algorithm();
    if !spec.supports(algorithm) {
        return Err(BackendError::InvalidInput(format!(
            "a {spec} key cannot sign with {algorithm}"
        )));
    }
    let mut body = Map::new();
    match op {
        SignOp::Ed25519 { message } => {
            body.insert("input".into(), json!(STANDARD.encode(message)));
        }
        SignOp::Prehashed(prehashed) => {
            body.insert("input".into(), json!(STANDARD.encode(prehashed.digest())));
            body.insert("prehashed".into(), json!(true));
            body.insert("hash_algorithm".into(), json!(hash_name(prehashed.hash())));
            if algorithm.is_ecdsa() {
                body.insert("marshaling_algorithm".into(), json!("asn1"));
            } else if algorithm.is_rsa_pss() {
                body.insert("signature_algorithm".into(), json!("pss"));
                body.insert("salt_length".into(), json!("hash"));
            } else {
                body.insert("signature_algorithm".into(), json!("pkcs1v15"));
            }
        }
    }
    if let Some(version) = version {
        body.insert("key_version".into(), json!(version));
    }
    Ok(Value::Object(body))
}

/// Vault's name of a hash.
fn hash_name(hash: HashAlgorithm) -> &'static str {
    match hash {
        HashAlgorithm::Sha256 => "sha2-256",
        HashAlgorithm::Sha384 => "sha2-384",
        HashAlgorithm::Sha512 => "sha2-512",
    }
}

/// The signature bytes and the key version of `vault:v<N>:<base64>`.
pub fn parse_signature(text: &str) -> Result<(Vec<u8>, u32), BackendError> {
    let bad = || {
        BackendError::Internal(format!(
            "vault returned a signature that is not vault:v<version>:<base64> ({} characters)",
            text.len()
        ))
    };
    let rest = text.strip_prefix("vault:v").ok_or_else(bad)?;
    let (version, encoded) = rest.split_once(':').ok_or_else(bad)?;
    let version: u32 = version.parse().map_err(|_| bad())?;
    let bytes = STANDARD.decode(encoded).map_err(|_| bad())?;
    if bytes.is_empty() {
        return Err(bad());
    }
    Ok((bytes, version))
}

#[cfg(test)]
mod tests {
    use keyward_plugin_api::SignatureAlgorithm;

    use super::*;

    fn digest(algorithm: SignatureAlgorithm, digest: &[u8]) -> SignOp<'_> {
        SignOp::prehashed(algorithm, digest).unwrap()
    }

    #[test]
    fn rsa_pss_asks_for_a_hash_long_salt() {
        let body = sign_body(
            KeySpec::Rsa3072,
            digest(SignatureAlgorithm::RsaPssSha384, &[7u8; 48]),
            Some(2),
        )
        .unwrap();
        assert_eq!(
            body,
            json!({
                "input": STANDARD.encode([7u8; 48]), "prehashed": true, "hash_algorithm": "sha2-384",
                "signature_algorithm": "pss", "salt_length": "hash", "key_version": 2
            })
        );
        let pkcs1 = sign_body(
            KeySpec::Rsa2048,
            digest(SignatureAlgorithm::RsaPkcs1Sha512, &[1u8; 64]),
            None,
        )
        .unwrap();
        assert_eq!(pkcs1["signature_algorithm"], "pkcs1v15");
        assert_eq!(pkcs1["hash_algorithm"], "sha2-512");
        assert!(pkcs1.get("salt_length").is_none() && pkcs1.get("key_version").is_none());
    }

    #[test]
    fn ecdsa_asks_for_der() {
        let body = sign_body(
            KeySpec::EcP521,
            digest(SignatureAlgorithm::EcdsaSha256, &[0u8; 32]),
            None,
        )
        .unwrap();
        assert_eq!(body["marshaling_algorithm"], "asn1");
        assert_eq!(body["hash_algorithm"], "sha2-256");
    }

    #[test]
    fn ed25519_signs_messages_only() {
        let body = sign_body(KeySpec::Ed25519, SignOp::ed25519(b"hello"), None).unwrap();
        assert_eq!(body, json!({"input": STANDARD.encode(b"hello")}));
    }

    #[test]
    fn an_algorithm_that_does_not_fit_the_key_is_refused() {
        for (spec, op) in [
            (
                KeySpec::EcP256,
                digest(SignatureAlgorithm::RsaPssSha256, &[0u8; 32]),
            ),
            (KeySpec::EcP256, SignOp::ed25519(b"m")),
            (
                KeySpec::Ed25519,
                digest(SignatureAlgorithm::EcdsaSha256, &[0u8; 32]),
            ),
        ] {
            assert!(matches!(
                sign_body(spec, op, None),
                Err(BackendError::InvalidInput(_))
            ));
        }
    }

    #[test]
    fn signatures_carry_their_version() {
        assert_eq!(
            parse_signature("vault:v12:AQID").unwrap(),
            (vec![1, 2, 3], 12)
        );
        for bad in [
            "AQID",
            "vault:v:AQID",
            "vault:vx:AQID",
            "vault:v1:",
            "vault:v1:!!",
        ] {
            assert!(parse_signature(bad).is_err(), "{bad}");
        }
    }
}
