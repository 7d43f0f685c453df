//! Transit keys as keyward sees them: key types, references (`name`, `name@N`), and every
//! version's public key as a DER SubjectPublicKeyInfo.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use keyward_plugin_api::pemfile;
use keyward_plugin_api::{BackendError, KeySpec, is_valid_key_name};
use openssl::pkey::{Id, PKey};
use serde_json::Value;

/// A reference to a transit key: its name, and a version when it is pinned (`name@N`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// The transit key's name.
    pub name: String,
    /// The pinned version; `None` follows the key's current version.
    pub version: Option<u32>,
}

impl Reference {
    /// Parses `name` or `name@N` (N ≥ 1).
    pub fn parse(reference: &str) -> Result<Self, BackendError> {
        let (name, version) =
            match reference.split_once('@') {
                Some((name, version)) => {
                    let version = version.parse::<u32>().ok().filter(|v| *v >= 1).ok_or_else(
                        || {
                            BackendError::InvalidInput(format!(
                                "{reference:?}: the part after '@' must be a key version, 1 or more"
                            ))
                        },
                    )?;
                    (name, Some(version))
                }
                None => (reference, None),
            };
        if !is_valid_key_name(name) {
            return Err(BackendError::InvalidInput(format!(
                "{name:?} is not a usable transit key name: use 1-128 letters, digits, '.', '_' and '-'"
            )));
        }
        Ok(Reference {
            name: name.to_string(),
            version,
        })
    }
}

/// One transit key of a type keyward can sign with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransitKey {
    /// Its key spec.
    pub spec: KeySpec,
    /// Its current version.
    pub latest: u32,
    /// The DER SubjectPublicKeyInfo of every version Vault still has.
    pub versions: BTreeMap<u32, Vec<u8>>,
}

/// The transit key type of a spec.
pub fn transit_type(spec: KeySpec) -> &'static str {
    match spec {
        KeySpec::EcP256 => "ecdsa-p256",
        KeySpec::EcP384 => "ecdsa-p384",
        KeySpec::EcP521 => "ecdsa-p521",
        KeySpec::Rsa2048 => "rsa-2048",
        KeySpec::Rsa3072 => "rsa-3072",
        KeySpec::Rsa4096 => "rsa-4096",
        KeySpec::Ed25519 => "ed25519",
    }
}

/// The spec of a transit key type; `None` for types that do not sign as keyward does (aes,
/// chacha, hmac, managed keys, post-quantum types...).
pub fn spec_of(transit_type: &str) -> Option<KeySpec> {
    KeySpec::ALL
        .into_iter()
        .find(|spec| self::transit_type(*spec) == transit_type)
}

/// Parses the `data` of `GET /v1/<mount>/keys/<name>`; `Ok(None)` for a key of a type keyward
/// does not sign with.
pub fn parse_key(name: &str, data: &Value) -> Result<Option<TransitKey>, BackendError> {
    let bad = |what: &str| {
        BackendError::Internal(format!(
            "vault's description of transit key {name:?} {what}"
        ))
    };
    let key_type = data
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("has no type"))?;
    let Some(spec) = spec_of(key_type) else {
        return Ok(None);
    };
    let latest = data
        .get("latest_version")
        .and_then(Value::as_u64)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| bad("has no latest_version"))?;
    let entries = data
        .get("keys")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("has no keys"))?;
    let mut versions = BTreeMap::new();
    for (version, entry) in entries {
        let version: u32 = version
            .parse()
            .map_err(|_| bad(&format!("has a version named {version:?}")))?;
        let public = entry
            .get("public_key")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(&format!("has no public key for version {version}")))?;
        let der = public_key_der(spec, public).map_err(|e| {
            bad(&format!(
                "has a public key for version {version} that cannot be read: {e}"
            ))
        })?;
        versions.insert(version, der);
    }
    if !versions.contains_key(&latest) {
        return Err(bad(&format!("lacks its latest version {latest}")));
    }
    Ok(Some(TransitKey {
        spec,
        latest,
        versions,
    }))
}

/// A version's public key as Vault gives it (PEM SubjectPublicKeyInfo, or for Ed25519 the raw
/// 32 bytes in base64), as DER SubjectPublicKeyInfo.
pub fn public_key_der(spec: KeySpec, text: &str) -> Result<Vec<u8>, String> {
    let key = if spec == KeySpec::Ed25519 {
        let raw = STANDARD
            .decode(text.trim())
            .map_err(|e| format!("not base64: {e}"))?;
        if raw.len() != 32 {
            return Err(format!("{} bytes, an Ed25519 key has 32", raw.len()));
        }
        PKey::public_key_from_raw_bytes(&raw, Id::ED25519).map_err(|e| e.to_string())?
    } else {
        let der = pemfile::decode(pemfile::PUBLIC_KEY, text.as_bytes())?;
        PKey::public_key_from_der(&der).map_err(|e| e.to_string())?
    };
    let matches = match spec {
        KeySpec::Ed25519 => key.id() == Id::ED25519,
        KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
            key.id() == Id::RSA && spec.rsa_bits() == Some(key.bits())
        }
        KeySpec::EcP256 | KeySpec::EcP384 | KeySpec::EcP521 => {
            key.id() == Id::EC && spec.ecdsa_field_len() == Some(key.bits().div_ceil(8) as usize)
        }
    };
    if !matches {
        return Err(format!("it is not a {spec} key"));
    }
    key.public_key_to_der().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use openssl::ec::{EcGroup, EcKey};
    use openssl::nid::Nid;
    use serde_json::json;

    use super::*;

    #[test]
    fn references() {
        assert_eq!(
            Reference::parse("release").unwrap(),
            Reference {
                name: "release".into(),
                version: None
            }
        );
        assert_eq!(Reference::parse("release@3").unwrap().version, Some(3));
        for bad in [
            "release@0",
            "release@",
            "release@x",
            "a/b",
            "",
            "@1",
            "x@1@2",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_spec_has_a_transit_type() {
        for spec in KeySpec::ALL {
            assert_eq!(spec_of(transit_type(spec)), Some(spec));
        }
        assert_eq!(spec_of("aes256-gcm96"), None);
        assert_eq!(spec_of("hmac"), None);
    }

    #[test]
    fn keys_parse_with_every_version() {
        let ec = |nid| {
            let group = EcGroup::from_curve_name(nid).unwrap();
            let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
            String::from_utf8(key.public_key_to_pem().unwrap()).unwrap()
        };
        let (v1, v2) = (ec(Nid::X9_62_PRIME256V1), ec(Nid::X9_62_PRIME256V1));
        let data = json!({
            "type": "ecdsa-p256", "latest_version": 2,
            "keys": {"1": {"public_key": v1}, "2": {"public_key": v2}}
        });
        let key = parse_key("k", &data).unwrap().unwrap();
        assert_eq!(key.spec, KeySpec::EcP256);
        assert_eq!(key.latest, 2);
        assert_eq!(key.versions.len(), 2);
        assert_ne!(key.versions[&1], key.versions[&2]);

        let wrong_curve = json!({
            "type": "ecdsa-p384", "latest_version": 1, "keys": {"1": {"public_key": v1}}
        });
        let err = parse_key("k", &wrong_curve).unwrap_err().to_string();
        assert!(err.contains("not a ec-p384 key"), "{err}");

        let aes = json!({"type": "aes256-gcm96", "latest_version": 1, "keys": {"1": 1700000000}});
        assert_eq!(parse_key("k", &aes).unwrap(), None);
    }

    #[test]
    fn ed25519_keys_are_raw_base64() {
        let key = PKey::generate_ed25519().unwrap();
        let raw = STANDARD.encode(key.raw_public_key().unwrap());
        let der = public_key_der(KeySpec::Ed25519, &raw).unwrap();
        assert_eq!(der, key.public_key_to_der().unwrap());
        assert!(public_key_der(KeySpec::Ed25519, "AAAA").is_err());
    }
}
