//! The connection to one vault: the SDK's `KeyClient`, made on first use, and one call with
//! its deadline, retries and rate limit.
//!
//! - HTTP goes through reqwest clients of keyward's own: 10 s per request (60 s to create a
//!   key: an RSA-4096 key takes a while), 5 s to connect, the `ca_file` CAs instead of the
//!   system's when given. The SDK's own retry policy is off for the vault (it would make a TLS
//!   failure or a stopped vault look like a hang); token requests get two quick retries within
//!   3 s. keyward retries connection failures, 408, 429 and 5xx here, twice at most, after a
//!   jittered backoff or the server's `Retry-After`, as long as the call's [`RETRY_BUDGET`]
//!   allows (keyward's one retry policy, [`keyward_plugin_api::retry`]).
//! - Nothing is created or contacted in [`Vault::new`]: the credential and the client are made
//!   by the first call (and again by the next call if that failed), so a daemon starts even
//!   when its environment or the vault is not ready yet.
//! - Plain HTTP vaults are refused by the settings and by the SDK, which never sends a token
//!   without TLS.

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use azure_core::http::{ClientOptions, FixedRetryOptions, RetryOptions, Transport};
use azure_security_keyvault_keys::{KeyClient, KeyClientOptions};
use keyward_plugin_api::BackendError;

use crate::credential::Identity;
use crate::error::{Purpose, explain, retry_after, retryable};
use crate::settings::AzureKvSettings;
use keyward_plugin_api::pemfile;
use keyward_plugin_api::ratelimit::RateLimiter;
use keyward_plugin_api::retry::{RetryPolicy, Retryable};

/// The timeout of one HTTP request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The timeout of a request that creates a key.
const CREATE_TIMEOUT: Duration = Duration::from_secs(60);
/// The timeout of a TCP + TLS connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one attempt may take in all (token + request), so a hung credential cannot hang
/// the call.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one call may spend waiting between tries.
pub const RETRY_BUDGET: Duration = Duration::from_secs(10);
/// How a call retries: three tries, the first wait 200 ms (doubling, plus jitter) unless the
/// vault says `Retry-After`, no further try once the waits would pass [`RETRY_BUDGET`] (each
/// try has its own [`ATTEMPT_TIMEOUT`]).
const RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 3,
    first_backoff: Duration::from_millis(200),
    max_backoff: Duration::from_secs(5),
    budget: RETRY_BUDGET,
    min_attempt: Duration::ZERO,
};

/// One failed try of a call.
#[derive(Debug)]
enum TryError {
    /// The SDK's error (an answer from the vault, or a failed connection); `once` for calls that
    /// must not run twice (creating a key), which are retried only when throttled (429).
    Azure {
        error: azure_core::Error,
        once: bool,
    },
    /// No answer within the try's deadline: not retried, the request may still be running.
    Timeout(Duration),
}

impl Retryable for TryError {
    fn retryable(&self) -> bool {
        match self {
            TryError::Azure { error, once } => {
                retryable(error) && (!once || crate::error::status(error) == Some(429))
            }
            TryError::Timeout(_) => false,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            TryError::Azure { error, .. } => retry_after(error),
            TryError::Timeout(_) => None,
        }
    }
}

/// The SDK clients (one with the short and one with the long timeout) and the identity they
/// authenticate as.
#[derive(Clone)]
struct Connected {
    client: Arc<KeyClient>,
    slow_client: Arc<KeyClient>,
    identity: Arc<Identity>,
}

/// One vault, as a place to send calls.
pub struct Vault {
    settings: AzureKvSettings,
    limiter: Option<RateLimiter>,
    connected: Mutex<Option<Connected>>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("vault_url", &self.settings.vault_url)
            .field("credential", &self.settings.credential.name())
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// A vault for `settings`. No I/O.
    pub fn new(settings: AzureKvSettings) -> Self {
        let limiter = settings
            .rate_limit
            .map(|rate| RateLimiter::new(rate, settings.rate_burst));
        Vault {
            settings,
            limiter,
            connected: Mutex::new(None),
        }
    }

    /// The vault's URL, for messages.
    pub fn url(&self) -> &str {
        &self.settings.vault_url
    }

    /// The settings it was made with.
    pub fn settings(&self) -> &AzureKvSettings {
        &self.settings
    }

    /// The identity in use, for messages (`credential = "..."` before the first call).
    pub fn identity(&self) -> String {
        match &*self.connected.lock().expect("vault lock") {
            Some(connected) => connected.identity.describe(),
            None => format!("credential = {:?}", self.settings.credential.name()),
        }
    }

    fn connect(&self) -> Result<Connected, BackendError> {
        if let Some(connected) = &*self.connected.lock().expect("vault lock") {
            return Ok(connected.clone());
        }
        let credential_http = http_client(None, REQUEST_TIMEOUT)?;
        // Token endpoints (IMDS above all) may throttle or blip: two quick retries, bounded.
        let credential_options = ClientOptions {
            transport: Some(Transport::new(Arc::new(credential_http))),
            retry: RetryOptions::fixed(FixedRetryOptions {
                delay: azure_core::time::Duration::milliseconds(300),
                max_retries: 2,
                max_total_elapsed: azure_core::time::Duration::seconds(3),
            }),
            ..ClientOptions::default()
        };
        let identity = Arc::new(Identity::new(&self.settings, &credential_options)?);
        let client = self.key_client(&identity, REQUEST_TIMEOUT)?;
        let slow_client = self.key_client(&identity, CREATE_TIMEOUT)?;
        tracing::info!(vault = %self.settings.vault_url, identity = %identity.describe(), "key vault client ready");
        let connected = Connected {
            client,
            slow_client,
            identity,
        };
        *self.connected.lock().expect("vault lock") = Some(connected.clone());
        Ok(connected)
    }

    fn key_client(
        &self,
        identity: &Arc<Identity>,
        timeout: Duration,
    ) -> Result<Arc<KeyClient>, BackendError> {
        let http = http_client(self.settings.ca_file.as_deref(), timeout)?;
        let options = KeyClientOptions {
            client_options: ClientOptions {
                transport: Some(Transport::new(Arc::new(http))),
                retry: RetryOptions::none(),
                ..ClientOptions::default()
            },
            // The challenge's resource is checked against the vault's domain, which only works
            // for the public clouds' names; the token is only ever sent to `vault_url`, over TLS.
            verify_challenge_resource: Some(false),
            ..KeyClientOptions::default()
        };
        KeyClient::new(&self.settings.vault_url, identity.clone(), Some(options))
            .map(Arc::new)
            .map_err(|e| {
                BackendError::InvalidInput(format!(
                    "cannot set up a Key Vault client for {}: {}",
                    self.settings.vault_url,
                    crate::error::chain(&e)
                ))
            })
    }

    /// Runs `op` with the client, retrying what may pass; a failure is explained for
    /// `purpose`.
    pub async fn call<T, F, Fut>(&self, purpose: &Purpose, mut op: F) -> Result<T, BackendError>
    where
        F: FnMut(Arc<KeyClient>) -> Fut,
        Fut: Future<Output = azure_core::Result<T>>,
    {
        let connected = self.connect()?;
        let (client, deadline) = if purpose.once {
            (&connected.slow_client, CREATE_TIMEOUT + ATTEMPT_TIMEOUT)
        } else {
            (&connected.client, ATTEMPT_TIMEOUT)
        };
        let result = RETRY
            .run(&purpose.action, |_| {
                let request = op(client.clone());
                async move {
                    if let Some(limiter) = &self.limiter {
                        limiter.acquire().await;
                    }
                    match tokio::time::timeout(deadline, request).await {
                        Ok(Ok(value)) => Ok(value),
                        Ok(Err(error)) => Err(TryError::Azure {
                            error,
                            once: purpose.once,
                        }),
                        Err(_) => Err(TryError::Timeout(deadline)),
                    }
                }
            })
            .await;
        result.map_err(|exhausted| match exhausted.error {
            TryError::Azure { error, .. } => explain(
                &error,
                self.url(),
                &connected.identity.describe(),
                purpose,
                exhausted.attempts,
            ),
            TryError::Timeout(deadline) => BackendError::Timeout(format!(
                "key vault {} did not answer within {deadline:?} to {} (as {})",
                self.url(),
                purpose.action,
                connected.identity.describe()
            )),
        })
    }
}

/// A reqwest client with keyward's timeouts, trusting only the CAs of `ca_file` if given.
fn http_client(ca_file: Option<&Path>, timeout: Duration) -> Result<reqwest::Client, BackendError> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(CONNECT_TIMEOUT)
        .user_agent(concat!(
            "keyward-plugin-azurekv/",
            env!("CARGO_PKG_VERSION")
        ))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(path) = ca_file {
        builder = builder.tls_certs_only(read_ca_file(path)?);
    }
    builder.build().map_err(|e| {
        BackendError::Internal(format!(
            "cannot set up the HTTP client: {}",
            crate::error::chain(&e)
        ))
    })
}

/// The certificates of a PEM bundle.
fn read_ca_file(path: &Path) -> Result<Vec<reqwest::Certificate>, BackendError> {
    pemfile::ca_file("ca_file", path)?
        .iter()
        .map(|der| reqwest::Certificate::from_der(der))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            BackendError::InvalidInput(format!(
                "ca_file {}: a certificate is unusable: {e}",
                path.display()
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_ca_file_is_explained() {
        let err = read_ca_file(Path::new("/nonexistent/ca.pem")).unwrap_err();
        assert!(
            err.to_string()
                .contains("cannot read ca_file /nonexistent/ca.pem")
        );
        let dir = std::env::temp_dir().join(format!("keyward-azurekv-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let err = read_ca_file(&empty).unwrap_err();
        assert!(err.to_string().contains("holds no certificate"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
