//! The key registry: which ids exist, which backend holds each, and a cache of their public keys.
//!
//! A key id is one of:
//! - a `[[key]]` id from the config,
//! - an id given to `KeyAdmin.GenerateKey` (kept in the state file, so it survives restarts),
//! - `<backend>/<name>` for a key a backend lists that no other id names.
//!
//! The signing hot path takes a read lock and clones an `Arc`; backends are asked only on a
//! cache miss.
//!
//! Certificate chains come from a `[[key]]`'s `certificate_chain` file or from
//! `KeyAdmin.AttachCertificateChain` (kept in `<state_dir>/certs/`). Both are checked against
//! the Notary rules ([`crate::certs`]) when loaded; a chain whose leaf is not the key's public
//! key is logged and not served, so the key still signs and a new chain can be attached.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use keyward_plugin_api::verify::PublicKeyVerifier;
use keyward_plugin_api::{Backend, BackendError, KeyDescription, KeySpec, is_valid_key_name};

use crate::certs::{self, ChainError};
use crate::config::Config;
use crate::error::AgentError;
use crate::state::{CreatedKey, State};

/// A key the daemon can sign with, resolved to its backend, with its public key parsed.
#[derive(Debug)]
pub struct ResolvedKey {
    /// The id clients use.
    pub id: String,
    /// The backend instance name.
    pub backend_name: String,
    /// The backend.
    pub backend: Arc<dyn Backend>,
    /// What the backend said about the key.
    pub description: KeyDescription,
    /// The parsed public key, to verify every signature before it leaves.
    pub verifier: PublicKeyVerifier,
    /// X.509 certificates, DER, leaf first.
    pub certificate_chain: Vec<Vec<u8>>,
}

impl ResolvedKey {
    /// The key's spec.
    pub fn spec(&self) -> KeySpec {
        self.description.spec
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// id -> (backend, reference) for config and created keys.
    named: HashMap<String, (String, String)>,
    /// (backend, reference) -> id, the reverse of `named`.
    by_reference: HashMap<(String, String), String>,
    created: Vec<CreatedKey>,
    cache: HashMap<String, Arc<ResolvedKey>>,
    /// id -> attached certificate chain (DER, leaf first).
    chains: HashMap<String, Vec<Vec<u8>>>,
    /// ids whose chain comes from the config (attaching another is refused).
    config_chains: HashMap<String, std::path::PathBuf>,
    /// id -> attached OpenPGP certificate (binary); served instead of the backend's.
    openpgp: HashMap<String, Vec<u8>>,
}

/// All backends and keys of a running daemon.
#[derive(Debug)]
pub struct Registry {
    backends: BTreeMap<String, Arc<dyn Backend>>,
    inner: RwLock<Inner>,
    state: State,
    /// Serialises key creation and chain attachment so two requests cannot race for one id.
    /// Shared with the registries that replace this one on reload.
    generate_lock: Arc<tokio::sync::Mutex<()>>,
    /// Set when a reload has replaced this registry: admin requests still queued on it are
    /// refused, so that nothing is recorded in a registry nobody reads any more.
    retired: AtomicBool,
}

impl Registry {
    /// Builds the registry from the config, the backends already made from it, and the state
    /// directory.
    pub fn new(
        config: &Config,
        backends: BTreeMap<String, Arc<dyn Backend>>,
    ) -> Result<Self, String> {
        Self::build(config, backends, Arc::default())
    }

    /// The registry that replaces this one after a reload: built from the new config and
    /// backends, it reads the state directory again and shares this one's admin lock. Call it
    /// while holding [`Registry::admin_lock`], then [`Registry::retire`] this one.
    pub fn successor(
        &self,
        config: &Config,
        backends: BTreeMap<String, Arc<dyn Backend>>,
    ) -> Result<Self, String> {
        Self::build(config, backends, self.generate_lock.clone())
    }

    /// Waits until no key creation or chain attachment is running, and keeps others out while
    /// the guard lives.
    pub async fn admin_lock(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.generate_lock.clone().lock_owned().await
    }

    /// Marks this registry as replaced: admin requests that were waiting on it are refused
    /// with [`AgentError::Reloaded`].
    pub fn retire(&self) {
        self.retired.store(true, Ordering::SeqCst);
    }

    /// The lock for an admin change, unless a reload has retired this registry meanwhile.
    async fn lock_for_change(&self) -> Result<tokio::sync::MutexGuard<'_, ()>, AgentError> {
        let guard = self.generate_lock.lock().await;
        if self.retired.load(Ordering::SeqCst) {
            return Err(AgentError::Reloaded);
        }
        Ok(guard)
    }

    fn build(
        config: &Config,
        backends: BTreeMap<String, Arc<dyn Backend>>,
        generate_lock: Arc<tokio::sync::Mutex<()>>,
    ) -> Result<Self, String> {
        let (state, created) = State::open(&config.state_dir)?;
        let mut inner = Inner::default();
        let config_keys = config
            .keys
            .iter()
            .map(|k| (k.id.clone(), k.backend.clone(), k.reference.clone()));
        let created_keys = created.iter().filter_map(|k| {
            if backends.contains_key(&k.backend) {
                Some((k.id.clone(), k.backend.clone(), k.reference.clone()))
            } else {
                tracing::warn!(key = %k.id, backend = %k.backend, "created key's backend is no longer configured; the key is not served");
                None
            }
        });
        for (id, backend, reference) in config_keys.chain(created_keys) {
            if inner.named.contains_key(&id) {
                tracing::warn!(key = %id, "a created key has the same id as a [[key]] in the config; the config wins");
                continue;
            }
            inner
                .by_reference
                .insert((backend.clone(), reference.clone()), id.clone());
            inner.named.insert(id, (backend, reference));
        }
        inner.created = created;
        for (id, read) in state.load_chains() {
            let id = chain_file_id(&id);
            match read.and_then(|pem| {
                let chain = certs::parse_pem_bundle(&pem).map_err(|e| e.to_string())?;
                certs::check_rules(&chain).map_err(|e| e.to_string())?;
                Ok(chain)
            }) {
                Ok(chain) => {
                    warn_if_expired(&id, &chain);
                    inner.chains.insert(id, chain);
                }
                Err(e) => tracing::warn!(
                    key = %id,
                    path = %state.chain_path(&chain_file_name(&id)).display(),
                    "the stored certificate chain is not served: {e}; attach a new one with `keyward cert attach` or `keyward cert issue`"
                ),
            }
        }
        for (id, read) in state.load_openpgp() {
            let id = chain_file_id(&id);
            match read {
                Ok(certificate) => {
                    inner.openpgp.insert(id, certificate);
                }
                Err(e) => {
                    tracing::warn!(key = %id, "the stored OpenPGP certificate is not served: {e}")
                }
            }
        }
        for key in &config.keys {
            if let Some((path, chain)) = &key.certificate_chain {
                warn_if_expired(&key.id, chain);
                inner.chains.insert(key.id.clone(), chain.clone());
                inner.config_chains.insert(key.id.clone(), path.clone());
            }
        }
        Ok(Registry {
            backends,
            inner: RwLock::new(inner),
            state,
            generate_lock,
            retired: AtomicBool::new(false),
        })
    }

    /// Checks every named key against its backend and logs what does not answer, so a broken
    /// key shows up at start-up rather than at the first signature.
    pub async fn check_named_keys(&self) {
        let ids: Vec<String> = {
            let inner = self.inner.read().expect("registry lock");
            inner.named.keys().cloned().collect()
        };
        for id in ids {
            match self.resolve(&id).await {
                Ok(key) => {
                    tracing::info!(key = %id, backend = %key.backend_name, spec = %key.spec(), "key ready")
                }
                Err(e) => tracing::warn!(key = %id, "key not usable: {e}"),
            }
        }
    }

    /// The backend instance named `name`.
    pub fn backend(&self, name: &str) -> Result<&Arc<dyn Backend>, AgentError> {
        self.backends
            .get(name)
            .ok_or_else(|| AgentError::BackendNotFound {
                backend: name.to_string(),
                known: self.backends.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }

    /// Finds a key by id, asking its backend on a cache miss.
    pub async fn resolve(&self, key_id: &str) -> Result<Arc<ResolvedKey>, AgentError> {
        let (backend_name, reference) = {
            let inner = self.inner.read().expect("registry lock");
            if let Some(key) = inner.cache.get(key_id) {
                return Ok(key.clone());
            }
            match inner.named.get(key_id) {
                Some(found) => found.clone(),
                None => self.discovered(&inner, key_id)?,
            }
        };
        let backend = self.backend(&backend_name)?.clone();
        let description = backend.describe_key(&reference).await.map_err(|source| {
            match source {
                // A discovered id whose backend has no such key is simply an unknown id.
                BackendError::NotFound(_) if key_id.contains('/') => AgentError::KeyNotFound {
                    key_id: key_id.to_string(),
                },
                source => AgentError::Backend {
                    key_id: key_id.to_string(),
                    backend: backend_name.clone(),
                    source,
                },
            }
        })?;
        self.remember(key_id, &backend_name, backend, description)
    }

    /// `<backend>/<name>` for a key that no other id names.
    fn discovered(&self, inner: &Inner, key_id: &str) -> Result<(String, String), AgentError> {
        let not_found = || AgentError::KeyNotFound {
            key_id: key_id.to_string(),
        };
        let (backend, name) = key_id.split_once('/').ok_or_else(not_found)?;
        if !self.backends.contains_key(backend)
            || !is_valid_key_name(name)
            || inner
                .by_reference
                .contains_key(&(backend.to_string(), name.to_string()))
        {
            return Err(not_found());
        }
        Ok((backend.to_string(), name.to_string()))
    }

    fn remember(
        &self,
        key_id: &str,
        backend_name: &str,
        backend: Arc<dyn Backend>,
        mut description: KeyDescription,
    ) -> Result<Arc<ResolvedKey>, AgentError> {
        let (certificate_chain, openpgp) = {
            let inner = self.inner.read().expect("registry lock");
            (
                inner.chains.get(key_id).cloned().unwrap_or_default(),
                inner.openpgp.get(key_id).cloned(),
            )
        };
        if let Some(certificate) = openpgp {
            match crate::openpgp::check(&certificate, &description.public_key_der, false) {
                Ok(_) | Err(crate::openpgp::CheckError::Unsupported) => {
                    description.openpgp_certificate = Some(certificate)
                }
                Err(e) => {
                    tracing::warn!(key = %key_id, backend = %backend_name, "the attached OpenPGP certificate is not served: {e}")
                }
            }
        }
        let certificate_chain = if certificate_chain.is_empty() {
            certificate_chain
        } else if let Err(e) = certs::check_key(&certificate_chain, &description.public_key_der) {
            tracing::warn!(key = %key_id, backend = %backend_name, "the certificate chain is not served: {e}");
            Vec::new()
        } else {
            certificate_chain
        };
        let verifier = PublicKeyVerifier::from_spki(&description.public_key_der).map_err(|e| {
            AgentError::Internal(format!(
                "key {key_id:?} on backend {backend_name:?}: the backend's public key is unusable: {e}"
            ))
        })?;
        if verifier.spec() != description.spec {
            return Err(AgentError::Internal(format!(
                "key {key_id:?} on backend {backend_name:?}: the backend says {} but the public key is {}",
                description.spec,
                verifier.spec()
            )));
        }
        let key = Arc::new(ResolvedKey {
            id: key_id.to_string(),
            backend_name: backend_name.to_string(),
            backend,
            description,
            verifier,
            certificate_chain,
        });
        self.inner
            .write()
            .expect("registry lock")
            .cache
            .insert(key_id.to_string(), key.clone());
        Ok(key)
    }

    /// Forgets the cached public key of `key_id` (after the backend said it is gone).
    pub fn evict(&self, key_id: &str) {
        self.inner
            .write()
            .expect("registry lock")
            .cache
            .remove(key_id);
    }

    /// Every key of every backend. Backends are asked concurrently, so a slow one costs its
    /// own deadline, not the sum. A backend that fails to list is logged and skipped, so one
    /// broken backend does not hide the others' keys.
    pub async fn list(&self) -> Vec<Arc<ResolvedKey>> {
        let mut listings = tokio::task::JoinSet::new();
        for (backend_name, backend) in &self.backends {
            let (name, backend) = (backend_name.clone(), backend.clone());
            listings.spawn(async move {
                let listed = backend.list_keys().await;
                (name, backend, listed)
            });
        }
        let mut keys = BTreeMap::new();
        while let Some(joined) = listings.join_next().await {
            let Ok((backend_name, backend, listed)) = joined else {
                continue;
            };
            let listed = match listed {
                Ok(listed) => listed,
                Err(e) => {
                    tracing::warn!(backend = %backend_name, "cannot list keys: {e}");
                    continue;
                }
            };
            for description in listed {
                let id = {
                    let inner = self.inner.read().expect("registry lock");
                    inner
                        .by_reference
                        .get(&(backend_name.clone(), description.reference.clone()))
                        .cloned()
                        .unwrap_or_else(|| format!("{backend_name}/{}", description.reference))
                };
                match self.remember(&id, &backend_name, backend.clone(), description) {
                    Ok(key) => {
                        keys.insert(id, key);
                    }
                    Err(e) => tracing::warn!(key = %id, "skipping key: {e}"),
                }
            }
        }
        // Named keys a backend does not list (a key file named by path, say).
        let named: Vec<String> = {
            let inner = self.inner.read().expect("registry lock");
            inner
                .named
                .keys()
                .filter(|id| !keys.contains_key(*id))
                .cloned()
                .collect()
        };
        for id in named {
            match self.resolve(&id).await {
                Ok(key) => {
                    keys.insert(id, key);
                }
                Err(e) => tracing::warn!(key = %id, "key not usable: {e}"),
            }
        }
        keys.into_values().collect()
    }

    /// Checks `pem` (a PEM bundle, leaf first) against the key and the Notary rules, stores it
    /// in the state directory and serves it from now on.
    pub async fn attach_chain(
        &self,
        key_id: &str,
        pem: &str,
    ) -> Result<Arc<ResolvedKey>, AgentError> {
        let key = self.resolve(key_id).await?;
        let refused = |e: ChainError| {
            let message = format!("key {key_id:?}: the certificate chain is refused: {e}");
            match e {
                ChainError::Invalid(_) => AgentError::InvalidArgument(message),
                ChainError::Precondition(_) => AgentError::FailedPrecondition(message),
            }
        };
        if let Some(path) = self
            .inner
            .read()
            .expect("registry lock")
            .config_chains
            .get(key_id)
        {
            return Err(AgentError::FailedPrecondition(format!(
                "key {key_id:?} takes its certificate chain from the config (certificate_chain = {:?}); replace that file or remove the setting, then restart keywardd",
                path.display().to_string()
            )));
        }
        let chain = certs::parse_pem_bundle(pem.as_bytes()).map_err(refused)?;
        certs::check_rules(&chain).map_err(refused)?;
        certs::check_key(&chain, &key.description.public_key_der).map_err(refused)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        certs::check_validity(&chain, now).map_err(refused)?;
        let _guard = self.lock_for_change().await?;
        self.state
            .save_chain(&chain_file_name(key_id), &certs::to_pem(&chain))
            .map_err(|e| {
                AgentError::Internal(format!("key {key_id:?}: {e}; check the state directory"))
            })?;
        {
            let mut inner = self.inner.write().expect("registry lock");
            inner.chains.insert(key_id.to_string(), chain.clone());
            inner.cache.remove(key_id);
        }
        tracing::info!(key = %key_id, certificates = chain.len(), "certificate chain attached");
        self.remember(
            key_id,
            &key.backend_name,
            key.backend.clone(),
            key.description.clone(),
        )
    }

    /// Checks `certificate` (an OpenPGP certificate, binary or armored) against the key, stores
    /// it in the state directory and serves it from now on. Returns the key and the
    /// certificate's fingerprint.
    pub async fn attach_openpgp(
        &self,
        key_id: &str,
        certificate: &[u8],
    ) -> Result<(Arc<ResolvedKey>, String), AgentError> {
        use crate::openpgp::CheckError;
        let key = self.resolve(key_id).await?;
        let (binary, fingerprint) =
            crate::openpgp::check(certificate, &key.description.public_key_der, true).map_err(
                |e| {
                    let message =
                        format!("key {key_id:?}: the OpenPGP certificate is refused: {e}");
                    match e {
                        CheckError::Invalid(_) => AgentError::InvalidArgument(message),
                        CheckError::Precondition(_) => AgentError::FailedPrecondition(message),
                        CheckError::Unsupported => AgentError::Backend {
                            key_id: key_id.to_string(),
                            backend: key.backend_name.clone(),
                            source: BackendError::Unsupported(format!(
                                "{e}; rebuild keywardd with it to attach OpenPGP certificates"
                            )),
                        },
                    }
                },
            )?;
        let _guard = self.lock_for_change().await?;
        self.state
            .save_openpgp(&chain_file_name(key_id), &binary)
            .map_err(|e| {
                AgentError::Internal(format!("key {key_id:?}: {e}; check the state directory"))
            })?;
        {
            let mut inner = self.inner.write().expect("registry lock");
            inner.openpgp.insert(key_id.to_string(), binary);
            inner.cache.remove(key_id);
        }
        tracing::info!(key = %key_id, %fingerprint, "OpenPGP certificate attached");
        let key = self.remember(
            key_id,
            &key.backend_name,
            key.backend.clone(),
            key.description.clone(),
        )?;
        Ok((key, fingerprint))
    }

    /// Creates a key pair in `backend_name` (with the backend's generate `options`, e.g. a
    /// YubiKey slot) and records `key_id` for it.
    pub async fn generate(
        &self,
        backend_name: &str,
        key_id: &str,
        spec: KeySpec,
        options: &BTreeMap<String, String>,
    ) -> Result<Arc<ResolvedKey>, AgentError> {
        if !is_valid_key_name(key_id) {
            return Err(AgentError::InvalidArgument(format!(
                "{key_id:?} is not a valid key id: use 1-128 letters, digits, '.', '_' and '-', not starting with '.' or '-'"
            )));
        }
        let backend = self.backend(backend_name)?.clone();
        let _guard = self.lock_for_change().await?;
        let taken = {
            let inner = self.inner.read().expect("registry lock");
            inner.named.contains_key(key_id) || inner.cache.contains_key(key_id)
        };
        if taken || backend.describe_key(key_id).await.is_ok() {
            return Err(AgentError::AlreadyExists {
                key_id: key_id.to_string(),
            });
        }
        let description = backend
            .generate_key_with(key_id, spec, options)
            .await
            .map_err(|source| AgentError::Backend {
                key_id: key_id.to_string(),
                backend: backend_name.to_string(),
                source,
            })?;
        let created = CreatedKey {
            id: key_id.to_string(),
            backend: backend_name.to_string(),
            reference: description.reference.clone(),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        // generate_lock is held, so nobody else changes `created` meanwhile; the file is
        // written without holding the registry lock, so signing goes on during the fsync.
        let mut all = self.inner.read().expect("registry lock").created.clone();
        all.push(created.clone());
        let record = self.state.save(&all);
        if record.is_ok() {
            let mut inner = self.inner.write().expect("registry lock");
            inner.created = all;
            inner.by_reference.insert(
                (created.backend.clone(), created.reference.clone()),
                created.id.clone(),
            );
            inner
                .named
                .insert(created.id, (created.backend, created.reference));
        }
        if let Err(e) = record {
            // The backend has no delete operation to roll back with; say where the key is.
            return Err(AgentError::Internal(format!(
                "the key was created in backend {backend_name:?} as {:?} but its id could not be recorded ({e}); it is served as \"{backend_name}/{}\" until the state directory is writable",
                description.reference, description.reference
            )));
        }
        tracing::info!(key = %key_id, backend = %backend_name, spec = %spec, "key generated");
        self.remember(key_id, backend_name, backend, description)
    }
}

/// The file name (without `.pem`) a key's chain is stored under: `/` (in `<backend>/<name>`
/// ids) becomes `%2F`, which no key id contains.
fn chain_file_name(key_id: &str) -> String {
    key_id.replace('/', "%2F")
}

/// The key id of a stored chain's file name.
fn chain_file_id(name: &str) -> String {
    name.replace("%2F", "/")
}

fn warn_if_expired(key_id: &str, chain: &[Vec<u8>]) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    if let Err(e) = certs::check_validity(chain, now) {
        tracing::warn!(key = %key_id, "{e}");
    }
}
