//! The `local` backend: private keys as PKCS#8 files in a directory the daemon owns.
//!
//! - A key named `release` lives in `<path>/release.pem`, created with mode 0600 in a 0700
//!   directory. A key file that group or others can read is refused, as ssh refuses one.
//! - With a passphrase (`passphrase_env` / `passphrase_file`), new keys are written as encrypted
//!   PKCS#8 (PBES2, AES-256-CBC, OpenSSL's PBKDF2 parameters), and encrypted files are unlocked
//!   with it when the daemon loads them. Unlocked keys stay in the daemon's memory only.
//! - Existing key files (PKCS#8, SEC1 or PKCS#1 PEM, or PKCS#8 DER) can be named in the config by
//!   path; the daemon reads them, clients never do.
//!
//! Signing uses OpenSSL: ECDSA and RSA over the digest the daemon passes (never hashed again),
//! pure Ed25519 over the message.

mod keyfile;
mod sign;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use keyward_plugin_api::{
    Backend, BackendError, KeyDescription, KeySpec, Secret, SignOp, Signature, is_valid_key_name,
    read_secret,
};
use serde::Deserialize;

use crate::keyfile::LoadedKey;

/// The `[[backend]]` settings of a `local` backend.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalSettings {
    /// The key directory.
    pub path: PathBuf,
    /// An environment variable holding the passphrase that encrypts keys at rest.
    pub passphrase_env: Option<String>,
    /// A file (mode 0600) holding the passphrase that encrypts keys at rest.
    pub passphrase_file: Option<PathBuf>,
}

/// Key files as a backend.
#[derive(Debug)]
pub struct LocalBackend {
    dir: PathBuf,
    passphrase: Option<Secret>,
    /// Keys unlocked so far, by file path.
    loaded: RwLock<HashMap<PathBuf, Arc<LoadedKey>>>,
}

impl LocalBackend {
    /// Opens (and creates, mode 0700) the key directory and reads the passphrase, if any.
    pub fn new(settings: LocalSettings) -> Result<Self, BackendError> {
        let passphrase = read_secret(
            "passphrase",
            settings.passphrase_env.as_deref(),
            settings.passphrase_file.as_deref(),
        )?;
        keyfile::ensure_private_dir(&settings.path)?;
        Ok(LocalBackend {
            dir: settings.path,
            passphrase,
            loaded: RwLock::new(HashMap::new()),
        })
    }

    /// The key directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the key a reference names lives: a bare name is `<dir>/<name>.pem`; anything with
    /// a `/` is a path (from the config: requests can only name keys the daemon already knows).
    fn path_of(&self, reference: &str) -> Result<PathBuf, BackendError> {
        if reference.contains('/') {
            Ok(PathBuf::from(reference))
        } else if is_valid_key_name(reference) {
            Ok(self.dir.join(format!("{reference}.pem")))
        } else {
            Err(BackendError::InvalidInput(format!(
                "{reference:?} is not a valid local key name: use letters, digits, '.', '_' and '-'"
            )))
        }
    }

    /// The key at `path`, unlocking and caching it on first use.
    fn key(&self, path: &Path) -> Result<Arc<LoadedKey>, BackendError> {
        if let Some(key) = self.loaded.read().expect("key cache lock").get(path) {
            return Ok(key.clone());
        }
        let key = Arc::new(keyfile::load(path, self.passphrase.as_ref())?);
        self.loaded
            .write()
            .expect("key cache lock")
            .insert(path.to_path_buf(), key.clone());
        Ok(key)
    }

    fn describe(&self, reference: &str, path: &Path) -> Result<KeyDescription, BackendError> {
        let key = self.key(path)?;
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
}

#[async_trait]
impl Backend for LocalBackend {
    fn backend_type(&self) -> &str {
        "local"
    }

    async fn list_keys(&self) -> Result<Vec<KeyDescription>, BackendError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| {
            BackendError::unavailable(format!(
                "cannot read the key directory {}: {e}",
                self.dir.display()
            ))
        })?;
        let mut keys = Vec::new();
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str().and_then(|n| n.strip_suffix(".pem")) else {
                continue;
            };
            if !is_valid_key_name(name) {
                continue;
            }
            // One bad file must not hide the others: skip it and say why.
            match self.describe(name, &entry.path()) {
                Ok(key) => keys.push(key),
                Err(e) => {
                    tracing::warn!(key = name, dir = %self.dir.display(), "skipping key file: {e}")
                }
            }
        }
        keys.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(keys)
    }

    async fn describe_key(&self, reference: &str) -> Result<KeyDescription, BackendError> {
        let path = self.path_of(reference)?;
        self.describe(reference, &path)
    }

    async fn sign(&self, reference: &str, op: SignOp<'_>) -> Result<Signature, BackendError> {
        let key = self.key(&self.path_of(reference)?)?;
        if key.spec.rsa_bits().is_some() {
            // RSA private operations take milliseconds: keep them off the async workers.
            let op = op.to_owned();
            tokio::task::spawn_blocking(move || sign::sign(&key, op.as_op()))
                .await
                .map_err(|e| BackendError::Internal(format!("signing task failed: {e}")))?
        } else {
            // ECDSA and Ed25519 take microseconds: a thread hop would cost more than the work.
            sign::sign(&key, op)
        }
    }

    async fn generate_key(
        &self,
        name: &str,
        spec: KeySpec,
    ) -> Result<KeyDescription, BackendError> {
        if !is_valid_key_name(name) {
            return Err(BackendError::InvalidInput(format!(
                "{name:?} is not a valid key name: use 1-128 letters, digits, '.', '_' and '-'"
            )));
        }
        let path = self.dir.join(format!("{name}.pem"));
        let passphrase = self.passphrase.clone();
        let key = tokio::task::spawn_blocking(move || {
            keyfile::generate(&path, spec, passphrase.as_ref()).map(|key| (path, key))
        })
        .await
        .map_err(|e| BackendError::Internal(format!("key generation task failed: {e}")))??;
        let (path, key) = key;
        let key = Arc::new(key);
        let description = KeyDescription {
            reference: name.to_string(),
            spec: key.spec,
            public_key_der: key.public_key_der.clone(),
            version: None,
            openpgp_certificate: None,
            attributes: Default::default(),
            algorithms: Vec::new(),
        };
        self.loaded
            .write()
            .expect("key cache lock")
            .insert(path, key);
        Ok(description)
    }
}
