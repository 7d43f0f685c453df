//! Discovery: the account's signing keys, for `list_keys` when `discover = true`.
//!
//! `ListKeys` and `ListAliases` (page by page), then for each key `DescribeKey`, a few at a
//! time: enabled `SIGN_VERIFY` keys of a spec keyward signs with are listed, under the name
//! [`keys::discovered_reference`] gives them, with their public keys; the others are skipped
//! and logged (a key keyward cannot read is skipped with a warning, so it does not hide the
//! others).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use aws_sdk_kms::types::{KeyState, KeyUsageType};
use keyward_plugin_api::{BackendError, KeyDescription};

use crate::error::Purpose;
use crate::{Inner, keys};

/// How many keys discovery describes at once.
const CONCURRENCY: usize = 8;

/// Every signing key of the account and region that keyward can use, by reference.
pub(crate) async fn list(inner: &Arc<Inner>) -> Result<Vec<KeyDescription>, BackendError> {
    let ids = inner.key_ids().await?;
    let mut aliases = inner.aliases().await?;
    let mut found = BTreeMap::new();
    let mut tasks: tokio::task::JoinSet<Option<KeyDescription>> = tokio::task::JoinSet::new();
    for key_id in ids {
        if tasks.len() >= CONCURRENCY
            && let Some(Ok(Some(key))) = tasks.join_next().await
        {
            found.insert(key.reference.clone(), key);
        }
        let names = aliases.remove(&key_id).unwrap_or_default();
        tasks.spawn(inner.clone().discover_one(key_id, names));
    }
    while let Some(done) = tasks.join_next().await {
        if let Ok(Some(key)) = done {
            found.insert(key.reference.clone(), key);
        }
    }
    Ok(found.into_values().collect())
}

impl Inner {
    /// Every alias name by the key id it points to.
    async fn aliases(&self) -> Result<HashMap<String, Vec<String>>, BackendError> {
        let purpose = Purpose::account("ListAliases");
        let mut by_key: HashMap<String, Vec<String>> = HashMap::new();
        let mut marker: Option<String> = None;
        loop {
            let page = self
                .kms
                .call(&purpose, |c| {
                    c.list_aliases()
                        .set_marker(marker.clone())
                        .limit(100)
                        .send()
                })
                .await?;
            for alias in page.aliases() {
                if let (Some(name), Some(target)) = (alias.alias_name(), alias.target_key_id()) {
                    by_key
                        .entry(target.to_string())
                        .or_default()
                        .push(name.to_string());
                }
            }
            marker = page
                .next_marker()
                .filter(|_| page.truncated())
                .map(str::to_string);
            if marker.is_none() {
                return Ok(by_key);
            }
        }
    }

    /// Every key id of the account and region.
    async fn key_ids(&self) -> Result<Vec<String>, BackendError> {
        let purpose = Purpose::account("ListKeys");
        let mut ids = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = self
                .kms
                .call(&purpose, |c| {
                    c.list_keys().set_marker(marker.clone()).limit(1000).send()
                })
                .await?;
            ids.extend(
                page.keys()
                    .iter()
                    .filter_map(|k| k.key_id().map(str::to_string)),
            );
            marker = page
                .next_marker()
                .filter(|_| page.truncated())
                .map(str::to_string);
            if marker.is_none() {
                return Ok(ids);
            }
        }
    }

    /// One listed key: `None` (logged) when it is not a signing key keyward can use.
    async fn discover_one(
        self: Arc<Self>,
        key_id: String,
        aliases: Vec<String>,
    ) -> Option<KeyDescription> {
        let reference = keys::discovered_reference(&key_id, &aliases);
        let metadata = match self.describe(&key_id).await {
            Ok(metadata) => metadata,
            Err(e) => {
                tracing::warn!(key = %key_id, "skipping KMS key: {e}");
                return None;
            }
        };
        if metadata.key_usage() != Some(&KeyUsageType::SignVerify) {
            tracing::debug!(key = %key_id, "skipping a KMS key that is not for signing");
            return None;
        }
        if metadata.key_state() != Some(&KeyState::Enabled) {
            tracing::info!(key = %key_id, state = ?metadata.key_state(), "skipping a KMS signing key that is not enabled");
            return None;
        }
        match self.signing_key(&key_id, &metadata).await {
            Ok(key) => {
                self.remember(&reference, key.clone());
                Some(KeyDescription {
                    reference,
                    spec: key.spec,
                    public_key_der: key.public_key_der.clone(),
                    version: None,
                    openpgp_certificate: None,
                    attributes: Default::default(),
                    algorithms: Vec::new(),
                })
            }
            Err(e) => {
                tracing::warn!(key = %key_id, "skipping KMS signing key: {e}");
                None
            }
        }
    }
}
