//! Test fixtures: agent keys as the SDK returns them, built from real public keys and a real
//! certificate made with `openssl` (`testdata/`; the private keys were thrown away).

use keyward_sdk::{KeyInfo, KeySpec, PublicKey, SignatureAlgorithm};

pub const EC_P256: &[u8] = include_bytes!("testdata/ec-p256.spki.der");
pub const EC_P256_CERT: &[u8] = include_bytes!("testdata/ec-p256.cert.der");
pub const EC_P521: &[u8] = include_bytes!("testdata/ec-p521.spki.der");
pub const RSA_2048: &[u8] = include_bytes!("testdata/rsa-2048.spki.der");
pub const ED25519: &[u8] = include_bytes!("testdata/ed25519.spki.der");

/// An agent key `id` of `spec` with public key `der`, the algorithms the agent lists for the
/// spec, and `chain`.
pub fn key(id: &str, spec: KeySpec, der: &[u8], chain: &[&[u8]]) -> PublicKey {
    use SignatureAlgorithm::*;
    let algorithms: &[SignatureAlgorithm] = match spec {
        KeySpec::EcP256 => &[EcdsaSha256, EcdsaSha384, EcdsaSha512],
        KeySpec::EcP521 => &[EcdsaSha512, EcdsaSha256, EcdsaSha384],
        KeySpec::Ed25519 => &[Ed25519],
        _ => &[
            RsaPssSha256,
            RsaPssSha384,
            RsaPssSha512,
            RsaPkcs1Sha256,
            RsaPkcs1Sha384,
            RsaPkcs1Sha512,
        ],
    };
    PublicKey {
        info: KeyInfo {
            key_id: id.to_string(),
            backend: "local".into(),
            backend_type: "local".into(),
            key_spec: spec as i32,
            algorithms: algorithms.iter().map(|a| *a as i32).collect(),
            has_certificate: !chain.is_empty(),
            ..KeyInfo::default()
        },
        der: der.to_vec(),
        pem: String::new(),
        key_version: String::new(),
        certificate_chain: chain.iter().map(|c| c.to_vec()).collect(),
        openpgp_certificate: None,
    }
}

/// The objects of the four fixture keys: `ec` (with a certificate), `rsa`, `ed`, `p521`.
pub fn objects() -> Vec<crate::objects::Object> {
    [
        key("ec", KeySpec::EcP256, EC_P256, &[EC_P256_CERT]),
        key("rsa", KeySpec::Rsa2048, RSA_2048, &[]),
        key("ed", KeySpec::Ed25519, ED25519, &[]),
        key("p521", KeySpec::EcP521, EC_P521, &[]),
    ]
    .iter()
    .flat_map(|k| crate::objects::objects_of(k).unwrap())
    .collect()
}
