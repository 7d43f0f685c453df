//! The `azurekv` backend: signing keys in Azure Key Vault (or Managed HSM), through the official
//! Azure SDK crates (`azure_security_keyvault_keys`, `azure_identity`).
//!
//! The private keys never leave the vault: keyward reads their public keys (a JWK, turned into
//! a SubjectPublicKeyInfo and cached per key version) and has the vault sign the digests it
//! computed. ECDSA signatures come back as `r || s`. The daemon verifies every signature before
//! it leaves, as for any backend.
//!
//! - Keys: `EC`/`EC-HSM` P-256/P-384/P-521 and `RSA`/`RSA-HSM` 2048/3072/4096 whose `key_ops`
//!   include `sign`; references are names, `name@version` or key URLs ([`keys`]).
//! - Versions: a pinned key signs with its version and serves that version's public key. An
//!   unpinned key signs with the version that was current when keyward last read the key, and
//!   reads it again when that is older than `version_check_interval` (60 s by default; 0 reads
//!   it before every signature). Every sign request names the version, so a signature always
//!   matches a public key keyward has read; it reports the version, and when that is not the
//!   one the daemon knew (a new version was made), the daemon reads the key again. If the
//!   version an unpinned key knew is gone (404), the key's current version signs instead.
//! - Discovery (`discover = true`): the vault's enabled signing keys, listed under their names.
//! - `generate_key(name, spec)` creates a key with `key_ops = ["sign", "verify"]` only.
//! - Credentials ([`credential`]), HTTP, retries and the deadline ([`client`]), error meanings
//!   ([`error`]). Nothing talks to Azure before the first call.

pub mod client;
pub mod credential;
pub mod error;
pub mod keys;
pub mod settings;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use async_trait::async_trait;
use azure_security_keyvault_keys::models::{
    CreateKeyParameters, Key, KeyClientGetKeyOptions, KeyClientSignOptions, KeyOperation,
    KeyOperationResult, SignParameters,
};
use keyward_plugin_api::{
    Backend, BackendError, EcdsaFormat, KeyDescription, KeySpec, Prehashed, SignOp, Signature,
    is_valid_key_name,
};
use tokio_stream::StreamExt;

use crate::client::Vault;
use crate::error::Purpose;
use crate::keys::Reference;
pub use crate::settings::AzureKvSettings;

/// How many keys discovery reads at once.
const DISCOVERY_CONCURRENCY: usize = 8;

/// One version of a key, as keyward uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyVersion {
    /// Its key spec.
    pub spec: KeySpec,
    /// Its public key, DER SubjectPublicKeyInfo.
    pub public_key_der: Vec<u8>,
    /// The version id.
    pub version: String,
    /// Whether the key is enabled.
    pub enabled: bool,
}

/// Azure Key Vault as a keyward backend.
#[derive(Debug, Clone)]
pub struct AzureKvBackend {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    vault: Vault,
    /// Key versions by (name, version).
    versions: RwLock<HashMap<(String, String), Arc<KeyVersion>>>,
    /// The version last seen as current, and when, by name.
    current: RwLock<HashMap<String, (String, Instant)>>,
}

impl AzureKvBackend {
    /// Makes the backend. No network and no file access: the credential and the client are
    /// made by the first call.
    pub fn new(settings: AzureKvSettings) -> Result<Self, BackendError> {
        tracing::info!(
            vault = %settings.vault_url,
            credential = settings.credential.name(),
            "azurekv backend ready; it connects on first use"
        );
        Ok(AzureKvBackend {
            inner: Arc::new(Inner {
                vault: Vault::new(settings),
                versions: RwLock::new(HashMap::new()),
                current: RwLock::new(HashMap::new()),
            }),
        })
    }
}

impl Inner {
    fn url(&self) -> &str {
        self.vault.url()
    }

    /// Reads a key (its current version when `version` is `None`) and caches it.
    async fn fetch(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<Arc<KeyVersion>, BackendError> {
        let key = self.read(name, version).await?;
        self.remember(name, version.is_none(), &key)
    }

    /// Reads a key as the vault describes it.
    async fn read(&self, name: &str, version: Option<&str>) -> Result<Key, BackendError> {
        let shown = match version {
            Some(v) => format!("version {v} of key {name:?}"),
            None => format!("key {name:?}"),
        };
        let purpose = Purpose::new("get", format!("read {shown}"));
        let answer = self
            .vault
            .call(&purpose, |client| {
                let (name, version) = (name.to_string(), version.map(str::to_string));
                async move {
                    let options = KeyClientGetKeyOptions {
                        key_version: version,
                        ..Default::default()
                    };
                    client.get_key(&name, Some(options)).await?.into_model()
                }
            })
            .await;
        match answer {
            Err(BackendError::NotFound(detail)) => {
                if version.is_none() {
                    self.forget(name);
                }
                Err(BackendError::NotFound(format!(
                    "key vault {} has no {shown} ({detail})",
                    self.url()
                )))
            }
            other => other,
        }
    }

    /// Checks and caches a key the vault described; `current` when it is the key's current
    /// version.
    fn remember(
        &self,
        name: &str,
        current: bool,
        key: &Key,
    ) -> Result<Arc<KeyVersion>, BackendError> {
        let bad = |what: String| {
            BackendError::Internal(format!(
                "key vault {} described key {name:?} {what}",
                self.url()
            ))
        };
        let jwk = key
            .key
            .as_ref()
            .ok_or_else(|| bad("without its public key".into()))?;
        let version = jwk
            .kid
            .as_deref()
            .and_then(keys::parse_kid)
            .and_then(|(_, version)| version)
            .ok_or_else(|| bad("without a versioned key id".into()))?;
        let spec = keys::spec_of_jwk(jwk).map_err(|why| {
            BackendError::Unsupported(format!(
                "key {name:?} in {} cannot sign through keyward: {why}",
                self.url()
            ))
        })?;
        if !keys::allows_sign(jwk) {
            return Err(BackendError::PermissionDenied(format!(
                "key {name:?} in {} does not allow signing: its key_ops ({}) lack \"sign\"; \
                 add it with `az keyvault key set-attributes --ops sign verify`",
                self.url(),
                jwk.key_ops.as_deref().unwrap_or_default().join(", ")
            )));
        }
        let public_key_der = keys::spki_of_jwk(jwk, spec)
            .map_err(|why| bad(format!("with a public key keyward cannot read: {why}")))?;
        let enabled = key
            .attributes
            .as_ref()
            .and_then(|a| a.enabled)
            .unwrap_or(true);
        let entry = Arc::new(KeyVersion {
            spec,
            public_key_der,
            version: version.clone(),
            enabled,
        });
        self.versions
            .write()
            .expect("key cache lock")
            .insert((name.to_string(), version.clone()), entry.clone());
        if current {
            self.current
                .write()
                .expect("key cache lock")
                .insert(name.to_string(), (version, Instant::now()));
        }
        Ok(entry)
    }

    fn forget(&self, name: &str) {
        self.current.write().expect("key cache lock").remove(name);
        self.versions
            .write()
            .expect("key cache lock")
            .retain(|(n, _), _| n != name);
    }

    /// The cached version of `reference`, read from the vault on a miss or, for an unpinned
    /// key, when its current version was checked longer than `version_check_interval` ago.
    async fn key(&self, reference: &Reference) -> Result<Arc<KeyVersion>, BackendError> {
        let interval = self.vault.settings().version_check_interval;
        let version = match &reference.version {
            Some(v) => Some(v.clone()),
            None => self
                .current
                .read()
                .expect("key cache lock")
                .get(&reference.name)
                .filter(|(_, checked)| checked.elapsed() < interval)
                .map(|(version, _)| version.clone()),
        };
        if let Some(version) = version {
            let cached = self
                .versions
                .read()
                .expect("key cache lock")
                .get(&(reference.name.clone(), version))
                .cloned();
            if let Some(cached) = cached {
                return Ok(cached);
            }
        }
        self.fetch(&reference.name, reference.version.as_deref())
            .await
    }

    /// Has the vault sign `digest` with version `key` of the key `parsed` names.
    async fn sign_with(
        &self,
        parsed: &Reference,
        key: &KeyVersion,
        op: Prehashed<'_>,
    ) -> Result<KeyOperationResult, BackendError> {
        let (azure_algorithm, value) = keys::azure_request(key.spec, op)?;
        let purpose = Purpose::new("sign", format!("sign with key {:?}", parsed.display()));
        self.vault
            .call(&purpose, |client| {
                let name = parsed.name.clone();
                // Always the version whose public key keyward has: real Key Vault also signs
                // with `/keys/<name>//sign` (the current version), but then a signature could
                // come from a version keyward never read (and emulators lack that route).
                let options = KeyClientSignOptions {
                    key_version: Some(key.version.clone()),
                    ..Default::default()
                };
                let parameters = SignParameters {
                    algorithm: Some(azure_algorithm.clone()),
                    value: Some(value.clone()),
                };
                async move {
                    client
                        .sign(&name, parameters.try_into()?, Some(options))
                        .await?
                        .into_model()
                }
            })
            .await
    }

    fn describe(reference: &str, key: &KeyVersion) -> KeyDescription {
        KeyDescription {
            reference: reference.to_string(),
            spec: key.spec,
            public_key_der: key.public_key_der.clone(),
            version: Some(key.version.clone()),
            openpgp_certificate: None,
            attributes: Default::default(),
            algorithms: Vec::new(),
        }
    }

    /// The names of the vault's enabled keys.
    async fn list_names(&self) -> Result<Vec<String>, BackendError> {
        let purpose = Purpose::new("list", "list the keys");
        let listed = self
            .vault
            .call(&purpose, |client| async move {
                let mut pager = client.list_key_properties(None)?;
                let mut all = Vec::new();
                while let Some(item) = pager.next().await {
                    all.push(item?);
                }
                Ok(all)
            })
            .await?;
        let mut names = Vec::new();
        for properties in listed {
            let enabled = properties.attributes.as_ref().and_then(|a| a.enabled);
            let Some((name, _)) = properties.kid.as_deref().and_then(keys::parse_kid) else {
                continue;
            };
            if enabled == Some(false) {
                tracing::debug!(key = %name, "skipping a disabled key");
            } else if !is_valid_key_name(&name) {
                tracing::debug!(key = %name, "skipping a key whose name keyward cannot use as an id");
            } else {
                names.push(name);
            }
        }
        Ok(names)
    }
}

#[async_trait]
impl Backend for AzureKvBackend {
    fn backend_type(&self) -> &str {
        "azurekv"
    }

    async fn list_keys(&self) -> Result<Vec<KeyDescription>, BackendError> {
        if !self.inner.vault.settings().discover {
            return Ok(Vec::new());
        }
        let names = self.inner.list_names().await?;
        let permits = Arc::new(tokio::sync::Semaphore::new(DISCOVERY_CONCURRENCY));
        let mut reads = tokio::task::JoinSet::new();
        for name in names {
            let (inner, permits) = (self.inner.clone(), permits.clone());
            reads.spawn(async move {
                let _permit = permits.acquire_owned().await;
                let read = inner.read(&name, None).await;
                (name, inner, read)
            });
        }
        let mut keys = Vec::new();
        while let Some(joined) = reads.join_next().await {
            let Ok((name, inner, read)) = joined else {
                continue;
            };
            // One unreadable key must not hide the others: skip it and say why.
            let key = match read {
                Ok(key) => key,
                Err(e) => {
                    tracing::warn!(key = %name, "skipping key: {e}");
                    continue;
                }
            };
            match inner.remember(&name, true, &key) {
                Ok(key) if key.enabled => keys.push(Inner::describe(&name, &key)),
                Ok(_) => tracing::debug!(key = %name, "skipping a disabled key"),
                Err(why) => {
                    tracing::debug!(key = %name, "skipping a key keyward cannot sign with: {why}")
                }
            }
        }
        keys.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(keys)
    }

    async fn describe_key(&self, reference: &str) -> Result<KeyDescription, BackendError> {
        let parsed = Reference::parse(reference, self.inner.url())?;
        let key = self
            .inner
            .fetch(&parsed.name, parsed.version.as_deref())
            .await?;
        Ok(Inner::describe(reference, &key))
    }

    async fn sign(&self, reference: &str, op: SignOp<'_>) -> Result<Signature, BackendError> {
        let SignOp::Prehashed(op) = op else {
            return Err(BackendError::Unsupported(
                "Key Vault has no Ed25519 keys; use an EC or RSA key".to_string(),
            ));
        };
        let inner = &self.inner;
        let parsed = Reference::parse(reference, inner.url())?;
        let mut key = inner.key(&parsed).await?;
        let mut answer = inner.sign_with(&parsed, &key, op).await;
        if parsed.version.is_none() && matches!(answer, Err(BackendError::NotFound(_))) {
            // The version keyward knew is gone (the key was deleted and made again, say): the
            // key's current version, if it has one, signs instead.
            inner.forget(&parsed.name);
            key = inner.fetch(&parsed.name, None).await?;
            answer = inner.sign_with(&parsed, &key, op).await;
        }
        let result = match answer {
            Ok(result) => result,
            Err(BackendError::NotFound(detail)) => {
                inner.forget(&parsed.name);
                return Err(BackendError::NotFound(format!(
                    "key vault {} has no key {:?} (any more): {detail}",
                    inner.url(),
                    parsed.display()
                )));
            }
            Err(e) => return Err(e),
        };
        let bytes = result.result.filter(|b| !b.is_empty()).ok_or_else(|| {
            BackendError::Internal(format!(
                "key vault {} answered a sign without a signature",
                inner.url()
            ))
        })?;
        let signed_with = result
            .kid
            .as_deref()
            .and_then(keys::parse_kid)
            .and_then(|(_, version)| version)
            .unwrap_or_else(|| key.version.clone());
        if signed_with != key.version {
            return Err(BackendError::Internal(format!(
                "key vault {} signed with version {signed_with} of key {:?} although version {} was asked for",
                inner.url(),
                parsed.name,
                key.version
            )));
        }
        if let Some(field) = key.spec.ecdsa_field_len()
            && bytes.len() != 2 * field
        {
            return Err(BackendError::Internal(format!(
                "key vault {} returned a {}-byte ECDSA signature for a {} key (expected r || s, {} bytes)",
                inner.url(),
                bytes.len(),
                key.spec,
                2 * field
            )));
        }
        Ok(Signature {
            bytes,
            ecdsa_format: EcdsaFormat::Raw,
            key_version: Some(signed_with),
        })
    }

    async fn generate_key(
        &self,
        name: &str,
        spec: KeySpec,
    ) -> Result<KeyDescription, BackendError> {
        let inner = &self.inner;
        if name.contains('@') || name.contains("://") {
            return Err(BackendError::InvalidInput(format!(
                "{name:?}: a new key is named by a plain name (letters, digits and '-')"
            )));
        }
        keys::check_name(name)?;
        let (kty, curve, size) = keys::create_shape(spec, inner.vault.settings().hsm_keys)?;
        match inner.read(name, None).await {
            Err(BackendError::NotFound(_)) => {}
            Ok(_) => {
                return Err(BackendError::InvalidInput(format!(
                    "key vault {} already has a key {name:?} (creating it again would add a version); choose another name",
                    inner.url()
                )));
            }
            Err(e) => return Err(e),
        }
        let purpose = Purpose::new("create", format!("create key {name:?}")).once();
        let created = inner
            .vault
            .call(&purpose, |client| {
                let name = name.to_string();
                let parameters = CreateKeyParameters {
                    kty: Some(kty.clone()),
                    curve: curve.clone(),
                    key_size: size,
                    key_ops: Some(vec![KeyOperation::Sign, KeyOperation::Verify]),
                    ..Default::default()
                };
                async move {
                    client
                        .create_key(&name, parameters.try_into()?, None)
                        .await?
                        .into_model()
                }
            })
            .await?;
        let key = inner.remember(name, true, &created)?;
        if key.spec != spec {
            return Err(BackendError::Internal(format!(
                "key vault {} created key {name:?} as {} instead of {spec}",
                inner.url(),
                key.spec
            )));
        }
        tracing::info!(key = %name, %spec, version = %key.version, vault = %inner.url(), "created a key");
        Ok(Inner::describe(name, &key))
    }
}
