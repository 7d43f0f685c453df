//! The HTTP side of the Vault API: one request with retries, and what its failures mean.
//!
//! - Every request has a 10 s timeout (5 s to connect). Connection failures, 429 and 5xx
//!   answers are tried again twice, after a jittered backoff or the `Retry-After` Vault asked
//!   for, as long as the call's 20 s budget allows (keyward's one retry policy,
//!   [`keyward_plugin_api::retry`]); a sealed Vault is not retried, it will not unseal itself in
//!   a second.
//! - Failures become [`BackendError`]s that say what to do: a 403 names the policy path and
//!   capability that is missing, a sealed Vault says so, an unreachable one names its address.
//! - Tokens travel only in the `X-Vault-Token` header, marked sensitive; URLs hold paths and
//!   key names only, so error texts (which may quote a URL) never hold a secret.
//! - What holds a secret lives in memory that is wiped when dropped ([`crate::wire`]).

use std::path::Path;
use std::time::Duration;

use keyward_plugin_api::pemfile;
use keyward_plugin_api::retry::{RetryPolicy, Retryable};
use keyward_plugin_api::{BackendError, Secret};
use reqwest::header::{HeaderValue, RETRY_AFTER};
use serde_json::Value;

use crate::wire::{Answer, Body, token_header};

/// The timeout of one HTTP request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The timeout of a TCP + TLS connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How a call retries: three tries, the first wait 150 ms (doubling, plus jitter) unless Vault
/// says `Retry-After`, within 20 s, never starting a try with less than half a request's
/// timeout left.
const RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 3,
    first_backoff: Duration::from_millis(150),
    max_backoff: Duration::from_secs(5),
    budget: Duration::from_secs(20),
    min_attempt: Duration::from_secs(5),
};

/// The HTTP verbs the Vault API uses here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    /// GET: read.
    Get,
    /// LIST: list (sent as GET with `?list=true`, which every proxy passes).
    List,
    /// POST: create, update, sign, login.
    Post,
    /// DELETE: delete a transit key.
    Delete,
}

/// A failed request, before it is given a meaning.
#[derive(Debug)]
pub enum CallError {
    /// No HTTP answer: connect failure, timeout, TLS failure.
    Transport {
        /// The error and its causes, joined.
        message: String,
        /// Whether the request timed out.
        timeout: bool,
    },
    /// Vault answered with an error status.
    Status {
        /// The HTTP status.
        status: u16,
        /// Vault's `errors` list.
        errors: Vec<String>,
        /// The `Retry-After` hint of a 429 or 503.
        retry_after: Option<Duration>,
    },
    /// Vault answered 2xx with a body that is not JSON.
    Decode(String),
}

impl CallError {
    /// Whether Vault answered `status`.
    pub fn is_status(&self, want: u16) -> bool {
        matches!(self, CallError::Status { status, .. } if *status == want)
    }

    /// Vault's error texts joined, or the transport error.
    pub fn text(&self) -> String {
        match self {
            CallError::Transport { message, .. } | CallError::Decode(message) => message.clone(),
            CallError::Status { status, errors, .. } => {
                let errors: Vec<String> = errors
                    .iter()
                    .map(|e| {
                        e.replace("1 error occurred:", "")
                            .replace(['\n', '\t'], " ")
                    })
                    .map(|e| e.trim().trim_start_matches("* ").trim().to_string())
                    .filter(|e| !e.is_empty())
                    .collect();
                if errors.is_empty() {
                    format!("HTTP {status}")
                } else {
                    format!("HTTP {status}: {}", errors.join("; "))
                }
            }
        }
    }

    /// Whether Vault refused the request itself (4xx but 429): trying again later will not
    /// help, unlike a transport failure, a sealed or busy server, or a 5xx.
    pub fn is_refusal(&self) -> bool {
        matches!(self, CallError::Status { status, .. } if (400..500).contains(status) && *status != 429)
    }

    /// Whether the server could not be used at all: no answer, or sealed.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, CallError::Transport { .. }) || self.is_sealed()
    }

    fn is_sealed(&self) -> bool {
        matches!(self, CallError::Status { status: 503, errors, .. }
            if errors.iter().any(|e| e.to_ascii_lowercase().contains("sealed")))
    }
}

impl Retryable for CallError {
    fn retryable(&self) -> bool {
        match self {
            CallError::Transport { timeout, .. } => !timeout,
            CallError::Status { status, .. } => {
                (*status == 429 || (500..600).contains(status) && *status != 501)
                    && !self.is_sealed()
            }
            CallError::Decode(_) => false,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            CallError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// What a request was for, to explain a refusal.
#[derive(Clone, Debug)]
pub struct Purpose {
    /// The policy capability it needs (`read`, `list`, `update`).
    pub capability: &'static str,
    /// The policy path (`transit/sign/release`).
    pub path: String,
    /// What was being done, for messages (`sign with transit key "release"`).
    pub action: String,
}

impl Purpose {
    /// A purpose for the API path `path` (the policy path is the same).
    pub fn new(
        capability: &'static str,
        path: impl Into<String>,
        action: impl Into<String>,
    ) -> Self {
        Purpose {
            capability,
            path: path.into(),
            action: action.into(),
        }
    }
}

/// An HTTP client bound to one Vault server.
#[derive(Debug)]
pub struct Http {
    client: reqwest::Client,
    address: String,
    namespace: Option<HeaderValue>,
}

impl Http {
    /// A client for `address`, trusting only the CAs of `ca_file` when it is given.
    pub fn new(
        address: &str,
        namespace: Option<&str>,
        ca_file: Option<&Path>,
    ) -> Result<Self, BackendError> {
        let mut builder = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("keyward-plugin-vault/", env!("CARGO_PKG_VERSION")))
            // A standby node redirects to the active one; never more than that.
            .redirect(reqwest::redirect::Policy::limited(3));
        if let Some(path) = ca_file {
            let certs = pemfile::ca_file("ca_file", path)?
                .iter()
                .map(|der| reqwest::Certificate::from_der(der))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| {
                    BackendError::InvalidInput(format!(
                        "ca_file {}: a certificate is unusable: {e}",
                        path.display()
                    ))
                })?;
            builder = builder.tls_certs_only(certs);
        }
        let client = builder.build().map_err(|e| {
            BackendError::Internal(format!("cannot set up the HTTP client: {}", chain(&e)))
        })?;
        let namespace = namespace
            .map(|ns| {
                HeaderValue::from_str(ns).map_err(|_| {
                    BackendError::InvalidInput(format!("namespace {ns:?} is not a valid header"))
                })
            })
            .transpose()?;
        Ok(Http {
            client,
            address: address.to_string(),
            namespace,
        })
    }

    /// The server address, for messages.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Sends `verb /v1/<path>` with `token` and a JSON `body`, retrying what may pass; returns
    /// the JSON answer (`Value::Null` for 204). For answers that are not secret; a login or
    /// token look-up is read with [`Http::call_secret`].
    pub async fn call(
        &self,
        verb: Verb,
        path: &str,
        token: Option<&Secret>,
        body: Option<&Body>,
    ) -> Result<Value, CallError> {
        self.call_secret(verb, path, token, body).await?.json()
    }

    /// Like [`Http::call`], and the answer stays in memory that is wiped when it is dropped
    /// (it holds a token): parse it with [`Answer::parse`] into types that keep the token in a
    /// [`Secret`].
    pub async fn call_secret(
        &self,
        verb: Verb,
        path: &str,
        token: Option<&Secret>,
        body: Option<&Body>,
    ) -> Result<Answer, CallError> {
        RETRY
            .run(path, |_| self.call_once(verb, path, token, body))
            .await
            .map_err(|exhausted| exhausted.error)
    }

    /// Like [`Http::call_secret`], without retries.
    pub async fn call_once(
        &self,
        verb: Verb,
        path: &str,
        token: Option<&Secret>,
        body: Option<&Body>,
    ) -> Result<Answer, CallError> {
        let url = format!("{}/v1/{path}", self.address);
        let mut request = match verb {
            Verb::Get => self.client.get(&url),
            Verb::List => self.client.get(format!("{url}?list=true")),
            Verb::Post => self.client.post(&url),
            Verb::Delete => self.client.delete(&url),
        };
        if let Some(token) = token {
            request = request.header("X-Vault-Token", token_header(token)?);
        }
        if let Some(namespace) = &self.namespace {
            request = request.header("X-Vault-Namespace", namespace.clone());
        }
        if let Some(body) = body {
            // A clone of the same bytes: nothing copied, wiped (a secret body) when the last
            // clone is dropped.
            request = request
                .header("Content-Type", "application/json")
                .body(body.0.clone());
        }
        let transport = |e: reqwest::Error| CallError::Transport {
            timeout: e.is_timeout(),
            message: chain(&e),
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let answer = Answer::take(response.bytes().await.map_err(transport)?);
        if (200..300).contains(&status) {
            return Ok(answer);
        }
        let errors = serde_json::from_slice::<Value>(&answer.0)
            .ok()
            .and_then(|v| v.get("errors").cloned())
            .and_then(|v| serde_json::from_value::<Vec<String>>(v).ok())
            .unwrap_or_default();
        Err(CallError::Status {
            status,
            errors,
            retry_after,
        })
    }

    /// What a failed request means for keyward.
    pub fn error(&self, error: CallError, purpose: &Purpose) -> BackendError {
        let address = &self.address;
        let action = &purpose.action;
        let text = error.text();
        if error.is_sealed() {
            return BackendError::unavailable(format!(
                "vault is sealed: {address} cannot {action} until it is unsealed (bao/vault operator unseal)"
            ));
        }
        match error {
            CallError::Transport { message, timeout } => {
                let hint = if message.to_ascii_lowercase().contains("certificate") {
                    "; the server's TLS certificate is not trusted: set ca_file to the PEM of the CA that issued it"
                } else if timeout {
                    "; it did not answer in time"
                } else {
                    "; check that it is running and reachable"
                };
                BackendError::unavailable(format!(
                    "cannot reach vault at {address} to {action}: {message}{hint}"
                ))
            }
            CallError::Decode(message) => {
                BackendError::Internal(format!("vault at {address}, {action}: {message}"))
            }
            CallError::Status {
                status,
                errors,
                retry_after,
            } => {
                let lower = errors.join(" ").to_ascii_lowercase();
                match status {
                    403 => BackendError::PermissionDenied(format!(
                        "vault at {address} refused to {action} ({text}): the token's policy does not allow {} on \"{}\"; grant it in the policy (or the token has expired or was revoked)",
                        purpose.capability, purpose.path
                    )),
                    404 => {
                        let hint = if lower.contains("no handler for route") {
                            "; check `mount`: is a transit engine enabled at that path?"
                        } else {
                            ""
                        };
                        BackendError::NotFound(format!(
                            "vault at {address} has nothing at \"{}\" ({text}): cannot {action}{hint}",
                            purpose.path
                        ))
                    }
                    400 if lower.contains("not found") || lower.contains("no existing key") => {
                        BackendError::NotFound(format!(
                            "vault at {address} cannot {action}: {text}"
                        ))
                    }
                    400 | 405 | 413 | 422 => BackendError::InvalidInput(format!(
                        "vault at {address} refused to {action}: {text}"
                    )),
                    429 | 500..=599 => BackendError::Unavailable {
                        message: format!(
                            "vault at {address} failed to {action} after {} tries: {text}",
                            RETRY.max_attempts
                        ),
                        retry_after,
                    },
                    _ => BackendError::Internal(format!(
                        "vault at {address} answered an unexpected status to {action}: {text}"
                    )),
                }
            }
        }
    }
}

/// An error and its causes, `: `-joined (reqwest hides the useful part in the sources).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16, errors: &[&str]) -> CallError {
        CallError::Status {
            status,
            errors: errors.iter().map(|e| e.to_string()).collect(),
            retry_after: None,
        }
    }

    fn http() -> Http {
        Http::new("http://127.0.0.1:1", None, None).unwrap()
    }

    #[test]
    fn statuses_get_their_meaning() {
        let purpose = Purpose::new("update", "transit/sign/k", "sign with transit key \"k\"");
        let denied = http().error(
            status(403, &["1 error occurred:\n\t* permission denied\n\n"]),
            &purpose,
        );
        assert!(matches!(denied, BackendError::PermissionDenied(_)));
        let text = denied.to_string();
        assert!(
            text.contains("does not allow update on \"transit/sign/k\"")
                && text.contains("permission denied"),
            "{text}"
        );
        let sealed = http().error(status(503, &["Vault is sealed"]), &purpose);
        assert!(matches!(sealed, BackendError::Unavailable { .. }));
        assert!(sealed.to_string().contains("vault is sealed"), "{sealed}");
        assert!(matches!(
            http().error(status(400, &["signing key not found"]), &purpose),
            BackendError::NotFound(_)
        ));
        assert!(matches!(
            http().error(status(400, &["invalid input"]), &purpose),
            BackendError::InvalidInput(_)
        ));
        assert!(matches!(
            http().error(status(502, &[]), &purpose),
            BackendError::Unavailable { .. }
        ));
    }

    #[test]
    fn only_passing_failures_are_retried() {
        assert!(status(429, &[]).retryable());
        assert!(status(500, &[]).retryable());
        assert!(!status(503, &["Vault is sealed"]).retryable());
        assert!(!status(403, &[]).retryable());
        assert!(!status(400, &[]).retryable());
        let refused = CallError::Transport {
            message: "connection refused".into(),
            timeout: false,
        };
        assert!(refused.retryable());
        let slow = CallError::Transport {
            message: "timed out".into(),
            timeout: true,
        };
        assert!(!slow.retryable());
    }
}
