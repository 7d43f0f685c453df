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
//!   retries are off and keyward's one retry policy ([`keyward_plugin_api::retry`]) applies
//!   instead: throttling and 5xx answers with jittered exponential backoff within a 10 s budget
//!   per call, a failed connection at most three times. What remains becomes a
//!   [`BackendError`] through [`Failure::into_error`].

use std::error::Error as StdError;
use std::future::Future;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use keyward_plugin_api::BackendError;
use tokio::sync::OnceCell;

use crate::error::{Failure, Purpose};
use crate::settings::AwsKmsSettings;
use keyward_plugin_api::ratelimit::RateLimiter;
use keyward_plugin_api::retry::{RetryPolicy, Retryable};

/// How long a TCP + TLS connect may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one call may spend on its tries and the waits between them.
pub const CALL_BUDGET: Duration = Duration::from_secs(10);
/// Tries per call when the connection fails (a stale pooled connection, a restarting proxy).
const TRANSPORT_TRIES: u32 = 3;
/// How a call retries: up to 6 tries when KMS throttles or fails inside, the first wait
/// 200 ms (doubling, plus jitter), within [`CALL_BUDGET`], never starting a try with less than
/// a second left.
const RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 6,
    first_backoff: Duration::from_millis(200),
    max_backoff: Duration::from_secs(4),
    budget: CALL_BUDGET,
    min_attempt: Duration::from_secs(1),
};

impl Retryable for Failure {
    fn retryable(&self) -> bool {
        Failure::retryable(self)
    }

    fn max_attempts(&self) -> Option<u32> {
        matches!(self, Failure::Transport { .. }).then_some(TRANSPORT_TRIES)
    }
}

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
        // Waiting for a slot is queueing, not part of the call's retry budget: the first slot
        // is taken before the budget starts, later ones inside it.
        self.limiter.acquire().await;
        let result = RETRY
            .run(purpose.action, |attempt| {
                let request = op(client);
                async move {
                    if attempt.number > 1 {
                        self.limiter.acquire().await;
                    }
                    match tokio::time::timeout(attempt.remaining, request).await {
                        Ok(Ok(value)) => Ok(value),
                        Ok(Err(error)) => Err(Failure::from_sdk(&error)),
                        Err(_) => Err(Failure::Transport {
                            message: format!("no answer within the call's {CALL_BUDGET:?}"),
                            timeout: true,
                        }),
                    }
                }
            })
            .await;
        result.map_err(|exhausted| {
            exhausted.error.into_error(
                purpose,
                &self.endpoint_text,
                exhausted.attempts,
                exhausted.retry_after,
            )
        })
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
