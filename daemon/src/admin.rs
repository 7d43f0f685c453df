//! The `keyward.v1.KeyAdmin` service: create keys, attach certificate chains to them. Only the
//! daemon's uid and `admin_uids` may call it; every decision goes to the audit log.

use std::sync::Arc;

use keyward_plugin_api::{KeySpec, Secret};
use keyward_proto::v1::key_admin_server::KeyAdmin;
use keyward_proto::v1::{self};
use sha2::Digest;
use tonic::{Request, Response, Status};

use crate::audit::{Auditor, CallerRecord, Record, Stage};
use crate::auth::{Authenticator, Caller};
use crate::error::AgentError;
use crate::registry::Registry;
use crate::signer::{key_info, public_key_response};

/// The `KeyAdmin` service.
#[derive(Debug, Clone)]
pub struct AdminService {
    registry: Arc<Registry>,
    auth: Authenticator,
    audit: Auditor,
}

impl AdminService {
    /// A service over `registry`, serving the admins `auth` allows, recording in `audit`.
    pub fn new(registry: Arc<Registry>, auth: Authenticator, audit: Auditor) -> Self {
        AdminService {
            registry,
            auth,
            audit,
        }
    }

    /// The caller if it may manage keys; a refusal is audited as `denied`.
    async fn admin<T>(
        &self,
        request: &Request<T>,
        record: &mut Record,
    ) -> Result<Caller, AgentError> {
        match self.auth.check_admin(request) {
            Ok(caller) => {
                if self.audit.enabled() {
                    record.caller = CallerRecord::inspect(&caller);
                }
                Ok(caller)
            }
            Err(denied) => {
                if self.audit.enabled()
                    && let Some(peer) = self.auth.identify(request)
                {
                    record.caller = CallerRecord::inspect(&peer);
                }
                tracing::warn!(event = record.event, key = %record.key, "refused: {denied}");
                let refused = record.outcome("denied", Some(denied.to_string()));
                let _ = self.audit.record(refused, Stage::Before).await;
                Err(denied)
            }
        }
    }

    /// Records an attempt (refusing when a fail-closed log cannot take it), runs `work`, and
    /// records its outcome.
    async fn audited<T>(
        &self,
        record: &Record,
        work: impl Future<Output = Result<T, AgentError>>,
    ) -> Result<T, AgentError> {
        self.audit
            .record(record.outcome("attempt", None), Stage::Before)
            .await?;
        match work.await {
            Ok(done) => {
                self.audit
                    .record(record.outcome("ok", None), Stage::After)
                    .await?;
                Ok(done)
            }
            Err(e) => {
                let failed = record.outcome("error", Some(e.to_string()));
                let _ = self.audit.record(failed, Stage::After).await;
                Err(e)
            }
        }
    }
}

#[tonic::async_trait]
impl KeyAdmin for AdminService {
    async fn generate_key(
        &self,
        request: Request<v1::GenerateKeyRequest>,
    ) -> Result<Response<v1::GenerateKeyResponse>, Status> {
        let mut record = Record {
            event: "generate_key",
            key: request.get_ref().key_id.clone(),
            backend: request.get_ref().backend.clone(),
            ..Record::default()
        };
        let caller = self.admin(&request, &mut record).await?;
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
            });
        let spec = match spec {
            Ok(spec) => spec,
            Err(e) => {
                let _ = self
                    .audit
                    .record(record.outcome("error", Some(e.to_string())), Stage::Before)
                    .await;
                return Err(e.into());
            }
        };
        record.key_spec = spec.name().to_string();
        let options: std::collections::BTreeMap<String, String> =
            request.options.into_iter().collect();
        let shown_options = options
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        tracing::info!(key = %request.key_id, backend = %request.backend, %spec, options = %shown_options, caller = %caller, "generating a key");
        let key = self
            .audited(
                &record,
                self.registry
                    .generate(&request.backend, &request.key_id, spec, &options),
            )
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
        let mut record = Record {
            event: "attach_certificate_chain",
            key: request.get_ref().key_id.clone(),
            digest: hex::encode(sha2::Sha256::digest(
                request.get_ref().certificate_chain_pem.as_bytes(),
            )),
            ..Record::default()
        };
        let caller = self.admin(&request, &mut record).await?;
        let request = request.into_inner();
        if let Ok(key) = self.registry.resolve(&request.key_id).await {
            record.backend = key.backend_name.clone();
        }
        tracing::info!(key = %request.key_id, caller = %caller, "attaching a certificate chain");
        let attached = self
            .audited(
                &record,
                self.registry
                    .attach_chain(&request.key_id, &request.certificate_chain_pem),
            )
            .await;
        let key = match attached {
            Ok(key) => key,
            Err(e) => {
                tracing::warn!(key = %request.key_id, caller = %caller, "certificate chain refused: {e}");
                return Err(e.into());
            }
        };
        Ok(Response::new(v1::AttachCertificateChainResponse {
            key: Some(key_info(&key)),
            certificate_chain: key.certificate_chain.clone(),
        }))
    }

    async fn attach_open_pgp_certificate(
        &self,
        request: Request<v1::AttachOpenPgpCertificateRequest>,
    ) -> Result<Response<v1::AttachOpenPgpCertificateResponse>, Status> {
        let mut record = Record {
            event: "attach_openpgp_certificate",
            key: request.get_ref().key_id.clone(),
            digest: hex::encode(sha2::Sha256::digest(&request.get_ref().certificate)),
            ..Record::default()
        };
        let caller = self.admin(&request, &mut record).await?;
        let request = request.into_inner();
        if let Ok(key) = self.registry.resolve(&request.key_id).await {
            record.backend = key.backend_name.clone();
        }
        tracing::info!(key = %request.key_id, caller = %caller, "attaching an OpenPGP certificate");
        let attached = self
            .audited(
                &record,
                self.registry
                    .attach_openpgp(&request.key_id, &request.certificate),
            )
            .await;
        let (key, fingerprint) = match attached {
            Ok(done) => done,
            Err(e) => {
                tracing::warn!(key = %request.key_id, caller = %caller, "OpenPGP certificate refused: {e}");
                return Err(e.into());
            }
        };
        Ok(Response::new(v1::AttachOpenPgpCertificateResponse {
            key: Some(key_info(&key)),
            certificate: key
                .description
                .openpgp_certificate
                .clone()
                .unwrap_or_default(),
            fingerprint,
        }))
    }

    async fn unlock_backend(
        &self,
        request: Request<v1::UnlockBackendRequest>,
    ) -> Result<Response<v1::UnlockBackendResponse>, Status> {
        // The PIN is in the request: it goes to the backend only, never to a log or a record.
        let mut record = Record {
            event: "unlock_backend",
            backend: request.get_ref().backend.clone(),
            ..Record::default()
        };
        let caller = self.admin(&request, &mut record).await?;
        let mut request = request.into_inner();
        let pin = Secret::new(std::mem::take(&mut request.pin));
        let backend_name = request.backend;
        let ttl = Some(request.ttl_seconds)
            .filter(|s| *s > 0)
            .map(std::time::Duration::from_secs);
        let backend = match self.registry.backend(&backend_name) {
            Ok(backend) => backend.clone(),
            Err(e) => {
                let _ = self
                    .audit
                    .record(record.outcome("error", Some(e.to_string())), Stage::Before)
                    .await;
                return Err(e.into());
            }
        };
        tracing::info!(backend = %backend_name, ttl_seconds = request.ttl_seconds, caller = %caller, "unlocking a backend (PIN given over the socket)");
        let unlocked = self
            .audited(&record, async {
                if pin.expose().is_empty() {
                    return Err(AgentError::InvalidArgument(format!(
                        "backend {backend_name:?}: the PIN is empty; type the PIN (or pipe it on stdin) to `keyward yubikey unlock`"
                    )));
                }
                backend
                    .unlock(pin, ttl)
                    .await
                    .map_err(|source| AgentError::BackendCall {
                        backend: backend_name.clone(),
                        source,
                    })
            })
            .await;
        if let Err(e) = unlocked {
            tracing::warn!(backend = %backend_name, caller = %caller, "unlock refused: {e}");
            return Err(e.into());
        }
        Ok(Response::new(v1::UnlockBackendResponse {
            backend: backend_name,
            ttl_seconds: request.ttl_seconds,
        }))
    }
}
