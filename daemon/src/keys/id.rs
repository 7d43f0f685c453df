//! [`KeyId`]: the one identity of a key in this daemon.
//!
//! A key is known by exactly one id, whatever spelling a client used to find it:
//!
//! - a **named** id: a `[[key]]` id from the config, or an id given to `KeyAdmin.GenerateKey`
//!   (1-128 letters, digits, `.`, `_`, `-`: [`is_valid_key_name`], so never a `/`);
//! - a **discovered** id, `<backend>/<reference>`, for a key a backend offers that no name
//!   points at, with the backend's canonical spelling of the reference
//!   (`Backend::canonical_reference`: a pgp fingerprint in upper case, without `0x`).
//!
//! The cache, the policy buckets and the audit log all use the canonical text
//! ([`KeyId::as_str`]). Which kind an id is comes from how it was made, never from what its
//! text contains.

use std::fmt;

use keyward_plugin_api::is_valid_key_name;

/// A key's canonical identity: see the module documentation.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId {
    text: String,
    /// For a discovered id, where the backend name ends in `text`.
    backend_end: Option<usize>,
}

impl KeyId {
    /// A named id, if `id` is a valid key name.
    pub fn named(id: &str) -> Option<KeyId> {
        is_valid_key_name(id).then(|| KeyId {
            text: id.to_string(),
            backend_end: None,
        })
    }

    /// The discovered id of the key `reference` (the backend's canonical spelling) of backend
    /// `backend`.
    pub fn discovered(backend: &str, reference: &str) -> KeyId {
        KeyId {
            text: format!("{backend}/{reference}"),
            backend_end: Some(backend.len()),
        }
    }

    /// How a client's id text splits if it names a discovered key: `(backend, reference as
    /// spelled)`. `None` when it cannot (no backend part, or a reference that is not a valid key
    /// name).
    pub fn split_discovered(text: &str) -> Option<(&str, &str)> {
        let (backend, reference) = text.split_once('/')?;
        (!backend.is_empty() && is_valid_key_name(reference)).then_some((backend, reference))
    }

    /// The canonical text: what clients see and what caches, policies and audit records use.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// For a discovered id, its backend and reference.
    pub fn discovered_parts(&self) -> Option<(&str, &str)> {
        self.backend_end
            .map(|end| (&self.text[..end], &self.text[end + 1..]))
    }

    /// Whether this is a discovered id.
    pub fn is_discovered(&self) -> bool {
        self.backend_end.is_some()
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.text, f)
    }
}

impl AsRef<str> for KeyId {
    fn as_ref(&self) -> &str {
        &self.text
    }
}

impl PartialEq<str> for KeyId {
    fn eq(&self, other: &str) -> bool {
        self.text == other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kind_comes_from_the_constructor() {
        let named = KeyId::named("release").unwrap();
        assert_eq!((named.as_str(), named.is_discovered()), ("release", false));
        assert_eq!(KeyId::named("a/b"), None, "a named id never holds a slash");
        assert_eq!(KeyId::named(""), None);

        let found = KeyId::discovered("pgp", "ABCD");
        assert_eq!(found.as_str(), "pgp/ABCD");
        assert_eq!(found.discovered_parts(), Some(("pgp", "ABCD")));
        assert_ne!(found, KeyId::named("ABCD").unwrap());
    }

    #[test]
    fn client_text_splits_only_into_valid_parts() {
        assert_eq!(
            KeyId::split_discovered("hsm/release"),
            Some(("hsm", "release"))
        );
        assert_eq!(KeyId::split_discovered("release"), None);
        assert_eq!(KeyId::split_discovered("/x"), None);
        assert_eq!(KeyId::split_discovered("hsm/../x"), None);
        assert_eq!(KeyId::split_discovered("hsm/a/b"), None);
    }
}
