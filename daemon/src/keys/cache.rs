//! The one cache of resolved keys, keyed by canonical key id ([`super::KeyId::as_str`]).
//!
//! A client that names a key by its canonical id (what `ListKeys` shows) finds it here with one
//! read lock and an `Arc` clone, without asking any backend. Another spelling of a discovered
//! key is canonicalised by its backend first and then finds the same entry: one key, one entry.
//! Entries are dropped when a backend says a key is gone, when something is attached to the
//! key, and with the whole registry on reload.
//!
//! Besides the keys, it remembers (bounded) two kinds of spellings, so that neither costs a
//! backend call twice: another spelling of a cached key (`pgp/0xabcd...` for `pgp/ABCD...`),
//! and, for `unknown_key_seconds` (`[limits]`), a discovered-looking id that named no key.
//! [`Registry::resolve`] consults all three before any backend call; what still reaches a
//! backend is rate-limited there (`key_lookups`).
//!
//! [`Registry::resolve`]: super::Registry::resolve

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use super::{KeyId, ResolvedKey};

/// Most other spellings, and most unknown ids, remembered at once.
const MAX_SPELLINGS: usize = 4096;

/// Resolved keys by canonical id, other spellings of them, and ids known to name no key.
#[derive(Debug, Default)]
pub struct KeyCache {
    entries: RwLock<HashMap<String, Arc<ResolvedKey>>>,
    /// A spelling -> the canonical id it resolved to.
    spellings: RwLock<HashMap<String, String>>,
    /// An id that named no key -> until when that is believed.
    unknown: Mutex<HashMap<String, Instant>>,
}

impl KeyCache {
    /// The cached key that `spelled` (not its canonical id) was found to name.
    pub fn by_spelling(&self, spelled: &str) -> Option<Arc<ResolvedKey>> {
        let canonical = self
            .spellings
            .read()
            .expect("key cache lock")
            .get(spelled)
            .cloned()?;
        self.get(&canonical)
    }

    /// Remembers that `spelled` names the key `id`.
    pub fn remember_spelling(&self, spelled: &str, id: &KeyId) {
        let mut spellings = self.spellings.write().expect("key cache lock");
        if spellings.len() >= MAX_SPELLINGS {
            spellings.clear();
        }
        spellings.insert(spelled.to_string(), id.as_str().to_string());
    }

    /// Whether `spelled` was found to name no key, and that is still believed at `now`.
    pub fn is_unknown(&self, spelled: &str, now: Instant) -> bool {
        self.unknown
            .lock()
            .expect("key cache lock")
            .get(spelled)
            .is_some_and(|until| *until > now)
    }

    /// Remembers until `until` that `spelled` names no key. When the table is full of ids still
    /// believed, the id is not remembered (the look-up rate limit still bounds what it costs).
    pub fn remember_unknown(&self, spelled: &str, now: Instant, until: Instant) {
        if until <= now {
            return;
        }
        let mut unknown = self.unknown.lock().expect("key cache lock");
        if unknown.len() >= MAX_SPELLINGS {
            unknown.retain(|_, until| *until > now);
            if unknown.len() >= MAX_SPELLINGS {
                return;
            }
        }
        unknown.insert(spelled.to_string(), until);
    }

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

    /// Forgets `id` (its other spellings lead nowhere until they resolve again).
    pub fn evict(&self, id: &KeyId) {
        self.entries
            .write()
            .expect("key cache lock")
            .remove(id.as_str());
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn unknown_ids_are_remembered_briefly_and_boundedly() {
        let cache = KeyCache::default();
        let now = Instant::now();
        let later = now + Duration::from_secs(5);
        assert!(!cache.is_unknown("hsm/x", now));
        cache.remember_unknown("hsm/x", now, later);
        assert!(cache.is_unknown("hsm/x", now));
        assert!(
            !cache.is_unknown("hsm/x", later),
            "forgotten when it expires"
        );
        cache.remember_unknown("hsm/y", now, now);
        assert!(
            !cache.is_unknown("hsm/y", now),
            "a zero ttl remembers nothing"
        );
        for n in 0..MAX_SPELLINGS * 2 {
            cache.remember_unknown(&format!("hsm/{n}"), now, later);
        }
        assert_eq!(cache.unknown.lock().unwrap().len(), MAX_SPELLINGS);
        // Once the old ones have expired, new ones take their place.
        cache.remember_unknown("hsm/new", later, later + Duration::from_secs(1));
        assert!(cache.is_unknown("hsm/new", later));
        assert_eq!(cache.unknown.lock().unwrap().len(), 1);
    }
}
