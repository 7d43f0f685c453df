//! [`Registry::generate`]: creating a key in a backend and recording its id.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use keyward_plugin_api::KeySpec;

use super::{KeyId, Registry, ResolvedKey};
use crate::error::AgentError;
use crate::state::CreatedKey;

impl Registry {
    /// Creates a key pair in `backend_name` (with the backend's generate `options`, e.g. a
    /// YubiKey slot) and records `key_id` for it.
    pub async fn generate(
        &self,
        backend_name: &str,
        key_id: &str,
        spec: KeySpec,
        options: &BTreeMap<String, String>,
    ) -> Result<Arc<ResolvedKey>, AgentError> {
        let Some(id) = KeyId::named(key_id) else {
            return Err(AgentError::InvalidArgument(format!(
                "{key_id:?} is not a valid key id: use 1-128 letters, digits, '.', '_' and '-', not starting with '.' or '-'"
            )));
        };
        let backend = self.backend(backend_name)?.clone();
        let _guard = self.lock_for_change().await?;
        let taken = self.inner().names.get(key_id).is_some() || self.cache.contains(key_id);
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
        // generate_lock is held, so nobody else changes the created keys meanwhile; the file
        // is written without holding the registry lock, so signing goes on during the fsync.
        let mut all = self.inner().names.created().to_vec();
        all.push(created.clone());
        if let Err(e) = self.state.save(&all) {
            // The backend has no delete operation to roll back with; say where the key is.
            return Err(AgentError::Internal(format!(
                "the key was created in backend {backend_name:?} as {:?} but its id could not be recorded ({e}); it is served as \"{backend_name}/{}\" until the state directory is writable",
                description.reference, description.reference
            )));
        }
        self.inner
            .write()
            .expect("registry lock")
            .names
            .add_created(created, all);
        // It may have been served under its discovered id until now.
        self.cache
            .evict(&KeyId::discovered(backend_name, &description.reference));
        tracing::info!(key = %key_id, backend = %backend_name, spec = %spec, "key generated");
        self.remember(id, backend_name, backend, description).await
    }
}
