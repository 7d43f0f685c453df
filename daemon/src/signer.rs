//! The `keyward.v1.Signer` service: list keys, public keys, sign.

use std::sync::Arc;
use std::time::Instant;

use keyward_plugin_api::encoding::{ecdsa_der_to_raw, ecdsa_raw_to_der};
use keyward_plugin_api::verify::spki_der_to_pem;
use keyward_plugin_api::{
    BackendError, EcdsaFormat, KeySpec, SignInput, SignOp, SignatureAlgorithm,
};
use keyward_proto::v1::signer_server::Signer;
use keyward_proto::v1::{self, sign_request};
use tonic::{Request, Response, Status};

use crate::audit::{Auditor, CallerRecord, Record, Stage};
use crate::auth::{Authenticator, Caller};
use crate::error::AgentError;
use crate::policy::{Applied, ExeHashCache, Policies, ProcessInfo, SignAttempt, inspect_process};
use crate::registry::{Registry, ResolvedKey};

/// Longest `purpose` accepted, in bytes.
const MAX_PURPOSE_LEN: usize = 256;

/// The `Signer` service.
#[derive(Debug, Clone)]
pub struct SignerService {
    registry: Arc<Registry>,
    auth: Authenticator,
    policies: Arc<Policies>,
    exe_hashes: Arc<ExeHashCache>,
    audit: Auditor,
}

impl SignerService {
    /// A service over `registry`, serving the callers `auth` allows as `policies` say, and
    /// recording every decision in `audit`.
    pub fn new(
        registry: Arc<Registry>,
        auth: Authenticator,
        policies: Arc<Policies>,
        audit: Auditor,
    ) -> Self {
        SignerService {
            registry,
            auth,
            policies,
            exe_hashes: Arc::default(),
            audit,
        }
    }
}

/// The client-facing description of a key.
pub fn key_info(key: &ResolvedKey) -> v1::KeyInfo {
    v1::KeyInfo {
        key_id: key.id.clone(),
        backend: key.backend_name.clone(),
        backend_type: key.backend.backend_type().to_string(),
        key_spec: v1::KeySpec::from(key.spec()) as i32,
        algorithms: key
            .description
            .allowed_algorithms()
            .iter()
            .map(|a| v1::SignatureAlgorithm::from(*a) as i32)
            .collect(),
        has_certificate: !key.certificate_chain.is_empty(),
        key_version: key.description.version.clone().unwrap_or_default(),
        attributes: key
            .description
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// The public key response for a resolved key.
pub fn public_key_response(key: &ResolvedKey) -> Result<v1::GetPublicKeyResponse, AgentError> {
    let pem = spki_der_to_pem(&key.description.public_key_der)
        .map_err(|e| AgentError::Internal(format!("key {:?}: {e}", key.id)))?;
    Ok(v1::GetPublicKeyResponse {
        key: Some(key_info(key)),
        public_key_der: key.description.public_key_der.clone(),
        public_key_pem: pem,
        key_version: key.description.version.clone().unwrap_or_default(),
        certificate_chain: key.certificate_chain.clone(),
        openpgp_certificate: key
            .description
            .openpgp_certificate
            .clone()
            .unwrap_or_default(),
    })
}

#[tonic::async_trait]
impl Signer for SignerService {
    async fn list_keys(
        &self,
        request: Request<v1::ListKeysRequest>,
    ) -> Result<Response<v1::ListKeysResponse>, Status> {
        self.auth.check(&request)?;
        let keys = self.registry.list().await;
        Ok(Response::new(v1::ListKeysResponse {
            keys: keys.iter().map(|k| key_info(k)).collect(),
        }))
    }

    async fn get_public_key(
        &self,
        request: Request<v1::GetPublicKeyRequest>,
    ) -> Result<Response<v1::GetPublicKeyResponse>, Status> {
        self.auth.check(&request)?;
        let key = self.registry.resolve(&request.get_ref().key_id).await?;
        Ok(Response::new(public_key_response(&key)?))
    }

    async fn sign(
        &self,
        request: Request<v1::SignRequest>,
    ) -> Result<Response<v1::SignResponse>, Status> {
        let started = Instant::now();
        let caller = match self.auth.check(&request) {
            Ok(caller) => caller,
            Err(denied) => {
                if self.audit.enabled()
                    && let Some(peer) = self.auth.identify(&request)
                {
                    let record = Record {
                        event: "sign",
                        result: "denied",
                        caller: CallerRecord::inspect(&peer),
                        key: request.get_ref().key_id.clone(),
                        error: Some(denied.to_string()),
                        ..Record::default()
                    };
                    // A refusal stays a refusal even when its record cannot be written.
                    let _ = self.audit.record(record, Stage::Before).await;
                }
                return Err(denied.into());
            }
        };
        let request = request.into_inner();
        let mut record = Record {
            event: "sign",
            key: request.key_id.clone(),
            purpose: request.purpose.clone(),
            ..Record::default()
        };
        if self.audit.enabled() {
            record.caller = CallerRecord::inspect(&caller);
            record.digest = input_digest(&request);
        }
        let pid = caller.local().and_then(|c| c.pid);
        let (key, validated) = match self.decide(&caller, &request, &mut record).await {
            Ok(decided) => decided,
            Err(refused) => {
                let result = match refused {
                    AgentError::PermissionDenied(_) | AgentError::RateLimited { .. } => "denied",
                    _ => "error",
                };
                tracing::warn!(key = %request.key_id, caller = %caller, pid = ?pid, "sign {result}: {refused}");
                let _ = self
                    .audit
                    .record(
                        record.outcome(result, Some(refused.to_string())),
                        Stage::Before,
                    )
                    .await;
                return Err(refused.into());
            }
        };
        // Invariant 3: the attempt is on disk before the backend sees the request.
        self.audit
            .record(record.outcome("attempt", None), Stage::Before)
            .await?;
        let result = sign(&self.registry, &key, &validated).await;
        match result {
            Ok(response) => {
                record.key_version = response.key_version.clone();
                self.audit
                    .record(record.outcome("ok", None), Stage::After)
                    .await?;
                tracing::info!(
                    key = %key.id,
                    backend = %key.backend_name,
                    algorithm = %validated.op.algorithm(),
                    caller = %caller,
                    pid = ?pid,
                    purpose = %request.purpose,
                    key_version = %response.key_version,
                    micros = started.elapsed().as_micros() as u64,
                    "signed"
                );
                Ok(Response::new(response))
            }
            Err(e) => {
                if let AgentError::Backend {
                    source: BackendError::NotFound(_),
                    ..
                } = e
                {
                    self.registry.evict(&key.id);
                }
                tracing::warn!(key = %key.id, caller = %caller, pid = ?pid, "sign failed: {e}");
                let _ = self
                    .audit
                    .record(record.outcome("error", Some(e.to_string())), Stage::After)
                    .await;
                Err(e.into())
            }
        }
    }
}

/// The hex digest a sign request carries; for a message (Ed25519), its SHA-256.
fn input_digest(request: &v1::SignRequest) -> String {
    match &request.input {
        Some(sign_request::Input::Digest(digest)) => hex::encode(digest),
        Some(sign_request::Input::Message(message)) => {
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(message))
        }
        None => String::new(),
    }
}

impl SignerService {
    /// Everything between an authenticated caller and the backend: the key, the input checks
    /// and the policies. Fills in what `record` learns on the way.
    async fn decide<'r>(
        &self,
        caller: &Caller,
        request: &'r v1::SignRequest,
        record: &mut Record,
    ) -> Result<(Arc<ResolvedKey>, Validated<'r>), AgentError> {
        let key = self.registry.resolve(&request.key_id).await?;
        record.backend = key.backend_name.clone();
        record.key_version = key.description.version.clone().unwrap_or_default();
        let validated = validate(key.spec(), key.description.allowed_algorithms(), request)
            .map_err(|m| AgentError::InvalidArgument(format!("key {:?}: {m}", key.id)))?;
        record.algorithm = validated.op.algorithm().name().to_string();
        let applied = self.applied_policies(&key).await?;
        let process = self.inspect(caller, &applied).await;
        let attempt = SignAttempt {
            key_id: &key.id,
            caller,
            process: &process,
            algorithm: validated.op.algorithm(),
            purpose: &request.purpose,
        };
        self.policies.check(&applied, &attempt)?;
        Ok((key, validated))
    }

    /// The policies that apply to `key`: its own; else those of keys with a policy on the same
    /// backend that have the same public key (the same key under another id); else the
    /// default policy. Empty when none applies.
    async fn applied_policies(&self, key: &ResolvedKey) -> Result<Vec<Applied>, AgentError> {
        if let Some(own) = self.policies.explicit(&key.id) {
            return Ok(vec![own]);
        }
        let mut applied = Vec::new();
        for (owner, backend) in self.policies.explicit_owners() {
            if backend != key.backend_name {
                continue;
            }
            let other = match self.registry.resolve(owner).await {
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
                        "key {:?}: cannot tell whether it is key {owner:?}, which has a policy, under another id ({e}); use key {owner:?} or retry when it is available",
                        key.id
                    )));
                }
            };
            if other.description.public_key_der == key.description.public_key_der {
                applied.extend(self.policies.explicit(owner));
            }
        }
        if applied.is_empty() {
            applied.extend(self.policies.default_for(&key.id));
        }
        Ok(applied)
    }

    /// The caller's executable (and its hash) when a policy asks for it.
    async fn inspect(&self, caller: &Caller, applied: &[Applied]) -> ProcessInfo {
        let Some(local) = caller.local() else {
            return ProcessInfo::default();
        };
        if !applied.iter().any(|a| a.rules.names_executables()) {
            return ProcessInfo::default();
        }
        let pid = local.pid;
        let hash = applied.iter().any(|a| a.rules.pins_executables());
        let cache = self.exe_hashes.clone();
        // Hashing reads the whole binary the first time: keep it off the async workers.
        tokio::task::spawn_blocking(move || inspect_process(pid, hash, &cache))
            .await
            .unwrap_or_else(|e| ProcessInfo {
                exe: Some(Err(format!("inspecting the caller failed: {e}"))),
                sha256: None,
            })
    }
}

/// A sign request checked against the key: the operation (its algorithm is the key's default
/// when the request names none) and the ECDSA encoding the caller wants.
#[derive(Clone, Copy, Debug)]
pub struct Validated<'a> {
    /// The digest (RSA, ECDSA) or message (Ed25519) with its algorithm, valid by construction.
    pub op: SignOp<'a>,
    /// DER or raw `r‖s` (only ECDSA signatures are converted).
    pub format: EcdsaFormat,
}

/// Checks `request` against a key of `spec` that signs with `allowed` (the default first:
/// usually `spec.algorithms()`, fewer when the backend restricts the key) without touching any
/// backend: the purpose's length, the algorithm (known, allowed for the key), the input (a
/// digest of the hash's length, or a message for Ed25519) and the signature format. The error
/// is the reason, without the key.
pub fn validate<'r>(
    spec: KeySpec,
    allowed: &[SignatureAlgorithm],
    request: &'r v1::SignRequest,
) -> Result<Validated<'r>, String> {
    if request.purpose.len() > MAX_PURPOSE_LEN {
        return Err(format!(
            "the purpose is {} bytes long; keep it under {MAX_PURPOSE_LEN}",
            request.purpose.len()
        ));
    }
    let default = allowed
        .first()
        .copied()
        .unwrap_or_else(|| spec.default_algorithm());
    let algorithm = match v1::SignatureAlgorithm::try_from(request.algorithm) {
        Ok(v1::SignatureAlgorithm::Unspecified) => default,
        Ok(wire) => SignatureAlgorithm::try_from(wire)
            .map_err(|()| format!("unknown algorithm {}", request.algorithm))?,
        Err(_) => return Err(format!("unknown algorithm number {}", request.algorithm)),
    };
    let names =
        |list: &[SignatureAlgorithm]| list.iter().map(|a| a.name()).collect::<Vec<_>>().join(", ");
    if !spec.supports(algorithm) {
        return Err(format!(
            "a {spec} key cannot sign with {algorithm}; use one of: {}",
            names(allowed)
        ));
    }
    if !allowed.is_empty() && !allowed.contains(&algorithm) {
        return Err(format!(
            "this {spec} key signs only with {} (its backend's policy for the key); ask for one of those",
            names(allowed)
        ));
    }
    let input = match &request.input {
        Some(sign_request::Input::Digest(digest)) => SignInput::Digest(digest),
        Some(sign_request::Input::Message(message)) => SignInput::Message(message),
        None => return Err("the request has neither a digest nor a message; send one".into()),
    };
    let op = SignOp::new(algorithm, input).map_err(|e| e.to_string())?;
    let format = match v1::SignatureFormat::try_from(request.format) {
        Ok(v1::SignatureFormat::Raw) => EcdsaFormat::Raw,
        Ok(_) => EcdsaFormat::Der,
        Err(_) => return Err(format!("unknown signature format {}", request.format)),
    };
    Ok(Validated { op, format })
}

/// Has the backend sign a validated request, verifies the signature and encodes it as asked.
async fn sign(
    registry: &Registry,
    key: &Arc<ResolvedKey>,
    validated: &Validated<'_>,
) -> Result<v1::SignResponse, AgentError> {
    let Validated { op, format: wanted } = *validated;
    let algorithm = op.algorithm();
    let spec = key.spec();
    let signature = key
        .backend
        .sign(&key.description.reference, op)
        .await
        .map_err(|source| AgentError::Backend {
            key_id: key.id.clone(),
            backend: key.backend_name.clone(),
            source,
        })?;
    let bad = |source| AgentError::BadSignature {
        key_id: key.id.clone(),
        backend: key.backend_name.clone(),
        source,
    };
    // A backend with key versions (Vault, Azure) may sign with a version made since the key
    // was cached (a rotation): read the key again and check the signature against the public
    // key of the version that signed, which is also what the reply then describes.
    let mut key = Arc::clone(key);
    if signature.key_version.is_some() && signature.key_version != key.description.version {
        registry.evict(&key.id);
        let fresh = registry.resolve(&key.id).await?;
        tracing::info!(
            key = %key.id,
            from = ?key.description.version,
            to = ?fresh.description.version,
            "the backend signed with a new key version; re-read the key"
        );
        key = fresh;
    }
    key.verifier
        .verify(op, &signature.bytes, signature.ecdsa_format)
        .map_err(bad)?;

    let bytes = match (algorithm.is_ecdsa(), signature.ecdsa_format, wanted) {
        (true, EcdsaFormat::Der, EcdsaFormat::Raw) => {
            ecdsa_der_to_raw(&signature.bytes, spec.ecdsa_field_len().unwrap_or(0))
                .map_err(|e| AgentError::Internal(format!("key {:?}: {e}", key.id)))?
        }
        (true, EcdsaFormat::Raw, EcdsaFormat::Der) => ecdsa_raw_to_der(&signature.bytes)
            .map_err(|e| AgentError::Internal(format!("key {:?}: {e}", key.id)))?,
        _ => signature.bytes,
    };
    let format = if algorithm.is_ecdsa() && wanted == EcdsaFormat::Raw {
        v1::SignatureFormat::Raw
    } else {
        v1::SignatureFormat::Der
    };
    Ok(v1::SignResponse {
        signature: bytes,
        algorithm: v1::SignatureAlgorithm::from(algorithm) as i32,
        format: format as i32,
        key_id: key.id.clone(),
        key_version: signature
            .key_version
            .or_else(|| key.description.version.clone())
            .unwrap_or_default(),
        certificate_chain: key.certificate_chain.clone(),
    })
}
