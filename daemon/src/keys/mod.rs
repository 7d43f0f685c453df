//! The key registry: which keys exist, which backend holds each, what is attached to them.
//!
//! - [`id`]: [`KeyId`], a key's one canonical identity (named, or discovered
//!   `<backend>/<reference>` in the backend's canonical spelling).
//! - [`names`]: the named keys of the config and of the state file.
//! - [`cache`]: the one cache of resolved keys, by canonical id.
//! - [`attached`]: X.509 chains and OpenPGP certificates attached to keys, one path for both
//!   ([`Registry::attach`]; the checks of each kind are in `attach.rs`).
//! - `generate.rs`: [`Registry::generate`], creating a key and recording its id.
//! - [`resolved`]: [`ResolvedKey`], a key with its public key parsed for verification.
//!
//! [`Registry`] ties them together: resolving an id (the signing hot path: a read lock and an
//! `Arc` clone on a cache hit; backends are asked only on a miss), listing, creating keys and
//! attaching things to them.

mod attach;
pub mod attached;
pub mod cache;
mod delete;
mod generate;
pub mod id;
pub mod names;
pub mod resolved;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use keyward_plugin_api::{Backend, BackendError, KeyDescription};

pub use attached::Attachment;
pub use id::KeyId;
pub use resolved::ResolvedKey;

use crate::config::Config;
use crate::error::AgentError;
use crate::limits::Limits;
use crate::ratelimit::{Exceeded, Limiter};
use crate::shown::{quoted, shown};
use crate::state::State;
use attached::Attached;
use cache::KeyCache;
use names::Names;

#[derive(Debug)]
struct Inner {
    names: Names,
    attached: Attached,
}

/// All backends and keys of a running daemon (one generation of the config).
#[derive(Debug)]
pub struct Registry {
    backends: BTreeMap<String, Arc<dyn Backend>>,
    /// `unknown_key_seconds` and `key_lookups` of the config's `[limits]`.
    limits: Limits,
    /// Per backend: the bucket of look-ups of ids that are not cached.
    lookups: BTreeMap<String, Limiter>,
    inner: RwLock<Inner>,
    cache: KeyCache,
    state: State,
    /// Where the pgp plugin that checks OpenPGP certificates is.
    plugin_dirs: Vec<PathBuf>,
    /// Serialises key creation and attachments so two requests cannot race for one id.
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

    fn build(
        config: &Config,
        backends: BTreeMap<String, Arc<dyn Backend>>,
        generate_lock: Arc<tokio::sync::Mutex<()>>,
    ) -> Result<Self, String> {
        let (state, created) = State::open(&config.state_dir)?;
        let names = Names::new(config, created, &backends);
        let attached = Attached::load(&state, config);
        let limits = config.limits.clone();
        let lookups = backends
            .keys()
            .map(|name| (name.clone(), Limiter::new(Some(limits.key_lookups), None)))
            .collect();
        Ok(Registry {
            limits,
            lookups,
            backends,
            inner: RwLock::new(Inner { names, attached }),
            cache: KeyCache::default(),
            state,
            plugin_dirs: crate::plugin_dir::search_dirs(config.plugin_dir.as_deref()),
            generate_lock,
            retired: AtomicBool::new(false),
        })
    }

    /// Waits until no key creation or attachment is running, and keeps others out while the
    /// guard lives.
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

    fn inner(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().expect("registry lock")
    }

    /// Checks every named key against its backend and logs what does not answer, so a broken
    /// key shows up at start-up rather than at the first signature.
    pub async fn check_named_keys(&self) {
        let ids = self.inner().names.ids();
        for id in ids {
            match self.resolve(&id).await {
                Ok(key) => {
                    tracing::info!(key = %id, backend = %key.backend_name, spec = %key.spec(), "key ready")
                }
                Err(e) => tracing::warn!(key = %id, "key not usable: {e}"),
            }
        }
    }

    /// The ids of the named keys (`[[key]]` and created).
    pub fn named_ids(&self) -> Vec<String> {
        let mut ids = self.inner().names.ids();
        ids.sort();
        ids
    }

    /// The backend of the named key `id`.
    pub fn backend_of(&self, id: &str) -> Option<String> {
        self.inner()
            .names
            .get(id)
            .map(|(backend, _)| backend.clone())
    }

    /// Every backend instance, by name.
    pub fn backends(&self) -> &BTreeMap<String, Arc<dyn Backend>> {
        &self.backends
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

    /// Finds a key by the id a client gave, asking its backend on a cache miss.
    ///
    /// Before any backend call: the cache (the canonical id, then another spelling of a cached
    /// key), then the ids recently found to name no key (`unknown_key_seconds`). What is left
    /// and would ask a backend about an id that no name points at (a discovered-looking id) is
    /// rate-limited per backend (`key_lookups`), so a flood of random ids cannot reach it.
    pub async fn resolve(&self, key_id: &str) -> Result<Arc<ResolvedKey>, AgentError> {
        // The canonical spelling (what ListKeys shows) is the hot path: no backend call.
        if let Some(key) = self.cache.get(key_id) {
            return Ok(key);
        }
        if let Some(key) = self.cache.by_spelling(key_id) {
            return Ok(key);
        }
        let now = Instant::now();
        if self.cache.is_unknown(key_id, now) {
            return Err(AgentError::KeyNotFound {
                key_id: key_id.to_string(),
            });
        }
        let resolved = self.resolve_uncached(key_id).await;
        match &resolved {
            Ok(key) if key.id.as_str() != key_id => self.cache.remember_spelling(key_id, &key.id),
            Err(AgentError::KeyNotFound { .. }) if KeyId::split_discovered(key_id).is_some() => {
                self.cache
                    .remember_unknown(key_id, now, now + self.limits.unknown_key_ttl)
            }
            _ => {}
        }
        resolved
    }

    /// Takes a token from `backend`'s look-up bucket, or says when to retry.
    fn admit_lookup(&self, backend: &str, key_id: &str) -> Result<(), AgentError> {
        let Some(limiter) = self.lookups.get(backend) else {
            return Ok(());
        };
        match limiter.admit("", Instant::now()) {
            Ok(()) => Ok(()),
            Err(Exceeded::Key { rate, retry_after } | Exceeded::Caller { rate, retry_after }) => {
                let retry_after = retry_after.max(std::time::Duration::from_millis(1));
                tracing::warn!(backend, key = %shown(key_id), "too many look-ups of uncached keys; refusing");
                Err(AgentError::RateLimited {
                    message: format!(
                        "key {}: backend {} is asked about keys it may not have faster than key_lookups in the daemon's [limits] allows ({rate}); keys already in use are not affected; retry in {} ms",
                        quoted(key_id),
                        quoted(backend),
                        retry_after.as_millis().max(1)
                    ),
                    retry_after,
                })
            }
        }
    }

    /// [`Registry::resolve`] past the caches.
    async fn resolve_uncached(&self, key_id: &str) -> Result<Arc<ResolvedKey>, AgentError> {
        let named = self.inner().names.get(key_id).is_some();
        if !named
            && let Some((backend, _)) = KeyId::split_discovered(key_id)
            && self.backends.contains_key(backend)
        {
            self.admit_lookup(backend, key_id)?;
            tracing::debug!(key = %shown(key_id), backend, "the key is not cached; asking its backend");
        }
        let (id, backend_name, reference) = self.locate(key_id).await?;
        if let Some(key) = self.cache.get(id.as_str()) {
            return Ok(key);
        }
        let backend = self.backend(&backend_name)?.clone();
        let description = backend.describe_key(&reference).await.map_err(|source| {
            match source {
                // A discovered id whose backend has no such key is simply an unknown id.
                BackendError::NotFound(_) if id.is_discovered() => AgentError::KeyNotFound {
                    key_id: key_id.to_string(),
                },
                source => AgentError::Backend {
                    key_id: id.to_string(),
                    backend: backend_name.clone(),
                    source,
                },
            }
        })?;
        self.remember(id, &backend_name, backend, description).await
    }

    /// The canonical id, backend and reference a client's id names, without describing the
    /// key: a named id, or `<backend>/<reference>` for a key that no name points at, in the
    /// backend's canonical spelling.
    async fn locate(&self, key_id: &str) -> Result<(KeyId, String, String), AgentError> {
        let not_found = || AgentError::KeyNotFound {
            key_id: key_id.to_string(),
        };
        if let Some((backend, reference)) = self.inner().names.get(key_id).cloned() {
            let id = KeyId::named(key_id).ok_or_else(not_found)?;
            return Ok((id, backend, reference));
        }
        let (backend_name, spelled) = KeyId::split_discovered(key_id).ok_or_else(not_found)?;
        let backend = self.backends.get(backend_name).ok_or_else(not_found)?;
        let canonical = backend
            .canonical_reference(spelled)
            .await
            .map_err(|source| AgentError::Backend {
                key_id: key_id.to_string(),
                backend: backend_name.to_string(),
                source,
            })?
            .ok_or_else(not_found)?;
        let named = {
            let inner = self.inner();
            inner.names.id_of(backend_name, &canonical).is_some()
                || inner.names.id_of(backend_name, spelled).is_some()
        };
        if named {
            // A key with a name is served under that name only.
            return Err(not_found());
        }
        Ok((
            KeyId::discovered(backend_name, &canonical),
            backend_name.to_string(),
            canonical,
        ))
    }

    /// Makes and caches the resolved key `id` from what its backend said, with what is
    /// attached to it.
    async fn remember(
        &self,
        id: KeyId,
        backend_name: &str,
        backend: Arc<dyn Backend>,
        mut description: KeyDescription,
    ) -> Result<Arc<ResolvedKey>, AgentError> {
        let (chain, openpgp) = {
            let inner = self.inner();
            (
                inner.attached.chain(&id),
                inner.attached.openpgp(&id).cloned(),
            )
        };
        if let Some(stored) = openpgp {
            let spki = &description.public_key_der;
            if stored.checked_for.as_ref() == Some(spki) {
                description.openpgp_certificate = Some(stored.certificate);
            } else {
                use crate::openpgp::CheckError;
                match crate::openpgp::check(&self.plugin_dirs, &stored.certificate, spki, false)
                    .await
                {
                    Ok(_) => {
                        self.inner
                            .write()
                            .expect("registry lock")
                            .attached
                            .openpgp_checked(&id, spki);
                        description.openpgp_certificate = Some(stored.certificate);
                    }
                    // Without the checker, a stored certificate is served as it is.
                    Err(CheckError::NoChecker(why)) => {
                        tracing::debug!(key = %id, "the attached OpenPGP certificate is served unchecked: {why}");
                        description.openpgp_certificate = Some(stored.certificate);
                    }
                    Err(e) => {
                        tracing::warn!(key = %id, backend = %backend_name, "the attached OpenPGP certificate is not served: {e}")
                    }
                }
            }
        }
        if !id.is_discovered() {
            self.inner
                .write()
                .expect("registry lock")
                .names
                .learn_reference(id.as_str(), backend_name, &description.reference);
        }
        let key = Arc::new(ResolvedKey::new(
            id,
            backend_name,
            backend,
            description,
            chain,
        )?);
        self.cache.insert(key.clone());
        Ok(key)
    }

    /// Forgets the cached public key of `id` (after the backend said it is gone).
    pub fn evict(&self, id: &KeyId) {
        self.cache.evict(id);
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
                // A backend's listing is in its own (canonical) spelling.
                let named = self
                    .inner()
                    .names
                    .id_of(&backend_name, &description.reference)
                    .cloned();
                let id = match named.as_deref().and_then(KeyId::named) {
                    Some(id) => id,
                    None => KeyId::discovered(&backend_name, &description.reference),
                };
                match self
                    .remember(id.clone(), &backend_name, backend.clone(), description)
                    .await
                {
                    Ok(key) => {
                        keys.insert(id, key);
                    }
                    Err(e) => tracing::warn!(key = %id, "skipping key: {e}"),
                }
            }
        }
        // Named keys a backend does not list (a key file named by path, say).
        let missing: Vec<String> = self
            .inner()
            .names
            .ids()
            .into_iter()
            .filter(|id| !keys.keys().any(|have: &KeyId| have.as_str() == id))
            .collect();
        for id in missing {
            match self.resolve(&id).await {
                Ok(key) => {
                    keys.insert(key.id.clone(), key);
                }
                Err(e) => tracing::warn!(key = %id, "key not usable: {e}"),
            }
        }
        keys.into_values().collect()
    }

    /// Attaches what `check` makes of the key (after it has checked it) to the key `key_id`:
    /// stored in the state directory, served from now on. The one path of
    /// [`Registry::attach_chain`] and [`Registry::attach_openpgp`]; `T` is what the check
    /// also returns to its caller.
    pub async fn attach<T, F, Fut>(
        &self,
        key_id: &str,
        check: F,
    ) -> Result<(Arc<ResolvedKey>, T), AgentError>
    where
        F: FnOnce(Arc<ResolvedKey>) -> Fut,
        Fut: Future<Output = Result<(Attachment, T), AgentError>>,
    {
        let key = self.resolve(key_id).await?;
        let (attachment, extra) = check(key.clone()).await?;
        let _guard = self.lock_for_change().await?;
        attached::store(&self.state, &key.id, &attachment).map_err(|e| {
            AgentError::Internal(format!("key {key_id:?}: {e}; check the state directory"))
        })?;
        tracing::info!(key = %key.id, "{} attached", attachment.kind());
        self.inner
            .write()
            .expect("registry lock")
            .attached
            .insert(&key.id, attachment);
        self.cache.evict(&key.id);
        let description = key.description.clone();
        let key = self
            .remember(
                key.id.clone(),
                &key.backend_name,
                key.backend.clone(),
                description,
            )
            .await?;
        Ok((key, extra))
    }

    /// Whether the key `id` takes its chain from the config (then attaching is refused).
    pub fn config_chain(&self, id: &KeyId) -> Option<PathBuf> {
        self.inner().attached.config_chain(id).cloned()
    }

    /// Where the pgp plugin that checks OpenPGP certificates is looked for.
    pub fn plugin_dirs(&self) -> &[PathBuf] {
        &self.plugin_dirs
    }
}
