//! `sigstore-kms-keyward`: the sigstore KMS plugin (protocol v1) that lets cosign sign and
//! verify with keys held by the keyward agent: `cosign sign --key keyward://KEY_ID IMAGE`.
//!
//! cosign runs it once per call as `sigstore-kms-keyward v1 '<json>'`, with the message on
//! stdin, and reads one JSON answer from stdout; errors go in `errorMessage` (cosign ignores
//! the exit status; this program still exits 1 on an error, for people running it by hand).
//!
//! - `defaultAlgorithm` / `supportedAlgorithms`: key specs for `createKey` (`ec-p256`,
//!   `ec-p384`, `ec-p521`, `rsa-2048`, `rsa-3072`, `rsa-4096`, `ed25519`); static, no agent.
//! - `createKey`: KeyAdmin `GenerateKey` in the backend named by `keyward://KEY_ID?backend=NAME`,
//!   else `$KEYWARD_COSIGN_BACKEND`, else `local`; a key that already exists with that spec is
//!   returned as it is (cosign's `generate-key-pair --kms` is then idempotent).
//! - `publicKey`: the agent's PEM SubjectPublicKeyInfo.
//! - `signMessage`: hashes stdin (streaming: blobs of any size) or takes cosign's digest, and
//!   has the agent sign it: ECDSA as DER (what sigstore verifies), RSA as PKCS#1 v1.5 (what
//!   sigstore's RSA verifier checks), Ed25519 over the message itself.
//! - `verifySignature`: verifies locally (RustCrypto) against the agent's public key. The agent
//!   has no verify call, so `remoteVerification` is not honoured; a local check against the
//!   key the agent serves is what every cosign verifier does anyway.
//!
//! The socket is `$KEYWARD_SOCK`, else the default path, with the SDK's checks.

mod protocol;

use std::io::{Read, Write};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keyward_sdk::{
    Client, HashAlgorithm, KeySpec, RsaPadding, SignOptions, SignatureFormat, algorithm_for,
};
use serde_json::json;
use sha2::Digest;

use crate::protocol::{Input, Invocation, KeyRef, Method, PluginResp, parse};

/// How long one call may take unless cosign's context says otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait accepted from a caller's deadline.
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// Longest message read into memory: only pure Ed25519 sends the message itself to the agent
/// (every other key is signed over a digest hashed while streaming stdin). The agent accepts
/// requests up to 64 MiB.
const MAX_ED25519_MESSAGE: u64 = 32 << 20;
/// The backend `createKey` uses when the key reference names none.
const BACKEND_ENV: &str = "KEYWARD_COSIGN_BACKEND";
/// What the agent's audit log records as the purpose of cosign's signatures.
const PURPOSE: &str = "cosign (sigstore-kms-keyward)";

fn main() {
    // Lossy: a non-UTF-8 argument (never from cosign) becomes a JSON error, not a panic.
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let (response, ok) = match run(
        args.get(1).map(String::as_str),
        args.get(2).map(String::as_str),
    ) {
        Ok(response) => (response, true),
        Err(message) => (
            PluginResp {
                error_message: Some(message),
                ..PluginResp::default()
            },
            false,
        ),
    };
    let text = serde_json::to_string(&response)
        .unwrap_or_else(|_| r#"{"errorMessage":"cannot encode the response"}"#.into());
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
    std::process::exit(if ok { 0 } else { 1 });
}

fn run(version: Option<&str>, json: Option<&str>) -> Result<PluginResp, String> {
    let invocation = parse(version, json).map_err(|e| e.0)?;
    let reference = match &invocation.key.backend {
        Some(backend) => format!("keyward://{}?backend={backend}", invocation.key.key_id),
        None => format!("keyward://{}", invocation.key.key_id),
    };
    let names = || json!(KeySpec::all_names().collect::<Vec<_>>());
    match &invocation.method {
        Method::DefaultAlgorithm => {
            return Ok(PluginResp {
                default_algorithm: Some(json!({ "defaultAlgorithm": KeySpec::EcP256.name() })),
                ..PluginResp::default()
            });
        }
        Method::SupportedAlgorithms => {
            return Ok(PluginResp {
                supported_algorithms: Some(json!({ "supportedAlgorithms": names() })),
                ..PluginResp::default()
            });
        }
        _ => {}
    }
    let timeout = timeout(invocation.deadline.as_deref());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime
        .block_on(async {
            match tokio::time::timeout(timeout, call(&invocation)).await {
                Ok(result) => result,
                Err(_) => Err(format!(
                    "the keyward agent did not answer within {timeout:?}; check that keywardd is healthy (`keyward keys list`)"
                )),
            }
        })
        .map_err(|message| format!("{reference}: {message}"))
}

/// The time left until `deadline` (RFC 3339), within bounds; the default without one.
fn timeout(deadline: Option<&str>) -> Duration {
    let Some(deadline) = deadline else {
        return DEFAULT_TIMEOUT;
    };
    let format = time::format_description::well_known::Rfc3339;
    match time::OffsetDateTime::parse(deadline, &format) {
        Ok(at) => {
            let left = (at - time::OffsetDateTime::now_utc()).whole_milliseconds();
            Duration::from_millis(left.clamp(1, MAX_TIMEOUT.as_millis() as i128) as u64)
        }
        Err(_) => DEFAULT_TIMEOUT,
    }
}

async fn call(invocation: &Invocation) -> Result<PluginResp, String> {
    let client = Client::connect_default().await.map_err(|e| e.to_string())?;
    let key = &invocation.key;
    match &invocation.method {
        Method::DefaultAlgorithm | Method::SupportedAlgorithms => Ok(PluginResp::default()),
        Method::CreateKey { algorithm } => create_key(&client, key, algorithm).await,
        Method::PublicKey { key_version } => {
            let public = public_key(&client, &key.key_id, key_version.as_deref()).await?;
            Ok(PluginResp {
                public_key: Some(json!({ "publicKeyPEM": STANDARD.encode(public.pem.as_bytes()) })),
                ..PluginResp::default()
            })
        }
        Method::SignMessage(input) => {
            let signature = sign(&client, &key.key_id, input).await?;
            Ok(PluginResp {
                sign_message: Some(json!({ "signature": STANDARD.encode(signature) })),
                ..PluginResp::default()
            })
        }
        Method::VerifySignature { signature, input } => {
            verify(&client, &key.key_id, signature, input).await?;
            Ok(PluginResp {
                verify_signature: Some(json!({})),
                ..PluginResp::default()
            })
        }
    }
}

async fn public_key(
    client: &Client,
    key_id: &str,
    key_version: Option<&str>,
) -> Result<keyward_sdk::PublicKey, String> {
    let public = client.public_key(key_id).await.map_err(|e| e.to_string())?;
    if let Some(wanted) = key_version
        && wanted != public.key_version
    {
        return Err(format!(
            "cosign asked for version {wanted:?} of key {key_id:?}, but the agent serves version {:?}; the agent signs with a key's current version only: drop the key version option",
            public.key_version
        ));
    }
    Ok(public)
}

async fn create_key(client: &Client, key: &KeyRef, algorithm: &str) -> Result<PluginResp, String> {
    let spec = KeySpec::from_name(algorithm).ok_or_else(|| {
        format!(
            "unknown key type {algorithm:?}; keyward makes {}",
            KeySpec::all_names().collect::<Vec<_>>().join(", ")
        )
    })?;
    let backend = key
        .backend
        .clone()
        .or_else(|| std::env::var(BACKEND_ENV).ok().filter(|b| !b.is_empty()))
        .unwrap_or_else(|| "local".into());
    let public = match client.generate_key(&backend, &key.key_id, spec).await {
        Ok(public) => public,
        Err(error) if error.code() == Some(keyward_sdk::Code::AlreadyExists) => {
            let existing = client
                .public_key(&key.key_id)
                .await
                .map_err(|e| e.to_string())?;
            if existing.info.key_spec() != spec {
                return Err(format!(
                    "key {:?} already exists as {}, not {}; pick another key id",
                    key.key_id,
                    existing.info.key_spec().name(),
                    spec.name()
                ));
            }
            existing
        }
        Err(error) => return Err(error.to_string()),
    };
    Ok(PluginResp {
        create_key: Some(json!({ "publicKeyPEM": STANDARD.encode(public.pem.as_bytes()) })),
        ..PluginResp::default()
    })
}

/// The algorithm for this key and call, and what it signs: a digest, or (Ed25519) the message.
async fn prepare(
    client: &Client,
    key_id: &str,
    input: &Input,
) -> Result<
    (
        keyward_sdk::PublicKey,
        keyward_sdk::SignatureAlgorithm,
        Signed,
    ),
    String,
> {
    let public = public_key(client, key_id, input.key_version.as_deref()).await?;
    let spec = public.info.key_spec();
    if spec == KeySpec::Ed25519 {
        // cosign loads every KMS key with SHA-256; pure Ed25519 has no prehash, so the hash
        // is not used, as in sigstore's own Ed25519 verifier.
        if input.digest.is_some() {
            return Err(format!(
                "key {key_id:?} is ed25519, which signs the message itself, but cosign sent only a digest; sign a blob or image with this key without a precomputed digest, or use an ECDSA or RSA key"
            ));
        }
        let algorithm = algorithm_for(spec, None, RsaPadding::Pkcs1).map_err(|e| e.to_string())?;
        return Ok((public, algorithm, Signed::Message(read_message()?)));
    }
    let hash = input.hash.ok_or_else(|| {
        format!(
            "cosign gave no hash for key {key_id:?} ({}): it needs SHA-256, SHA-384 or SHA-512",
            spec.name()
        )
    })?;
    // RSA is PKCS#1 v1.5: sigstore's RSA verifier (what `cosign verify --key` loads for an RSA
    // public key) checks PKCS#1 v1.5 signatures.
    let algorithm =
        algorithm_for(spec, Some(hash), RsaPadding::Pkcs1).map_err(|e| e.to_string())?;
    let digest = match &input.digest {
        Some(digest) if digest.len() == hash.len() => digest.clone(),
        Some(digest) => {
            return Err(format!(
                "cosign sent a {}-byte digest for {}, which makes {} bytes",
                digest.len(),
                hash.name(),
                hash.len()
            ));
        }
        None => hash_stdin(hash)?,
    };
    Ok((public, algorithm, Signed::Digest(digest)))
}

enum Signed {
    Digest(Vec<u8>),
    Message(Vec<u8>),
}

async fn sign(client: &Client, key_id: &str, input: &Input) -> Result<Vec<u8>, String> {
    let (_, algorithm, signed) = prepare(client, key_id, input).await?;
    let options = SignOptions {
        algorithm: Some(algorithm),
        format: SignatureFormat::Der,
        purpose: PURPOSE.into(),
    };
    let signature = match signed {
        Signed::Digest(digest) => client.sign_digest(key_id, &digest, &options).await,
        Signed::Message(message) => client.sign_message(key_id, &message, &options).await,
    };
    Ok(signature.map_err(|e| e.to_string())?.bytes)
}

async fn verify(
    client: &Client,
    key_id: &str,
    signature: &[u8],
    input: &Input,
) -> Result<(), String> {
    let (public, algorithm, signed) = prepare(client, key_id, input).await?;
    let checked = match signed {
        Signed::Digest(digest) => keyward_sdk::verify_digest(
            &public.der,
            algorithm,
            &digest,
            signature,
            SignatureFormat::Der,
        ),
        Signed::Message(message) => keyward_sdk::verify_message(
            &public.der,
            algorithm,
            &message,
            signature,
            SignatureFormat::Der,
        ),
    };
    checked.map_err(|e| {
        format!(
            "the signature does not verify with key {key_id:?} ({}): {e}",
            algorithm.name()
        )
    })
}

/// Hashes stdin as it streams in: a blob of any size costs constant memory.
fn hash_stdin(hash: HashAlgorithm) -> Result<Vec<u8>, String> {
    fn stream<D: Digest + Write>(mut hasher: D) -> Result<Vec<u8>, String> {
        std::io::copy(&mut std::io::stdin().lock(), &mut hasher)
            .map_err(|e| format!("cannot read the message from stdin: {e}"))?;
        Ok(hasher.finalize().to_vec())
    }
    match hash {
        HashAlgorithm::Sha256 => stream(sha2::Sha256::new()),
        HashAlgorithm::Sha384 => stream(sha2::Sha384::new()),
        HashAlgorithm::Sha512 => stream(sha2::Sha512::new()),
    }
}

/// The whole message from stdin (Ed25519 only), at most [`MAX_ED25519_MESSAGE`] bytes.
fn read_message() -> Result<Vec<u8>, String> {
    let mut message = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_ED25519_MESSAGE + 1)
        .read_to_end(&mut message)
        .map_err(|e| format!("cannot read the message from stdin: {e}"))?;
    if message.len() as u64 > MAX_ED25519_MESSAGE {
        return Err(format!(
            "the message is larger than {} MiB, the most an ed25519 key signs through the agent (pure Ed25519 sends the whole message); use an ECDSA or RSA key for large blobs",
            MAX_ED25519_MESSAGE >> 20
        ));
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ProtocolError, go_hash};

    fn args(method: &str, extra: &str) -> String {
        format!(
            r#"{{"initOptions":{{"protocolVersion":"v1","keyResourceID":"release","hashFunc":5,"rpcOptions":{{"keyVersion":"","remoteVerification":false}}}},"methodName":"{method}"{extra}}}"#
        )
    }

    #[test]
    fn parses_what_sigstore_sends() {
        let sign = parse(
            Some("v1"),
            Some(&args(
                "signMessage",
                r#","signMessage":{"signOptions":{"rpcOptions":{"ctxDeadline":"2030-01-01T00:00:00Z","keyVersion":""},"messageOptions":{"digest":"","hashFunc":6}}},"futureField":1"#,
            )),
        )
        .unwrap();
        assert_eq!(sign.key.key_id, "release");
        assert_eq!(sign.deadline.as_deref(), Some("2030-01-01T00:00:00Z"));
        let Method::SignMessage(input) = sign.method else {
            panic!("not signMessage")
        };
        assert_eq!(input.digest, None);
        assert_eq!(input.hash, Some(HashAlgorithm::Sha384));
        assert_eq!(input.key_version, None);

        let verify = parse(
            Some("v1"),
            Some(&args(
                "verifySignature",
                r#","verifySignature":{"signature":"AQID","verifyOptions":{"rpcOptions":{},"messageOptions":{"digest":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}}}"#,
            )),
        )
        .unwrap();
        let Method::VerifySignature { signature, input } = verify.method else {
            panic!("not verifySignature")
        };
        assert_eq!(signature, vec![1, 2, 3]);
        assert_eq!(input.digest, Some(vec![0; 32]));
        assert_eq!(input.hash, Some(HashAlgorithm::Sha256));

        // cosign v3: a SHA-384 digest of a P-384 key, no hashFunc beside it, SHA-256 in
        // initOptions: the digest's length says which hash made it.
        let v3 = parse(
            Some("v1"),
            Some(&args(
                "signMessage",
                &format!(
                    r#","signMessage":{{"signOptions":{{"messageOptions":{{"digest":"{}"}}}}}}"#,
                    STANDARD.encode([7u8; 48])
                ),
            )),
        )
        .unwrap();
        let Method::SignMessage(input) = v3.method else {
            panic!("not signMessage")
        };
        assert_eq!(input.hash, Some(HashAlgorithm::Sha384));
        // A hash the call names itself is kept (and the length mismatch is refused later).
        let stated = parse(
            Some("v1"),
            Some(&args(
                "signMessage",
                &format!(
                    r#","signMessage":{{"signOptions":{{"messageOptions":{{"digest":"{}","hashFunc":5}}}}}}"#,
                    STANDARD.encode([7u8; 48])
                ),
            )),
        )
        .unwrap();
        let Method::SignMessage(input) = stated.method else {
            panic!("not signMessage")
        };
        assert_eq!(input.hash, Some(HashAlgorithm::Sha256));

        let create = parse(
            Some("v1"),
            Some(
                &args("createKey", r#","createKey":{"algorithm":"rsa-2048"}"#)
                    .replace("\"release\"", "\"ci?backend=hsm\""),
            ),
        )
        .unwrap();
        assert_eq!(create.key.backend.as_deref(), Some("hsm"));
        assert_eq!(create.key.key_id, "ci");
    }

    #[test]
    fn refuses_what_it_cannot_do() {
        for (version, json, needle) in [
            (
                Some("v2"),
                Some("{}".to_string()),
                "protocol version \"v2\"",
            ),
            (None, None, "no arguments"),
            (Some("v1"), Some("[".to_string()), "not valid JSON"),
            (Some("v1"), Some(args("encrypt", "")), "unknown method"),
            (
                Some("v1"),
                Some(args("publicKey", "").replace("release", "")),
                "no key id",
            ),
            (
                Some("v1"),
                Some(args("publicKey", "").replace("release", "k?region=x")),
                "unknown option",
            ),
            (
                Some("v1"),
                Some(args("signMessage", "").replace("\"hashFunc\":5", "\"hashFunc\":3")),
                "SHA-1",
            ),
            (
                Some("v1"),
                Some(args(
                    "verifySignature",
                    r#","verifySignature":{"signature":"%%"}"#,
                )),
                "not standard base64",
            ),
        ] {
            let ProtocolError(message) = parse(version, json.as_deref()).unwrap_err();
            assert!(message.contains(needle), "{message:?} lacks {needle:?}");
        }
        assert_eq!(go_hash(7).unwrap(), Some(HashAlgorithm::Sha512));
        assert_eq!(go_hash(0).unwrap(), None);
    }

    #[test]
    fn static_methods_need_no_agent() {
        let response = run(Some("v1"), Some(&args("supportedAlgorithms", ""))).unwrap();
        let text = serde_json::to_string(&response).unwrap();
        assert!(
            text.contains(r#""supportedAlgorithms":{"supportedAlgorithms":["ec-p256","#),
            "{text}"
        );
        let response = run(Some("v1"), Some(&args("defaultAlgorithm", ""))).unwrap();
        assert_eq!(
            serde_json::to_string(&response).unwrap(),
            r#"{"defaultAlgorithm":{"defaultAlgorithm":"ec-p256"}}"#
        );
    }

    #[test]
    fn deadlines_are_bounded() {
        assert_eq!(timeout(None), DEFAULT_TIMEOUT);
        assert_eq!(timeout(Some("garbage")), DEFAULT_TIMEOUT);
        assert_eq!(
            timeout(Some("2000-01-01T00:00:00Z")),
            Duration::from_millis(1)
        );
        assert_eq!(timeout(Some("2999-01-01T00:00:00Z")), MAX_TIMEOUT);
    }
}
