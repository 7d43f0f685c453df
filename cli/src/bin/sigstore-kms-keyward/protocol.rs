//! The sigstore KMS plugin protocol v1 (`sigstore/sigstore` `pkg/signature/kms/cliplugin`):
//! argv `v1 <json>`, the message on stdin, a JSON answer on stdout.
//!
//! [`parse`] turns the two arguments into a checked [`Invocation`] without any I/O. Unknown
//! JSON fields are ignored (a newer sigstore may add options). Binary fields are standard
//! base64 with padding, as Go's `encoding/json` writes `[]byte`; hashes are Go `crypto.Hash`
//! numbers (SHA-256 = 5, SHA-384 = 6, SHA-512 = 7).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keyward_sdk::HashAlgorithm;
use serde::{Deserialize, Serialize};

/// The protocol version cosign passes as the first argument.
pub const PROTOCOL_VERSION: &str = "v1";
/// Longest key reference accepted (a key id is at most a few hundred bytes).
const MAX_KEY_REF: usize = 1024;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PluginArgs {
    init_options: Option<InitOptions>,
    method_name: Option<String>,
    create_key: Option<CreateKeyArgs>,
    public_key: Option<PublicKeyArgs>,
    sign_message: Option<SignMessageArgs>,
    verify_signature: Option<VerifySignatureArgs>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct InitOptions {
    protocol_version: Option<String>,
    #[serde(rename = "keyResourceID")]
    key_resource_id: Option<String>,
    #[serde(default)]
    hash_func: u32,
    ctx_deadline: Option<String>,
    rpc_options: Option<RpcOptions>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RpcOptions {
    ctx_deadline: Option<String>,
    key_version: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessageOptions {
    digest: Option<String>,
    hash_func: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateKeyArgs {
    ctx_deadline: Option<String>,
    #[serde(default)]
    algorithm: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PublicKeyArgs {
    public_key_options: Option<PublicKeyOptions>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PublicKeyOptions {
    #[serde(default)]
    rpc_options: RpcOptions,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignMessageArgs {
    sign_options: Option<MessageCallOptions>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct VerifySignatureArgs {
    signature: Option<String>,
    verify_options: Option<MessageCallOptions>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessageCallOptions {
    #[serde(default)]
    rpc_options: RpcOptions,
    #[serde(default)]
    message_options: MessageOptions,
}

/// Which agent key, and (for `createKey`) in which backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRef {
    /// The agent's key id (`release`, `hsm/release`).
    pub key_id: String,
    /// `?backend=NAME` after the key id: where `createKey` makes the key.
    pub backend: Option<String>,
}

/// What the signature covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// A digest computed by cosign (then stdin is empty), or `None`: the message is on stdin.
    pub digest: Option<Vec<u8>>,
    /// The hash: the call's own, else the one cosign loaded the key with. `None` for
    /// `crypto.Hash(0)`.
    pub hash: Option<HashAlgorithm>,
    /// A key version the caller insists on (empty: any).
    pub key_version: Option<String>,
}

/// One checked call.
#[derive(Debug)]
pub enum Method {
    DefaultAlgorithm,
    SupportedAlgorithms,
    CreateKey { algorithm: String },
    PublicKey { key_version: Option<String> },
    SignMessage(Input),
    VerifySignature { signature: Vec<u8>, input: Input },
}

/// A parsed invocation.
#[derive(Debug)]
pub struct Invocation {
    pub key: KeyRef,
    pub method: Method,
    /// The caller's deadline (RFC 3339), the call's own before the plugin's.
    pub deadline: Option<String>,
}

/// A parse failure, as the text for `errorMessage`.
#[derive(Debug, PartialEq, Eq)]
pub struct ProtocolError(pub String);

fn fail(message: impl Into<String>) -> ProtocolError {
    ProtocolError(message.into())
}

/// The answer: exactly one method field on success, `errorMessage` on failure.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginResp {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_algorithm: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supported_algorithms: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create_key: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sign_message: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify_signature: Option<serde_json::Value>,
}

/// A Go `crypto.Hash` number as one of the agent's hashes; `Ok(None)` for 0 (no hash).
pub fn go_hash(number: u32) -> Result<Option<HashAlgorithm>, ProtocolError> {
    Ok(match number {
        0 => None,
        5 => Some(HashAlgorithm::Sha256),
        6 => Some(HashAlgorithm::Sha384),
        7 => Some(HashAlgorithm::Sha512),
        other => {
            let name = match other {
                1 => "MD4",
                2 => "MD5",
                3 => "SHA-1",
                4 => "SHA-224",
                8 => "MD5+SHA1",
                9 => "RIPEMD-160",
                10..=13 => "SHA-3",
                14 | 15 => "SHA-512/t",
                _ => "an unknown hash",
            };
            return Err(fail(format!(
                "cosign asked for {name} (Go crypto.Hash {other}); keyward signs SHA-256, SHA-384 and SHA-512 digests only"
            )));
        }
    })
}

fn parse_key_ref(text: &str) -> Result<KeyRef, ProtocolError> {
    if text.len() > MAX_KEY_REF {
        return Err(fail(format!(
            "the key reference is {} bytes long; keyward key ids are short: use keyward://KEY_ID",
            text.len()
        )));
    }
    if text.chars().any(char::is_control) {
        return Err(fail(
            "the key reference contains control characters: use keyward://KEY_ID",
        ));
    }
    let (key_id, query) = match text.split_once('?') {
        Some((id, query)) => (id, Some(query)),
        None => (text, None),
    };
    let key_id = key_id.trim_start_matches('/');
    if key_id.is_empty() {
        return Err(fail(
            "no key id after keyward://: use keyward://KEY_ID (`keyward keys list` shows them)",
        ));
    }
    let mut backend = None;
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        match pair.split_once('=') {
            Some(("backend", name)) if !name.is_empty() => backend = Some(name.to_string()),
            _ => {
                return Err(fail(format!(
                    "unknown option {pair:?} in keyward://{text}; the only option is ?backend=NAME (where createKey makes the key)"
                )));
            }
        }
    }
    Ok(KeyRef {
        key_id: key_id.to_string(),
        backend,
    })
}

fn decode(field: &str, text: &str) -> Result<Vec<u8>, ProtocolError> {
    STANDARD
        .decode(text)
        .map_err(|_| fail(format!("{field} is not standard base64")))
}

fn input(options: Option<MessageCallOptions>, init_hash: u32) -> Result<Input, ProtocolError> {
    let options = options.unwrap_or_default();
    let call_hash = options.message_options.hash_func;
    let mut hash = go_hash(call_hash.unwrap_or(init_hash))?;
    // sigstore always sends a digest field; an empty one means "no digest".
    let digest = match options.message_options.digest {
        Some(text) => Some(decode("messageOptions.digest", &text)?).filter(|d| !d.is_empty()),
        None => None,
    };
    // cosign v3 signs with the key's own hash (SHA-384 for a P-384 key) and sends that digest
    // without saying which hash made it, while initOptions still says SHA-256. The three
    // hashes have three lengths, so the digest's length names its hash; a hash the call states
    // itself is never overridden.
    if call_hash.is_none()
        && let Some(digest) = &digest
        && hash.is_none_or(|h| h.len() != digest.len())
    {
        hash = [
            HashAlgorithm::Sha256,
            HashAlgorithm::Sha384,
            HashAlgorithm::Sha512,
        ]
        .into_iter()
        .find(|h| h.len() == digest.len())
        .or(hash);
    }
    Ok(Input {
        digest,
        hash,
        key_version: options.rpc_options.key_version.filter(|v| !v.is_empty()),
    })
}

/// Parses argv[1] (the protocol version) and argv[2] (the JSON arguments).
pub fn parse(version: Option<&str>, json: Option<&str>) -> Result<Invocation, ProtocolError> {
    match version {
        Some(PROTOCOL_VERSION) => {}
        Some(other) => {
            return Err(fail(format!(
                "protocol version {other:?} is not supported (this plugin speaks {PROTOCOL_VERSION}); upgrade keyward, or use a cosign whose sigstore speaks {PROTOCOL_VERSION}"
            )));
        }
        None => {
            return Err(fail(
                "no arguments: this is the sigstore KMS plugin of keyward, run by cosign for keys named keyward://KEY_ID",
            ));
        }
    }
    let json = json.ok_or_else(|| fail("no JSON arguments after v1"))?;
    let args: PluginArgs = serde_json::from_str(json)
        .map_err(|e| fail(format!("the plugin arguments are not valid JSON: {e}")))?;
    let init = args
        .init_options
        .ok_or_else(|| fail("no initOptions in the plugin arguments"))?;
    if let Some(version) = init.protocol_version.as_deref()
        && version != PROTOCOL_VERSION
    {
        return Err(fail(format!(
            "initOptions.protocolVersion {version:?} is not {PROTOCOL_VERSION}"
        )));
    }
    let key = parse_key_ref(init.key_resource_id.as_deref().unwrap_or_default())?;
    let init_rpc = init.rpc_options.unwrap_or_default();
    let mut deadline = init.ctx_deadline.or(init_rpc.ctx_deadline);
    let method_name = args
        .method_name
        .ok_or_else(|| fail("no methodName in the plugin arguments"))?;
    let method = match method_name.as_str() {
        "defaultAlgorithm" => Method::DefaultAlgorithm,
        "supportedAlgorithms" => Method::SupportedAlgorithms,
        "createKey" => {
            let create = args
                .create_key
                .ok_or_else(|| fail("createKey without its arguments"))?;
            deadline = create.ctx_deadline.or(deadline);
            Method::CreateKey {
                algorithm: create.algorithm,
            }
        }
        "publicKey" => {
            let rpc = args
                .public_key
                .and_then(|p| p.public_key_options)
                .unwrap_or_default()
                .rpc_options;
            deadline = rpc.ctx_deadline.or(deadline);
            Method::PublicKey {
                key_version: rpc
                    .key_version
                    .or(init_rpc.key_version)
                    .filter(|v| !v.is_empty()),
            }
        }
        "signMessage" => {
            let options = args.sign_message.and_then(|s| s.sign_options);
            if let Some(d) = options
                .as_ref()
                .and_then(|o| o.rpc_options.ctx_deadline.clone())
            {
                deadline = Some(d);
            }
            Method::SignMessage(input(options, init.hash_func)?)
        }
        "verifySignature" => {
            let verify = args
                .verify_signature
                .ok_or_else(|| fail("verifySignature without its arguments"))?;
            let signature = decode(
                "verifySignature.signature",
                verify.signature.as_deref().unwrap_or_default(),
            )?;
            if signature.is_empty() {
                return Err(fail("verifySignature got an empty signature"));
            }
            let options = verify.verify_options;
            if let Some(d) = options
                .as_ref()
                .and_then(|o| o.rpc_options.ctx_deadline.clone())
            {
                deadline = Some(d);
            }
            Method::VerifySignature {
                signature,
                input: input(options, init.hash_func)?,
            }
        }
        other => {
            return Err(fail(format!(
                "unknown method {other:?}: this plugin implements defaultAlgorithm, supportedAlgorithms, createKey, publicKey, signMessage and verifySignature"
            )));
        }
    };
    Ok(Invocation {
        key,
        method,
        deadline,
    })
}
