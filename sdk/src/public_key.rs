//! Public keys from files, for checking signatures without an agent (`keyward verify
//! --public-key`): PEM or DER SubjectPublicKeyInfo, the key type it is, and the algorithms a
//! key of that type signs with (the agent's defaults, first).

use rsa::traits::PublicKeyParts;
use spki::der::Decode;
use spki::{DecodePublicKey, ObjectIdentifier, SubjectPublicKeyInfoRef};

use crate::jwk::{
    OID_EC_PUBLIC_KEY, OID_ED25519, OID_P256, OID_P384, OID_P521, OID_RSA_ENCRYPTION,
};
use crate::{Error, KeySpec, SignatureAlgorithm};

/// The DER SubjectPublicKeyInfo in `bytes`: a PEM `PUBLIC KEY` block, or DER as it is.
pub fn spki_from_file(bytes: &[u8]) -> Result<Vec<u8>, Error> {
    let der = if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
        let block = pem::parse(bytes)
            .map_err(|e| Error::InvalidInput(format!("not a PEM public key: {e}")))?;
        if block.tag() != "PUBLIC KEY" {
            return Err(Error::InvalidInput(format!(
                "the PEM block is a {:?}, not a \"PUBLIC KEY\" (SubjectPublicKeyInfo); `keyward pubkey --key KEY` or `openssl pkey -pubout` writes one",
                block.tag()
            )));
        }
        block.into_contents()
    } else {
        bytes.to_vec()
    };
    key_spec_of(&der)?;
    Ok(der)
}

/// The key type of a DER SubjectPublicKeyInfo.
pub fn key_spec_of(spki_der: &[u8]) -> Result<KeySpec, Error> {
    let bad = |e: &dyn std::fmt::Display| {
        Error::InvalidInput(format!("not a SubjectPublicKeyInfo (PEM or DER): {e}"))
    };
    let spki = SubjectPublicKeyInfoRef::from_der(spki_der).map_err(|e| bad(&e))?;
    let oid = spki.algorithm.oid;
    if oid == OID_EC_PUBLIC_KEY {
        let curve: ObjectIdentifier = spki.algorithm.parameters_oid().map_err(|e| bad(&e))?;
        match curve {
            OID_P256 => Ok(KeySpec::EcP256),
            OID_P384 => Ok(KeySpec::EcP384),
            OID_P521 => Ok(KeySpec::EcP521),
            other => Err(Error::InvalidInput(format!(
                "a key on elliptic curve {other}: only P-256, P-384 and P-521 are supported"
            ))),
        }
    } else if oid == OID_RSA_ENCRYPTION {
        let key = rsa::RsaPublicKey::from_public_key_der(spki_der).map_err(|e| bad(&e))?;
        match key.n().bits() {
            2048 => Ok(KeySpec::Rsa2048),
            3072 => Ok(KeySpec::Rsa3072),
            4096 => Ok(KeySpec::Rsa4096),
            bits => Err(Error::InvalidInput(format!(
                "an RSA key of {bits} bits: only 2048, 3072 and 4096 are supported"
            ))),
        }
    } else if oid == OID_ED25519 {
        Ok(KeySpec::Ed25519)
    } else {
        Err(Error::InvalidInput(format!(
            "a public key of algorithm {oid}: only EC, RSA and Ed25519 keys are supported"
        )))
    }
}

/// The algorithms a key of `spec` signs with, the agent's default first (P-256 ->
/// ecdsa-sha256, P-384 -> ecdsa-sha384, P-521 -> ecdsa-sha512, RSA 2048/3072/4096 ->
/// rsa-pss-sha256/384/512, Ed25519 -> ed25519).
pub fn algorithms_of(spec: KeySpec) -> Vec<SignatureAlgorithm> {
    use SignatureAlgorithm::*;
    let ecdsa = |first| {
        let mut all = vec![first];
        all.extend(
            [EcdsaSha256, EcdsaSha384, EcdsaSha512]
                .into_iter()
                .filter(|a| *a != first),
        );
        all
    };
    let rsa = |first| {
        let mut all = vec![first];
        all.extend(
            [
                RsaPssSha256,
                RsaPssSha384,
                RsaPssSha512,
                RsaPkcs1Sha256,
                RsaPkcs1Sha384,
                RsaPkcs1Sha512,
            ]
            .into_iter()
            .filter(|a| *a != first),
        );
        all
    };
    match spec {
        KeySpec::EcP256 => ecdsa(EcdsaSha256),
        KeySpec::EcP384 => ecdsa(EcdsaSha384),
        KeySpec::EcP521 => ecdsa(EcdsaSha512),
        KeySpec::Rsa2048 => rsa(RsaPssSha256),
        KeySpec::Rsa3072 => rsa(RsaPssSha384),
        KeySpec::Rsa4096 => rsa(RsaPssSha512),
        KeySpec::Ed25519 => vec![Ed25519],
        KeySpec::Unspecified => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    use super::*;

    const P256_SPKI: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEGcP6dhslDZN7fov61XvKxoUGmy/9gC2jHPL6nEIIO5AA1hljM5Ub4RtueVQOYC/00zVIslWWKhZysfbXtwRQWQ==";

    #[test]
    fn pem_and_der_give_the_same_key() {
        let der = STANDARD.decode(P256_SPKI).unwrap();
        let pem = format!("-----BEGIN PUBLIC KEY-----\n{P256_SPKI}\n-----END PUBLIC KEY-----\n");
        assert_eq!(spki_from_file(pem.as_bytes()).unwrap(), der);
        assert_eq!(spki_from_file(&der).unwrap(), der);
        assert_eq!(key_spec_of(&der).unwrap(), KeySpec::EcP256);
        assert_eq!(
            algorithms_of(KeySpec::EcP256)[0],
            SignatureAlgorithm::EcdsaSha256
        );
        let cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(
            spki_from_file(cert.as_bytes())
                .unwrap_err()
                .to_string()
                .contains("not a \"PUBLIC KEY\"")
        );
        assert!(spki_from_file(b"garbage").is_err());
    }
}
