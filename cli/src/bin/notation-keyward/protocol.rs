//! The Notation plugin contract 1.0: request and response JSON, and the error codes.
//!
//! Unknown request attributes are ignored (the contract requires it). Binary fields are
//! standard base64 with padding, as Go's `encoding/json` writes `[]byte`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The one contract version this plugin speaks.
pub const CONTRACT_VERSION: &str = "1.0";
/// The plugin's name: notation runs it as `<plugins>/keyward/notation-keyward`.
pub const PLUGIN_NAME: &str = "keyward";
/// The RAW signing capability: notation builds the envelope, the plugin signs bytes.
pub const CAPABILITY_RAW: &str = "SIGNATURE_GENERATOR.RAW";

/// `get-plugin-metadata` response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    pub name: &'static str,
    pub description: &'static str,
    pub version: &'static str,
    pub url: &'static str,
    pub supported_contract_versions: Vec<&'static str>,
    pub capabilities: Vec<&'static str>,
}

/// `describe-key` request.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeKeyRequest {
    pub contract_version: Option<String>,
    pub key_id: Option<String>,
    #[serde(default)]
    pub plugin_config: Option<BTreeMap<String, String>>,
}

/// `describe-key` response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeKeyResponse {
    pub key_id: String,
    pub key_spec: &'static str,
}

/// `generate-signature` request.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateSignatureRequest {
    pub contract_version: Option<String>,
    pub key_id: Option<String>,
    #[serde(default)]
    pub plugin_config: Option<BTreeMap<String, String>>,
    pub key_spec: Option<String>,
    pub hash_algorithm: Option<String>,
    pub payload: Option<String>,
}

/// `generate-signature` response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateSignatureResponse {
    pub key_id: String,
    pub signature: String,
    pub signing_algorithm: &'static str,
    pub certificate_chain: Vec<String>,
}

/// The error codes of the contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// A field is missing or malformed, or the key does not exist or cannot be used.
    ValidationError,
    /// The request's contractVersion is not 1.0.
    UnsupportedContractVersion,
    /// The agent refused the caller.
    AccessDenied,
    /// The call did not finish in time.
    Timeout,
    /// The agent or its backend is busy or restarting; retry.
    Throttled,
    /// Anything else.
    Error,
}

/// The JSON written on stderr with exit code 1.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorResponse {
    pub error_code: ErrorCode,
    pub error_message: String,
}

/// A failed command.
#[derive(Debug)]
pub struct PluginError {
    pub code: ErrorCode,
    pub message: String,
}

impl PluginError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        PluginError {
            code,
            message: message.into(),
        }
    }

    /// A VALIDATION_ERROR.
    pub fn validation(message: impl Into<String>) -> Self {
        PluginError::new(ErrorCode::ValidationError, message)
    }
}

impl From<keyward_sdk::Error> for PluginError {
    fn from(error: keyward_sdk::Error) -> Self {
        use keyward_sdk::Code;
        let code = match (error.code(), &error) {
            (None, keyward_sdk::Error::InvalidInput(_)) => ErrorCode::ValidationError,
            (None, _) => ErrorCode::Error,
            (
                Some(
                    Code::NotFound
                    | Code::InvalidArgument
                    | Code::FailedPrecondition
                    | Code::OutOfRange,
                ),
                _,
            ) => ErrorCode::ValidationError,
            (Some(Code::PermissionDenied | Code::Unauthenticated), _) => ErrorCode::AccessDenied,
            (Some(Code::DeadlineExceeded), _) => ErrorCode::Timeout,
            (Some(Code::ResourceExhausted | Code::Unavailable), _) => ErrorCode::Throttled,
            (Some(_), _) => ErrorCode::Error,
        };
        PluginError::new(code, error.to_string())
    }
}

/// Checks `contractVersion` (required, and "1.0").
pub fn check_contract(version: Option<&str>) -> Result<(), PluginError> {
    match version {
        Some(CONTRACT_VERSION) => Ok(()),
        None | Some("") => Err(PluginError::validation(
            "the request has no contractVersion; this plugin speaks contract version 1.0",
        )),
        Some(other) => Err(PluginError::new(
            ErrorCode::UnsupportedContractVersion,
            format!(
                "contract version {other:?} is not supported; this plugin speaks contract version {CONTRACT_VERSION}"
            ),
        )),
    }
}

/// A required, non-empty string field.
pub fn required<'a>(value: &'a Option<String>, field: &str) -> Result<&'a str, PluginError> {
    value
        .as_deref()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| PluginError::validation(format!("the request has no {field}")))
}
