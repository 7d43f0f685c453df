//! Deleting a key: the backend deletes it ([`keyward_plugin_api::Backend::delete_key`]), then
//! the registry forgets its id, its entry in the state file and what is attached to it.

use std::sync::Arc;

use keyward_plugin_api::Deletion;

use super::{KeyId, Registry, ResolvedKey, attached};
use crate::error::AgentError;

/// What [`Registry::delete`] did: the backend's answer, and what the operator still has to do.
#[derive(Debug)]
pub struct Deleted {
    /// What the backend did.
    pub deletion: Deletion,
    /// Things left to do (a `[[key]]` that still names the key), one sentence each.
    pub notes: Vec<String>,
}

impl Registry {
    /// Has the backend delete `key` (already resolved, and checked against the policies), then
    /// forgets it. A failure after the backend deleted the key (the state directory not
    /// writable) is reported with what is left, never as if nothing happened.
    pub async fn delete(&self, key: &Arc<ResolvedKey>) -> Result<Deleted, AgentError> {
        let _guard = self.lock_for_change().await?;
        let id = key.id.as_str();
        let deletion = key
            .backend
            .delete_key(&key.description.reference)
            .await
            .map_err(|source| AgentError::Backend {
                key_id: id.to_string(),
                backend: key.backend_name.clone(),
                source,
            })?;
        let mut notes = Vec::new();
        let (remaining, was_created, configured) = {
            let inner = self.inner();
            let created = inner.names.created();
            let remaining: Vec<_> = created.iter().filter(|k| k.id != id).cloned().collect();
            (
                remaining.clone(),
                remaining.len() != created.len(),
                inner.names.is_configured(id),
            )
        };
        if was_created && let Err(e) = self.state.save(&remaining) {
            notes.push(format!(
                "the key is deleted in backend {:?} but its id could not be removed from the state file ({e}); remove it from keys.json in the state directory",
                key.backend_name
            ));
        }
        if let Err(e) = attached::remove_files(&self.state, &key.id) {
            notes.push(format!(
                "what was attached to the key could not be removed: {e}"
            ));
        }
        if configured {
            notes.push(format!(
                "the config still names key {id:?} in a [[key]] table: remove it and reload (SIGHUP), or keywardd reports the key as not usable"
            ));
        }
        {
            let mut inner = self.inner.write().expect("registry lock");
            if was_created {
                inner.names.forget(id, remaining);
            } else {
                let created = inner.names.created().to_vec();
                inner.names.forget(id, created);
            }
            inner.attached.remove(&key.id);
        }
        self.cache.evict(&key.id);
        self.cache.evict(&KeyId::discovered(
            &key.backend_name,
            &key.description.reference,
        ));
        tracing::info!(key = %key.id, backend = %key.backend_name, outcome = ?deletion.outcome, "key deleted");
        Ok(Deleted { deletion, notes })
    }
}
