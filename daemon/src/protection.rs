//! Which keys `keyward keys delete` refuses: those a policy marks `protected = true`.
//!
//! A key is protected when its own policy says so; or when a key with a protecting policy on
//! the same backend has the same public key (the same key material under another id, e.g. a
//! `[[key]]` and its discovered `<backend>/<name>`: deleting either destroys both); or, for a
//! key without a policy of its own, when `[default_policy]` says so. The same rule as
//! signing policies ([`crate::signing::SigningCore`]): a policy belongs to the key material.

use keyward_plugin_api::BackendError;

use crate::error::AgentError;
use crate::keys::{Registry, ResolvedKey};
use crate::policy::Policies;

/// The policy that protects `key` from deletion (its name, for the refusal), if one does.
pub async fn protected_by(
    registry: &Registry,
    policies: &Policies,
    key: &ResolvedKey,
) -> Result<Option<String>, AgentError> {
    let id = key.id.as_str();
    let own = policies.own_protection(id);
    if own == Some(true) {
        return Ok(Some(format!("the policy of key {id:?}")));
    }
    for (owner, backend) in policies.protected_owners() {
        if backend != key.backend_name || owner == id {
            continue;
        }
        let other = match registry.resolve(owner).await {
            Ok(other) => other,
            // A key that does not exist cannot be this one.
            Err(
                AgentError::KeyNotFound { .. }
                | AgentError::Backend {
                    source: BackendError::NotFound(_),
                    ..
                },
            ) => continue,
            Err(e) => {
                return Err(AgentError::PermissionDenied(format!(
                    "key {id:?}: cannot tell whether it is key {owner:?}, which is protected, under another id ({e}); retry when {owner:?} is available"
                )));
            }
        };
        if other.description.public_key_der == key.description.public_key_der {
            return Ok(Some(format!(
                "the policy of key {owner:?} (the same key as {id:?})"
            )));
        }
    }
    if own.is_none() && policies.default_protected() {
        return Ok(Some("[default_policy]".to_string()));
    }
    Ok(None)
}
