//! Named keys: the `[[key]]` ids of the config and the ids given to `KeyAdmin.GenerateKey`
//! (kept in the state file), each pointing at a backend and a reference; and the way back, from
//! a backend's reference to the id that names it, so that a key that has a name is never also
//! served under its discovered id.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use keyward_plugin_api::Backend;

use crate::config::Config;
use crate::state::CreatedKey;

/// Named keys and the references they point at.
#[derive(Debug, Default)]
pub struct Names {
    /// id -> (backend, reference as configured or created).
    named: HashMap<String, (String, String)>,
    /// (backend, reference) -> id: the configured spelling, and the backend's own once the key
    /// has been resolved.
    by_reference: HashMap<(String, String), String>,
    /// The created keys, as the state file holds them.
    created: Vec<CreatedKey>,
    /// The ids of the config's `[[key]]` tables.
    configured: HashSet<String>,
}

impl Names {
    /// The config's keys, then the created keys whose backend is still configured (a created id
    /// that a `[[key]]` also uses loses, with a warning).
    pub fn new(
        config: &Config,
        created: Vec<CreatedKey>,
        backends: &BTreeMap<String, Arc<dyn Backend>>,
    ) -> Self {
        let mut names = Names {
            configured: config.keys.iter().map(|k| k.id.clone()).collect(),
            ..Names::default()
        };
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
            if names.named.contains_key(&id) {
                tracing::warn!(key = %id, "a created key has the same id as a [[key]] in the config; the config wins");
                continue;
            }
            names
                .by_reference
                .insert((backend.clone(), reference.clone()), id.clone());
            names.named.insert(id, (backend, reference));
        }
        names.created = created;
        names
    }

    /// The backend and reference of the named key `id`.
    pub fn get(&self, id: &str) -> Option<&(String, String)> {
        self.named.get(id)
    }

    /// The id that names `reference` of `backend`, if one does.
    pub fn id_of(&self, backend: &str, reference: &str) -> Option<&String> {
        self.by_reference
            .get(&(backend.to_string(), reference.to_string()))
    }

    /// Records the backend's own spelling of a named key's reference (learnt when the key was
    /// resolved), so that the discovered spelling finds the name.
    pub fn learn_reference(&mut self, id: &str, backend: &str, reference: &str) {
        self.by_reference
            .entry((backend.to_string(), reference.to_string()))
            .or_insert_with(|| id.to_string());
    }

    /// Every named id.
    pub fn ids(&self) -> Vec<String> {
        self.named.keys().cloned().collect()
    }

    /// The created keys, for the state file.
    pub fn created(&self) -> &[CreatedKey] {
        &self.created
    }

    /// Whether `id` is a `[[key]]` of the config.
    pub fn is_configured(&self, id: &str) -> bool {
        self.configured.contains(id)
    }

    /// Forgets `id` (a deleted key): its name, the ways back to it, and its entry among the
    /// created keys (`created` is the list the state file now holds).
    pub fn forget(&mut self, id: &str, created: Vec<CreatedKey>) {
        self.named.remove(id);
        self.by_reference.retain(|_, named| named != id);
        self.created = created;
    }

    /// Adds a created key (after the state file was written).
    pub fn add_created(&mut self, key: CreatedKey, all: Vec<CreatedKey>) {
        self.by_reference
            .insert((key.backend.clone(), key.reference.clone()), key.id.clone());
        self.named.insert(key.id, (key.backend, key.reference));
        self.created = all;
    }
}
