//! The `awskms` backend: asymmetric signing keys in AWS KMS.
//!
//! The private keys never leave KMS: keyward reads their public keys (`GetPublicKey`, cached
//! per key: a KMS key's public key never changes) and has KMS sign the digests it computed
//! (`Sign` with `MessageType=DIGEST`). ECDSA signatures come back DER-encoded. KMS ties each
//! curve to one hash; keyward's other ECDSA hashes are signed through it with the digest cut or
//! padded to that hash's length ([`keys::kms_request`] says why this is exact). The daemon
//! verifies every signature before it leaves, as for any backend.
//!
//! - Keys: `ECC_NIST_P256/P384/P521` and `RSA_2048/3072/4096` keys with key usage
//!   `SIGN_VERIFY`. References are key ids, key or alias ARNs, `alias/<name>` or bare alias
//!   names (see [`keys`]). Ed25519 is refused as unsupported.
//! - Discovery (`discover = true`): `ListKeys` + `ListAliases`, then `DescribeKey` keeps the
//!   enabled signing keys of those specs; a key is listed under its alias name when it has a
//!   usable one, else under its key id.
//! - `generate_key(name, spec)` makes a key (`CreateKey`) and the alias `alias/<name>`.
//! - A reference is resolved to a key ARN when the daemon describes it, and that key signs, so
//!   a signature always matches the public key the agent serves even if the alias is moved.
//! - Nothing talks to AWS before the first call ([`client`]); credentials come from the SDK's
//!   default chain; requests are rate-limited (`keyward_plugin_api::ratelimit`) and retried, and failures are
//!   explained ([`error`]).

pub mod client;
mod discovery;
pub mod error;
pub mod keys;
pub mod settings;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeyMetadata, KeyUsageType, MessageType};
use keyward_plugin_api::verify::key_spec_of_spki;
use keyward_plugin_api::{
    Backend, BackendError, EcdsaFormat, KeyDescription, KeySpec, SignOp, Signature,
};

use crate::client::Kms;
use crate::error::Purpose;
use crate::keys::{ED25519_UNSUPPORTED, Reference};
pub use crate::settings::AwsKmsSettings;

/// AWS KMS as a keyward backend.
#[derive(Debug, Clone)]
pub struct AwsKmsBackend {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    kms: Kms,
    discover: bool,
    /// Public keys by key ARN.
    public_keys: RwLock<HashMap<String, Arc<KmsKey>>>,
    /// The key each reference resolved to when the daemon last described it.
    resolved: RwLock<HashMap<String, Arc<KmsKey>>>,
}

/// A signing key as KMS described it.
#[derive(Debug)]
struct KmsKey {
    arn: String,
    spec: KeySpec,
    public_key_der: Vec<u8>,
}

impl AwsKmsBackend {
    /// Makes the backend. It does not contact AWS or look for credentials: the first call does.
    pub fn new(settings: AwsKmsSettings) -> Result<Self, BackendError> {
        let kms = Kms::new(&settings);
        tracing::info!(
            region = %settings.region,
            endpoint = %kms.endpoint(),
            discover = settings.discover,
            rate_limit = settings.rate_limit,
            "awskms backend ready; it connects on first use"
        );
        Ok(AwsKmsBackend {
            inner: Arc::new(Inner {
                kms,
                discover: settings.discover,
                public_keys: RwLock::new(HashMap::new()),
                resolved: RwLock::new(HashMap::new()),
            }),
        })
    }
}

impl Inner {
    /// `DescribeKey`.
    async fn describe(&self, kms_id: &str) -> Result<KeyMetadata, BackendError> {
        let purpose = Purpose::key("DescribeKey", kms_id);
        let output = self
            .kms
            .call(&purpose, |c| c.describe_key().key_id(kms_id).send())
            .await?;
        output.key_metadata().cloned().ok_or_else(|| {
            BackendError::Internal(format!("KMS described key {kms_id:?} without metadata"))
        })
    }

    /// The signing key behind `metadata`, with its public key (read once per key).
    async fn signing_key(
        &self,
        shown: &str,
        metadata: &KeyMetadata,
    ) -> Result<Arc<KmsKey>, BackendError> {
        let spec = keys::usable_spec(shown, metadata)?;
        let arn = metadata
            .arn()
            .map_or_else(|| metadata.key_id().to_string(), str::to_string);
        let cached = self
            .public_keys
            .read()
            .expect("public key cache lock")
            .get(&arn)
            .cloned();
        if let Some(key) = cached {
            return Ok(key);
        }
        let purpose = Purpose::key("GetPublicKey", shown);
        let output = self
            .kms
            .call(&purpose, |c| c.get_public_key().key_id(&arn).send())
            .await?;
        let der = output
            .public_key()
            .map(|blob| blob.as_ref().to_vec())
            .ok_or_else(|| {
                BackendError::Internal(format!("KMS gave no public key for key {shown:?}"))
            })?;
        match key_spec_of_spki(&der) {
            Ok(found) if found == spec => {}
            Ok(found) => {
                return Err(BackendError::Internal(format!(
                    "KMS describes key {shown:?} as {spec} but its public key is {found}"
                )));
            }
            Err(e) => {
                return Err(BackendError::Internal(format!(
                    "the public key KMS gave for key {shown:?} is unusable: {e}"
                )));
            }
        }
        let key = Arc::new(KmsKey {
            arn: arn.clone(),
            spec,
            public_key_der: der,
        });
        self.public_keys
            .write()
            .expect("public key cache lock")
            .insert(arn, key.clone());
        Ok(key)
    }

    /// Resolves `reference` to its key now, and remembers it for signing.
    async fn resolve(&self, reference: &str) -> Result<Arc<KmsKey>, BackendError> {
        let parsed = Reference::parse(reference)?;
        let metadata = match self.describe(parsed.kms_id()).await {
            Err(BackendError::NotFound(message)) => {
                self.forget(reference);
                return Err(BackendError::NotFound(message));
            }
            other => other?,
        };
        let key = self.signing_key(parsed.kms_id(), &metadata).await?;
        self.remember(reference, key.clone());
        Ok(key)
    }

    fn remember(&self, reference: &str, key: Arc<KmsKey>) {
        self.resolved
            .write()
            .expect("resolved lock")
            .insert(reference.to_string(), key);
    }

    fn forget(&self, reference: &str) {
        self.resolved
            .write()
            .expect("resolved lock")
            .remove(reference);
    }
}

#[async_trait]
impl Backend for AwsKmsBackend {
    fn backend_type(&self) -> &str {
        "awskms"
    }

    async fn list_keys(&self) -> Result<Vec<KeyDescription>, BackendError> {
        if !self.inner.discover {
            return Ok(Vec::new());
        }
        discovery::list(&self.inner).await
    }

    async fn describe_key(&self, reference: &str) -> Result<KeyDescription, BackendError> {
        let key = self.inner.resolve(reference).await?;
        Ok(KeyDescription {
            reference: reference.to_string(),
            spec: key.spec,
            public_key_der: key.public_key_der.clone(),
            version: None,
            openpgp_certificate: None,
            attributes: Default::default(),
            algorithms: Vec::new(),
        })
    }

    async fn sign(&self, reference: &str, op: SignOp<'_>) -> Result<Signature, BackendError> {
        let SignOp::Prehashed(op) = op else {
            return Err(BackendError::Unsupported(ED25519_UNSUPPORTED.to_string()));
        };
        let algorithm = op.algorithm();
        let cached = self
            .inner
            .resolved
            .read()
            .expect("resolved lock")
            .get(reference)
            .cloned();
        let key = match cached {
            Some(key) => key,
            None => self.inner.resolve(reference).await?,
        };
        if !key.spec.supports(algorithm) {
            return Err(BackendError::InvalidInput(format!(
                "a {} key cannot sign with {algorithm}",
                key.spec
            )));
        }
        let (kms_algorithm, digest) = keys::kms_request(key.spec, op)
            .ok_or_else(|| BackendError::Unsupported(ED25519_UNSUPPORTED.to_string()))?;
        let purpose = Purpose::key("Sign", reference);
        let result = self
            .inner
            .kms
            .call(&purpose, |c| {
                c.sign()
                    .key_id(&key.arn)
                    .message(Blob::new(digest.clone()))
                    .message_type(MessageType::Digest)
                    .signing_algorithm(kms_algorithm.clone())
                    .send()
            })
            .await;
        let output = match result {
            Err(BackendError::NotFound(message)) => {
                self.inner.forget(reference);
                return Err(BackendError::NotFound(message));
            }
            other => other?,
        };
        let bytes = output
            .signature()
            .map(|blob| blob.as_ref().to_vec())
            .filter(|bytes| !bytes.is_empty())
            .ok_or_else(|| {
                BackendError::Internal(format!(
                    "KMS signed with key {reference:?} but returned no signature"
                ))
            })?;
        Ok(Signature {
            bytes,
            ecdsa_format: EcdsaFormat::Der,
            key_version: None,
        })
    }

    async fn generate_key(
        &self,
        name: &str,
        spec: KeySpec,
    ) -> Result<KeyDescription, BackendError> {
        let kms_spec = keys::kms_spec(spec)
            .ok_or_else(|| BackendError::Unsupported(ED25519_UNSUPPORTED.to_string()))?;
        if !keyward_plugin_api::is_valid_key_name(name)
            || !keys::is_alias_name(name)
            || keys::is_key_id(name)
        {
            return Err(BackendError::InvalidInput(format!(
                "{name:?} cannot name a KMS key: the alias alias/{name} needs 1-128 letters, digits, '_' and '-' \
                 (no '.'), and must not look like a key id"
            )));
        }
        let alias = format!("alias/{name}");
        match self.inner.describe(&alias).await {
            Err(BackendError::NotFound(_)) => {}
            Ok(_) => {
                return Err(BackendError::InvalidInput(format!(
                    "KMS at {} already has an alias {alias}; choose another name",
                    self.inner.kms.endpoint()
                )));
            }
            Err(e) => return Err(e),
        }
        let created = self
            .inner
            .kms
            .call(&Purpose::account("CreateKey"), |c| {
                c.create_key()
                    .key_usage(KeyUsageType::SignVerify)
                    .key_spec(kms_spec.clone())
                    .description(format!("keyward signing key {name}"))
                    .send()
            })
            .await?;
        let key_id = created
            .key_metadata()
            .map(|m| m.key_id().to_string())
            .filter(|id| !id.is_empty())
            .ok_or_else(|| BackendError::Internal("KMS created a key but gave no key id".into()))?;
        let aliased = self
            .inner
            .kms
            .call(&Purpose::key("CreateAlias", &alias), |c| {
                c.create_alias()
                    .alias_name(&alias)
                    .target_key_id(&key_id)
                    .send()
            })
            .await;
        if let Err(e) = aliased {
            tracing::error!(key = %key_id, "KMS key created but its alias {alias} was not: {e}");
            return Err(match e {
                BackendError::PermissionDenied(message) => BackendError::PermissionDenied(format!(
                    "{message}; KMS key {key_id} was created without its alias: add it with \
                     `aws kms create-alias --alias-name {alias} --target-key-id {key_id}` or schedule the key's deletion"
                )),
                other => BackendError::Internal(format!(
                    "KMS key {key_id} was created but its alias {alias} was not ({other}); add the alias with \
                     `aws kms create-alias` or schedule the key's deletion"
                )),
            });
        }
        tracing::info!(key = %key_id, alias = %alias, spec = %spec, "KMS key created");
        let description = self.describe_key(name).await?;
        if description.spec != spec {
            return Err(BackendError::Internal(format!(
                "KMS created {alias} as {} instead of {spec}",
                description.spec
            )));
        }
        Ok(description)
    }
}
