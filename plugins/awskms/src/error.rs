//! What a failed KMS request means for keyward.
//!
//! An SDK error is first reduced to a [`Failure`] (an error code from KMS, no answer at all,
//! no credentials, something else), which decides whether the request is tried again; what is
//! left after the retries becomes a [`BackendError`] whose message says what to do: a refusal
//! names the IAM permission (`kms:Sign`) and the key, a disabled or deleted key names its
//! state, an unreachable KMS names its endpoint. Messages never hold credentials.

use std::error::Error as StdError;
use std::time::Duration;

use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use keyward_plugin_api::BackendError;

/// What a KMS request was for, to explain a failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Purpose {
    /// The API action; the IAM permission it needs is `kms:<action>`.
    pub action: &'static str,
    /// The key it concerns, as the caller named it; `None` for account-wide actions.
    pub key: Option<String>,
}

impl Purpose {
    /// A purpose for an action on one key.
    pub fn key(action: &'static str, key: impl Into<String>) -> Self {
        Purpose {
            action,
            key: Some(key.into()),
        }
    }

    /// A purpose for an account-wide action (`ListKeys`, `CreateKey`).
    pub fn account(action: &'static str) -> Self {
        Purpose { action, key: None }
    }

    /// `kms:Sign on key "alias/release"`, for messages.
    fn describe(&self) -> String {
        match &self.key {
            Some(key) => format!("kms:{} on key {key:?}", self.action),
            None => format!("kms:{}", self.action),
        }
    }
}

/// A failed request, before it is given a meaning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// KMS answered with an error.
    Service {
        /// The error code (`AccessDeniedException`, `ThrottlingException`, ...).
        code: String,
        /// KMS's message.
        message: String,
        /// The HTTP status.
        status: u16,
    },
    /// No (complete) answer: connection refused or reset, DNS, TLS, a timeout.
    Transport {
        /// The error and its causes.
        message: String,
        /// Whether it was a timeout.
        timeout: bool,
    },
    /// The SDK could not get credentials from its default chain.
    Credentials(String),
    /// Anything else (a request the SDK could not build).
    Other(String),
}

impl Failure {
    /// Classifies an SDK error.
    pub fn from_sdk<E>(error: &SdkError<E>) -> Failure
    where
        E: ProvideErrorMetadata + StdError + 'static,
    {
        let text = chain(error);
        let about_credentials = text.to_ascii_lowercase().contains("credential");
        match error {
            SdkError::ServiceError(service) => Failure::Service {
                code: error.code().unwrap_or("UnknownError").to_string(),
                message: error.message().unwrap_or_default().to_string(),
                status: service.raw().status().as_u16(),
            },
            SdkError::TimeoutError(_) => Failure::Transport {
                message: text,
                timeout: true,
            },
            SdkError::DispatchFailure(dispatch) if dispatch.is_timeout() => Failure::Transport {
                message: text,
                timeout: true,
            },
            SdkError::DispatchFailure(dispatch) if dispatch.is_io() => Failure::Transport {
                message: text,
                timeout: false,
            },
            SdkError::DispatchFailure(_) | SdkError::ConstructionFailure(_)
                if about_credentials =>
            {
                Failure::Credentials(text)
            }
            SdkError::DispatchFailure(dispatch) if !dispatch.is_user() => Failure::Transport {
                message: text,
                timeout: false,
            },
            // A response cut short or unreadable: like a dropped connection.
            SdkError::ResponseError(_) => Failure::Transport {
                message: text,
                timeout: false,
            },
            _ => Failure::Other(text),
        }
    }

    /// KMS's error code, if it answered.
    pub fn code(&self) -> Option<&str> {
        match self {
            Failure::Service { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether KMS throttled the request.
    pub fn is_throttling(&self) -> bool {
        matches!(
            self.code(),
            Some("ThrottlingException" | "TooManyRequestsException")
        ) || matches!(self, Failure::Service { status: 429, .. })
    }

    /// Whether trying again may work: throttling, a 5xx (KMS's internal errors, dependency
    /// timeouts), or a failed connection. A timeout is not retried: the request may still be
    /// running, and the call's time is gone.
    pub fn retryable(&self) -> bool {
        match self {
            Failure::Service { status, .. } => self.is_throttling() || *status >= 500,
            Failure::Transport { timeout, .. } => !timeout,
            Failure::Credentials(_) | Failure::Other(_) => false,
        }
    }

    /// What the failure means, for a request made for `purpose` to `endpoint` (`tries`
    /// attempts; `retry_after` is the wait suggested to the caller).
    pub fn into_error(
        self,
        purpose: &Purpose,
        endpoint: &str,
        tries: u32,
        retry_after: Option<Duration>,
    ) -> BackendError {
        let what = purpose.describe();
        let key = purpose.key.as_deref().unwrap_or("?");
        let action = purpose.action;
        let (code, message, status) = match self {
            Failure::Transport { message, timeout } => {
                let message = if timeout {
                    format!(
                        "AWS KMS at {endpoint} did not answer in time for {what}: {message}; check its health and the network"
                    )
                } else {
                    format!(
                        "cannot reach AWS KMS at {endpoint} for {what} ({}): {message}; check that it is reachable \
                         (network, proxy, VPC endpoint, `endpoint` setting)",
                        tries_text(tries)
                    )
                };
                return BackendError::Unavailable {
                    message,
                    retry_after,
                };
            }
            Failure::Credentials(message) => {
                return BackendError::PermissionDenied(format!(
                    "no usable AWS credentials for {what}: {message}; keyward takes them from the AWS SDK's default chain: \
                     AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE and the shared config files, web identity \
                     (AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN), ECS container credentials or EC2 instance metadata"
                ));
            }
            Failure::Other(message) => {
                return BackendError::Internal(format!("AWS KMS request {what} failed: {message}"));
            }
            Failure::Service {
                code,
                message,
                status,
            } => (code, message, status),
        };
        let detail = if message.is_empty() {
            code.clone()
        } else {
            format!("{code}: {message}")
        };
        let lower = message.to_ascii_lowercase();
        match code.as_str() {
            "AccessDeniedException" => BackendError::PermissionDenied(format!(
                "AWS KMS denied {what} ({detail}); grant kms:{action} to the identity keywardd runs as, \
                 in its IAM policy and in the key policy"
            )),
            "UnrecognizedClientException"
            | "InvalidClientTokenId"
            | "InvalidSignatureException"
            | "IncompleteSignature"
            | "MissingAuthenticationToken"
            | "SignatureDoesNotMatch"
            | "ExpiredTokenException" => BackendError::PermissionDenied(format!(
                "AWS KMS rejected the credentials used for {what} ({detail}); check the credentials the AWS SDK's \
                 default chain finds (environment, profile, web identity, ECS, instance metadata) and the clock"
            )),
            "NotFoundException" => BackendError::NotFound(format!(
                "AWS KMS at {endpoint} has no key {key:?} ({detail})"
            )),
            "DisabledException" => BackendError::PermissionDenied(format!(
                "KMS key {key:?} is disabled (key state Disabled), so {what} is refused; enable it with \
                 `aws kms enable-key --key-id <key>` ({detail})"
            )),
            "KMSInvalidStateException" if lower.contains("pending deletion") => {
                BackendError::PermissionDenied(format!(
                    "KMS key {key:?} is scheduled for deletion (key state PendingDeletion), so {what} is refused; \
                     `aws kms cancel-key-deletion` and `aws kms enable-key` bring it back ({detail})"
                ))
            }
            "KMSInvalidStateException" if lower.contains("pending import") => {
                BackendError::PermissionDenied(format!(
                    "KMS key {key:?} has no key material yet (key state PendingImport), so {what} is refused ({detail})"
                ))
            }
            "KMSInvalidStateException" | "KeyUnavailableException" => BackendError::Unavailable {
                message: format!(
                    "KMS key {key:?} is not in a state that allows {what} ({detail}); check its key state with \
                     `aws kms describe-key`"
                ),
                retry_after,
            },
            "ValidationException"
            | "InvalidArnException"
            | "InvalidAliasNameException"
            | "InvalidKeyUsageException"
            | "InvalidGrantTokenException"
            | "AlreadyExistsException"
            | "TagException"
            | "MalformedPolicyDocumentException" => {
                BackendError::InvalidInput(format!("AWS KMS refused {what}: {detail}"))
            }
            "UnsupportedOperationException" => {
                BackendError::Unsupported(format!("AWS KMS cannot do {what}: {detail}"))
            }
            "LimitExceededException" => BackendError::Unavailable {
                message: format!(
                    "AWS KMS refused {what} because an account quota is reached ({detail}); \
                     free resources or ask AWS for a higher quota"
                ),
                retry_after: None,
            },
            _ if status == 429 || status >= 500 || code == "ThrottlingException" => {
                BackendError::Unavailable {
                    message: format!(
                        "AWS KMS at {endpoint} failed {what} ({}, {detail}); \
                         if it is throttling, lower rate_limit or ask AWS for a higher request quota",
                        tries_text(tries)
                    ),
                    retry_after,
                }
            }
            _ => BackendError::Internal(format!(
                "AWS KMS answered {what} with an unexpected error (HTTP {status}, {detail})"
            )),
        }
    }
}

/// `1 try`, `3 tries`.
fn tries_text(tries: u32) -> String {
    if tries == 1 {
        "1 try".to_string()
    } else {
        format!("{tries} tries")
    }
}

/// An error and its causes, `: `-joined, each once (the SDK hides the useful part, such as
/// "Connection refused", in the sources).
pub fn chain(error: &dyn StdError) -> String {
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

    fn service(code: &str, message: &str, status: u16) -> Failure {
        Failure::Service {
            code: code.into(),
            message: message.into(),
            status,
        }
    }

    fn meaning(failure: Failure) -> BackendError {
        failure.into_error(
            &Purpose::key("Sign", "alias/release"),
            "https://kms.eu-west-1.amazonaws.com",
            3,
            Some(Duration::from_secs(1)),
        )
    }

    #[test]
    fn access_denied_names_the_permission_and_the_key() {
        let error = meaning(service(
            "AccessDeniedException",
            "User: arn:aws:sts::1:assumed-role/ci is not authorized to perform: kms:Sign",
            400,
        ));
        assert!(
            matches!(error, BackendError::PermissionDenied(_)),
            "{error:?}"
        );
        let text = error.to_string();
        assert!(
            text.contains("grant kms:Sign") && text.contains("\"alias/release\""),
            "{text}"
        );
    }

    #[test]
    fn key_states_are_named() {
        let disabled = meaning(service("DisabledException", "key is disabled", 400));
        assert!(matches!(disabled, BackendError::PermissionDenied(_)));
        assert!(
            disabled.to_string().contains("key state Disabled"),
            "{disabled}"
        );
        let deleting = meaning(service(
            "KMSInvalidStateException",
            "arn:aws:kms:...:key/1 is pending deletion.",
            400,
        ));
        assert!(matches!(deleting, BackendError::PermissionDenied(_)));
        assert!(
            deleting.to_string().contains("PendingDeletion"),
            "{deleting}"
        );
        let updating = meaning(service("KMSInvalidStateException", "key is Updating", 400));
        assert!(
            matches!(updating, BackendError::Unavailable { .. }),
            "{updating:?}"
        );
    }

    #[test]
    fn codes_get_their_kind() {
        assert!(matches!(
            meaning(service("NotFoundException", "Alias not found", 400)),
            BackendError::NotFound(_)
        ));
        assert!(matches!(
            meaning(service(
                "ValidationException",
                "Digest is invalid length",
                400
            )),
            BackendError::InvalidInput(_)
        ));
        assert!(matches!(
            meaning(service("UnrecognizedClientException", "bad token", 400)),
            BackendError::PermissionDenied(_)
        ));
        let throttled = meaning(service("ThrottlingException", "Rate exceeded", 400));
        match throttled {
            BackendError::Unavailable {
                message,
                retry_after,
            } => {
                assert!(
                    message.contains("3 tries") && message.contains("rate_limit"),
                    "{message}"
                );
                assert_eq!(retry_after, Some(Duration::from_secs(1)));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            meaning(service("KMSInternalException", "", 500)),
            BackendError::Unavailable { .. }
        ));
        assert!(matches!(
            meaning(service("Weird", "", 418)),
            BackendError::Internal(_)
        ));
    }

    #[test]
    fn an_unreachable_kms_names_its_endpoint() {
        let error = meaning(Failure::Transport {
            message: "io error: Connection refused (os error 111)".into(),
            timeout: false,
        });
        assert!(matches!(error, BackendError::Unavailable { .. }));
        let text = error.to_string();
        assert!(
            text.contains("https://kms.eu-west-1.amazonaws.com")
                && text.contains("Connection refused"),
            "{text}"
        );
        let credentials = meaning(Failure::Credentials("no providers in chain".into()));
        assert!(matches!(credentials, BackendError::PermissionDenied(_)));
        assert!(
            credentials
                .to_string()
                .contains("AWS_WEB_IDENTITY_TOKEN_FILE")
        );
    }

    #[test]
    fn causes_are_joined_once() {
        let inner =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let outer = std::io::Error::other(Wrapped(inner));
        assert_eq!(chain(&outer), "tcp connect error: Connection refused");
    }

    #[derive(Debug)]
    struct Wrapped(std::io::Error);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("tcp connect error")
        }
    }

    impl StdError for Wrapped {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn only_passing_failures_are_retried() {
        assert!(service("ThrottlingException", "", 400).retryable());
        assert!(service("KMSInternalException", "", 500).retryable());
        assert!(service("DependencyTimeoutException", "", 503).retryable());
        assert!(!service("AccessDeniedException", "", 400).retryable());
        assert!(!service("NotFoundException", "", 400).retryable());
        assert!(
            Failure::Transport {
                message: "refused".into(),
                timeout: false
            }
            .retryable()
        );
        assert!(
            !Failure::Transport {
                message: "slow".into(),
                timeout: true
            }
            .retryable()
        );
        assert!(!Failure::Credentials("none".into()).retryable());
    }
}
