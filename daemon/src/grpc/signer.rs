//! The `keyward.v1.Signer` service: list keys, public keys, sign. Each handler takes the
//! caller the caller layer put into the request ([`super::layer`]) and does only what its RPC
//! does; `Sign` is an adapter over [`SigningCore::sign`].

use keyward_plugin_api::verify::spki_der_to_pem;
use keyward_plugin_api::{EcdsaFormat, KeySpec, SignInput, SignatureAlgorithm};
use keyward_proto::v1::signer_server::Signer;
use keyward_proto::v1::{self, sign_request};
use tonic::{Request, Response, Status};

use super::caller_of;
use crate::error::AgentError;
use crate::keys::ResolvedKey;
use crate::limits::{MAX_KEY_ID_BYTES, check_len};
use crate::shown::quoted;
use crate::signing::{self, SignRequest, SigningCore};

/// The `Signer` service.
#[derive(Debug, Clone)]
pub struct SignerService {
    core: SigningCore,
}

impl SignerService {
    /// The service over `core`.
    pub fn new(core: SigningCore) -> Self {
        SignerService { core }
    }
}

/// The client-facing description of a key.
pub fn key_info(key: &ResolvedKey) -> v1::KeyInfo {
    v1::KeyInfo {
        key_id: key.id.to_string(),
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
        .map_err(|e| AgentError::Internal(format!("key {:?}: {e}", key.id.as_str())))?;
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

/// A wire request as the core's: the algorithm number known, the input present, the format
/// known. The error is the reason.
pub fn parse(request: &v1::SignRequest) -> Result<SignRequest<'_>, String> {
    let algorithm = match v1::SignatureAlgorithm::try_from(request.algorithm) {
        Ok(v1::SignatureAlgorithm::Unspecified) => None,
        Ok(wire) => Some(
            SignatureAlgorithm::try_from(wire)
                .map_err(|()| format!("unknown algorithm {}", request.algorithm))?,
        ),
        Err(_) => return Err(format!("unknown algorithm number {}", request.algorithm)),
    };
    let input = match &request.input {
        Some(sign_request::Input::Digest(digest)) => SignInput::Digest(digest),
        Some(sign_request::Input::Message(message)) => SignInput::Message(message),
        None => return Err("the request has neither a digest nor a message; send one".into()),
    };
    let format = match v1::SignatureFormat::try_from(request.format) {
        Ok(v1::SignatureFormat::Raw) => EcdsaFormat::Raw,
        Ok(_) => EcdsaFormat::Der,
        Err(_) => return Err(format!("unknown signature format {}", request.format)),
    };
    Ok(SignRequest {
        key_id: &request.key_id,
        algorithm,
        input,
        format,
        purpose: &request.purpose,
        via: signing::Via::Grpc,
    })
}

/// A sign request checked against a key of `spec` without touching any backend (what the
/// daemon does to a request before policies; the fuzz target drives it).
#[derive(Clone, Copy, Debug)]
pub struct Validated<'a> {
    /// The digest (RSA, ECDSA) or message (Ed25519) with its algorithm, valid by construction.
    pub op: keyward_plugin_api::SignOp<'a>,
    /// DER or raw `r‖s` (only ECDSA signatures are converted).
    pub format: EcdsaFormat,
}

/// [`parse`], then [`signing::operation`] for a key of `spec` that signs with `allowed`.
pub fn validate<'r>(
    spec: KeySpec,
    allowed: &[SignatureAlgorithm],
    request: &'r v1::SignRequest,
) -> Result<Validated<'r>, String> {
    let parsed = parse(request)?;
    let op = signing::operation(
        spec,
        allowed,
        parsed.algorithm,
        parsed.input,
        parsed.purpose,
    )?;
    Ok(Validated {
        op,
        format: parsed.format,
    })
}

#[tonic::async_trait]
impl Signer for SignerService {
    async fn list_keys(
        &self,
        request: Request<v1::ListKeysRequest>,
    ) -> Result<Response<v1::ListKeysResponse>, Status> {
        caller_of(&request)?;
        let keys = self.core.registry().list().await;
        Ok(Response::new(v1::ListKeysResponse {
            keys: keys.iter().map(|k| key_info(k)).collect(),
        }))
    }

    async fn get_public_key(
        &self,
        request: Request<v1::GetPublicKeyRequest>,
    ) -> Result<Response<v1::GetPublicKeyResponse>, Status> {
        caller_of(&request)?;
        let key_id = &request.get_ref().key_id;
        check_len("key id", key_id, MAX_KEY_ID_BYTES).map_err(AgentError::InvalidArgument)?;
        let key = self.core.registry().resolve(key_id).await?;
        Ok(Response::new(public_key_response(&key)?))
    }

    async fn sign(
        &self,
        request: Request<v1::SignRequest>,
    ) -> Result<Response<v1::SignResponse>, Status> {
        let caller = caller_of(&request)?;
        let request = request.into_inner();
        let parsed = match parse(&request) {
            Ok(parsed) => parsed,
            Err(why) => {
                let error =
                    AgentError::InvalidArgument(format!("key {}: {why}", quoted(&request.key_id)));
                return Err(self
                    .core
                    .refuse(&caller, &request.key_id, error)
                    .await
                    .into());
            }
        };
        let signed = self.core.sign(&caller, parsed).await?;
        let format = match signed.format {
            EcdsaFormat::Raw => v1::SignatureFormat::Raw,
            EcdsaFormat::Der => v1::SignatureFormat::Der,
        };
        Ok(Response::new(v1::SignResponse {
            signature: signed.signature,
            algorithm: v1::SignatureAlgorithm::from(signed.algorithm) as i32,
            format: format as i32,
            key_id: signed.key.id.to_string(),
            key_version: signed.key_version,
            certificate_chain: signed.key.certificate_chain.clone(),
        }))
    }
}
