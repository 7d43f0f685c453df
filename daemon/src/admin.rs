//! The `keyward.v1.KeyAdmin` service: create keys, attach certificate chains to them.

use std::sync::Arc;

use keyward_plugin_api::KeySpec;
use keyward_proto::v1::key_admin_server::KeyAdmin;
use keyward_proto::v1::{self};
use tonic::{Request, Response, Status};

use crate::auth::Authenticator;
use crate::error::AgentError;
use crate::registry::Registry;
use crate::signer::{key_info, public_key_response};

/// The `KeyAdmin` service.
#[derive(Debug, Clone)]
pub struct AdminService {
    registry: Arc<Registry>,
    auth: Authenticator,
}

impl AdminService {
    /// A service over `registry`, serving the callers `auth` allows.
    pub fn new(registry: Arc<Registry>, auth: Authenticator) -> Self {
        AdminService { registry, auth }
    }
}

#[tonic::async_trait]
impl KeyAdmin for AdminService {
    async fn generate_key(
        &self,
        request: Request<v1::GenerateKeyRequest>,
    ) -> Result<Response<v1::GenerateKeyResponse>, Status> {
        let caller = self.auth.check(&request)?;
        let request = request.into_inner();
        let spec = v1::KeySpec::try_from(request.key_spec)
            .ok()
            .and_then(|s| KeySpec::try_from(s).ok())
            .ok_or_else(|| {
                AgentError::InvalidArgument(format!(
                    "key {:?}: choose a key spec: {}",
                    request.key_id,
                    KeySpec::ALL.map(|s| s.name()).join(", ")
                ))
            })?;
        tracing::info!(key = %request.key_id, backend = %request.backend, %spec, uid = caller.uid, "generating a key");
        let key = self
            .registry
            .generate(&request.backend, &request.key_id, spec)
            .await?;
        let public = public_key_response(&key)?;
        Ok(Response::new(v1::GenerateKeyResponse {
            key: Some(key_info(&key)),
            public_key_der: public.public_key_der,
            public_key_pem: public.public_key_pem,
        }))
    }

    async fn attach_certificate_chain(
        &self,
        request: Request<v1::AttachCertificateChainRequest>,
    ) -> Result<Response<v1::AttachCertificateChainResponse>, Status> {
        let caller = self.auth.check(&request)?;
        let request = request.into_inner();
        tracing::info!(key = %request.key_id, uid = caller.uid, "attaching a certificate chain");
        let key = match self
            .registry
            .attach_chain(&request.key_id, &request.certificate_chain_pem)
            .await
        {
            Ok(key) => key,
            Err(e) => {
                tracing::warn!(key = %request.key_id, uid = caller.uid, "certificate chain refused: {e}");
                return Err(e.into());
            }
        };
        Ok(Response::new(v1::AttachCertificateChainResponse {
            key: Some(key_info(&key)),
            certificate_chain: key.certificate_chain.clone(),
        }))
    }
}
