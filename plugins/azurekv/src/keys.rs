//! Key references, Key Vault's JSON Web Keys, and signature algorithms.
//!
//! - A reference (a `[[key]] ref`, or the part after `<backend>/` of a discovered id) is a key
//!   name (`release`), a name pinned to a version (`release@0123abcd...`), or the key's URL in
//!   the configured vault (`https://<vault>/keys/release[/<version>]`).
//! - Keys of type `EC`/`EC-HSM` on P-256, P-384, P-521 and `RSA`/`RSA-HSM` of 2048, 3072 and
//!   4096 bits whose `key_ops` include `sign` are served; their public key comes as a JWK and
//!   is turned into a DER SubjectPublicKeyInfo here.
//! - Key Vault ties each curve to one algorithm (ES256 to P-256, ES384 to P-384, ES512 to
//!   P-521) and checks the digest's length. keyward's other ECDSA hashes are signed through the
//!   curve's algorithm with the digest cut to the curve's size or left-padded with zeros:
//!   ECDSA itself uses only the leftmost bits of a digest as long as the group order, and
//!   leading zero bytes do not change the integer, so the signature is the same as over the
//!   original digest ([`azure_request`]).

use azure_security_keyvault_keys::models::{
    CurveName, JsonWebKey, KeyType, SignatureAlgorithm as AzureAlgorithm,
};
use keyward_plugin_api::{BackendError, KeySpec, Prehashed, SignatureAlgorithm};
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;

/// A key name with an optional pinned version.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    /// The key's name in the vault.
    pub name: String,
    /// The pinned version; `None` follows the key's current version.
    pub version: Option<String>,
}

impl Reference {
    /// Parses `name`, `name@version` or `<vault_url>/keys/name[/version]`.
    pub fn parse(reference: &str, vault_url: &str) -> Result<Self, BackendError> {
        let (name, version) = if reference.contains("://") {
            from_url(reference, vault_url)?
        } else {
            match reference.split_once('@') {
                Some((name, version)) => (name, Some(version)),
                None => (reference, None),
            }
        };
        check_name(name)?;
        if let Some(version) = version
            && !is_valid_version(version)
        {
            return Err(BackendError::InvalidInput(format!(
                "{reference:?}: {version:?} is not a Key Vault key version (the 32 hex digits at the end of the key's id)"
            )));
        }
        Ok(Reference {
            name: name.to_string(),
            version: version.map(str::to_string),
        })
    }

    /// `name` or `name@version`.
    pub fn display(&self) -> String {
        match &self.version {
            Some(version) => format!("{}@{version}", self.name),
            None => self.name.clone(),
        }
    }
}

fn from_url<'a>(
    reference: &'a str,
    vault_url: &str,
) -> Result<(&'a str, Option<&'a str>), BackendError> {
    let bad = |why: &str| {
        BackendError::InvalidInput(format!(
            "{reference:?} is not a key of this backend's vault ({vault_url}): {why}; write \
             {vault_url}/keys/<name>[/<version>] or just <name>[@<version>]"
        ))
    };
    let url = reqwest::Url::parse(reference).map_err(|_| bad("not a URL"))?;
    let vault = reqwest::Url::parse(vault_url).map_err(|_| bad("the vault_url is not a URL"))?;
    let same_vault = url.scheme() == vault.scheme()
        && url.host_str().map(str::to_ascii_lowercase)
            == vault.host_str().map(str::to_ascii_lowercase)
        && url.port_or_known_default() == vault.port_or_known_default();
    if !same_vault {
        return Err(bad("another vault"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("it has a query or a fragment"));
    }
    let path = reference
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('/'))
        .map_or("", |(_, path)| path);
    let mut parts = path.trim_end_matches('/').split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("keys"), Some(name), version, None) => Ok((name, version)),
        _ => Err(bad("the path is not /keys/<name>[/<version>]")),
    }
}

/// Checks a key name as Key Vault allows it: 1 to 127 letters, digits and dashes.
pub fn check_name(name: &str) -> Result<(), BackendError> {
    let ok = !name.is_empty()
        && name.len() <= 127
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(BackendError::InvalidInput(format!(
            "{name:?} is not a Key Vault key name: use 1-127 letters, digits and '-'"
        )))
    }
}

fn is_valid_version(version: &str) -> bool {
    !version.is_empty() && version.len() <= 64 && version.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The name and version at the end of a key id (`https://<vault>/keys/<name>/<version>`).
pub fn parse_kid(kid: &str) -> Option<(String, Option<String>)> {
    let url = reqwest::Url::parse(kid).ok()?;
    let mut segments = url.path_segments()?.filter(|s| !s.is_empty());
    match (segments.next(), segments.next(), segments.next()) {
        (Some("keys"), Some(name), version) => {
            Some((name.to_string(), version.map(str::to_string)))
        }
        _ => None,
    }
}

/// Why a JWK is not a key keyward signs with, or its spec.
pub fn spec_of_jwk(jwk: &JsonWebKey) -> Result<KeySpec, String> {
    let kty = jwk.kty.as_ref().ok_or("it has no key type")?;
    match kty {
        KeyType::Ec | KeyType::EcHsm => match jwk.crv.as_ref() {
            Some(CurveName::P256) => Ok(KeySpec::EcP256),
            Some(CurveName::P384) => Ok(KeySpec::EcP384),
            Some(CurveName::P521) => Ok(KeySpec::EcP521),
            other => Err(format!(
                "it is an EC key on curve {}, and keyward signs with P-256, P-384 and P-521",
                other.map_or_else(|| "(none)".to_string(), |c| c.to_string())
            )),
        },
        KeyType::Rsa | KeyType::RsaHsm => {
            let n = jwk
                .n
                .as_deref()
                .ok_or("it is an RSA key without a modulus")?;
            let bits = significant_bits(n);
            match bits {
                2048 => Ok(KeySpec::Rsa2048),
                3072 => Ok(KeySpec::Rsa3072),
                4096 => Ok(KeySpec::Rsa4096),
                _ => Err(format!(
                    "it is a {bits}-bit RSA key, and keyward signs with 2048, 3072 and 4096 bits"
                )),
            }
        }
        other => Err(format!(
            "it is a key of type {other}, and keyward signs with EC and RSA keys"
        )),
    }
}

fn significant_bits(bytes: &[u8]) -> usize {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    match bytes.get(first) {
        Some(&top) => (bytes.len() - first - 1) * 8 + (8 - top.leading_zeros() as usize),
        None => 0,
    }
}

/// Whether the key's `key_ops` allow signing.
pub fn allows_sign(jwk: &JsonWebKey) -> bool {
    jwk.key_ops
        .as_ref()
        .is_some_and(|ops| ops.iter().any(|op| op == "sign"))
}

/// The DER SubjectPublicKeyInfo of a JWK of `spec`.
pub fn spki_of_jwk(jwk: &JsonWebKey, spec: KeySpec) -> Result<Vec<u8>, String> {
    let key = match spec {
        KeySpec::EcP256 | KeySpec::EcP384 | KeySpec::EcP521 => {
            let nid = match spec {
                KeySpec::EcP256 => Nid::X9_62_PRIME256V1,
                KeySpec::EcP384 => Nid::SECP384R1,
                _ => Nid::SECP521R1,
            };
            let (x, y) = match (jwk.x.as_deref(), jwk.y.as_deref()) {
                (Some(x), Some(y)) => (x, y),
                _ => return Err("the EC key has no x or y coordinate".to_string()),
            };
            let group = EcGroup::from_curve_name(nid).map_err(|e| e.to_string())?;
            let x = BigNum::from_slice(x).map_err(|e| e.to_string())?;
            let y = BigNum::from_slice(y).map_err(|e| e.to_string())?;
            let ec = EcKey::from_public_key_affine_coordinates(&group, &x, &y)
                .map_err(|e| format!("the point is not on the curve: {e}"))?;
            ec.check_key()
                .map_err(|e| format!("the point is not a valid public key: {e}"))?;
            PKey::from_ec_key(ec).map_err(|e| e.to_string())?
        }
        KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
            let (n, e) = match (jwk.n.as_deref(), jwk.e.as_deref()) {
                (Some(n), Some(e)) => (n, e),
                _ => return Err("the RSA key has no modulus or exponent".to_string()),
            };
            let rsa = Rsa::from_public_components(
                BigNum::from_slice(n).map_err(|e| e.to_string())?,
                BigNum::from_slice(e).map_err(|e| e.to_string())?,
            )
            .map_err(|e| e.to_string())?;
            PKey::from_rsa(rsa).map_err(|e| e.to_string())?
        }
        KeySpec::Ed25519 => return Err("Key Vault has no Ed25519 keys".to_string()),
    };
    key.public_key_to_der().map_err(|e| e.to_string())
}

/// The Key Vault algorithm and the digest to send for `op` on a key of `spec`: see the
/// module docs for why an ECDSA digest may be cut or padded to the curve's algorithm. The
/// digest's length is the hash's (the type says so); the algorithm must fit the key.
pub fn azure_request(
    spec: KeySpec,
    op: Prehashed<'_>,
) -> Result<(AzureAlgorithm, Vec<u8>), BackendError> {
    use SignatureAlgorithm as A;
    let (algorithm, digest) = (op.algorithm(), op.digest());
    if !spec.supports(algorithm) {
        return Err(BackendError::InvalidInput(format!(
            "a {spec} key cannot sign with {algorithm}"
        )));
    }
    let rsa = |pss, pkcs1| {
        Ok((
            if algorithm.is_rsa_pss() { pss } else { pkcs1 },
            digest.to_vec(),
        ))
    };
    match algorithm {
        A::EcdsaSha256 | A::EcdsaSha384 | A::EcdsaSha512 => {
            let (azure, len) = match spec {
                KeySpec::EcP256 => (AzureAlgorithm::Es256, 32),
                KeySpec::EcP384 => (AzureAlgorithm::Es384, 48),
                _ => (AzureAlgorithm::Es512, 64),
            };
            let sent = if digest.len() >= len {
                digest[..len].to_vec()
            } else {
                let mut padded = vec![0u8; len - digest.len()];
                padded.extend_from_slice(digest);
                padded
            };
            Ok((azure, sent))
        }
        A::RsaPssSha256 | A::RsaPkcs1Sha256 => rsa(AzureAlgorithm::Ps256, AzureAlgorithm::Rs256),
        A::RsaPssSha384 | A::RsaPkcs1Sha384 => rsa(AzureAlgorithm::Ps384, AzureAlgorithm::Rs384),
        A::RsaPssSha512 | A::RsaPkcs1Sha512 => rsa(AzureAlgorithm::Ps512, AzureAlgorithm::Rs512),
        A::Ed25519 => Err(BackendError::Unsupported(
            "Key Vault has no Ed25519 keys".to_string(),
        )),
    }
}

/// The `kty`, `crv` and `key_size` that create a key of `spec`.
pub fn create_shape(
    spec: KeySpec,
    hsm: bool,
) -> Result<(KeyType, Option<CurveName>, Option<i32>), BackendError> {
    let (ec, rsa) = if hsm {
        (KeyType::EcHsm, KeyType::RsaHsm)
    } else {
        (KeyType::Ec, KeyType::Rsa)
    };
    Ok(match spec {
        KeySpec::EcP256 => (ec, Some(CurveName::P256), None),
        KeySpec::EcP384 => (ec, Some(CurveName::P384), None),
        KeySpec::EcP521 => (ec, Some(CurveName::P521), None),
        KeySpec::Rsa2048 => (rsa, None, Some(2048)),
        KeySpec::Rsa3072 => (rsa, None, Some(3072)),
        KeySpec::Rsa4096 => (rsa, None, Some(4096)),
        KeySpec::Ed25519 => {
            return Err(BackendError::Unsupported(
                "Azure Key Vault has no Ed25519 keys; use ec-p256, ec-p384, ec-p521 or rsa-2048/3072/4096"
                    .to_string(),
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use openssl::bn::BigNumContext;
    use openssl::ec::PointConversionForm;

    use keyward_plugin_api::SignOp;

    use super::*;

    fn request(
        spec: KeySpec,
        algorithm: SignatureAlgorithm,
        digest: &[u8],
    ) -> Result<(AzureAlgorithm, Vec<u8>), BackendError> {
        match SignOp::prehashed(algorithm, digest).unwrap() {
            SignOp::Prehashed(op) => azure_request(spec, op),
            SignOp::Ed25519 { .. } => unreachable!(),
        }
    }

    const VAULT: &str = "https://kw.vault.azure.net";
    const V: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn references() {
        let plain = Reference::parse("release", VAULT).unwrap();
        assert_eq!(
            (plain.name.as_str(), plain.version.as_deref()),
            ("release", None)
        );
        let pinned = Reference::parse(&format!("release@{V}"), VAULT).unwrap();
        assert_eq!(pinned.version.as_deref(), Some(V));
        assert_eq!(pinned.display(), format!("release@{V}"));
        let url = Reference::parse(&format!("{VAULT}/keys/release/{V}"), VAULT).unwrap();
        assert_eq!(url, pinned);
        let url = Reference::parse("https://KW.vault.azure.net:443/keys/release/", VAULT).unwrap();
        assert_eq!(url, plain);
        for bad in [
            "",
            "a_b",
            "a.b",
            "release@",
            "release@x-y",
            "https://other.vault.azure.net/keys/release",
            "https://kw.vault.azure.net/secrets/release",
            "https://kw.vault.azure.net/keys/release/v/sign",
            "https://kw.vault.azure.net/keys/release?x=1",
            "http://kw.vault.azure.net/keys/release",
        ] {
            assert!(Reference::parse(bad, VAULT).is_err(), "{bad}");
        }
        assert_eq!(
            parse_kid(&format!("{VAULT}/keys/k/{V}")),
            Some(("k".to_string(), Some(V.to_string())))
        );
        assert_eq!(parse_kid("https://h/secrets/k"), None);
    }

    fn ec_jwk(nid: Nid) -> (JsonWebKey, Vec<u8>) {
        let group = EcGroup::from_curve_name(nid).unwrap();
        let key = EcKey::generate(&group).unwrap();
        let mut ctx = BigNumContext::new().unwrap();
        let point = key
            .public_key()
            .to_bytes(&group, PointConversionForm::UNCOMPRESSED, &mut ctx)
            .unwrap();
        let half = (point.len() - 1) / 2;
        let jwk = JsonWebKey {
            kty: Some(KeyType::Ec),
            crv: Some(match nid {
                Nid::X9_62_PRIME256V1 => CurveName::P256,
                Nid::SECP384R1 => CurveName::P384,
                _ => CurveName::P521,
            }),
            x: Some(point[1..=half].to_vec()),
            y: Some(point[1 + half..].to_vec()),
            key_ops: Some(vec!["sign".into(), "verify".into()]),
            ..Default::default()
        };
        let der = PKey::from_ec_key(key).unwrap().public_key_to_der().unwrap();
        (jwk, der)
    }

    #[test]
    fn ec_jwks_become_spkis() {
        for (nid, spec) in [
            (Nid::X9_62_PRIME256V1, KeySpec::EcP256),
            (Nid::SECP384R1, KeySpec::EcP384),
            (Nid::SECP521R1, KeySpec::EcP521),
        ] {
            let (jwk, der) = ec_jwk(nid);
            assert_eq!(spec_of_jwk(&jwk).unwrap(), spec);
            assert_eq!(spki_of_jwk(&jwk, spec).unwrap(), der);
            assert!(allows_sign(&jwk));
        }
        let (mut off_curve, _) = ec_jwk(Nid::X9_62_PRIME256V1);
        off_curve.y.as_mut().unwrap()[5] ^= 1;
        assert!(spki_of_jwk(&off_curve, KeySpec::EcP256).is_err());
        let (mut k256, _) = ec_jwk(Nid::X9_62_PRIME256V1);
        k256.crv = Some(CurveName::P256K);
        assert!(spec_of_jwk(&k256).unwrap_err().contains("P-256K"));
        k256.key_ops = Some(vec!["verify".into()]);
        assert!(!allows_sign(&k256));
    }

    #[test]
    fn rsa_jwks_become_spkis() {
        let rsa = Rsa::generate(3072).unwrap();
        let mut jwk = JsonWebKey {
            kty: Some(KeyType::RsaHsm),
            n: Some(rsa.n().to_vec()),
            e: Some(rsa.e().to_vec()),
            ..Default::default()
        };
        assert_eq!(spec_of_jwk(&jwk).unwrap(), KeySpec::Rsa3072);
        let der = PKey::from_rsa(rsa).unwrap().public_key_to_der().unwrap();
        assert_eq!(spki_of_jwk(&jwk, KeySpec::Rsa3072).unwrap(), der);
        // A leading zero byte does not make a 3072-bit key bigger.
        jwk.n.as_mut().unwrap().insert(0, 0);
        assert_eq!(spec_of_jwk(&jwk).unwrap(), KeySpec::Rsa3072);
        jwk.n = Some(vec![0xff; 128]);
        assert!(spec_of_jwk(&jwk).unwrap_err().contains("1024-bit"));
        jwk.kty = Some(KeyType::Oct);
        assert!(spec_of_jwk(&jwk).unwrap_err().contains("oct"));
    }

    #[test]
    fn ecdsa_digests_fit_the_curve() {
        let d32: Vec<u8> = (1..=32).collect();
        let d64: Vec<u8> = (1..=64).collect();
        let (alg, sent) = request(KeySpec::EcP256, SignatureAlgorithm::EcdsaSha512, &d64).unwrap();
        assert_eq!((alg, sent), (AzureAlgorithm::Es256, d64[..32].to_vec()));
        let (alg, sent) = request(KeySpec::EcP521, SignatureAlgorithm::EcdsaSha256, &d32).unwrap();
        assert_eq!(alg, AzureAlgorithm::Es512);
        assert_eq!(sent.len(), 64);
        assert!(sent[..32].iter().all(|&b| b == 0) && sent[32..] == d32[..]);
        let (alg, sent) =
            request(KeySpec::EcP384, SignatureAlgorithm::EcdsaSha384, &d64[..48]).unwrap();
        assert_eq!((alg, sent), (AzureAlgorithm::Es384, d64[..48].to_vec()));
    }

    #[test]
    fn rsa_algorithms_and_refusals() {
        let d48 = [7u8; 48];
        let (alg, sent) =
            request(KeySpec::Rsa2048, SignatureAlgorithm::RsaPssSha384, &d48).unwrap();
        assert_eq!((alg, sent), (AzureAlgorithm::Ps384, d48.to_vec()));
        let (alg, _) = request(
            KeySpec::Rsa4096,
            SignatureAlgorithm::RsaPkcs1Sha512,
            &[0; 64],
        )
        .unwrap();
        assert_eq!(alg, AzureAlgorithm::Rs512);
        let err = request(KeySpec::EcP256, SignatureAlgorithm::RsaPssSha256, &[0; 32]).unwrap_err();
        assert!(matches!(err, BackendError::InvalidInput(_)), "{err}");
        assert!(matches!(
            create_shape(KeySpec::Ed25519, false),
            Err(BackendError::Unsupported(_))
        ));
        assert_eq!(
            create_shape(KeySpec::EcP384, true).unwrap(),
            (KeyType::EcHsm, Some(CurveName::P384), None)
        );
    }
}
