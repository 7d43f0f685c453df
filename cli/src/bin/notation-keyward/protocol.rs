//! The Notation plugin contract 1.0: request and response JSON, and the error codes.
//!
//! Unknown request attributes are ignored (the contract requires it). Binary fields are
//! standard base64 with padding, as Go's `encoding/json` writes `[]byte`.
//!
//! [`parse_request`] turns a command and its stdin into a checked [`Request`] without any
//! I/O, so it can be fuzzed (`fuzz/fuzz_targets/notation_request.rs` includes this file).

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keyward_sdk::SignatureAlgorithm;
use serde::de::DeserializeOwned;
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

/// A command and its request, parsed and checked: everything the plugin needs before it talks
/// to the agent.
#[derive(Debug)]
pub enum Request {
    /// `get-plugin-metadata`.
    Metadata,
    /// `describe-key`.
    DescribeKey {
        /// The agent key.
        key_id: String,
        /// `pluginConfig`.
        config: BTreeMap<String, String>,
    },
    /// `generate-signature`.
    GenerateSignature(SignatureJob),
}

/// A checked `generate-signature` request.
#[derive(Debug)]
pub struct SignatureJob {
    /// The agent key.
    pub key_id: String,
    /// The agent algorithm for the key spec and hash.
    pub algorithm: SignatureAlgorithm,
    /// The contract's name of that algorithm.
    pub signing_algorithm: &'static str,
    /// The decoded payload to hash and sign.
    pub payload: Vec<u8>,
    /// `pluginConfig`.
    pub config: BTreeMap<String, String>,
}

fn parse<T: DeserializeOwned>(input: &[u8]) -> Result<T, PluginError> {
    serde_json::from_slice(input).map_err(|e| {
        PluginError::validation(format!(
            "the request is not valid JSON for this command: {e}"
        ))
    })
}

/// Parses and checks the request of `command` (the JSON on stdin).
pub fn parse_request(command: &str, input: &[u8]) -> Result<Request, PluginError> {
    match command {
        "get-plugin-metadata" => {
            // The request is optional and carries nothing this plugin needs, but it must be
            // JSON when it is there.
            if !input.iter().all(u8::is_ascii_whitespace) {
                parse::<serde_json::Value>(input)?;
            }
            Ok(Request::Metadata)
        }
        "describe-key" => {
            let request: DescribeKeyRequest = parse(input)?;
            check_contract(request.contract_version.as_deref())?;
            Ok(Request::DescribeKey {
                key_id: required(&request.key_id, "keyId")?.to_string(),
                config: request.plugin_config.unwrap_or_default(),
            })
        }
        "generate-signature" => {
            let request: GenerateSignatureRequest = parse(input)?;
            check_contract(request.contract_version.as_deref())?;
            let key_id = required(&request.key_id, "keyId")?.to_string();
            let key_spec = required(&request.key_spec, "keySpec")?;
            let hash = required(&request.hash_algorithm, "hashAlgorithm")?;
            let payload = required(&request.payload, "payload")?;
            let (algorithm, signing_algorithm) = signing_algorithm(key_spec, hash)?;
            let payload = STANDARD.decode(payload).map_err(|e| {
                PluginError::validation(format!("payload is not standard base64: {e}"))
            })?;
            Ok(Request::GenerateSignature(SignatureJob {
                key_id,
                algorithm,
                signing_algorithm,
                payload,
                config: request.plugin_config.unwrap_or_default(),
            }))
        }
        "" => Err(PluginError::validation(
            "no command given; this is a notation plugin: notation runs it as `notation-keyward <command>` (get-plugin-metadata, describe-key, generate-signature)",
        )),
        other => Err(PluginError::validation(format!(
            "unknown command {other:?}; this plugin answers get-plugin-metadata, describe-key and generate-signature"
        ))),
    }
}

/// The agent algorithm and the contract's name for a key spec and hash.
pub fn signing_algorithm(
    key_spec: &str,
    hash: &str,
) -> Result<(SignatureAlgorithm, &'static str), PluginError> {
    use SignatureAlgorithm as A;
    let ec = match key_spec {
        "EC-256" | "EC-384" | "EC-521" => true,
        "RSA-2048" | "RSA-3072" | "RSA-4096" => false,
        other => {
            return Err(PluginError::validation(format!(
                "keySpec {other:?} is not one of RSA-2048, RSA-3072, RSA-4096, EC-256, EC-384, EC-521"
            )));
        }
    };
    Ok(match (ec, hash) {
        (true, "SHA-256") => (A::EcdsaSha256, "ECDSA-SHA-256"),
        (true, "SHA-384") => (A::EcdsaSha384, "ECDSA-SHA-384"),
        (true, "SHA-512") => (A::EcdsaSha512, "ECDSA-SHA-512"),
        (false, "SHA-256") => (A::RsaPssSha256, "RSASSA-PSS-SHA-256"),
        (false, "SHA-384") => (A::RsaPssSha384, "RSASSA-PSS-SHA-384"),
        (false, "SHA-512") => (A::RsaPssSha512, "RSASSA-PSS-SHA-512"),
        (_, other) => {
            return Err(PluginError::validation(format!(
                "hashAlgorithm {other:?} is not one of SHA-256, SHA-384, SHA-512"
            )));
        }
    })
}
