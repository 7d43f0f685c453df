//! The two things `KeyAdmin` attaches to keys, each a check in front of the one attach path
//! ([`Registry::attach`]): X.509 chains (checked here with [`crate::certs`]) and OpenPGP
//! certificates (checked by the pgp plugin, [`crate::openpgp`]).

use std::sync::Arc;

use keyward_plugin_api::BackendError;

use super::attached::now;
use super::{Attachment, Registry, ResolvedKey};
use crate::certs::{self, ChainError};
use crate::error::AgentError;
use crate::openpgp::CheckError;

impl Registry {
    /// Checks `pem` (a PEM bundle, leaf first) against the key and the Notary rules, stores it
    /// in the state directory and serves it from now on.
    pub async fn attach_chain(
        &self,
        key_id: &str,
        pem: &str,
    ) -> Result<Arc<ResolvedKey>, AgentError> {
        let (key, ()) = self
            .attach(key_id, |key| async move {
                let refused = |e: ChainError| {
                    let message = format!("key {key_id:?}: the certificate chain is refused: {e}");
                    match e {
                        ChainError::Invalid(_) => AgentError::InvalidArgument(message),
                        ChainError::Precondition(_) => AgentError::FailedPrecondition(message),
                    }
                };
                if let Some(path) = self.config_chain(&key.id) {
                    return Err(AgentError::FailedPrecondition(format!(
                        "key {key_id:?} takes its certificate chain from the config (certificate_chain = {:?}); replace that file or remove the setting, then restart keywardd",
                        path.display().to_string()
                    )));
                }
                let chain = certs::parse_pem_bundle(pem.as_bytes()).map_err(refused)?;
                certs::check_rules(&chain).map_err(refused)?;
                certs::check_key(&chain, &key.description.public_key_der).map_err(refused)?;
                certs::check_validity(&chain, now()).map_err(refused)?;
                Ok((Attachment::Chain(chain), ()))
            })
            .await?;
        Ok(key)
    }

    /// Checks `certificate` (an OpenPGP certificate, binary or armored) against the key,
    /// stores it in the state directory and serves it from now on. Returns the key and the
    /// certificate's fingerprint.
    pub async fn attach_openpgp(
        &self,
        key_id: &str,
        certificate: &[u8],
    ) -> Result<(Arc<ResolvedKey>, String), AgentError> {
        self.attach(key_id, |key: Arc<ResolvedKey>| async move {
            let spki = &key.description.public_key_der;
            let (binary, fingerprint) = crate::openpgp::check(
                self.plugin_dirs(),
                certificate,
                spki,
                true,
            )
            .await
            .map_err(|e| {
                let message = format!("key {key_id:?}: the OpenPGP certificate is refused: {e}");
                match e {
                    CheckError::Invalid(_) => AgentError::InvalidArgument(message),
                    CheckError::Precondition(_) => AgentError::FailedPrecondition(message),
                    CheckError::NoChecker(why) => AgentError::Backend {
                        key_id: key_id.to_string(),
                        backend: key.backend_name.clone(),
                        source: BackendError::Unsupported(why),
                    },
                    CheckError::Failed(why) => AgentError::Internal(format!(
                        "key {key_id:?}: the OpenPGP certificate could not be checked: {why}"
                    )),
                }
            })?;
            tracing::info!(key = %key.id, %fingerprint, "OpenPGP certificate checked");
            let attachment = Attachment::OpenPgp {
                certificate: binary,
                checked_for: spki.clone(),
            };
            Ok((attachment, fingerprint))
        })
        .await
    }
}
