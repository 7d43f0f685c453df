//! The [`Backend`] trait: what a key store must do to serve keys through keyward.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;

use crate::{BackendError, EcdsaFormat, KeySpec, Secret, SignOp, SignatureAlgorithm};

/// One key as a backend sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyDescription {
    /// The key's reference in the backend's own words (a file name, a PKCS#11 URI, a KMS ARN).
    /// It names the key; it is never key material.
    pub reference: String,
    /// What kind of key it is.
    pub spec: KeySpec,
    /// The public key as a DER SubjectPublicKeyInfo.
    pub public_key_der: Vec<u8>,
    /// The backend's version of the key, when the backend versions keys.
    pub version: Option<String>,
    /// The key's OpenPGP certificate (binary, no secrets), when the backend has one (`pgp`).
    pub openpgp_certificate: Option<Vec<u8>>,
    /// What the backend says about the key beyond its type (`slot`, `pin_policy`,
    /// `touch_policy`, `attestation` for `yubikey`), shown by `keyward keys show`. Never
    /// secrets. Empty for most backends.
    pub attributes: BTreeMap<String, String>,
    /// The algorithms the key may sign with, the default first, when the backend restricts
    /// them below what its spec allows (a Parsec key's policy permits one algorithm, often with
    /// one hash). Empty for most backends: every algorithm of the spec
    /// ([`KeySpec::algorithms`]). Each must be one the spec supports. The daemon advertises
    /// these and refuses the others before it calls the backend.
    pub algorithms: Vec<SignatureAlgorithm>,
}

impl KeyDescription {
    /// The algorithms the key signs with, the default first: [`KeyDescription::algorithms`]
    /// when the backend restricts them, else every algorithm of the spec.
    pub fn allowed_algorithms(&self) -> &[SignatureAlgorithm] {
        if self.algorithms.is_empty() {
            self.spec.algorithms()
        } else {
            &self.algorithms
        }
    }
}

/// A signature as the backend produced it. The daemon verifies it against the key's public key
/// and converts ECDSA signatures to the encoding the client asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    /// The signature bytes.
    pub bytes: Vec<u8>,
    /// For ECDSA: how `bytes` is encoded. Ignored for RSA and Ed25519.
    pub ecdsa_format: EcdsaFormat,
    /// The key version that signed, when the backend versions keys.
    pub key_version: Option<String>,
}

/// A key store that can list keys, give their public keys, and sign.
///
/// The daemon calls a backend only after it has authenticated and authorised the caller, and
/// after it has checked that the algorithm fits the key; the [`SignOp`] it passes is valid by
/// construction (a digest of the hash's length, or an Ed25519 message). It verifies every
/// signature the backend returns. A backend never prompts on a terminal: PINs and passphrases
/// come from its configuration.
///
/// Optional operations have a default body that answers [`BackendError::Unsupported`].
///
/// ```
/// use keyward_plugin_api::{Backend, BackendError, KeyDescription, SignOp, Signature};
///
/// #[derive(Debug)]
/// struct Empty;
///
/// #[async_trait::async_trait]
/// impl Backend for Empty {
///     fn backend_type(&self) -> &str {
///         "empty"
///     }
///     async fn list_keys(&self) -> Result<Vec<KeyDescription>, BackendError> {
///         Ok(Vec::new())
///     }
///     async fn describe_key(&self, reference: &str) -> Result<KeyDescription, BackendError> {
///         Err(BackendError::NotFound(format!("no key {reference:?}")))
///     }
///     async fn sign(&self, reference: &str, op: SignOp<'_>) -> Result<Signature, BackendError> {
///         match op {
///             // `digest()` is already hashed with `hash()`; its length is checked.
///             SignOp::Prehashed(prehashed) => { let _ = (prehashed.algorithm(), prehashed.digest()); }
///             // The message itself: pure Ed25519 hashes it inside the signature scheme.
///             SignOp::Ed25519 { message } => { let _ = message; }
///         }
///         Err(BackendError::NotFound(format!("no key {reference:?}")))
///     }
/// }
/// ```
#[async_trait]
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// The backend type, as written in the config (`local`, `pkcs11`, ...).
    fn backend_type(&self) -> &str;

    /// Every key this backend offers for signing, with its public key.
    async fn list_keys(&self) -> Result<Vec<KeyDescription>, BackendError>;

    /// One key, by its reference in the backend's own words.
    async fn describe_key(&self, reference: &str) -> Result<KeyDescription, BackendError>;

    /// The backend's one spelling of `reference`, so that every spelling of a key is one key to
    /// the daemon: one id, one cache entry, one policy bucket. `Ok(None)`: no key can have this
    /// name (the daemon answers NOT_FOUND without asking further). The default: every
    /// reference is its own spelling. The `pgp` backend maps a fingerprint in either case,
    /// with `0x`, or a key id to the signing key's fingerprint.
    ///
    /// It should be cheap (no network): the daemon asks it when a client names a discovered key
    /// (`<backend>/<reference>`) in a spelling it has not cached.
    async fn canonical_reference(&self, reference: &str) -> Result<Option<String>, BackendError> {
        Ok(Some(reference.to_string()))
    }

    /// Signs `op` with the key named by `reference`.
    ///
    /// [`SignOp::Prehashed`] carries a **digest** (computed with the algorithm's hash, of the
    /// right length): RSA and ECDSA sign it without hashing again; RSA-PSS uses MGF1 with the
    /// same hash and a salt as long as the hash. [`SignOp::Ed25519`] carries the **message**.
    async fn sign(&self, reference: &str, op: SignOp<'_>) -> Result<Signature, BackendError>;

    /// Creates a key pair of `spec` named `name` inside the backend. The private key never
    /// leaves the backend.
    async fn generate_key(
        &self,
        name: &str,
        spec: KeySpec,
    ) -> Result<KeyDescription, BackendError> {
        let _ = (name, spec);
        Err(BackendError::Unsupported(format!(
            "the {} backend cannot generate keys; create the key with the backend's own tools and name it in the config",
            self.backend_type()
        )))
    }

    /// [`Backend::generate_key`] with backend-specific `options` (`keyward keys generate
    /// --option k=v`, e.g. `slot` for `yubikey`). A backend that takes options overrides this
    /// and refuses the ones it does not know; the default takes none.
    async fn generate_key_with(
        &self,
        name: &str,
        spec: KeySpec,
        options: &BTreeMap<String, String>,
    ) -> Result<KeyDescription, BackendError> {
        if options.is_empty() {
            return self.generate_key(name, spec).await;
        }
        Err(BackendError::InvalidInput(format!(
            "backend type {} takes no generate options ({}); remove them",
            self.backend_type(),
            options.keys().cloned().collect::<Vec<_>>().join(", ")
        )))
    }

    /// Takes a PIN (or passphrase) to use from now on, kept in memory for `ttl` (`None`: the
    /// backend's default) — `keyward yubikey unlock`. The secret never goes to a log or an
    /// error. The default: the backend takes no PIN this way.
    async fn unlock(&self, secret: Secret, ttl: Option<Duration>) -> Result<(), BackendError> {
        let _ = (secret, ttl);
        Err(BackendError::Unsupported(format!(
            "the {} backend takes no PIN over the socket; give its secrets in the backend config",
            self.backend_type()
        )))
    }
}
