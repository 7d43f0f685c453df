//! The one cache of resolved keys, keyed by canonical key id ([`super::KeyId::as_str`]).
//!
//! A client that names a key by its canonical id (what `ListKeys` shows) finds it here with one
//! read lock and an `Arc` clone, without asking any backend. Another spelling of a discovered
//! key is canonicalised by its backend first and then finds the same entry: one key, one entry.
//! Entries are dropped when a backend says a key is gone, when something is attached to the
//! key, and with the whole registry on reload.
//!
//! Issue #16.4 adds negative caching here: ids that resolved to nothing, remembered (bounded,
//! briefly) and rate-limited, so that unknown ids cost no backend call. [`Registry::resolve`]
//! consults this cache before any backend call, which is where that check belongs.
//!
//! [`Registry::resolve`]: super::Registry::resolve

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::{KeyId, ResolvedKey};

/// Resolved keys by canonical id.
#[derive(Debug, Default)]
pub struct KeyCache {
    entries: RwLock<HashMap<String, Arc<ResolvedKey>>>,
}

impl KeyCache {
    /// The key whose canonical id is `id`, if cached.
    pub fn get(&self, id: &str) -> Option<Arc<ResolvedKey>> {
        self.entries
            .read()
            .expect("key cache lock")
            .get(id)
            .cloned()
    }

    /// Whether `id` is cached.
    pub fn contains(&self, id: &str) -> bool {
        self.entries
            .read()
            .expect("key cache lock")
            .contains_key(id)
    }

    /// Caches `key` under its id (replacing an older entry).
    pub fn insert(&self, key: Arc<ResolvedKey>) {
        self.entries
            .write()
            .expect("key cache lock")
            .insert(key.id.as_str().to_string(), key);
    }

    /// Forgets `id`.
    pub fn evict(&self, id: &KeyId) {
        self.entries
            .write()
            .expect("key cache lock")
            .remove(id.as_str());
    }
}
