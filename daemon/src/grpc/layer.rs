//! The caller layer: one tower layer in front of `Signer` and `KeyAdmin` that authenticates
//! every RPC before its handler runs.
//!
//! It reads who is calling from the connection (SO_PEERCRED on the Unix socket, the client
//! certificate on the mutual-TLS listener), refuses callers the agent does not serve with
//! `PERMISSION_DENIED` (recorded in the audit log as `denied`, without decoding the request),
//! and puts the typed [`Caller`] into the request's extensions. In front of `KeyAdmin` it also
//! decides whether the caller may manage keys and puts that [`AdminVerdict`] there: the handler
//! records a refusal together with what the request asked for. Handlers never authenticate.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::NamedService;
use tower::{Layer, Service};

use crate::audit::{Auditor, CallerRecord, Record, Stage};
use crate::auth::Authenticator;
use crate::error::{AgentError, to_status};

/// The layer; [`CallerLayer::signer`] and [`CallerLayer::admin`] make the two kinds.
#[derive(Clone, Debug)]
pub struct CallerLayer {
    auth: Arc<Authenticator>,
    audit: Auditor,
    admin: bool,
}

impl CallerLayer {
    /// For `Signer`: callers the agent serves.
    pub fn signer(auth: Arc<Authenticator>, audit: Auditor) -> Self {
        CallerLayer {
            auth,
            audit,
            admin: false,
        }
    }

    /// For `KeyAdmin`: callers the agent serves, with the admin decision.
    pub fn admin(auth: Arc<Authenticator>, audit: Auditor) -> Self {
        CallerLayer {
            auth,
            audit,
            admin: true,
        }
    }
}

impl<S> Layer<S> for CallerLayer {
    type Service = CallerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallerService {
            inner,
            layer: self.clone(),
        }
    }
}

/// A service behind the caller layer.
#[derive(Clone, Debug)]
pub struct CallerService<S> {
    inner: S,
    layer: CallerLayer,
}

impl<S: NamedService> NamedService for CallerService<S> {
    const NAME: &'static str = S::NAME;
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> Service<http::Request<B>> for CallerService<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let layer = self.layer.clone();
        let decided = match layer.auth.identify(request.extensions()) {
            None => Err((
                None,
                AgentError::PermissionDenied(
                    "cannot identify the caller: the connection carries no peer credentials".into(),
                ),
            )),
            Some(Err(denied)) => Err((None, denied)),
            Some(Ok(caller)) => match layer.auth.allow(&caller) {
                Ok(()) => Ok(caller),
                Err(denied) => Err((Some(caller), denied)),
            },
        };
        match decided {
            Ok(caller) => {
                if layer.admin {
                    let verdict = layer.auth.admin(&caller);
                    request.extensions_mut().insert(verdict);
                }
                request.extensions_mut().insert(caller);
                // Take the service that was polled ready, leave a fresh clone behind.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                let call = inner.call(request);
                Box::pin(async move { Ok(explain_too_large(call.await?)) })
            }
            Err((caller, denied)) => {
                let event = event_of(request.uri().path());
                crate::metrics::request(event, "denied", tonic::Code::PermissionDenied);
                Box::pin(async move {
                    if let Some(caller) = caller.filter(|_| layer.audit.enabled()) {
                        let record = Record {
                            event,
                            result: "denied",
                            caller: CallerRecord::inspect(&caller),
                            error: Some(denied.to_string()),
                            ..Record::default()
                        };
                        // A refusal stays a refusal even when its record cannot be written.
                        let _ = layer.audit.record(record, Stage::Before).await;
                    }
                    Ok(to_status(&denied).into_http())
                })
            }
        }
    }
}

/// The decoder's refusal of a request larger than its limit (tonic: `OUT_OF_RANGE`, "decoded
/// message length too large"), as an `INVALID_ARGUMENT` that says which settings bound it and
/// what to do. The request was never decoded, so no key can be named.
fn explain_too_large(response: http::Response<Body>) -> http::Response<Body> {
    let Some(status) = tonic::Status::from_header_map(response.headers()) else {
        return response;
    };
    if status.code() != tonic::Code::OutOfRange
        || !status
            .message()
            .contains("decoded message length too large")
    {
        return response;
    }
    let sizes: Vec<&str> = status
        .message()
        .split(|c: char| !c.is_ascii_digit())
        .filter(|n| !n.is_empty())
        .collect();
    let (found, limit) = match sizes[..] {
        [found, limit] => (found, limit),
        _ => ("more than", "its limit of"),
    };
    tonic::Status::invalid_argument(format!(
        "the request is {found} bytes, larger than the {limit} bytes this agent reads: a message to sign is at most max_message_bytes (the daemon's [limits], or the key's [[key]] max_message_bytes), a certificate at most max_certificate_bytes; sign a digest instead, or have the agent's owner raise the limit"
    ))
    .into_http()
}

/// The audit event of a gRPC method path (`/keyward.v1.Signer/Sign` -> `sign`).
fn event_of(path: &str) -> &'static str {
    match path.rsplit('/').next().unwrap_or("") {
        "Sign" => "sign",
        "ListKeys" => "list_keys",
        "GetPublicKey" => "get_public_key",
        "GenerateKey" => "generate_key",
        "AttachCertificateChain" => "attach_certificate_chain",
        "AttachOpenPgpCertificate" => "attach_openpgp_certificate",
        "UnlockBackend" => "unlock_backend",
        "DeleteKey" => "delete_key",
        "Status" => "status",
        _ => "unknown_method",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_named_like_the_handlers_name_them() {
        assert_eq!(event_of("/keyward.v1.Signer/Sign"), "sign");
        assert_eq!(event_of("/keyward.v1.KeyAdmin/GenerateKey"), "generate_key");
        assert_eq!(event_of("/x/Nope"), "unknown_method");
    }
}
