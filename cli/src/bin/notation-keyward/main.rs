//! `notation-keyward`: the Notation plugin (contract 1.0, `SIGNATURE_GENERATOR.RAW`) that signs
//! with keys held by the keyward agent.
//!
//! Notation runs it once per command: `notation-keyward <command>` with a JSON request on
//! stdin. The answer is JSON on stdout and exit code 0; a failure is
//! `{"errorCode": ..., "errorMessage": ...}` on stderr and exit code 1. Nothing else is ever
//! printed on stdout.
//!
//! - `get-plugin-metadata`: name `keyward`, the RAW capability, contract 1.0.
//! - `describe-key`: the agent key `keyId` (its Notary key spec); the key must be one of the
//!   six Notary key specs and have a certificate chain attached.
//! - `generate-signature`: hashes `payload` with `hashAlgorithm`, has the agent sign the
//!   digest (ECDSA as raw r||s, RSA as RSASSA-PSS with salt = hash length) and returns the
//!   signature with the key's certificate chain, leaf first.
//!
//! `pluginConfig` may carry `socket` (the agent's socket; else `$KEYWARD_SOCK`, else the
//! default) and `timeout` (seconds for the whole command, default 30).

mod protocol;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keyward_sdk::{Client, KeySpec, SignOptions, SignatureFormat};
use serde::Serialize;

use crate::protocol::*;

/// The deadline of one command unless `pluginConfig.timeout` says otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest request read from stdin (notation caps plugin I/O at 64 MiB).
const MAX_REQUEST: u64 = 64 << 20;

fn main() {
    let command = std::env::args().nth(1).unwrap_or_default();
    let result = read_request().and_then(|input| run(&command, &input));
    let code = match result {
        Ok(json) => {
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(json.as_bytes());
            let _ = stdout.write_all(b"\n");
            let _ = stdout.flush();
            0
        }
        Err(error) => {
            let response = ErrorResponse {
                error_code: error.code,
                error_message: error.message,
            };
            let text = serde_json::to_string(&response).unwrap_or_else(|_| {
                r#"{"errorCode":"ERROR","errorMessage":"cannot encode the error"}"#.into()
            });
            let _ = writeln!(std::io::stderr().lock(), "{text}");
            1
        }
    };
    std::process::exit(code);
}

fn read_request() -> Result<Vec<u8>, PluginError> {
    let mut input = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_REQUEST)
        .read_to_end(&mut input)
        .map_err(|e| PluginError::new(ErrorCode::Error, format!("cannot read the request: {e}")))?;
    Ok(input)
}

fn to_json(value: &impl Serialize) -> Result<String, PluginError> {
    serde_json::to_string(value)
        .map_err(|e| PluginError::new(ErrorCode::Error, format!("cannot encode the response: {e}")))
}

/// Runs one command; returns the JSON response.
fn run(command: &str, input: &[u8]) -> Result<String, PluginError> {
    match parse_request(command, input)? {
        Request::Metadata => to_json(&metadata()),
        Request::DescribeKey { key_id, config } => with_agent(&config, |client| async move {
            let response = describe_key(&client, &key_id).await?;
            to_json(&response)
        }),
        Request::GenerateSignature(job) => {
            let config = job.config.clone();
            with_agent(&config, |client| async move {
                let response = generate_signature(&client, &job).await?;
                to_json(&response)
            })
        }
    }
}

fn metadata() -> Metadata {
    Metadata {
        name: PLUGIN_NAME,
        description: "Sign with keys held by the keyward signing agent (keywardd); private keys never leave it",
        version: env!("CARGO_PKG_VERSION"),
        url: "https://github.com/keyward/keyward",
        supported_contract_versions: vec![CONTRACT_VERSION],
        capabilities: vec![CAPABILITY_RAW],
    }
}

/// Connects to the agent named by `config` and runs `call` under the command's deadline.
fn with_agent<F, Fut>(config: &BTreeMap<String, String>, call: F) -> Result<String, PluginError>
where
    F: FnOnce(Client) -> Fut,
    Fut: Future<Output = Result<String, PluginError>>,
{
    let timeout = match config.get("timeout") {
        None => DEFAULT_TIMEOUT,
        Some(text) => text
            .parse::<f64>()
            .ok()
            .filter(|s| (0.001..=3600.0).contains(s))
            .map(Duration::from_secs_f64)
            .ok_or_else(|| {
                PluginError::validation(format!(
                    "pluginConfig timeout = {text:?} is not a number of seconds between 0.001 and 3600"
                ))
            })?,
    };
    let socket = config
        .get("socket")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os(keyward_sdk::SOCKET_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(keyward_sdk::default_socket_path);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            PluginError::new(
                ErrorCode::Error,
                format!("cannot start the async runtime: {e}"),
            )
        })?;
    runtime.block_on(async move {
        let work = async {
            let client = Client::connect(&socket).await?;
            call(client).await
        };
        tokio::time::timeout(timeout, work).await.unwrap_or_else(|_| {
            Err(PluginError::new(
                ErrorCode::Timeout,
                format!(
                    "the keyward agent at {} did not answer within {timeout:?}; check that it is healthy, or raise --plugin-config timeout=SECONDS",
                    socket.display()
                ),
            ))
        })
    })
}

/// The Notary key spec name of an agent key spec.
fn notary_key_spec(key_id: &str, spec: KeySpec) -> Result<&'static str, PluginError> {
    Ok(match spec {
        KeySpec::EcP256 => "EC-256",
        KeySpec::EcP384 => "EC-384",
        KeySpec::EcP521 => "EC-521",
        KeySpec::Rsa2048 => "RSA-2048",
        KeySpec::Rsa3072 => "RSA-3072",
        KeySpec::Rsa4096 => "RSA-4096",
        other => {
            return Err(PluginError::validation(format!(
                "key {key_id:?} ({}) cannot make Notary signatures: the Notary Project allows RSA-2048/3072/4096 and EC-256/384/521 keys only; generate one with `keyward keys generate --type ec-p256 ...`",
                other.name()
            )));
        }
    })
}

fn no_chain(key_id: &str) -> PluginError {
    PluginError::validation(format!(
        "key {key_id:?} has no certificate chain, which notation needs: run `keyward cert issue --key {key_id} --subject \"C=US,ST=WA,O=Example,CN={key_id}\"` (or attach one with `keyward cert attach`)"
    ))
}

async fn describe_key(client: &Client, key_id: &str) -> Result<DescribeKeyResponse, PluginError> {
    let public = client.public_key(key_id).await?;
    let key_spec = notary_key_spec(key_id, public.info.key_spec())?;
    if public.certificate_chain.is_empty() {
        return Err(no_chain(key_id));
    }
    Ok(DescribeKeyResponse {
        key_id: key_id.to_string(),
        key_spec,
    })
}

async fn generate_signature(
    client: &Client,
    job: &SignatureJob,
) -> Result<GenerateSignatureResponse, PluginError> {
    let key_id = job.key_id.as_str();
    let digest = keyward_sdk::digest(job.algorithm, &job.payload)?;
    let options = SignOptions {
        algorithm: Some(job.algorithm),
        format: SignatureFormat::Raw,
        purpose: "notation sign".into(),
    };
    let signature = client.sign_digest(key_id, &digest, &options).await?;
    if signature.certificate_chain.is_empty() {
        return Err(no_chain(key_id));
    }
    Ok(GenerateSignatureResponse {
        key_id: key_id.to_string(),
        signature: STANDARD.encode(&signature.bytes),
        signing_algorithm: job.signing_algorithm,
        certificate_chain: signature
            .certificate_chain
            .iter()
            .map(|der| STANDARD.encode(der))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyward_sdk::SignatureAlgorithm;

    #[test]
    fn requests_are_parsed_and_checked() {
        let input = br#"{"contractVersion":"1.0","keyId":"k","keySpec":"EC-384","hashAlgorithm":"SHA-384","payload":"aGVsbG8=","pluginConfig":{"socket":"/s"},"extra":1}"#;
        let Request::GenerateSignature(job) = parse_request("generate-signature", input).unwrap()
        else {
            panic!("not a generate-signature request");
        };
        assert_eq!(job.key_id, "k");
        assert_eq!(job.algorithm, SignatureAlgorithm::EcdsaSha384);
        assert_eq!(job.payload, b"hello");
        assert_eq!(job.config["socket"], "/s");
        for (command, input, needle) in [
            ("generate-signature", &br#"{"contractVersion":"1.0","keyId":"k","keySpec":"EC-256","hashAlgorithm":"SHA-256","payload":"!!"}"#[..], "not standard base64"),
            ("generate-signature", br#"{"contractVersion":"1.0","keyId":"k"}"#, "no keySpec"),
            ("describe-key", br#"{"contractVersion":"1.0"}"#, "no keyId"),
            ("describe-key", b"[1", "not valid JSON"),
            ("get-plugin-metadata", b"nope", "not valid JSON"),
            ("sign", b"{}", "unknown command"),
        ] {
            let error = parse_request(command, input).unwrap_err();
            assert!(error.message.contains(needle), "{command}: {}", error.message);
        }
        assert!(matches!(
            parse_request("get-plugin-metadata", b"  \n").unwrap(),
            Request::Metadata
        ));
    }

    #[test]
    fn algorithms_by_key_spec_and_hash() {
        assert_eq!(
            signing_algorithm("EC-384", "SHA-384").unwrap(),
            (SignatureAlgorithm::EcdsaSha384, "ECDSA-SHA-384")
        );
        assert_eq!(
            signing_algorithm("RSA-4096", "SHA-512").unwrap().1,
            "RSASSA-PSS-SHA-512"
        );
        assert_eq!(
            signing_algorithm("EC-256", "MD5").unwrap_err().code,
            ErrorCode::ValidationError
        );
        assert!(signing_algorithm("ED25519", "SHA-256").is_err());
        assert!(notary_key_spec("k", KeySpec::Ed25519).is_err());
    }

    #[test]
    fn contract_version_is_checked() {
        assert!(check_contract(Some("1.0")).is_ok());
        assert_eq!(
            check_contract(Some("2.0")).unwrap_err().code,
            ErrorCode::UnsupportedContractVersion
        );
        assert_eq!(
            check_contract(None).unwrap_err().code,
            ErrorCode::ValidationError
        );
    }

    #[test]
    fn metadata_names_the_directory() {
        let json: serde_json::Value = serde_json::from_str(&to_json(&metadata()).unwrap()).unwrap();
        assert_eq!(json["name"], "keyward");
        assert_eq!(json["supportedContractVersions"][0], "1.0");
        assert_eq!(json["capabilities"][0], "SIGNATURE_GENERATOR.RAW");
    }
}
