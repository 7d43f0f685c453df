//! The KMS client of one backend instance: made on first use, rate-limited, with retries.
//!
//! - The AWS SDK client is built the first time a request is made (`aws_config` with the
//!   region, profile and endpoint of the settings), so making the backend never touches the
//!   network or the credential chain.
//! - Credentials come only from the SDK's default chain: environment, shared config and
//!   credentials files (`profile`), web identity (OIDC), ECS container credentials, EC2 instance
//!   metadata. The SDK caches them and refreshes them before they expire.
//! - Every request first takes a slot from the instance's token bucket ([`RateLimiter`]): a
//!   burst queues instead of failing.
//! - The SDK's timeouts bound each request (3 s to connect, 10 s per request); the SDK's own
//!   retries are off and this module retries instead: throttling and 5xx answers with
//!   jittered exponential backoff within a 10 s budget per call, a failed connection once or
//!   twice, quickly. What remains becomes a [`BackendError`] through [`Failure::into_error`].

use std::error::Error as StdError;
use std::future::Future;
use std::time::{Duration, Instant};

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use keyward_plugin_api::BackendError;
use tokio::sync::OnceCell;

use crate::error::{Failure, Purpose};
use crate::settings::AwsKmsSettings;
use keyward_plugin_api::ratelimit::{RateLimiter, jittered};

/// How long a TCP + TLS connect may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one call may spend on its tries and the waits between them.
pub const CALL_BUDGET: Duration = Duration::from_secs(10);
/// Tries per call when KMS throttles or fails inside (the first try included).
const SERVICE_TRIES: u32 = 6;
/// Tries per call when the connection fails (a stale pooled connection, a restarting proxy).
const TRANSPORT_TRIES: u32 = 3;
/// The first backoff; it doubles each time, with ±50 % jitter.
const BACKOFF: Duration = Duration::from_millis(250);
/// The least time worth starting another try with.
const MIN_TRY: Duration = Duration::from_secs(1);

/// A rate-limited, retrying KMS client for one backend instance.
#[derive(Debug)]
pub struct Kms {
    region: String,
    endpoint: Option<String>,
    profile: Option<String>,
    /// The endpoint, for messages: the configured one or the region's public one.
    endpoint_text: String,
    client: OnceCell<aws_sdk_kms::Client>,
    limiter: RateLimiter,
}

impl Kms {
    /// A client for `settings`; nothing is contacted yet.
    pub fn new(settings: &AwsKmsSettings) -> Self {
        let domain = if settings.region.starts_with("cn-") {
            "amazonaws.com.cn"
        } else {
            "amazonaws.com"
        };
        let endpoint_text = settings
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("https://kms.{}.{domain}", settings.region));
        Kms {
            region: settings.region.clone(),
            endpoint: settings.endpoint.clone(),
            profile: settings.profile.clone(),
            endpoint_text,
            client: OnceCell::new(),
            limiter: RateLimiter::new(settings.rate_limit, settings.rate_burst),
        }
    }

    /// The endpoint requests go to, for messages.
    pub fn endpoint(&self) -> &str {
        &self.endpoint_text
    }

    /// The SDK client, built on first use.
    async fn client(&self) -> &aws_sdk_kms::Client {
        self.client
            .get_or_init(|| async {
                let timeouts = TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .operation_attempt_timeout(REQUEST_TIMEOUT)
                    .operation_timeout(REQUEST_TIMEOUT)
                    .build();
                let mut loader = aws_config::defaults(BehaviorVersion::latest())
                    .region(Region::new(self.region.clone()))
                    .timeout_config(timeouts)
                    .retry_config(RetryConfig::disabled());
                if let Some(profile) = &self.profile {
                    loader = loader.profile_name(profile);
                }
                if let Some(endpoint) = &self.endpoint {
                    loader = loader.endpoint_url(endpoint);
                }
                let config = loader.load().await;
                tracing::debug!(region = %self.region, endpoint = %self.endpoint_text, "AWS KMS client made");
                aws_sdk_kms::Client::new(&config)
            })
            .await
    }

    /// Sends the request `op` builds, within the rate limit, trying again what may pass.
    pub async fn call<T, E, F, Fut>(&self, purpose: &Purpose, op: F) -> Result<T, BackendError>
    where
        F: Fn(&aws_sdk_kms::Client) -> Fut,
        Fut: Future<Output = Result<T, SdkError<E>>>,
        E: ProvideErrorMetadata + StdError + 'static,
    {
        let client = self.client().await;
        let mut started = None;
        let mut attempt = 0;
        loop {
            // Waiting for a slot is queueing, not part of the call's retry budget.
            self.limiter.acquire().await;
            let started = *started.get_or_insert_with(Instant::now);
            attempt += 1;
            let remaining = CALL_BUDGET.saturating_sub(started.elapsed());
            let failure = match tokio::time::timeout(remaining, op(client)).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(error)) => Failure::from_sdk(&error),
                Err(_) => Failure::Transport {
                    message: format!("no answer within the call's {CALL_BUDGET:?}"),
                    timeout: true,
                },
            };
            let backoff = jittered(BACKOFF * 2u32.pow(attempt - 1));
            let tries = if matches!(failure, Failure::Transport { .. }) {
                TRANSPORT_TRIES
            } else {
                SERVICE_TRIES
            };
            let fits = started.elapsed() + backoff + MIN_TRY <= CALL_BUDGET;
            if !failure.retryable() || attempt >= tries || !fits {
                let retry_after = failure.retryable().then_some(backoff);
                return Err(failure.into_error(purpose, &self.endpoint_text, attempt, retry_after));
            }
            tracing::debug!(
                action = purpose.action,
                attempt,
                "KMS request failed, retrying in {backoff:?}: {failure:?}"
            );
            tokio::time::sleep(backoff).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_is_named_for_messages() {
        let settings: AwsKmsSettings = serde_json::from_str(r#"{"region": "ap-south-2"}"#).unwrap();
        assert_eq!(
            Kms::new(&settings).endpoint(),
            "https://kms.ap-south-2.amazonaws.com"
        );
        let settings: AwsKmsSettings = serde_json::from_str(r#"{"region": "cn-north-1"}"#).unwrap();
        assert_eq!(
            Kms::new(&settings).endpoint(),
            "https://kms.cn-north-1.amazonaws.com.cn"
        );
    }
}
