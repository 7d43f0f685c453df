//! Deleting keys (`keyward keys delete`): Key Vault soft-deletes them where the vault keeps
//! deleted keys (the default), so the answer says until when they can be recovered and how.

use keyward_plugin_api::{BackendError, Deletion, DeletionOutcome};

use crate::Inner;
use crate::error::Purpose;
use crate::keys::Reference;

/// Deletes the key `reference` names with every version. Key Vault soft-deletes it
/// (recoverable until its purge date) unless the vault has soft-delete off; the answer says
/// which.
pub(crate) async fn delete(inner: &Inner, reference: &str) -> Result<Deletion, BackendError> {
    let parsed = Reference::parse(reference, inner.url())?;
    if let Some(version) = &parsed.version {
        return Err(BackendError::InvalidInput(format!(
            "{reference:?} names version {version} of key {:?}; Key Vault deletes whole keys: delete it by its name",
            parsed.name
        )));
    }
    let name = parsed.name.clone();
    let purpose = Purpose::new("delete", format!("delete key {name:?}")).once();
    let deleted = inner
        .vault
        .call(&purpose, |client| {
            let name = name.clone();
            async move { client.delete_key(&name, None).await?.into_model() }
        })
        .await?;
    inner.forget(&name);
    let purge = deleted
        .scheduled_purge_date
        .and_then(|date| u64::try_from(date.unix_timestamp()).ok())
        .map(|secs| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs));
    let vault = inner.url();
    let vault_name = vault
        .split("://")
        .nth(1)
        .and_then(|host| host.split(['.', ':', '/']).next())
        .unwrap_or(vault);
    if deleted.recovery_id.is_some() || purge.is_some() {
        Ok(Deletion {
            outcome: DeletionOutcome::SoftDeleted,
            detail: format!(
                "key vault {vault} soft-deleted key {name:?}: it cannot sign, and it can be recovered until it is purged with `az keyvault key recover --vault-name {vault_name} --name {name}` (or purged now with `az keyvault key purge`)"
            ),
            effective_at: purge,
        })
    } else {
        Ok(Deletion {
            outcome: DeletionOutcome::Deleted,
            detail: format!(
                "key vault {vault} deleted key {name:?}; the vault has no soft-delete, so it cannot be recovered"
            ),
            effective_at: None,
        })
    }
}
