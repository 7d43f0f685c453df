//! The keys the ssh-agent socket offers: the configured ids, in order, each as an OpenSSH
//! public key (`KeyData`, built from the key's SubjectPublicKeyInfo) with its id as the comment.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use keyward_plugin_api::KeySpec;
use openssl::pkey::{Id, PKey};
use ssh_agent_lib::proto::Identity;
use ssh_key::Mpint;
use ssh_key::public::{EcdsaPublicKey, Ed25519PublicKey, KeyData, RsaPublicKey};

use crate::error::AgentError;
use crate::keys::{Registry, ResolvedKey};

/// A key offered on the socket: the agent's key and its OpenSSH form.
#[derive(Debug, Clone)]
pub struct Offered {
    /// The resolved key (its canonical id names it in the signing core).
    pub key: Arc<ResolvedKey>,
    /// Its public key in OpenSSH's encoding.
    pub ssh: KeyData,
}

/// The OpenSSH public key of a SubjectPublicKeyInfo (DER) of a key of `spec`. Parsed with
/// OpenSSL (the CLI builds the same encoding with RustCrypto, and the tests compare the two).
pub fn key_data(spec: KeySpec, spki_der: &[u8]) -> Result<KeyData, String> {
    let key = PKey::public_key_from_der(spki_der)
        .map_err(|e| format!("the public key is not a valid SubjectPublicKeyInfo: {e}"))?;
    let data = match key.id() {
        Id::ED25519 => {
            let raw = key
                .raw_public_key()
                .map_err(|e| format!("cannot read the Ed25519 public key: {e}"))?;
            KeyData::Ed25519(
                Ed25519PublicKey::try_from(raw.as_slice())
                    .map_err(|e| format!("the Ed25519 public key is malformed: {e}"))?,
            )
        }
        Id::EC => {
            let ec = key.ec_key().map_err(|e| format!("not an EC key: {e}"))?;
            let mut ctx = openssl::bn::BigNumContext::new().map_err(|e| e.to_string())?;
            let point = ec
                .public_key()
                .to_bytes(
                    ec.group(),
                    openssl::ec::PointConversionForm::UNCOMPRESSED,
                    &mut ctx,
                )
                .map_err(|e| format!("cannot encode the EC point: {e}"))?;
            KeyData::Ecdsa(
                EcdsaPublicKey::from_sec1_bytes(&point)
                    .map_err(|e| format!("OpenSSH has no ECDSA keys on this curve: {e}"))?,
            )
        }
        Id::RSA => {
            let rsa = key.rsa().map_err(|e| format!("not an RSA key: {e}"))?;
            let mpint = |bytes: Vec<u8>| {
                Mpint::from_positive_bytes(&bytes)
                    .map_err(|e| format!("cannot encode the RSA public key: {e}"))
            };
            KeyData::Rsa(RsaPublicKey {
                e: mpint(rsa.e().to_vec())?,
                n: mpint(rsa.n().to_vec())?,
            })
        }
        other => return Err(format!("OpenSSH has no keys of type {other:?}")),
    };
    // The spec and the key agree (the registry checked it); the curve must too.
    let expected = match spec {
        KeySpec::Ed25519 => "ssh-ed25519",
        KeySpec::EcP256 => "ecdsa-sha2-nistp256",
        KeySpec::EcP384 => "ecdsa-sha2-nistp384",
        KeySpec::EcP521 => "ecdsa-sha2-nistp521",
        KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => "ssh-rsa",
    };
    if data.algorithm().as_str() != expected {
        return Err(format!(
            "the public key is {}, but the key is {spec}",
            data.algorithm()
        ));
    }
    Ok(data)
}

/// The offered keys that exist now, in the configured order. A key that does not exist (yet)
/// or whose backend is unavailable is left out, with a log line; it is offered once it
/// resolves.
pub async fn offered(registry: &Registry, ids: &[String]) -> Vec<Offered> {
    let mut keys = Vec::with_capacity(ids.len());
    for id in ids {
        match offer(registry, id).await {
            Ok(offered) => keys.push(offered),
            Err(e) => tracing::debug!(key = %id, "ssh-agent: not offered now: {e}"),
        }
    }
    keys
}

async fn offer(registry: &Registry, id: &str) -> Result<Offered, AgentError> {
    let key = registry.resolve(id).await?;
    let ssh = cached_key_data(key.spec(), &key.description.public_key_der)
        .map_err(|e| AgentError::Internal(format!("key {id:?}: {e}")))?;
    Ok(Offered { key, ssh })
}

/// Most OpenSSH forms kept; past it the cache starts again (keys rotated many times).
const MAX_FORMS: usize = 1024;

/// OpenSSH forms already built, by SubjectPublicKeyInfo (with the key type they were built
/// for). Every identities or sign request walks the offered keys, and parsing a public key
/// with OpenSSL costs more than the rest of that walk; a rotated key has a new SPKI, so an
/// entry never goes stale.
static FORMS: LazyLock<Mutex<Forms>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// SubjectPublicKeyInfo (DER) -> the key type and OpenSSH form built for it.
type Forms = HashMap<Vec<u8>, (KeySpec, KeyData)>;

/// [`key_data`], built once per public key.
fn cached_key_data(spec: KeySpec, spki_der: &[u8]) -> Result<KeyData, String> {
    if let Some((cached_spec, data)) = FORMS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(spki_der)
        && *cached_spec == spec
    {
        return Ok(data.clone());
    }
    let data = key_data(spec, spki_der)?;
    let mut forms = FORMS.lock().unwrap_or_else(|p| p.into_inner());
    if forms.len() >= MAX_FORMS {
        forms.clear();
    }
    forms.insert(spki_der.to_vec(), (spec, data.clone()));
    Ok(data)
}

/// The identities answer: each key with its id as the comment.
pub fn identities(keys: &[Offered]) -> Vec<Identity> {
    keys.iter()
        .map(|offered| Identity {
            credential: offered.ssh.clone().into(),
            comment: offered.key.id.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use ssh_key::PublicKey;

    use super::*;

    fn spki(pem: &[u8]) -> Vec<u8> {
        PKey::public_key_from_pem(pem)
            .unwrap()
            .public_key_to_der()
            .unwrap()
    }

    #[test]
    fn a_cached_form_is_the_form_and_a_spec_mismatch_is_still_refused() {
        let key = openssl::ec::EcKey::generate(
            &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap(),
        )
        .unwrap();
        let der = PKey::from_ec_key(key).unwrap().public_key_to_der().unwrap();
        let fresh = key_data(KeySpec::EcP256, &der).unwrap();
        assert_eq!(cached_key_data(KeySpec::EcP256, &der).unwrap(), fresh);
        assert_eq!(cached_key_data(KeySpec::EcP256, &der).unwrap(), fresh);
        // The cache never answers for another key type.
        assert!(cached_key_data(KeySpec::EcP384, &der).is_err());
        assert!(cached_key_data(KeySpec::Ed25519, &der).is_err());
    }

    #[test]
    fn every_key_type_becomes_its_openssh_form() {
        for (spec, key) in [
            (
                KeySpec::EcP256,
                PKey::from_ec_key(
                    openssl::ec::EcKey::generate(
                        &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)
                            .unwrap(),
                    )
                    .unwrap(),
                )
                .unwrap(),
            ),
            (
                KeySpec::EcP521,
                PKey::from_ec_key(
                    openssl::ec::EcKey::generate(
                        &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::SECP521R1)
                            .unwrap(),
                    )
                    .unwrap(),
                )
                .unwrap(),
            ),
            (KeySpec::Ed25519, PKey::generate_ed25519().unwrap()),
            (
                KeySpec::Rsa2048,
                PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap(),
            ),
        ] {
            let der = spki(&key.public_key_to_pem().unwrap());
            let data = key_data(spec, &der).unwrap();
            let line = PublicKey::from(data).to_openssh().unwrap();
            let expected = match spec {
                KeySpec::EcP256 => "ecdsa-sha2-nistp256 ",
                KeySpec::EcP521 => "ecdsa-sha2-nistp521 ",
                KeySpec::Ed25519 => "ssh-ed25519 ",
                _ => "ssh-rsa ",
            };
            assert!(line.starts_with(expected), "{spec}: {line}");
        }
        // A key whose spec says otherwise is refused.
        let ed = PKey::generate_ed25519().unwrap();
        let err = key_data(KeySpec::EcP256, &ed.public_key_to_der().unwrap()).unwrap_err();
        assert!(err.contains("but the key is ec-p256"), "{err}");
        assert!(key_data(KeySpec::EcP256, b"junk").is_err());
    }
}
