//! The daemon side: a [`Backend`] that forwards to a plugin process.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use keyward_proto::plugin::v1 as wire;
use keyward_proto::plugin::v1::backend_client::BackendClient;
use keyward_proto::v1 as api;
use tonic::transport::{Channel, Endpoint, Uri};

use super::PROTOCOL_VERSION;
use super::convert::{
    deletion_from_wire, description_from_wire, format_from_wire, health_from_wire,
    status_to_backend_error,
};
use crate::{
    Backend, BackendError, Deletion, Health, KeyDescription, KeySpec, Secret, SignOp, Signature,
};

/// A backend served by a plugin process on a Unix socket.
#[derive(Debug, Clone)]
pub struct RemoteBackend {
    client: BackendClient<Channel>,
    backend_type: String,
}

impl RemoteBackend {
    /// Connects to the plugin listening on `socket` and checks that it speaks protocol v1.
    pub async fn connect(socket: &Path) -> Result<Self, BackendError> {
        let path = socket.to_path_buf();
        let channel = Endpoint::from_static("http://plugin.invalid")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                }
            }))
            .await
            .map_err(|e| {
                BackendError::unavailable(format!(
                    "cannot connect to the plugin socket {}: {e}",
                    socket.display()
                ))
            })?;
        let mut client = BackendClient::new(channel).max_decoding_message_size(64 << 20);
        let described = client
            .describe(wire::DescribeRequest {})
            .await
            .map_err(|s| status_to_backend_error(&s))?
            .into_inner();
        if described.protocol_version != PROTOCOL_VERSION {
            return Err(BackendError::Unsupported(format!(
                "the plugin speaks protocol version {}, this keywardd speaks {PROTOCOL_VERSION}",
                described.protocol_version
            )));
        }
        Ok(RemoteBackend {
            client,
            backend_type: described.backend_type,
        })
    }

    /// Asks the plugin to describe itself (the health check).
    pub async fn ping(&self) -> Result<(), BackendError> {
        self.client
            .clone()
            .describe(wire::DescribeRequest {})
            .await
            .map(drop)
            .map_err(|s| status_to_backend_error(&s))
    }
}

#[async_trait]
impl Backend for RemoteBackend {
    fn backend_type(&self) -> &str {
        &self.backend_type
    }

    async fn list_keys(&self) -> Result<Vec<KeyDescription>, BackendError> {
        let response = self
            .client
            .clone()
            .list_keys(wire::ListKeysRequest {})
            .await
            .map_err(|s| status_to_backend_error(&s))?;
        response
            .into_inner()
            .keys
            .into_iter()
            .map(description_from_wire)
            .collect()
    }

    async fn describe_key(&self, reference: &str) -> Result<KeyDescription, BackendError> {
        let response = self
            .client
            .clone()
            .describe_key(wire::DescribeKeyRequest {
                reference: reference.to_string(),
            })
            .await
            .map_err(|s| status_to_backend_error(&s))?;
        description_from_wire(response.into_inner())
    }

    async fn canonical_reference(&self, reference: &str) -> Result<Option<String>, BackendError> {
        let answer = self
            .client
            .clone()
            .canonical_reference(wire::CanonicalReferenceRequest {
                reference: reference.to_string(),
            })
            .await;
        match answer {
            Ok(answer) => {
                let answer = answer.into_inner();
                Ok(answer.found.then_some(answer.reference))
            }
            // A plugin without the call: every reference is its own spelling.
            Err(status) if status.code() == tonic::Code::Unimplemented => {
                Ok(Some(reference.to_string()))
            }
            Err(status) => Err(status_to_backend_error(&status)),
        }
    }

    async fn sign(&self, reference: &str, op: SignOp<'_>) -> Result<Signature, BackendError> {
        let input = match op {
            SignOp::Prehashed(prehashed) => {
                wire::sign_request::Input::Digest(prehashed.digest().to_vec())
            }
            SignOp::Ed25519 { message } => wire::sign_request::Input::Message(message.to_vec()),
        };
        let response = self
            .client
            .clone()
            .sign(wire::SignRequest {
                reference: reference.to_string(),
                algorithm: api::SignatureAlgorithm::from(op.algorithm()) as i32,
                input: Some(input),
            })
            .await
            .map_err(|s| status_to_backend_error(&s))?
            .into_inner();
        Ok(Signature {
            bytes: response.signature,
            ecdsa_format: format_from_wire(response.ecdsa_format),
            key_version: Some(response.key_version).filter(|v| !v.is_empty()),
        })
    }

    async fn generate_key(
        &self,
        name: &str,
        spec: KeySpec,
    ) -> Result<KeyDescription, BackendError> {
        self.generate_key_with(name, spec, &BTreeMap::new()).await
    }

    async fn generate_key_with(
        &self,
        name: &str,
        spec: KeySpec,
        options: &BTreeMap<String, String>,
    ) -> Result<KeyDescription, BackendError> {
        let response = self
            .client
            .clone()
            .generate_key(wire::GenerateKeyRequest {
                name: name.to_string(),
                spec: api::KeySpec::from(spec) as i32,
                options: options.clone().into_iter().collect(),
            })
            .await
            .map_err(|s| status_to_backend_error(&s))?;
        description_from_wire(response.into_inner())
    }

    async fn unlock(&self, secret: Secret, ttl: Option<Duration>) -> Result<(), BackendError> {
        // prost has no zeroizing buffer: the copy in the request lives only as long as the call.
        let request = wire::UnlockRequest {
            secret: secret.expose().to_vec(),
            ttl_seconds: ttl.map_or(0, |t| t.as_secs().max(1)),
        };
        self.client
            .clone()
            .unlock(request)
            .await
            .map(drop)
            .map_err(|s| status_to_backend_error(&s))
    }

    async fn delete_key(&self, reference: &str) -> Result<Deletion, BackendError> {
        let answer = self
            .client
            .clone()
            .delete_key(wire::DeleteKeyRequest {
                reference: reference.to_string(),
            })
            .await;
        match answer {
            Ok(answer) => deletion_from_wire(answer.into_inner()),
            // A plugin written before DeleteKey existed: tonic answers without a message.
            Err(status)
                if status.code() == tonic::Code::Unimplemented && status.message().is_empty() =>
            {
                Err(BackendError::Unsupported(format!(
                    "the {} plugin cannot delete keys; delete the key with the backend's own tools",
                    self.backend_type
                )))
            }
            Err(status) => Err(status_to_backend_error(&status)),
        }
    }

    async fn health(&self) -> Result<Health, BackendError> {
        match self.client.clone().health(wire::HealthRequest {}).await {
            Ok(answer) => Ok(health_from_wire(answer.into_inner())),
            // A plugin without the call: unlocked, nothing to report.
            Err(status) if status.code() == tonic::Code::Unimplemented => Ok(Health::default()),
            Err(status) => Err(status_to_backend_error(&status)),
        }
    }
}
