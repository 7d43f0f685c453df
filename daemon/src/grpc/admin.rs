//! The `keyward.v1.KeyAdmin` service: create and delete keys, attach certificate chains and
//! OpenPGP certificates to them, unlock a backend. The caller layer decided who may manage keys
//! ([`super::layer`]); each handler takes that decision, describes its request for the audit
//! log, and runs its work through [`Audited`], which records the refusal or the attempt and
//! its outcome.

use std::collections::BTreeMap;
use std::sync::Arc;

use keyward_plugin_api::{KeySpec, Secret};
use keyward_proto::v1::key_admin_server::KeyAdmin;
use keyward_proto::v1::{self};
use sha2::Digest;
use tonic::{Request, Response, Status};

use super::signer::{key_info, public_key_response};
use super::{admin_of, caller_of};
use crate::audit::Auditor;
use crate::audited::Audited;
use crate::auth::AdminCaller;
use crate::error::AgentError;
use crate::keys::Registry;
use crate::limits::{self, Limits, check_len};
use crate::policy::Policies;
use crate::shown::{bounded, shown};

/// The `KeyAdmin` service.
#[derive(Debug, Clone)]
pub struct AdminService {
    registry: Arc<Registry>,
    policies: Arc<Policies>,
    audit: Auditor,
    limits: Arc<Limits>,
}

impl AdminService {
    /// A service over `registry`, refusing to delete keys `policies` protect, recording in
    /// `audit`.
    pub fn new(registry: Arc<Registry>, policies: Arc<Policies>, audit: Auditor) -> Self {
        AdminService {
            registry,
            policies,
            audit,
            limits: Arc::default(),
        }
    }

    /// The same service with `limits` (the config's `[limits]`; the defaults otherwise).
    pub fn with_limits(mut self, limits: Arc<Limits>) -> Self {
        self.limits = limits;
        self
    }

    /// The admin who sent `request` and the audit trail of its `event`, described by
    /// `describe` (every caller string cut to its bound, [`bounded`]). A request with a field
    /// over its bound (`bounds`) is refused first, with an `error` record; then a caller who
    /// may not manage keys, with a `denied` record.
    async fn begin<T>(
        &self,
        request: &Request<T>,
        event: &'static str,
        bounds: impl FnOnce(&T, &Limits) -> Result<(), String>,
        describe: impl FnOnce(&T, &mut crate::audit::Record),
    ) -> Result<(AdminCaller, Audited<'_>), Status> {
        let caller = caller_of(request)?;
        let mut audited = Audited::new(&self.audit, event, &caller);
        describe(request.get_ref(), &mut audited.record);
        if let Err(why) = bounds(request.get_ref(), &self.limits) {
            let refused = AgentError::InvalidArgument(why);
            tracing::warn!(event, key = %shown(&audited.record.key), "refused: {refused}");
            return Err(audited.refuse(refused).await.into());
        }
        match admin_of(request)? {
            Ok(admin) => Ok((admin, audited)),
            Err(denied) => {
                tracing::warn!(event, key = %shown(&audited.record.key), "refused: {denied}");
                Err(audited.refuse(denied).await.into())
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
        let (admin, mut audited) = self
            .begin(
                &request,
                "generate_key",
                |r, _| {
                    check_len("key id", &r.key_id, limits::MAX_KEY_ID_BYTES)?;
                    check_len("backend name", &r.backend, limits::MAX_BACKEND_NAME_BYTES)?;
                    check_options(&r.options)
                },
                |r, record| {
                    record.key = bounded(&r.key_id).into_owned();
                    record.backend = bounded(&r.backend).into_owned();
                },
            )
            .await?;
        let request = request.into_inner();
        let spec = v1::KeySpec::try_from(request.key_spec)
            .ok()
            .and_then(|s| KeySpec::try_from(s).ok());
        let Some(spec) = spec else {
            let error = AgentError::InvalidArgument(format!(
                "key {}: choose a key spec: {}",
                crate::shown::quoted(&request.key_id),
                KeySpec::ALL.map(|s| s.name()).join(", ")
            ));
            return Err(audited.refuse(error).await.into());
        };
        audited.record.key_spec = spec.name().to_string();
        let options: BTreeMap<String, String> = request.options.into_iter().collect();
        let shown_options = options
            .iter()
            .map(|(k, v)| format!("{}={}", shown(k), shown(v)))
            .collect::<Vec<_>>()
            .join(",");
        tracing::info!(key = %shown(&request.key_id), backend = %shown(&request.backend), %spec, options = %shown_options, caller = %admin.caller(), "generating a key");
        let key = audited
            .run(
                self.registry
                    .generate(&request.backend, &request.key_id, spec, &options),
                |_, _| {},
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
        let (admin, mut audited) = self
            .begin(
                &request,
                "attach_certificate_chain",
                |r, limits| {
                    check_len("key id", &r.key_id, limits::MAX_KEY_ID_BYTES)?;
                    check_size(
                        "certificate chain",
                        r.certificate_chain_pem.len(),
                        limits.max_certificate_bytes,
                    )
                },
                |r, record| {
                    record.key = bounded(&r.key_id).into_owned();
                    record.digest =
                        hex::encode(sha2::Sha256::digest(r.certificate_chain_pem.as_bytes()));
                },
            )
            .await?;
        let request = request.into_inner();
        if let Ok(key) = self.registry.resolve(&request.key_id).await {
            audited.record.backend = key.backend_name.clone();
        }
        tracing::info!(key = %shown(&request.key_id), caller = %admin.caller(), "attaching a certificate chain");
        let key = audited
            .run(
                self.registry
                    .attach_chain(&request.key_id, &request.certificate_chain_pem),
                |_, _| {},
            )
            .await
            .inspect_err(|e| {
                tracing::warn!(key = %shown(&request.key_id), caller = %admin.caller(), "certificate chain refused: {e}");
            })?;
        Ok(Response::new(v1::AttachCertificateChainResponse {
            key: Some(key_info(&key)),
            certificate_chain: key.certificate_chain.clone(),
        }))
    }

    async fn attach_open_pgp_certificate(
        &self,
        request: Request<v1::AttachOpenPgpCertificateRequest>,
    ) -> Result<Response<v1::AttachOpenPgpCertificateResponse>, Status> {
        let (admin, mut audited) = self
            .begin(
                &request,
                "attach_openpgp_certificate",
                |r, limits| {
                    check_len("key id", &r.key_id, limits::MAX_KEY_ID_BYTES)?;
                    check_size(
                        "OpenPGP certificate",
                        r.certificate.len(),
                        limits.max_certificate_bytes,
                    )
                },
                |r, record| {
                    record.key = bounded(&r.key_id).into_owned();
                    record.digest = hex::encode(sha2::Sha256::digest(&r.certificate));
                },
            )
            .await?;
        let request = request.into_inner();
        if let Ok(key) = self.registry.resolve(&request.key_id).await {
            audited.record.backend = key.backend_name.clone();
        }
        tracing::info!(key = %shown(&request.key_id), caller = %admin.caller(), "attaching an OpenPGP certificate");
        let (key, fingerprint) = audited
            .run(
                self.registry
                    .attach_openpgp(&request.key_id, &request.certificate),
                |_, _| {},
            )
            .await
            .inspect_err(|e| {
                tracing::warn!(key = %shown(&request.key_id), caller = %admin.caller(), "OpenPGP certificate refused: {e}");
            })?;
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
        let (admin, mut audited) = self
            .begin(
                &request,
                "unlock_backend",
                |r, _| {
                    check_len("backend name", &r.backend, limits::MAX_BACKEND_NAME_BYTES)?;
                    // The PIN's length only: its bytes are never shown.
                    check_size("PIN", r.pin.len(), limits::MAX_PIN_BYTES)
                },
                |r, record| {
                    record.backend = bounded(&r.backend).into_owned();
                },
            )
            .await?;
        let mut request = request.into_inner();
        let pin = Secret::new(std::mem::take(&mut request.pin));
        let backend_name = request.backend;
        let ttl = Some(request.ttl_seconds)
            .filter(|s| *s > 0)
            .map(std::time::Duration::from_secs);
        let backend = match self.registry.backend(&backend_name) {
            Ok(backend) => backend.clone(),
            Err(e) => return Err(audited.refuse(e).await.into()),
        };
        tracing::info!(backend = %shown(&backend_name), ttl_seconds = request.ttl_seconds, caller = %admin.caller(), "unlocking a backend (PIN given over the socket)");
        let work = async {
            if pin.expose().is_empty() {
                return Err(AgentError::InvalidArgument(format!(
                    "backend {}: the PIN is empty; type the PIN (or pipe it on stdin) to `keyward yubikey unlock`",
                    crate::shown::quoted(&backend_name)
                )));
            }
            backend
                .unlock(pin, ttl)
                .await
                .map_err(|source| AgentError::BackendCall {
                    backend: backend_name.clone(),
                    source,
                })
        };
        audited.run(work, |_, _| {}).await.inspect_err(|e| {
            tracing::warn!(backend = %shown(&backend_name), caller = %admin.caller(), "unlock refused: {e}");
        })?;
        Ok(Response::new(v1::UnlockBackendResponse {
            backend: backend_name,
            ttl_seconds: request.ttl_seconds,
        }))
    }

    async fn delete_key(
        &self,
        request: Request<v1::DeleteKeyRequest>,
    ) -> Result<Response<v1::DeleteKeyResponse>, Status> {
        let (admin, mut audited) = self
            .begin(
                &request,
                "delete_key",
                |r, _| check_len("key id", &r.key_id, limits::MAX_KEY_ID_BYTES),
                |r, record| record.key = bounded(&r.key_id).into_owned(),
            )
            .await?;
        let key_id = request.into_inner().key_id;
        let key = match self.registry.resolve(&key_id).await {
            Ok(key) => key,
            Err(e) => return Err(audited.refuse(e).await.into()),
        };
        audited.record.key = key.id.to_string();
        audited.record.backend = key.backend_name.clone();
        let protected =
            match crate::protection::protected_by(&self.registry, &self.policies, &key).await {
                Ok(protected) => protected,
                Err(e) => return Err(audited.refuse(e).await.into()),
            };
        if let Some(by) = protected {
            let error = AgentError::PermissionDenied(format!(
                "key {:?} is protected by {by} (protected = true); remove `protected` from that policy and reload the config to delete it",
                key.id.as_str()
            ));
            tracing::warn!(key = %key.id, caller = %admin.caller(), "delete refused: {error}");
            return Err(audited.refuse(error).await.into());
        }
        tracing::info!(key = %key.id, backend = %key.backend_name, caller = %admin.caller(), "deleting a key");
        let deleted = audited
            .run(self.registry.delete(&key), |_, _| {})
            .await
            .inspect_err(|e| {
                tracing::warn!(key = %key.id, caller = %admin.caller(), "delete failed: {e}");
            })?;
        let outcome = match deleted.deletion.outcome {
            keyward_plugin_api::DeletionOutcome::Deleted => v1::DeletionOutcome::Deleted,
            keyward_plugin_api::DeletionOutcome::Scheduled => v1::DeletionOutcome::Scheduled,
            keyward_plugin_api::DeletionOutcome::SoftDeleted => v1::DeletionOutcome::SoftDeleted,
        };
        Ok(Response::new(v1::DeleteKeyResponse {
            key_id: key.id.to_string(),
            backend: key.backend_name.clone(),
            outcome: outcome as i32,
            detail: deleted.deletion.detail,
            effective_at: deleted
                .deletion
                .effective_at
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs() as i64),
            notes: deleted.notes,
        }))
    }
}

/// A byte string (a certificate, a PIN) of `len` bytes, at most `max`; its content is never
/// shown.
fn check_size(what: &str, len: usize, max: usize) -> Result<(), String> {
    if len <= max {
        return Ok(());
    }
    Err(format!(
        "the {what} is {len} bytes long; it may be at most {max} bytes{}",
        if what == "PIN" {
            ""
        } else {
            " (max_certificate_bytes in the daemon's [limits])"
        }
    ))
}

/// `GenerateKey` options: at most [`limits::MAX_OPTIONS`], each name and value bounded.
fn check_options(options: &std::collections::HashMap<String, String>) -> Result<(), String> {
    if options.len() > limits::MAX_OPTIONS {
        return Err(format!(
            "the request has {} options; a key takes at most {}",
            options.len(),
            limits::MAX_OPTIONS
        ));
    }
    for (name, value) in options {
        check_len("option name", name, limits::MAX_OPTION_NAME_BYTES)?;
        check_len(
            &format!("value of option {}", crate::shown::quoted(name)),
            value,
            limits::MAX_OPTION_VALUE_BYTES,
        )?;
    }
    Ok(())
}
