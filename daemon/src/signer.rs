//! The `keyward.v1.Signer` service: list keys, public keys, sign.

use std::sync::Arc;
use std::time::Instant;

use keyward_plugin_api::encoding::{ecdsa_der_to_raw, ecdsa_raw_to_der};
use keyward_plugin_api::verify::{check_input, spki_der_to_pem};
use keyward_plugin_api::{BackendError, EcdsaFormat, SignInput, SignatureAlgorithm};
use keyward_proto::v1::signer_server::Signer;
use keyward_proto::v1::{self, sign_request};
use tonic::{Request, Response, Status};

use crate::auth::Authenticator;
use crate::error::AgentError;
use crate::registry::{Registry, ResolvedKey};

/// Longest `purpose` accepted, in bytes.
const MAX_PURPOSE_LEN: usize = 256;

/// The `Signer` service.
#[derive(Debug, Clone)]
pub struct SignerService {
    registry: Arc<Registry>,
    auth: Authenticator,
}

impl SignerService {
    /// A service over `registry`, serving the callers `auth` allows.
    pub fn new(registry: Arc<Registry>, auth: Authenticator) -> Self {
        SignerService { registry, auth }
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
            .spec()
            .algorithms()
            .iter()
            .map(|a| v1::SignatureAlgorithm::from(*a) as i32)
            .collect(),
        has_certificate: !key.certificate_chain.is_empty(),
        key_version: key.description.version.clone().unwrap_or_default(),
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
        openpgp_certificate: Vec::new(),
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
        let caller = self.auth.check(&request)?;
        let started = Instant::now();
        let request = request.into_inner();
        let key = self.registry.resolve(&request.key_id).await?;
        let result = sign(&self.registry, &key, &request).await;
        match &result {
            Ok(response) => tracing::info!(
                key = %key.id,
                backend = %key.backend_name,
                algorithm = %v1::SignatureAlgorithm::try_from(response.algorithm).map_or("?", |a| a.name()),
                uid = caller.uid,
                pid = ?caller.pid,
                purpose = %request.purpose,
                micros = started.elapsed().as_micros() as u64,
                "signed"
            ),
            Err(e) => {
                if let AgentError::Backend {
                    source: BackendError::NotFound(_),
                    ..
                } = e
                {
                    self.registry.evict(&key.id);
                }
                tracing::warn!(key = %key.id, uid = caller.uid, pid = ?caller.pid, "sign refused: {e}");
            }
        }
        Ok(Response::new(result?))
    }
}

/// Checks the request against the key, has the backend sign, verifies the signature and
/// encodes it as asked.
async fn sign(
    registry: &Registry,
    key: &Arc<ResolvedKey>,
    request: &v1::SignRequest,
) -> Result<v1::SignResponse, AgentError> {
    let invalid =
        |message: String| AgentError::InvalidArgument(format!("key {:?}: {message}", key.id));
    if request.purpose.len() > MAX_PURPOSE_LEN {
        return Err(invalid(format!(
            "the purpose is {} bytes long; keep it under {MAX_PURPOSE_LEN}",
            request.purpose.len()
        )));
    }
    let spec = key.spec();
    let algorithm = match v1::SignatureAlgorithm::try_from(request.algorithm) {
        Ok(v1::SignatureAlgorithm::Unspecified) => spec.default_algorithm(),
        Ok(wire) => SignatureAlgorithm::try_from(wire)
            .map_err(|()| invalid(format!("unknown algorithm {}", request.algorithm)))?,
        Err(_) => {
            return Err(invalid(format!(
                "unknown algorithm number {}",
                request.algorithm
            )));
        }
    };
    if !spec.supports(algorithm) {
        return Err(invalid(format!(
            "a {spec} key cannot sign with {algorithm}; use one of: {}",
            spec.algorithms()
                .iter()
                .map(|a| a.name())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let input = match &request.input {
        Some(sign_request::Input::Digest(digest)) => SignInput::Digest(digest),
        Some(sign_request::Input::Message(message)) => SignInput::Message(message),
        None => {
            return Err(invalid(
                "the request has neither a digest nor a message; send one".into(),
            ));
        }
    };
    check_input(algorithm, &input).map_err(invalid)?;
    let wanted = match v1::SignatureFormat::try_from(request.format) {
        Ok(v1::SignatureFormat::Raw) => EcdsaFormat::Raw,
        Ok(_) => EcdsaFormat::Der,
        Err(_) => {
            return Err(invalid(format!(
                "unknown signature format {}",
                request.format
            )));
        }
    };

    let signature = key
        .backend
        .sign(&key.description.reference, algorithm, input)
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
        .verify(algorithm, input, &signature.bytes, signature.ecdsa_format)
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
