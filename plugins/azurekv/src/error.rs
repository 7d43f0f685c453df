//! What a failed Key Vault call means for keyward, and whether trying again may help.
//!
//! - 401/403 -> [`BackendError::PermissionDenied`] naming the identity and the data-plane
//!   permission the call needs (`keys/sign`, `keys/get`, `keys/list`, `keys/create`).
//! - 404 -> [`BackendError::NotFound`]; 400/409 -> [`BackendError::InvalidInput`].
//! - 429 and 5xx (but 501) -> [`BackendError::Unavailable`] with the server's `Retry-After`;
//!   they are retried first (see [`crate::client`]).
//! - No answer (connection refused, DNS, TLS) -> [`BackendError::Unavailable`] naming the
//!   vault URL; a certificate problem says to set `ca_file`.
//! - A credential that cannot get a token -> `PermissionDenied` naming the identity, or
//!   `Unavailable` when its token endpoint cannot be reached.

use std::time::Duration;

use azure_core::error::ErrorKind;
use azure_core::http::StatusCode;
use azure_core::http::headers::HeaderName;
use keyward_plugin_api::BackendError;

/// What a call was for, to explain a failure.
#[derive(Clone, Debug)]
pub struct Purpose {
    /// The data-plane permission it needs (`sign`, `get`, `list`, `create`).
    pub permission: &'static str,
    /// What was being done (`sign with key "release"`).
    pub action: String,
    /// A call that may take long and must not be repeated if its answer is lost (creating a
    /// key: a second try could add a second version): a long deadline, and only throttled
    /// (429) requests are tried again.
    pub once: bool,
}

impl Purpose {
    /// A call that needs `keys/<permission>` to do `action`.
    pub fn new(permission: &'static str, action: impl Into<String>) -> Self {
        Purpose {
            permission,
            action: action.into(),
            once: false,
        }
    }

    /// The same purpose for a call that is never repeated after it may have been done.
    pub fn once(mut self) -> Self {
        self.once = true;
        self
    }
}

/// An error and its causes, `: `-joined (the SDK and reqwest keep the useful part in sources).
pub fn chain(error: &dyn std::error::Error) -> String {
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

/// The HTTP status of an error answer, if the vault answered.
pub fn status(error: &azure_core::Error) -> Option<u16> {
    match error.kind() {
        ErrorKind::HttpResponse { status, .. } => Some(u16::from(*status)),
        _ => None,
    }
}

/// The wait the server asked for (`Retry-After` seconds or `retry-after-ms`).
pub fn retry_after(error: &azure_core::Error) -> Option<Duration> {
    let ErrorKind::HttpResponse {
        raw_response: Some(raw),
        ..
    } = error.kind()
    else {
        return None;
    };
    let headers = raw.headers();
    for name in ["retry-after-ms", "x-ms-retry-after-ms"] {
        if let Some(ms) = headers
            .get_optional_str(&HeaderName::from_static(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            return Some(Duration::from_millis(ms));
        }
    }
    headers
        .get_optional_str(&HeaderName::from_static("retry-after"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// Whether the same call may work if sent again soon: no answer at all (but a credential
/// failure), 408, 429 or a 5xx other than 501.
pub fn retryable(error: &azure_core::Error) -> bool {
    match error.kind() {
        ErrorKind::HttpResponse { status, .. } => {
            let code = u16::from(*status);
            code == 408 || code == 429 || (500..600).contains(&code) && code != 501
        }
        ErrorKind::Connection | ErrorKind::Io => true,
        _ => false,
    }
}

/// The service's error code and message, from the JSON body of an error answer.
fn service_text(error: &azure_core::Error) -> String {
    let ErrorKind::HttpResponse {
        status,
        error_code,
        raw_response,
    } = error.kind()
    else {
        return chain(error);
    };
    let body = raw_response
        .as_ref()
        .and_then(|raw| serde_json::from_slice::<serde_json::Value>(raw.body()).ok());
    let message = body
        .as_ref()
        .and_then(|b| b.pointer("/error/message"))
        .and_then(serde_json::Value::as_str);
    let code = error_code.as_deref().or_else(|| {
        body.as_ref()
            .and_then(|b| b.pointer("/error/code"))
            .and_then(serde_json::Value::as_str)
    });
    let mut text = format!("HTTP {}", u16::from(*status));
    if let Some(code) = code {
        text.push_str(&format!(" {code}"));
    }
    if let Some(message) = message {
        text.push_str(&format!(": {}", message.replace(['\n', '\r'], " ")));
    }
    text
}

/// Whether the text of a failure without an answer looks like a connection problem.
fn is_connection_text(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    [
        "connect",
        "connection",
        "dns",
        "timed out",
        "timeout",
        "unreachable",
        "reset",
        "broken pipe",
        "error sending request",
    ]
    .iter()
    .any(|word| lower.contains(word))
}

/// What `error` from a call to `vault` as `identity` for `purpose` means for keyward.
pub fn explain(
    error: &azure_core::Error,
    vault: &str,
    identity: &str,
    purpose: &Purpose,
    tries: u32,
) -> BackendError {
    let action = &purpose.action;
    let text = chain(error);
    match error.kind() {
        ErrorKind::HttpResponse { status, .. } => {
            let detail = service_text(error);
            match *status {
                StatusCode::Unauthorized => BackendError::PermissionDenied(format!(
                    "key vault {vault} did not accept the token of {identity} to {action} ({detail}): \
                     check that the identity belongs to the vault's tenant and that its token is valid"
                )),
                StatusCode::Forbidden if detail.to_ascii_lowercase().contains("disabled") => {
                    BackendError::PermissionDenied(format!(
                        "key vault {vault} refused to {action} ({detail}): the key is disabled; \
                         enable it (az keyvault key set-attributes --enabled true)"
                    ))
                }
                StatusCode::Forbidden => BackendError::PermissionDenied(format!(
                    "key vault {vault} refused {identity} to {action} ({detail}): grant it the data-plane \
                     permission keys/{} (an RBAC role such as \"Key Vault Crypto User\", or an access policy), \
                     and check the vault's firewall",
                    purpose.permission
                )),
                StatusCode::NotFound => {
                    BackendError::NotFound(format!("key vault {vault} cannot {action}: {detail}"))
                }
                StatusCode::BadRequest | StatusCode::Conflict => BackendError::InvalidInput(
                    format!("key vault {vault} refused to {action}: {detail}"),
                ),
                _ if retryable(error) => BackendError::Unavailable {
                    message: format!(
                        "key vault {vault} failed to {action} after {tries} tr{}: {detail}",
                        if tries == 1 { "y" } else { "ies" }
                    ),
                    retry_after: retry_after(error),
                },
                _ => BackendError::Internal(format!(
                    "key vault {vault} answered an unexpected status to {action}: {detail}"
                )),
            }
        }
        ErrorKind::Credential => {
            if is_connection_text(&text) {
                BackendError::unavailable(format!(
                    "cannot get a token for {identity} to {action}: its token endpoint cannot be reached: {text}"
                ))
            } else {
                BackendError::PermissionDenied(format!(
                    "cannot get a token for {identity} to {action}: {text}"
                ))
            }
        }
        ErrorKind::Connection | ErrorKind::Io => {
            let hint = if text.to_ascii_lowercase().contains("certificate") {
                "; the vault's TLS certificate is not trusted: set ca_file to the PEM of the CA that issued it"
            } else {
                "; check the URL, DNS, the network path and the vault's firewall"
            };
            BackendError::unavailable(format!(
                "cannot reach key vault {vault} to {action}: {text}{hint}"
            ))
        }
        ErrorKind::DataConversion => BackendError::Internal(format!(
            "key vault {vault} gave an answer keyward cannot read to {action}: {text}"
        )),
        _ if is_connection_text(&text) => BackendError::unavailable(format!(
            "cannot reach key vault {vault} to {action}: {text}"
        )),
        _ => BackendError::Internal(format!("key vault {vault}, {action}: {text}")),
    }
}

#[cfg(test)]
mod tests {
    use azure_core::http::RawResponse;
    use azure_core::http::headers::Headers;

    use super::*;

    fn answer(
        status: StatusCode,
        headers: &[(&'static str, &str)],
        body: &str,
    ) -> azure_core::Error {
        let mut map = Headers::new();
        for (name, value) in headers {
            map.insert(HeaderName::from_static(name), value.to_string());
        }
        let raw = RawResponse::from_bytes(status, map, body.as_bytes().to_vec());
        azure_core::Error::with_message(
            ErrorKind::HttpResponse {
                status,
                error_code: None,
                raw_response: Some(Box::new(raw)),
            },
            "failed",
        )
    }

    const V: &str = "https://kw.vault.azure.net";

    #[test]
    fn statuses_become_kinds() {
        let purpose = Purpose::new("sign", "sign with key \"k\"");
        let forbidden = answer(
            StatusCode::Forbidden,
            &[],
            r#"{"error":{"code":"Forbidden","message":"Caller is not authorized"}}"#,
        );
        let err = explain(&forbidden, V, "managed identity X", &purpose, 1);
        let text = err.to_string();
        assert!(matches!(err, BackendError::PermissionDenied(_)), "{text}");
        assert!(
            text.contains("managed identity X") && text.contains("keys/sign"),
            "{text}"
        );
        assert!(text.contains("Caller is not authorized"), "{text}");

        let missing = answer(
            StatusCode::NotFound,
            &[],
            r#"{"error":{"code":"KeyNotFound"}}"#,
        );
        assert!(matches!(
            explain(&missing, V, "i", &purpose, 1),
            BackendError::NotFound(_)
        ));
        assert!(!retryable(&missing));

        let busy = answer(StatusCode::TooManyRequests, &[("retry-after", "3")], "");
        assert!(retryable(&busy));
        assert_eq!(retry_after(&busy), Some(Duration::from_secs(3)));
        match explain(&busy, V, "i", &purpose, 3) {
            BackendError::Unavailable {
                message,
                retry_after,
            } => {
                assert!(message.contains("after 3 tries"), "{message}");
                assert_eq!(retry_after, Some(Duration::from_secs(3)));
            }
            other => panic!("{other:?}"),
        }
        let ms = answer(
            StatusCode::ServiceUnavailable,
            &[("retry-after-ms", "250")],
            "",
        );
        assert_eq!(retry_after(&ms), Some(Duration::from_millis(250)));
        assert!(!retryable(&answer(StatusCode::NotImplemented, &[], "")));
    }

    #[test]
    fn credential_failures_name_the_identity() {
        let purpose = Purpose::new("get", "read key \"k\"");
        let refused = azure_core::Error::with_message(
            ErrorKind::Credential,
            "ManagedIdentityCredential authentication failed: error sending request: connection refused",
        );
        let err = explain(&refused, V, "managed identity via App Service", &purpose, 1);
        assert!(matches!(err, BackendError::Unavailable { .. }), "{err}");
        assert!(err.to_string().contains("managed identity via App Service"));
        let bad = azure_core::Error::with_message(
            ErrorKind::Credential,
            "AADSTS7000215: Invalid client secret",
        );
        let err = explain(&bad, V, "service principal c", &purpose, 1);
        assert!(matches!(err, BackendError::PermissionDenied(_)), "{err}");
    }
}
