//! [`ResolvedKey`]: a key the daemon can sign with, resolved to its backend, its public key
//! parsed once for the verification of every signature.

use std::sync::Arc;

use keyward_plugin_api::verify::PublicKeyVerifier;
use keyward_plugin_api::{Backend, KeyDescription, KeySpec};

use super::KeyId;
use crate::certs;
use crate::error::AgentError;

/// A key the daemon can sign with.
#[derive(Debug)]
pub struct ResolvedKey {
    /// The key's canonical id.
    pub id: KeyId,
    /// The backend instance name.
    pub backend_name: String,
    /// The backend.
    pub backend: Arc<dyn Backend>,
    /// What the backend said about the key (with an attached OpenPGP certificate, if any).
    pub description: KeyDescription,
    /// The parsed public key, to verify every signature before it leaves.
    pub verifier: PublicKeyVerifier,
    /// X.509 certificates, DER, leaf first.
    pub certificate_chain: Vec<Vec<u8>>,
}

impl ResolvedKey {
    /// The key's spec.
    pub fn spec(&self) -> KeySpec {
        self.description.spec
    }

    /// Parses the backend's public key and checks what is attached to the key against it. A
    /// chain whose leaf is not the key's public key is logged and not served, so the key still
    /// signs and a new chain can be attached.
    pub(super) fn new(
        id: KeyId,
        backend_name: &str,
        backend: Arc<dyn Backend>,
        description: KeyDescription,
        chain: Vec<Vec<u8>>,
    ) -> Result<Self, AgentError> {
        let certificate_chain = if chain.is_empty() {
            chain
        } else if let Err(e) = certs::check_key(&chain, &description.public_key_der) {
            tracing::warn!(key = %id, backend = %backend_name, "the certificate chain is not served: {e}");
            Vec::new()
        } else {
            chain
        };
        let verifier = PublicKeyVerifier::from_spki(&description.public_key_der).map_err(|e| {
            AgentError::Internal(format!(
                "key {id:?} on backend {backend_name:?}: the backend's public key is unusable: {e}"
            ))
        })?;
        if verifier.spec() != description.spec {
            return Err(AgentError::Internal(format!(
                "key {id:?} on backend {backend_name:?}: the backend says {} but the public key is {}",
                description.spec,
                verifier.spec()
            )));
        }
        Ok(ResolvedKey {
            id,
            backend_name: backend_name.to_string(),
            backend,
            description,
            verifier,
            certificate_chain,
        })
    }
}
