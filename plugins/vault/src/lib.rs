//! The `vault` backend: keys in a HashiCorp Vault or OpenBao transit secrets engine.
//!
//! The private keys never leave Vault: keyward lists the transit keys of types it can sign
//! with (`ecdsa-p256/p384/p521`, `rsa-2048/3072/4096`, `ed25519`), reads their public keys,
//! and has Vault sign digests (`prehashed`) or, for Ed25519, messages. The daemon verifies every
//! signature before it leaves, as for any backend.
//!
//! - A reference is a transit key name, or `name@N` to pin version N of it: a pinned key signs
//!   with that version and its public key is that version's.
//! - An unpinned key signs with the version the daemon was last told about by `describe_key`
//!   or `list_keys`, so the public key the agent serves always verifies its signatures. After a
//!   rotation the agent moves to the new version when it next lists or describes the key
//!   (`keyward keys list`, a restart).
//! - Authentication: a token, AppRole, Kubernetes or JWT (see [`settings`] and [`auth`]).
//!   Nothing talks to Vault before the first call, so a Vault that is down or sealed when the
//!   daemon starts does not stop it: calls answer UNAVAILABLE until it is back.
//! - HTTP details, retries and error meanings are in [`http`].

pub mod auth;
pub mod http;
pub mod keys;
pub mod settings;
pub mod sign;
pub mod wire;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use keyward_plugin_api::{
    Backend, BackendError, Deletion, DeletionOutcome, EcdsaFormat, KeyDescription, KeySpec, SignOp,
    Signature, is_valid_key_name,
};
use serde_json::{Value, json};

use crate::auth::Authenticator;
use crate::http::{CallError, Http, Purpose, Verb};
use crate::keys::{Reference, TransitKey};
pub use crate::settings::VaultSettings;
use crate::wire::Body;

/// A Vault (or OpenBao) transit engine as a keyward backend.
#[derive(Debug)]
pub struct VaultBackend {
    http: Http,
    auth: Authenticator,
    mount: String,
    /// Public keys of every version, by key name.
    keys: RwLock<HashMap<String, Arc<TransitKey>>>,
}

impl VaultBackend {
    /// Makes the backend: reads the token or login secret and the CA file, sets up the HTTP
    /// client. It does not contact Vault; the first call logs in.
    pub fn new(settings: VaultSettings) -> Result<Self, BackendError> {
        let http = Http::new(
            &settings.address,
            settings.namespace.as_deref(),
            settings.ca_file.as_deref(),
        )?;
        let auth = Authenticator::new(&settings.auth)?;
        tracing::info!(
            address = %settings.address,
            mount = %settings.mount,
            auth = settings.auth.name(),
            "vault backend ready; it connects on first use"
        );
        Ok(VaultBackend {
            http,
            auth,
            mount: settings.mount,
            keys: RwLock::new(HashMap::new()),
        })
    }

    /// Sends a request with a valid token; a refused token is replaced once and the request
    /// sent again. `Ok(None)` when Vault answers 404 with no error text (nothing at the path).
    async fn request(
        &self,
        verb: Verb,
        path: &str,
        body: Option<&Value>,
        purpose: &Purpose,
    ) -> Result<Option<Value>, BackendError> {
        let body = body.map(Body::json);
        let body = body.as_ref();
        let token = self.auth.token(&self.http).await?;
        let mut result = self.http.call(verb, path, Some(&token.secret), body).await;
        if matches!(&result, Err(e) if e.is_status(403))
            && self.auth.refused(token.generation).await
        {
            let token = self.auth.token(&self.http).await?;
            result = self.http.call(verb, path, Some(&token.secret), body).await;
        }
        match result {
            Ok(value) => Ok(Some(value)),
            Err(CallError::Status {
                status: 404,
                errors,
                ..
            }) if errors.is_empty() => Ok(None),
            Err(error) => Err(self.http.error(error, purpose)),
        }
    }

    /// Reads a key from Vault and caches it. `NotFound` if there is no such key,
    /// `Unsupported` if it is not a signing key keyward knows.
    async fn fetch_key(&self, name: &str) -> Result<Arc<TransitKey>, BackendError> {
        let path = format!("{}/keys/{name}", self.mount);
        let purpose = Purpose::new("read", &path, format!("read transit key {name:?}"));
        let answer = self.request(Verb::Get, &path, None, &purpose).await?;
        let Some(answer) = answer else {
            self.forget(name);
            return Err(BackendError::NotFound(format!(
                "vault at {} has no transit key {name:?} in mount {:?}",
                self.http.address(),
                self.mount
            )));
        };
        let data = answer.get("data").cloned().unwrap_or(Value::Null);
        let Some(key) = keys::parse_key(name, &data)? else {
            let key_type = data.get("type").and_then(Value::as_str).unwrap_or("?");
            return Err(BackendError::Unsupported(format!(
                "transit key {name:?} is of type {key_type}, which keyward does not sign with; \
                 use ecdsa-p256, ecdsa-p384, ecdsa-p521, rsa-2048, rsa-3072, rsa-4096 or ed25519"
            )));
        };
        let key = Arc::new(key);
        self.keys
            .write()
            .expect("key cache lock")
            .insert(name.to_string(), key.clone());
        Ok(key)
    }

    /// The cached key, read from Vault on a miss.
    async fn key(&self, name: &str) -> Result<Arc<TransitKey>, BackendError> {
        let cached = self.keys.read().expect("key cache lock").get(name).cloned();
        match cached {
            Some(key) => Ok(key),
            None => self.fetch_key(name).await,
        }
    }

    fn forget(&self, name: &str) {
        self.keys.write().expect("key cache lock").remove(name);
    }

    /// Describes `reference` from `key`: a pinned version, or the latest.
    fn describe(
        &self,
        reference: &str,
        parsed: &Reference,
        key: &TransitKey,
    ) -> Result<KeyDescription, BackendError> {
        let version = parsed.version.unwrap_or(key.latest);
        let der = key.versions.get(&version).ok_or_else(|| {
            BackendError::NotFound(format!(
                "transit key {:?} has no version {version} (its versions: {})",
                parsed.name,
                key.versions
                    .keys()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        Ok(KeyDescription {
            reference: reference.to_string(),
            spec: key.spec,
            public_key_der: der.clone(),
            version: Some(version.to_string()),
            openpgp_certificate: None,
            attributes: Default::default(),
            algorithms: Vec::new(),
        })
    }
}

#[async_trait]
impl Backend for VaultBackend {
    fn backend_type(&self) -> &str {
        "vault"
    }

    async fn list_keys(&self) -> Result<Vec<KeyDescription>, BackendError> {
        let path = format!("{}/keys", self.mount);
        let purpose = Purpose::new("list", &path, "list the transit keys");
        let Some(answer) = self.request(Verb::List, &path, None, &purpose).await? else {
            return Ok(Vec::new());
        };
        let names: Vec<String> = answer
            .pointer("/data/keys")
            .and_then(Value::as_array)
            .map(|names| {
                names
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let mut keys = Vec::new();
        for name in names {
            if !is_valid_key_name(&name) {
                tracing::debug!(key = %name, "skipping a transit key whose name keyward cannot use as an id");
                continue;
            }
            let parsed = Reference {
                name: name.clone(),
                version: None,
            };
            // One unreadable key must not hide the others: skip it and say why.
            match self.fetch_key(&name).await {
                Ok(key) => keys.push(self.describe(&name, &parsed, &key)?),
                Err(BackendError::Unsupported(_)) => {
                    tracing::debug!(key = %name, "skipping a transit key of a type keyward does not sign with")
                }
                Err(e) => tracing::warn!(key = %name, "skipping transit key: {e}"),
            }
        }
        Ok(keys)
    }

    async fn describe_key(&self, reference: &str) -> Result<KeyDescription, BackendError> {
        let parsed = Reference::parse(reference)?;
        let key = self.fetch_key(&parsed.name).await?;
        self.describe(reference, &parsed, &key)
    }

    async fn sign(&self, reference: &str, op: SignOp<'_>) -> Result<Signature, BackendError> {
        let parsed = Reference::parse(reference)?;
        let name = &parsed.name;
        let mut key = self.key(name).await?;
        if let Some(pinned) = parsed.version
            && !key.versions.contains_key(&pinned)
        {
            // A version made since the key was cached, or none at all.
            key = self.fetch_key(name).await?;
            if !key.versions.contains_key(&pinned) {
                return Err(BackendError::NotFound(format!(
                    "transit key {name:?} has no version {pinned} (its latest is {})",
                    key.latest
                )));
            }
        }
        // An unpinned key signs with Vault's latest version; the signature names the version
        // and the daemon re-reads the key when that is newer than what it knew.
        let version = parsed.version;
        let body = sign::sign_body(key.spec, op, version)?;
        let path = format!("{}/sign/{name}", self.mount);
        let purpose = Purpose::new("update", &path, format!("sign with transit key {name:?}"));
        let answer = match self.request(Verb::Post, &path, Some(&body), &purpose).await {
            Ok(Some(answer)) => answer,
            Ok(None) | Err(BackendError::NotFound(_)) => {
                self.forget(name);
                return Err(BackendError::NotFound(format!(
                    "vault at {} has no transit key {name:?} in mount {:?} any more",
                    self.http.address(),
                    self.mount
                )));
            }
            Err(e) => return Err(e),
        };
        let text = answer
            .pointer("/data/signature")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                BackendError::Internal(format!("vault answered {path} without a signature"))
            })?;
        let (bytes, signed_with) = sign::parse_signature(text)?;
        if !key.versions.contains_key(&signed_with)
            && let Err(e) = self.fetch_key(name).await
        {
            tracing::warn!(key = %name, "cannot read the new version {signed_with}: {e}");
        }
        Ok(Signature {
            bytes,
            ecdsa_format: EcdsaFormat::Der,
            key_version: Some(signed_with.to_string()),
        })
    }

    async fn generate_key(
        &self,
        name: &str,
        spec: KeySpec,
    ) -> Result<KeyDescription, BackendError> {
        let parsed = Reference::parse(name)?;
        if parsed.version.is_some() {
            return Err(BackendError::InvalidInput(format!(
                "{name:?}: a new key has no version; drop the '@'"
            )));
        }
        match self.fetch_key(name).await {
            Err(BackendError::NotFound(_)) => {}
            Ok(_) | Err(BackendError::Unsupported(_)) => {
                return Err(BackendError::InvalidInput(format!(
                    "vault at {} already has a transit key {name:?} in mount {:?}; choose another name",
                    self.http.address(),
                    self.mount
                )));
            }
            Err(e) => return Err(e),
        }
        let path = format!("{}/keys/{name}", self.mount);
        let purpose = Purpose::new("update", &path, format!("create transit key {name:?}"));
        let body = json!({ "type": keys::transit_type(spec), "exportable": false });
        self.request(Verb::Post, &path, Some(&body), &purpose)
            .await?;
        let key = self.fetch_key(name).await?;
        if key.spec != spec {
            return Err(BackendError::Internal(format!(
                "vault created transit key {name:?} as {} instead of {spec}",
                key.spec
            )));
        }
        self.describe(name, &parsed, &key)
    }

    /// Deletes a transit key when its `deletion_allowed` is on; otherwise says how to allow it
    /// (keyward does not turn the key's own safety catch off for the operator).
    async fn delete_key(&self, reference: &str) -> Result<Deletion, BackendError> {
        let parsed = Reference::parse(reference)?;
        if let Some(version) = parsed.version {
            return Err(BackendError::InvalidInput(format!(
                "{reference:?} names version {version} of transit key {:?}; Vault deletes whole keys: delete it by its name without '@' (or trim old versions with `min_available_version`)",
                parsed.name
            )));
        }
        let name = &parsed.name;
        let path = format!("{}/keys/{name}", self.mount);
        let purpose = Purpose::new("read", &path, format!("read transit key {name:?}"));
        let Some(answer) = self.request(Verb::Get, &path, None, &purpose).await? else {
            return Err(BackendError::NotFound(format!(
                "vault at {} has no transit key {name:?} in mount {:?}",
                self.http.address(),
                self.mount
            )));
        };
        let allowed = answer
            .pointer("/data/deletion_allowed")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if !allowed {
            return Err(BackendError::FailedPrecondition(format!(
                "transit key {name:?} does not allow deletion (its deletion_allowed is false); allow it first with `vault write {path}/config deletion_allowed=true` (or `bao write ...`), then delete it again"
            )));
        }
        let purpose = Purpose::new("delete", &path, format!("delete transit key {name:?}"));
        self.request(Verb::Delete, &path, None, &purpose).await?;
        self.forget(name);
        Ok(Deletion {
            outcome: DeletionOutcome::Deleted,
            detail: format!(
                "deleted transit key {name:?} with every version from {} (mount {:?}); this cannot be undone",
                self.http.address(),
                self.mount
            ),
            effective_at: None,
        })
    }
}
